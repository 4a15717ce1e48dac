//! `fb-openchannel capture --check DIR`: what the real peers sent, against the shapes
//! the daemon expects.
//!
//! Each captured exchange is matched to a shape by what it is (a webhook, a Reply URL
//! call, the answer to a notify, an upload, a Send API call…), and every field that
//! differs is named: **missing** (the daemon reads it and it was not there), **other
//! type** (a number where text was expected…), **unknown** (a field the daemon does not
//! read — harmless, but worth knowing on a first install). Objects marked open (a
//! Motion Contact, whose fields are each site's own) report no unknown fields.

use serde_json::Value;

/// What a JSON value is expected to be.
#[derive(Debug, Clone)]
pub enum Shape {
    Any,
    Str,
    Num,
    Bool,
    /// An id: text or a number.
    Id,
    /// `null` or the shape.
    Nullable(Box<Shape>),
    Array(Box<Shape>),
    /// Fields `(name, shape, required)`; `open` objects do not report unknown fields.
    Object {
        fields: Vec<(String, Shape, bool)>,
        open: bool,
    },
}

fn obj(fields: &[(&str, Shape, bool)]) -> Shape {
    Shape::Object {
        fields: fields
            .iter()
            .map(|(n, s, r)| (n.to_string(), s.clone(), *r))
            .collect(),
        open: false,
    }
}

fn open(fields: &[(&str, Shape, bool)]) -> Shape {
    match obj(fields) {
        Shape::Object { fields, .. } => Shape::Object { fields, open: true },
        other => other,
    }
}

fn arr(s: Shape) -> Shape {
    Shape::Array(Box::new(s))
}

fn nullable(s: Shape) -> Shape {
    Shape::Nullable(Box::new(s))
}

/// The files that differ, each with its differences.
pub type Report = Vec<(String, Vec<Difference>)>;

/// One difference between a captured value and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where, e.g. `entry[0].messaging[0].message.mid`.
    pub path: String,
    pub what: String,
    /// Missing or of another type: the daemon cannot read it as it is.
    pub serious: bool,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compares `value` with `shape`, adding differences under `path`.
pub fn compare(shape: &Shape, value: &Value, path: &str, out: &mut Vec<Difference>) {
    let other = |expected: &str, out: &mut Vec<Difference>| {
        out.push(Difference {
            path: path.to_owned(),
            what: format!("expected {expected}, got {}", type_name(value)),
            serious: true,
        })
    };
    match (shape, value) {
        (Shape::Any, _) => {}
        (Shape::Nullable(_), Value::Null) => {}
        (Shape::Nullable(inner), _) => compare(inner, value, path, out),
        (Shape::Str, Value::String(_)) => {}
        (Shape::Num, Value::Number(_)) => {}
        (Shape::Bool, Value::Bool(_)) => {}
        (Shape::Id, Value::String(_) | Value::Number(_)) => {}
        (Shape::Str, _) => other("text", out),
        (Shape::Num, _) => other("a number", out),
        (Shape::Bool, _) => other("a boolean", out),
        (Shape::Id, _) => other("an id (text or a number)", out),
        (Shape::Array(item), Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                compare(item, v, &format!("{path}[{i}]"), out);
            }
        }
        (Shape::Array(_), _) => other("an array", out),
        (Shape::Object { fields, open }, Value::Object(map)) => {
            let at = |name: &str| {
                if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                }
            };
            for (name, field, required) in fields {
                match map.get(name) {
                    Some(v) => compare(field, v, &at(name), out),
                    None if *required => out.push(Difference {
                        path: at(name),
                        what: "missing".into(),
                        serious: true,
                    }),
                    None => {}
                }
            }
            if !open {
                for name in map.keys() {
                    if !fields.iter().any(|(n, _, _)| n == name) {
                        out.push(Difference {
                            path: at(name),
                            what: "unknown (the daemon does not read it)".into(),
                            serious: false,
                        });
                    }
                }
            }
        }
        (Shape::Object { .. }, _) => other("an object", out),
    }
}

fn messaging() -> Shape {
    let attachment = obj(&[
        ("type", Shape::Str, true),
        ("payload", Shape::Any, false),
        ("title", Shape::Str, false),
        ("url", Shape::Str, false),
    ]);
    let message = obj(&[
        ("mid", Shape::Str, true),
        ("text", Shape::Str, false),
        ("attachments", arr(attachment), false),
        ("quick_reply", Shape::Any, false),
        ("reply_to", Shape::Any, false),
        ("is_echo", Shape::Bool, false),
        ("app_id", Shape::Id, false),
        ("is_deleted", Shape::Bool, false),
        ("sticker_id", Shape::Id, false),
        ("metadata", Shape::Str, false),
        ("seq", Shape::Num, false),
        ("commands", Shape::Any, false),
        ("nlp", Shape::Any, false),
    ]);
    obj(&[
        ("sender", open(&[("id", Shape::Id, true)]), true),
        ("recipient", open(&[("id", Shape::Id, true)]), true),
        ("timestamp", Shape::Num, true),
        ("message", message, false),
        (
            "message_edit",
            open(&[
                ("mid", Shape::Str, true),
                ("text", Shape::Str, false),
                ("num_edit", Shape::Id, false),
            ]),
            false,
        ),
        (
            "reaction",
            open(&[
                ("mid", Shape::Str, false),
                ("action", Shape::Str, false),
                ("emoji", Shape::Str, false),
                ("reaction", Shape::Str, false),
            ]),
            false,
        ),
        (
            "postback",
            open(&[
                ("mid", Shape::Str, false),
                ("title", Shape::Str, false),
                ("payload", Shape::Str, false),
            ]),
            false,
        ),
        ("referral", Shape::Any, false),
        ("read", Shape::Any, false),
        ("delivery", Shape::Any, false),
        ("optin", Shape::Any, false),
        ("pass_thread_control", Shape::Any, false),
        ("take_thread_control", Shape::Any, false),
        ("request_thread_control", Shape::Any, false),
        ("app_roles", Shape::Any, false),
    ])
}

/// A Page webhook body.
pub fn webhook() -> Shape {
    let change = obj(&[
        ("field", Shape::Str, true),
        (
            "value",
            open(&[
                ("item", Shape::Str, false),
                ("verb", Shape::Str, false),
                ("post_id", Shape::Id, false),
                ("comment_id", Shape::Id, false),
                ("parent_id", Shape::Id, false),
                (
                    "from",
                    open(&[("id", Shape::Id, true), ("name", Shape::Str, false)]),
                    false,
                ),
                ("message", Shape::Str, false),
                ("created_time", Shape::Id, false),
            ]),
            true,
        ),
    ]);
    obj(&[
        ("object", Shape::Str, true),
        (
            "entry",
            arr(obj(&[
                ("id", Shape::Id, true),
                ("time", Shape::Num, false),
                ("messaging", arr(messaging()), false),
                ("standby", arr(messaging()), false),
                ("changes", arr(change), false),
            ])),
            true,
        ),
    ])
}

/// A Reply URL body from Motion, for an account whose map key is `map_key`.
pub fn reply(map_key: &str) -> Shape {
    open(&[
        ("body", Shape::Str, true),
        ("id", Shape::Id, false),
        ("AttachmentId", nullable(Shape::Id), false),
        ("Contact", open(&[(map_key, Shape::Id, true)]), true),
        (
            "Interaction",
            open(&[
                ("id", Shape::Id, false),
                ("threadId", nullable(Shape::Str), false),
            ]),
            false,
        ),
        ("OpenchannelInteractionId", Shape::Id, false),
    ])
}

/// The shape of the part of an exchange that comes from the peer, and where it is.
fn expected(exchange: &Value, map_key: &dyn Fn(&str) -> String) -> Option<(&'static str, Shape)> {
    let kind = exchange.get("kind")?.as_str()?;
    let method = exchange.pointer("/request/method")?.as_str().unwrap_or("");
    let url = exchange.pointer("/request/url")?.as_str().unwrap_or("");
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| url.split('?').next().unwrap_or("").to_owned());
    let status = exchange
        .pointer("/response/status")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let ok = (200..300).contains(&status);
    let graph_error = || {
        open(&[(
            "error",
            open(&[
                ("message", Shape::Str, true),
                ("code", Shape::Num, true),
                ("error_subcode", Shape::Num, false),
                ("fbtrace_id", Shape::Str, false),
            ]),
            true,
        )])
    };
    match kind {
        "webhook" => Some(("/request/body", webhook())),
        "reply" => {
            let page = path.trim_matches('/').split('/').nth(1).unwrap_or("");
            Some(("/request/body", reply(&map_key(page))))
        }
        "graph" if !ok => Some(("/response/body", graph_error())),
        "graph" if path.ends_with("/messages") => Some((
            "/response/body",
            open(&[
                ("message_id", Shape::Str, true),
                ("recipient_id", Shape::Id, false),
            ]),
        )),
        "graph" if path.ends_with("/comments") => {
            Some(("/response/body", open(&[("id", Shape::Str, true)])))
        }
        "graph" if path.ends_with("/subscribed_apps") && method == "GET" => Some((
            "/response/body",
            open(&[(
                "data",
                arr(open(&[
                    ("id", Shape::Id, true),
                    ("name", Shape::Str, false),
                    ("subscribed_fields", arr(Shape::Str), false),
                ])),
                true,
            )]),
        )),
        "motion" if ok && method == "POST" && path.ends_with("/api/attachments") => {
            Some(("/response/body", open(&[("id", Shape::Num, true)])))
        }
        "motion"
            if ok
                && method == "GET"
                && path.contains("/api/attachments/")
                && !path.ends_with("/download") =>
        {
            Some((
                "/response/body",
                open(&[
                    ("name", Shape::Str, false),
                    ("type", Shape::Str, false),
                    ("size", Shape::Num, false),
                ]),
            ))
        }
        _ => None,
    }
}

/// What the captured webhooks say beside their bodies, counted by value: which secret
/// signed each (`signed_by`), and what client certificate came with it (`client_cert`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    pub webhooks: usize,
    pub signed_by: std::collections::BTreeMap<String, usize>,
    pub client_cert: std::collections::BTreeMap<String, usize>,
    /// Entries carrying their change themselves (`field`/`value` on the entry, as
    /// Meta's Instagram Login examples show), and mention changes.
    pub entry_changes: usize,
    pub mentions: usize,
}

impl Seen {
    fn count(&mut self, request: &Value) {
        self.webhooks += 1;
        for entry in request["body"]["entry"].as_array().into_iter().flatten() {
            if entry.get("field").is_some() {
                self.entry_changes += 1;
            }
            let changes = entry["changes"].as_array().into_iter().flatten();
            self.mentions += changes
                .chain(std::iter::once(entry))
                .filter(|c| c["field"] == "mentions")
                .count();
        }
        for (key, counts) in [
            ("signed_by", &mut self.signed_by),
            ("client_cert", &mut self.client_cert),
        ] {
            if let Some(v) = request[key].as_str() {
                *counts.entry(v.to_owned()).or_default() += 1;
            }
        }
    }
}

/// Checks every captured file in `dir`: `(files looked at, a report of the files that
/// differ, what the webhooks say beside their bodies)`. The directory is read through
/// its descriptor and each file as [`crate::statedir::Dir::read`] reads it (a regular file of a bounded
/// size, never through a symlink): the daemon's user wrote them, root reads them.
pub fn check_dir_seen(
    dir: &crate::statedir::Dir,
    map_key: &dyn Fn(&str) -> String,
) -> Result<(usize, Report, Seen), String> {
    let mut seen = Seen::default();
    let mut names: Vec<String> = dir
        .names()
        .map_err(|e| format!("cannot read {e}"))?
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let mut report = Vec::new();
    for name in names.iter().cloned() {
        let exchange: Value = match dir
            .read(&name, super::MAX_FILE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(v) => v,
            None => {
                report.push((
                    name,
                    vec![Difference {
                        path: String::new(),
                        what: "not a capture file (not JSON)".into(),
                        serious: true,
                    }],
                ));
                continue;
            }
        };
        if name.ends_with("-webhook.json") {
            seen.count(&exchange["request"]);
        }
        let Some((at, shape)) = expected(&exchange, map_key) else {
            continue;
        };
        let mut differences = Vec::new();
        match exchange.pointer(at) {
            Some(value) => compare(&shape, value, "", &mut differences),
            None => differences.push(Difference {
                path: at.trim_start_matches('/').replace('/', "."),
                what: "missing".into(),
                serious: true,
            }),
        }
        if !differences.is_empty() {
            report.push((name, differences));
        }
    }
    Ok((names.len(), report, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn differences(shape: &Shape, v: Value) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        compare(shape, &v, "", &mut out);
        out.into_iter().map(|d| (d.path, d.serious)).collect()
    }

    #[test]
    fn a_reply_whose_contact_key_differs_is_flagged() {
        let d = differences(
            &reply("facebook"),
            json!({"body": "hi", "Contact": {"id": 17, "cf_7": "123"}, "Extra": 1}),
        );
        assert_eq!(d, [("Contact.facebook".into(), true)]);
        assert!(
            differences(
                &reply("cf_7"),
                json!({"body": "hi", "Contact": {"cf_7": 123}})
            )
            .is_empty()
        );
    }

    #[test]
    fn webhooks_name_missing_unknown_and_other_typed_fields() {
        let d = differences(
            &webhook(),
            json!({"object": "page", "entry": [{"id": "1", "time": 5, "messaging": [{
                "sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": "5",
                "message": {"text": "hi", "brand_new": true}}]}]}),
        );
        assert_eq!(
            d,
            [
                ("entry[0].messaging[0].timestamp".into(), true),
                ("entry[0].messaging[0].message.mid".into(), true),
                ("entry[0].messaging[0].message.brand_new".into(), false),
            ]
        );
    }
}
