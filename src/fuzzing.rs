//! Entry points for the fuzz targets in `fuzz/` (and their regression tests): each
//! drives one input through everything that handles it, and panics only on a bug.

use std::path::Path;
use std::sync::OnceLock;

use crate::config::{Config, PageConfig};
use crate::facebook::webhook::{self, Parsed};
use crate::ids::{ObjectId, UserId};
use crate::relay::Customer;
use crate::relay::{feed, messenger, messenger_reply};

/// A page config for the translators (wall posts on, so every branch runs).
fn page() -> &'static PageConfig {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        Config::from_toml(
            Path::new("fuzz.toml"),
            r#"
[public]
tls = false
[facebook]
app_secret = "s"
verify_token = "v"
[motion]
api_key = "k"
[[page]]
id = "12345654332"
access_token = "t"
receive_url = "http://127.0.0.1:9/api/openchannel/accounts/1/notify"
reply_token = "fuzz-reply-token-0001"
"#,
        )
        .expect("the fuzz config is valid")
    });
    &config.pages[0]
}

/// A webhook body: parse, then every item's keys, fate and notify plan.
pub fn webhook(data: &[u8]) {
    let Ok(items) = webhook::parse(data) else {
        return;
    };
    for item in &items {
        let _ = (
            item.kind(),
            item.conversation(),
            item.dedup_key(),
            item.timestamp_ms(),
        );
        assert!(
            item.conversation()
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b)),
            "a conversation key holds only id characters"
        );
        match &item.parsed {
            Ok(Parsed::Messaging(m)) => {
                if let Ok(customer) = Customer::parse(m.customer_id().unwrap_or_default()) {
                    assert_id_text(customer.as_str());
                }
                let _ = messenger::intake_state(item, messenger::Forward::ALL);
                let _ = messenger::intake_state(
                    item,
                    messenger::Forward {
                        standby: false,
                        outside_replies: false,
                        reactions: false,
                    },
                );
                let context = messenger::Context {
                    referenced_text: Some("earlier text".into()),
                };
                let _ = messenger::plan(m, &context);
                let _ = messenger::plan(m, &messenger::Context::default());
                let _ = messenger::referenced_mid(m);
            }
            Ok(Parsed::InstagramComment(c)) => {
                let _ = crate::relay::instagram::comment_plan(c, &messenger::Context::default());
            }
            Ok(Parsed::InstagramMention(m)) => {
                assert_id_text(m.media_id.as_str());
            }
            Ok(Parsed::Change { field, change, .. }) => {
                let change = &**change;
                let _ = feed::intake_state(field, change, page());
                if let Ok(c) = change {
                    for id in [c.post_id(), c.comment_id(), c.parent_id()]
                        .into_iter()
                        .flatten()
                    {
                        if let Ok(id) = ObjectId::parse(id) {
                            assert_id_text(id.as_str());
                        }
                    }
                    if let Ok(id) = UserId::parse(c.author_id().unwrap_or_default()) {
                        assert!(id.as_str().bytes().all(|b| b.is_ascii_digit()));
                    }
                }
                if let Ok(c) = change {
                    let _ = feed::plan(c);
                    let post = c
                        .post_id()
                        .and_then(|p| ObjectId::parse(p).ok())
                        .unwrap_or_else(|| ObjectId::parse("1_2").expect("an id"));
                    let target =
                        feed::reply_target(&post, std::slice::from_ref(c), c.created_time());
                    assert!(
                        target
                            .comment_on
                            .as_str()
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b == b'_')
                    );
                }
            }
            Err(_) => {}
        }
        let _ = messenger::text_of(&item.raw);
    }
}

/// An id that goes into a URL: digits, a simulated customer's name, or digits_digits.
fn assert_id_text(id: &str) {
    assert!(!id.is_empty() && id.len() <= 80, "{id:?}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || b == b'_' || b.is_ascii_lowercase() || b == b'-'),
        "{id:?}"
    );
    assert!(!id.contains(".."), "{id:?}");
}

/// A Reply URL body: parse (ids included), then split its text and decide its reply
/// window.
pub fn reply(data: &[u8]) {
    let Ok(reply) = crate::motion::reply::parse(data, "cf_7") else {
        return;
    };
    if let Some(thread) = &reply.thread_id {
        assert_id_text(thread.as_str());
    }
    if let Some(customer) = reply
        .recipient
        .as_deref()
        .and_then(|r| Customer::parse(r).ok())
    {
        assert_id_text(customer.as_str());
    }
    for limit in [
        messenger_reply::MAX_TEXT,
        crate::relay::instagram_reply::MAX_TEXT,
    ] {
        let pieces = messenger_reply::split_text(&reply.body, limit);
        assert_eq!(
            pieces.concat(),
            reply.body,
            "splitting must keep every character"
        );
        assert!(pieces.iter().all(|p| limit.fits(p)));
    }
    let _ = messenger_reply::messaging_type(
        messenger_reply::Window::Instagram,
        Some(data.len() as i64 * 1_000_000),
        1_800_000_000_000,
        data.len().is_multiple_of(2),
    );
}

/// An answer of Graph's: a page of the Conversations API, each message as `reconcile`
/// stores it (the webhook it would have been, through everything a webhook goes
/// through) and writes it in its log line; and the answer as an error, with its
/// rate-limit header.
pub fn graph(data: &[u8]) {
    use crate::facebook::graph::GraphError;
    use crate::facebook::graph::conversations::{conversations_page, messages_page};
    use crate::relay::reconcile::{body_of, event_of};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut messages = Vec::new();
    if let Ok(page) = conversations_page(text) {
        for conversation in page.entries {
            let _ = crate::time::timestamp(conversation.updated_ms);
            messages.extend(conversation.messages.entries);
        }
    }
    if let Ok(page) = messages_page(text) {
        messages.extend(page.entries);
    }
    let account = page().id.get_ref().as_str();
    let events: Vec<serde_json::Value> = messages
        .iter()
        .filter_map(|m| event_of(account, m))
        .map(|(event, missing)| {
            let _ = crate::time::timestamp(missing.at_ms);
            event
        })
        .collect();
    for object in ["page", "instagram"] {
        webhook(&body_of(object, account, events.iter()));
    }
    let e = GraphError::from_response(400, text, Some(text));
    let _ = (e.to_string(), e.hint());
}

/// A config file: loads or fails with errors that name the file, a line and a key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(Path::new("fuzz.toml"), text) {
        Ok(config) => {
            let _ = config.to_redacted_toml();
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(!e.key.is_empty());
                let _ = e.to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz seeds and every fixture go through the fuzz entry points in the normal
    /// test run, so a target that would panic on its own seeds fails here first.
    #[test]
    fn seeds_and_fixtures_pass_the_fuzz_entry_points() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for (dir, f) in [
            ("tests/fixtures/facebook", super::webhook as fn(&[u8])),
            ("fuzz/seeds/webhook", super::webhook),
            ("fuzz/seeds/reply", super::reply),
            ("fuzz/seeds/config", super::config),
            ("fuzz/seeds/graph", super::graph),
            ("fuzz/regressions/webhook", super::webhook),
            ("fuzz/regressions/reply", super::reply),
            ("fuzz/regressions/config", super::config),
            ("fuzz/regressions/graph", super::graph),
        ] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                f(&std::fs::read(&path).unwrap());
                seen += 1;
            }
        }
        super::config(&std::fs::read(root.join("config/config.toml")).unwrap());
        assert!(seen > 40, "only {seen} inputs found");
    }
}
