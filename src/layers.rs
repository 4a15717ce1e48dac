//! The layers of `src/`, lowest first, and the test that keeps every import pointing
//! down (ARCHITECTURE.md says what each layer is for and what it must never do).
//!
//! A module may use its own layer's modules and those of the layers below it, never one
//! above. In a layer whose modules stand *apart* (the outside worlds), a module uses
//! none of the others either: Facebook's client knows nothing of Motion's or of the
//! store. Test code (`#[cfg(test)]` items and the files only they declare) may reach
//! anywhere: a test of the store may start a simulated peer.

/// The most lines a file of `src/` may have: past it, split it by what its parts do.
pub const MAX_LINES: usize = 800;

/// The layers, lowest first: `(name, modules, apart)`.
pub const LAYERS: &[(&str, &[&str], bool)] = &[
    (
        "base",
        &[
            "allocator",
            "model",
            "time",
            "ids",
            "hosts",
            "budget",
            "files",
            "statedir",
            "http_client",
            "logging",
        ],
        false,
    ),
    ("config", &["config"], false),
    (
        "outside worlds",
        &["facebook", "motion", "store", "capture"],
        true,
    ),
    ("metrics", &["metrics"], false),
    ("flow", &["relay"], false),
    ("server", &["server"], false),
    ("certificates", &["acme"], false),
    ("daemon", &["daemon"], false),
    ("tools", &["cli", "fuzzing", "sim"], false),
];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::LAYERS;

    /// `text` with comments, strings and char literals blanked to spaces (their line
    /// breaks kept), so that braces and `crate::` inside them are not read as code.
    fn blank(text: &str) -> String {
        let b = text.as_bytes();
        let mut out = b.to_vec();
        let mut i = 0;
        let blank_to = |out: &mut Vec<u8>, from: usize, to: usize| {
            for c in &mut out[from..to] {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
        };
        while i < b.len() {
            match b[i] {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                    blank_to(&mut out, i, end);
                    i = end;
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    let (mut depth, mut j) = (1, i + 2);
                    while j < b.len() && depth > 0 {
                        if b[j..].starts_with(b"/*") {
                            depth += 1;
                            j += 2;
                        } else if b[j..].starts_with(b"*/") {
                            depth -= 1;
                            j += 2;
                        } else {
                            j += 1;
                        }
                    }
                    blank_to(&mut out, i, j);
                    i = j;
                }
                b'r' if !ident_byte(b, i.wrapping_sub(1))
                    && matches!(b.get(i + 1), Some(b'"' | b'#')) =>
                {
                    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                    if b.get(i + 1 + hashes) != Some(&b'"') {
                        i += 1;
                        continue;
                    }
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    let start = i + 2 + hashes;
                    let end = b[start..]
                        .windows(close.len())
                        .position(|w| w == close.as_slice())
                        .map_or(b.len(), |n| start + n + close.len());
                    blank_to(&mut out, i, end);
                    i = end;
                }
                b'"' => {
                    let mut j = i + 1;
                    while j < b.len() && b[j] != b'"' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    blank_to(&mut out, i, (j + 1).min(b.len()));
                    i = j + 1;
                }
                b'\'' => {
                    // A char literal ('x', '\n', '{'), not a lifetime ('a).
                    let end = if b.get(i + 1) == Some(&b'\\') {
                        // '\n', '\'', '\u{..}': the escaped byte is not the end.
                        b.get(i + 3..)
                            .and_then(|r| r.iter().position(|&c| c == b'\''))
                            .map(|n| i + 4 + n)
                    } else {
                        let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                        (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 2 + len)
                    };
                    match end {
                        Some(end) => {
                            blank_to(&mut out, i, end);
                            i = end;
                        }
                        None => i += 1,
                    }
                }
                _ => i += 1,
            }
        }
        String::from_utf8(out).expect("only ASCII bytes were replaced")
    }

    fn ident_byte(b: &[u8], i: usize) -> bool {
        b.get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    }

    /// `code` (blanked) without its `#[cfg(test)]` items; and the modules declared
    /// test-only by `#[cfg(test)] mod name;`.
    fn without_tests(code: &str) -> (String, Vec<String>) {
        let mut code = code.to_owned();
        let mut test_files = Vec::new();
        while let Some(at) = code.find("#[cfg(test)]") {
            let rest = &code[at..];
            let brace = rest.find('{');
            let semi = rest.find(';');
            let end = match (brace, semi) {
                (_, Some(s)) if brace.is_none_or(|b| s < b) => {
                    let item = &rest[..s];
                    if let Some(name) = item.split("mod ").nth(1) {
                        test_files.push(name.trim().to_owned());
                    }
                    at + s + 1
                }
                (Some(b), _) => {
                    let mut depth = 0usize;
                    let mut end = code.len();
                    for (n, c) in rest[b..].char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    end = at + b + n + 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    end
                }
                _ => code.len(),
            };
            code.replace_range(at..end, "");
        }
        (code, test_files)
    }

    /// The top-level modules that `code` names through `crate::`.
    fn uses(code: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `fb_openchannel_crate::` and the like
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c, d::{e, f}}`: the first name of each top-level path.
                let mut depth = 0;
                let mut start = true;
                for (n, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && (c.is_alphanumeric() || c == '_') => {
                            let name: String = group[n..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            found.insert(name);
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
        found
    }

    /// `file` under `src` as its top-level module: `relay/mod.rs` and `relay/x.rs` are
    /// `relay`, `time.rs` is `time`.
    fn module_of(src: &Path, file: &Path) -> String {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a file");
        let name = first.as_os_str().to_string_lossy();
        name.strip_suffix(".rs").unwrap_or(&name).to_owned()
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Where `mod name;` declared in `file` lives.
    fn child_paths(file: &Path, name: &str) -> [PathBuf; 2] {
        let stem = file.file_stem().expect("a file name").to_string_lossy();
        let dir = file.parent().expect("in a folder");
        let dir = if stem == "mod" || stem == "lib" || stem == "main" {
            dir.to_owned()
        } else {
            dir.join(&*stem)
        };
        [
            dir.join(format!("{name}.rs")),
            dir.join(name).join("mod.rs"),
        ]
    }

    type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

    /// Every import of the crate's own code outside tests, `module -> {module: files}`;
    /// and every module that is not test code.
    fn graph(src: &Path) -> (Edges, BTreeSet<String>) {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut read = BTreeMap::new();
        let mut test_only = BTreeSet::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            let (code, test_mods) = without_tests(&blank(&text));
            for name in test_mods {
                test_only.extend(child_paths(file, &name));
            }
            read.insert(file.clone(), code);
        }
        let mut edges = Edges::new();
        let mut modules = BTreeSet::new();
        for (file, code) in &read {
            if test_only.contains(file) {
                continue;
            }
            let from = module_of(src, file);
            if from == "lib" || from == "main" {
                continue;
            }
            modules.insert(from.clone());
            let shown = file.strip_prefix(src).unwrap().display().to_string();
            for to in uses(code) {
                if to != from {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(shown.clone());
                }
            }
        }
        (edges, modules)
    }

    /// What is wrong with `edges` against [`LAYERS`], one line each.
    fn wrongs(edges: &Edges, modules: &BTreeSet<String>) -> Vec<String> {
        let place: BTreeMap<&str, (usize, &str, bool)> = LAYERS
            .iter()
            .enumerate()
            .flat_map(|(n, (layer, mods, apart))| {
                mods.iter().map(move |m| (*m, (n, *layer, *apart)))
            })
            .collect();
        let mut wrong = Vec::new();
        for module in modules {
            if !place.contains_key(module.as_str()) {
                wrong.push(format!(
                    "src/{module}: in no layer; put it in one in src/layers.rs (and ARCHITECTURE.md)"
                ));
            }
        }
        for (from, tos) in edges {
            let Some(&(low, layer, apart)) = place.get(from.as_str()) else {
                continue;
            };
            for (to, files) in tos {
                let Some(&(high, to_layer, _)) = place.get(to.as_str()) else {
                    continue; // not a module: a macro or a type at the crate's root
                };
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                if high > low {
                    wrong.push(format!(
                        "{from} ({layer}) uses {to} ({to_layer}, above it) in {}: move what it needs down, or hand it in from above",
                        files.join(", ")
                    ));
                } else if high == low && apart {
                    wrong.push(format!(
                        "{from} uses {to} in {}: the {layer} stand apart; what they share belongs below them",
                        files.join(", ")
                    ));
                }
            }
        }
        // Within a layer imports may go either way, but not round in a circle.
        let mut done = BTreeSet::new();
        for start in edges.keys() {
            let mut path = vec![start.clone()];
            if let Some(circle) = circle_from(edges, &mut path, &mut done) {
                wrong.push(format!("circle: {}", circle.join(" -> ")));
                break;
            }
        }
        wrong
    }

    fn circle_from(
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        let here = path.last().expect("a start").clone();
        if done.contains(&here) {
            return None;
        }
        for next in edges.get(&here).into_iter().flat_map(|t| t.keys()) {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut circle = path[at..].to_vec();
                circle.push(next.clone());
                return Some(circle);
            }
            path.push(next.clone());
            let found = circle_from(edges, path, done);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        done.insert(here);
        None
    }

    #[test]
    fn every_import_points_down_the_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let (edges, modules) = graph(&src);
        let wrong = wrongs(&edges, &modules);
        assert!(
            wrong.is_empty(),
            "imports against the layers:\n{}",
            wrong.join("\n")
        );
        // The reading finds what is there: these edges exist and are allowed.
        assert!(edges["relay"].contains_key("store"), "{edges:?}");
        assert!(edges["facebook"].contains_key("http_client"), "{edges:?}");
    }

    #[test]
    fn no_file_is_too_long_to_read() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let long: Vec<String> = files
            .iter()
            .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
            .filter(|(_, n)| *n > super::MAX_LINES)
            .map(|(f, n)| format!("{} has {n} lines", f.strip_prefix(&src).unwrap().display()))
            .collect();
        assert!(
            long.is_empty(),
            "files over {} lines; split each by what its parts do: {long:?}",
            super::MAX_LINES
        );
    }

    /// The checker itself: an import up, one across apart modules, one in a comment,
    /// a string or a test module, and a circle.
    #[test]
    fn the_reading_sees_imports_and_only_them() {
        let code = r##"
            use crate::{time::now_ms, ids::{PageId, Psid}, model};
            // crate::daemon in a comment
            const S: &str = "crate::server {";
            const R: &str = r#"crate::cli }"#;
            fn f<'a>(x: &'a str) -> char { let _ = crate::config::X; '{' }
            #[cfg(test)]
            mod tests { use crate::sim::facebook::SimFacebook; fn g() { let _ = "}"; } }
            #[cfg(test)]
            mod plans;
        "##;
        let (code, test_mods) = without_tests(&blank(code));
        assert_eq!(test_mods, ["plans"]);
        let found: Vec<String> = uses(&code).into_iter().collect();
        assert_eq!(found, ["config", "ids", "model", "time"]);

        let edge = |pairs: &[(&str, &str)]| {
            let mut edges = Edges::new();
            for (from, to) in pairs {
                edges
                    .entry(from.to_string())
                    .or_default()
                    .entry(to.to_string())
                    .or_default()
                    .insert(format!("{from}/x.rs"));
            }
            edges
        };
        let all: BTreeSet<String> = LAYERS
            .iter()
            .flat_map(|(_, m, _)| m.iter().map(|s| s.to_string()))
            .collect();
        assert!(wrongs(&edge(&[("relay", "store"), ("files", "budget")]), &all).is_empty());
        let up = wrongs(&edge(&[("store", "relay")]), &all);
        assert!(
            up[0].contains("store (outside worlds) uses relay (flow, above it)"),
            "{up:?}"
        );
        let across = wrongs(&edge(&[("motion", "facebook")]), &all);
        assert!(across[0].contains("stand apart"), "{across:?}");
        let circle = wrongs(&edge(&[("time", "ids"), ("ids", "time")]), &all);
        assert!(circle[0].starts_with("circle: "), "{circle:?}");
        let mut more = all.clone();
        more.insert("newcomer".into());
        assert!(wrongs(&BTreeMap::new(), &more)[0].contains("in no layer"));
    }
}
