//! Every command line the README shows is one this binary takes: a flag renamed or a
//! subcommand dropped fails here, not in a sysadmin's terminal.

use clap::Parser;
use clap::error::ErrorKind;

use super::Cli;

/// The command lines in the README's code: its fenced blocks (a `\` at a line's end
/// joins the next) and its inline code spans, each cut at a comment, a pipe or `&&`.
fn documented_command_lines(readme: &str) -> Vec<String> {
    let mut code: Vec<String> = Vec::new();
    let mut fenced = false;
    let mut joined = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            match line.trim_end().strip_suffix('\\') {
                Some(head) => joined.push_str(head),
                None => {
                    joined.push_str(line);
                    code.push(std::mem::take(&mut joined));
                }
            }
        } else {
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    code.iter()
        .flat_map(|c| {
            c.match_indices("fb-openchannel ")
                .filter(|(i, _)| runs_the_binary(&c[..*i]))
                .map(|(i, _)| &c[i..])
        })
        .map(|c| {
            let end = ["#", "|", "&&", ";", "2>", ">", "`"]
                .iter()
                .filter_map(|stop| c.find(stop))
                .min()
                .unwrap_or(c.len());
            c[..end].trim().to_owned()
        })
        .filter(|c| {
            c.split_whitespace()
                .nth(1)
                .is_some_and(|w| w.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '-'))
        })
        .collect()
}

/// Whether what comes before `fb-openchannel` on its line starts a command with it: the
/// line's start, a shell separator, `sudo`, a path to the binary
/// (`target/release/fb-openchannel`) or a variable set for it (`NAME=<value>`) — not
/// `journalctl -u fb-openchannel`.
fn runs_the_binary(before: &str) -> bool {
    if before.ends_with('/') {
        return true;
    }
    let before = before.trim_end();
    let last = before.split_whitespace().next_back().unwrap_or("");
    before.is_empty()
        || before.ends_with(['$', '`', '&', ';', '('])
        || last == "sudo"
        || last.contains('=')
        || (last.ends_with('>') && before.contains("=<"))
}

#[test]
fn every_command_line_the_readme_shows_parses() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let lines = documented_command_lines(&readme);
    assert!(lines.len() > 25, "only {} command lines found", lines.len());
    let mut wrong = Vec::new();
    for line in &lines {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_owned())
            .collect();
        if let Err(e) = Cli::try_parse_from(&words) {
            // Placeholders (`ID`, `N`, `…`) may not be valid values; a name the binary
            // does not know is the README's error.
            if matches!(
                e.kind(),
                ErrorKind::UnknownArgument
                    | ErrorKind::InvalidSubcommand
                    | ErrorKind::ArgumentConflict
            ) {
                wrong.push(format!(
                    "{line}\n  {}",
                    e.to_string().lines().next().unwrap_or("")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the README shows command lines the binary refuses:\n{}",
        wrong.join("\n")
    );
}

/// The README's table of commands names every subcommand the binary has and, in its
/// row, every flag of it: a flag added without a word for the sysadmin fails here.
#[test]
fn the_readme_commands_table_names_every_command_and_flag() {
    use clap::CommandFactory;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let table = readme
        .split("\n## Commands\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the Commands section");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
    let mut missing = Vec::new();
    for command in Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
    {
        let name = command.get_name();
        let row: String = rows
            .iter()
            .filter(|r| {
                let first = r.split('|').nth(1).unwrap_or_default();
                first
                    .trim()
                    .trim_start_matches('`')
                    .split([' ', '`'])
                    .next()
                    == Some(name)
            })
            .copied()
            .collect();
        if row.is_empty() {
            missing.push(format!("the command {name}"));
            continue;
        }
        // Its own flags and those of its subcommands (`queue list --failed`).
        let mut flags: Vec<String> = Vec::new();
        for c in std::iter::once(command).chain(command.get_subcommands()) {
            flags.extend(
                c.get_arguments()
                    .filter(|a| !a.is_global_set())
                    .filter_map(|a| a.get_long().map(|l| format!("--{l}"))),
            );
        }
        for flag in flags {
            if !row.contains(&flag) && !table.contains(&format!("{name} {flag}")) {
                missing.push(format!("{name} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the README's Commands table does not name: {missing:?}"
    );
}
