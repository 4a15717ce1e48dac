//! What a reload changes, and which of it needs a restart.

use super::Config;

/// What a reload changes, key by key (`section.key`; an account's as `page.<id>.key`
/// or `instagram.<id>.key`).
/// Secrets are compared by the daemon where they are used (they print masked here).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Keys whose value differs, in force from now on.
    pub now: Vec<String>,
    /// Keys whose value differs but that are read only at start: `(key, was, now)`.
    pub at_restart: Vec<(String, String, String)>,
    /// Accounts added and removed: a page by its id, others as `instagram <id>`.
    pub accounts_added: Vec<String>,
    pub accounts_removed: Vec<String>,
}

/// Keys the daemon reads only when it starts: its listeners, the store, the workers.
pub(super) const READ_AT_START: &[&str] = &[
    "public.listen",
    "public.tls",
    "public.tls_cert",
    "public.tls_key",
    "public.max_connections",
    "public.max_active_connections",
    "public.body_memory",
    "public.body_spool",
    "public.acme",
    "local.listen",
    "storage.path",
    "storage.backend",
    "storage.url",
    "storage.password_file",
    "storage.lease",
    "storage.ca_file",
    "delivery.concurrency",
];

impl Config {
    /// How `new` differs from this config, section by section.
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        use serde_json::Value;
        let as_value = |c: &Config| serde_json::to_value(c).unwrap_or(Value::Null);
        let (before, after) = (as_value(self), as_value(new));
        let mut diff = ConfigDiff::default();
        let mut changed = Vec::new();
        let fields = |v: &Value| v.as_object().cloned().unwrap_or_default();
        let compare =
            |prefix: &str, a: &Value, b: &Value, changed: &mut Vec<(String, String, String)>| {
                let (a, b) = (fields(a), fields(b));
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let (was, now) = (a.get(key), b.get(key));
                    if was != now {
                        let show = |v: Option<&Value>| {
                            v.map_or_else(|| "(unset)".into(), Value::to_string)
                        };
                        changed.push((format!("{prefix}.{key}"), show(was), show(now)));
                    }
                }
            };
        // Accounts are compared by id: `page.<id>.key`, `instagram.<id>.key`.
        const ACCOUNT_TABLES: [&str; 2] = ["page", "instagram"];
        for (section, value) in fields(&before) {
            if !ACCOUNT_TABLES.contains(&section.as_str()) {
                compare(&section, &value, &after[&section], &mut changed);
            }
        }
        for table in ACCOUNT_TABLES {
            let accounts = |v: &Value| -> Vec<(String, Value)> {
                v[table]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| (a["id"].as_str().unwrap_or_default().to_owned(), a.clone()))
                    .collect()
            };
            // A page is named by its id alone, as everywhere else.
            let name = |id: &str| match table {
                "page" => id.to_owned(),
                _ => format!("{table} {id}"),
            };
            let (old, new) = (accounts(&before), accounts(&after));
            for (id, account) in &new {
                match old.iter().find(|(old, _)| old == id) {
                    Some((_, was)) => compare(&format!("{table}.{id}"), was, account, &mut changed),
                    None => diff.accounts_added.push(name(id)),
                }
            }
            diff.accounts_removed.extend(
                old.iter()
                    .filter(|(id, _)| !new.iter().any(|(new, _)| new == id))
                    .map(|(id, _)| name(id)),
            );
        }
        for (key, was, now) in changed {
            if READ_AT_START.contains(&key.as_str()) {
                diff.at_restart.push((key, was, now));
            } else {
                diff.now.push(key);
            }
        }
        diff
    }
}
