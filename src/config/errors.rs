//! A problem in the config file, said with its file, line and key — never its value.

use std::fmt;
use std::path::PathBuf;

/// One problem in the config file: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (a default value).
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.key,
                self.message
            )
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// All the problems found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The place of `key` (`table.key`) in the file, for an error about a value serde took
/// without a span; `0..0` (no line) when it is not written there (a default).
pub(super) fn key_span(text: &str, dotted: &str) -> std::ops::Range<usize> {
    let Some((table, key)) = dotted.split_once('.') else {
        return 0..0;
    };
    let mut current = "";
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = header.trim_matches(['[', ' ']);
        } else if current == table
            && let Some((k, _)) = trimmed.split_once('=')
            && k.trim() == key
        {
            return offset..offset + line.len();
        }
        offset += line.len();
    }
    0..0
}

/// A serde message with the offending value taken out ("invalid type: integer `123`,
/// expected a string" → "invalid type: integer (value not shown), expected a string"):
/// the value may be a secret written in the wrong place. Key names are kept.
pub(super) fn without_values(message: &str) -> String {
    let message = message.trim();
    if message.starts_with("unknown field")
        || message.starts_with("missing field")
        || message.starts_with("duplicate key")
    {
        return message.to_owned();
    }
    let (head, tail) = match message.find(", expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = head;
    let mut hidden = false;
    while let Some(start) = rest.find(['`', '"', '\'']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let Some(len) = rest[start + 1..].find(quote) else {
            break;
        };
        out.push_str(rest[..start].trim_end());
        if !hidden {
            out.push_str(" (value not shown)");
            hidden = true;
        }
        rest = &rest[start + 1 + len + 1..];
    }
    out.push_str(rest);
    out.push_str(tail);
    out
}

/// 1-based line number of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key (`table.key`) written on the line holding byte `at`, if that line is
/// a `key = value` line.
pub(super) fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(['[', ']', ' ']).to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

/// The key named in a serde message such as "unknown field `foo`, expected …" (only
/// those messages name a key; others name a value, which is never repeated).
pub(super) fn key_in_message(message: &str) -> Option<String> {
    if !(message.starts_with("unknown field")
        || message.starts_with("missing field")
        || message.starts_with("duplicate key"))
    {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    let key = &message[start..start + len];
    // TOML allows an empty quoted key (`"" = 1`): name it the way it is written.
    Some(if key.is_empty() {
        "\"\"".to_owned()
    } else {
        key.to_owned()
    })
}
