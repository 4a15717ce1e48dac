//! `fb-openchannel capture`: start, stop or check a capture of what the real peers send.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::capture::{self, check};
use crate::config::Config;

pub fn main(
    path: &Path,
    length: Option<Duration>,
    off: bool,
    check_dir: Option<String>,
) -> ExitCode {
    let config = Config::load(path);
    if let Some(dir) = check_dir {
        return check_main(config.ok(), PathBuf::from(dir));
    }
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let store = &config.storage.path;
    if off {
        return match capture::stop(store) {
            Ok(()) => {
                let (files, bytes) = capture::files(store);
                println!(
                    "capture ended (the daemon stops within a second): {files} file(s), {} KiB in {}; check it with `fb-openchannel capture --check`",
                    bytes / 1024,
                    capture::dir(store).display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(length) = length else {
        match capture::running_until(store) {
            Some(until) => println!(
                "a capture runs for {} more, into {}",
                super::output::age(until - crate::time::now_ms()),
                capture::dir(store).display()
            ),
            None => println!("no capture runs; start one with `fb-openchannel capture --for 2h`"),
        }
        return ExitCode::SUCCESS;
    };
    match capture::start(store, length) {
        Ok(_) => {
            println!(
                "capturing for {}: the running daemon writes every exchange with Facebook and Motion to {} (tokens, keys and secrets masked; at most {} MiB).\n\
                 Now send one message each way: a Messenger text, a file, a wall comment, and an agent's answer to each. \
                 End it early with `fb-openchannel capture --off`, then run `fb-openchannel capture --check`.",
                humantime::format_duration(length),
                capture::dir(store).display(),
                capture::MAX_BYTES / (1024 * 1024)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_main(config: Option<Config>, dir: PathBuf) -> ExitCode {
    // The state folder's own capture directory is the daemon's user's: opened as root
    // may (never through a symlink). A directory named here is the operator's choice.
    let opened = if dir.as_os_str().is_empty() {
        match &config {
            Some(c) => capture::open_dir(&c.storage.path).map(|d| {
                d.ok_or_else(|| {
                    format!(
                        "no capture in {}: start one with `fb-openchannel capture --for 2h`",
                        capture::dir(&c.storage.path).display()
                    )
                })
            }),
            None => {
                eprintln!("name the capture directory: `fb-openchannel capture --check DIR`");
                return ExitCode::FAILURE;
            }
        }
    } else {
        crate::statedir::Dir::state(&dir).map(Ok)
    };
    let dir = match opened {
        Ok(Ok(dir)) => dir,
        Ok(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cannot read the capture directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Each page's map key says which Contact field a Reply URL body must carry.
    let map_key = |page: &str| {
        config
            .as_ref()
            .map(|c| match c.page(page) {
                Some(p) => p.map_key(&c.motion).to_owned(),
                None => c.motion.map_key.clone(),
            })
            .unwrap_or_else(|| "facebook".into())
    };
    match check::check_dir_seen(&dir, &map_key) {
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Ok((seen, report, webhooks)) => {
            for line in webhook_lines(&webhooks) {
                println!("{line}");
            }
            let serious = report
                .iter()
                .flat_map(|(_, d)| d)
                .filter(|d| d.serious)
                .count();
            for (file, differences) in &report {
                println!("{file}");
                for d in differences {
                    let mark = if d.serious { "✗" } else { "·" };
                    let at = if d.path.is_empty() {
                        "(the file)"
                    } else {
                        d.path.as_str()
                    };
                    println!("  {mark} {at}: {}", d.what);
                }
            }
            println!(
                "{seen} file(s) checked in {}: {} differ, {serious} field(s) the daemon cannot read as it expects (✗), other differences are fields it does not read (·)",
                dir.path().display(),
                report.len()
            );
            if serious == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// What the captured webhooks say beside their bodies: which secret signed them, and
/// whether Meta's client certificate came with them.
fn webhook_lines(seen: &check::Seen) -> Vec<String> {
    if seen.webhooks == 0 {
        return Vec::new();
    }
    let list = |counts: &std::collections::BTreeMap<String, usize>,
                name: &dyn Fn(&str) -> String| {
        counts
            .iter()
            .map(|(k, n)| format!("{n} {}", name(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = Vec::new();
    if !seen.signed_by.is_empty() {
        lines.push(format!(
            "webhooks signed: {} (of {})",
            list(&seen.signed_by, &|k| format!("with facebook.{k}")),
            seen.webhooks
        ));
    }
    if !seen.client_cert.is_empty() {
        lines.push(format!(
            "client certificates: {} (of {} webhooks)",
            list(&seen.client_cert, &|k| match k {
                "meta" => "with Meta's".to_owned(),
                "none" => "without one".to_owned(),
                other => format!("with another ({other})"),
            }),
            seen.webhooks
        ));
    }
    if seen.entry_changes > 0 {
        lines.push(format!(
            "{} entr{} carried their change on the entry itself (field/value, as Meta's Instagram Login examples show): read as one change each",
            seen.entry_changes,
            if seen.entry_changes == 1 { "y" } else { "ies" }
        ));
    }
    if seen.mentions > 0 {
        lines.push(format!(
            "{} mention(s) of the account came (documented for Instagram with Facebook Login; with Instagram Login, this says they come too)",
            seen.mentions
        ));
    }
    lines
}
