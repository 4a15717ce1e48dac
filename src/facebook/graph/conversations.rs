//! The Conversations API: what an account's inbox holds, to find the messages Meta never
//! sent by webhook (`reconcile`).
//!
//! `GET /{account}/conversations?platform=messenger|instagram` lists conversations, the
//! most recently updated first (Meta offers no time filter on this edge: the caller stops
//! paging once it is past its window), and `GET /{conversation-id}/messages` each one's
//! messages, newest first. Paging follows the `after` cursor on URLs we build ourselves,
//! never a `next` URL from the answer. Every answer is bounded like any other Graph
//! answer, and each page's size is ours to ask.

use serde_json::Value;

use super::{GraphClient, GraphError};
use crate::config::Secret;

/// Which inbox of a Page: Messenger's, or its linked Instagram account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Messenger,
    Instagram,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Messenger => "messenger",
            Platform::Instagram => "instagram",
        }
    }
}

/// One conversation of the list: its id, when its last message came, and its latest
/// messages (asked in the same call: one call per page of conversations, not one per
/// conversation).
#[derive(Debug, Clone)]
pub struct ConversationRef {
    pub id: String,
    /// Unix milliseconds.
    pub updated_ms: i64,
    /// Newest first; `after` when older ones are on a further page.
    pub messages: Listing<InboxMessage>,
}

/// One page of a list, and the cursor of the next one (none: the last page).
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub entries: Vec<T>,
    pub after: Option<String>,
}

/// A message as the Conversations API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// The message id (`m_…`): the webhook's `mid` for the same message.
    pub id: String,
    /// Unix milliseconds (Meta gives seconds).
    pub created_ms: i64,
    pub from: String,
    pub to: Vec<String>,
    pub text: Option<String>,
    pub attachments: Vec<InboxAttachment>,
}

/// A file of a message: the webhook's attachment type and its URL on Meta's CDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxAttachment {
    pub kind: &'static str,
    pub url: String,
}

/// Conversations asked per page of the list.
pub const CONVERSATIONS_PER_PAGE: &str = "25";
/// The fields of a message we read.
const MESSAGE_FIELDS: &str = "id,created_time,from,to,message,attachments,sticker";
/// The longest id or cursor we take from an answer.
const MAX_ID_BYTES: usize = 512;

impl GraphClient {
    /// `GET /{account}/conversations?platform=…&fields=id,updated_time,messages.limit(n){…}`,
    /// one page, with up to `messages` of each conversation's latest messages.
    pub async fn conversations(
        &self,
        token: &Secret,
        account: &str,
        platform: Platform,
        messages: usize,
        after: Option<&str>,
    ) -> Result<Listing<ConversationRef>, GraphError> {
        let fields = format!("id,updated_time,messages.limit({messages}){{{MESSAGE_FIELDS}}}");
        let mut query = vec![
            ("platform", platform.as_str()),
            ("fields", fields.as_str()),
            ("limit", CONVERSATIONS_PER_PAGE),
        ];
        if let Some(after) = after {
            query.push(("after", after));
        }
        let request = self
            .http
            .get(self.url(&[account, "conversations"]))
            .query(&query)
            .bearer_auth(token.expose());
        conversations_page(&self.call(request).await?)
    }

    /// `GET /{conversation-id}/messages?fields=…&limit=…`, one page, newest first.
    pub async fn conversation_messages(
        &self,
        token: &Secret,
        conversation: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Listing<InboxMessage>, GraphError> {
        let limit = limit.to_string();
        let mut query = vec![("fields", MESSAGE_FIELDS), ("limit", limit.as_str())];
        if let Some(after) = after {
            query.push(("after", after));
        }
        let request = self
            .http
            .get(self.url(&[conversation, "messages"]))
            .query(&query)
            .bearer_auth(token.expose());
        messages_page(&self.call(request).await?)
    }
}

/// A page of `GET /{account}/conversations`: what is not a conversation, or not a
/// message, is left out.
pub fn conversations_page(text: &str) -> Result<Listing<ConversationRef>, GraphError> {
    let v = json(text)?;
    let entries = data(&v)
        .filter_map(|c| {
            let messages = c.get("messages");
            Some(ConversationRef {
                id: id_of(c.get("id")?)?,
                updated_ms: time_ms(c.get("updated_time")?)?,
                messages: Listing {
                    entries: messages
                        .map(|m| data(m).filter_map(inbox_message).collect())
                        .unwrap_or_default(),
                    after: messages.and_then(next_cursor),
                },
            })
        })
        .collect();
    Ok(Listing {
        entries,
        after: next_cursor(&v),
    })
}

/// A page of `GET /{conversation-id}/messages`.
pub fn messages_page(text: &str) -> Result<Listing<InboxMessage>, GraphError> {
    let v = json(text)?;
    let entries = data(&v).filter_map(inbox_message).collect();
    Ok(Listing {
        entries,
        after: next_cursor(&v),
    })
}

fn json(text: &str) -> Result<Value, GraphError> {
    serde_json::from_str(text).map_err(|_| GraphError::from_response(200, text, None))
}

fn data(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The cursor of the next page, when the answer says there is one.
fn next_cursor(v: &Value) -> Option<String> {
    let paging = v.get("paging")?;
    paging.get("next")?;
    let after = paging.pointer("/cursors/after")?.as_str()?;
    (!after.is_empty() && after.len() <= MAX_ID_BYTES).then(|| after.to_owned())
}

/// An id as Graph writes it (a string, or a number in older answers).
fn id_of(v: &Value) -> Option<String> {
    let id = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let fine = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'=' | b':'));
    fine.then_some(id)
}

fn inbox_message(m: &Value) -> Option<InboxMessage> {
    let id = id_of(m.get("id")?)?;
    let created_ms = time_ms(m.get("created_time")?)?;
    let from = id_of(m.pointer("/from/id")?)?;
    let to = m
        .pointer("/to/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| id_of(p.get("id")?))
        .collect();
    let text = m
        .get("message")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let mut attachments: Vec<InboxAttachment> = m
        .pointer("/attachments/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(attachment)
        .collect();
    if let Some(sticker) = m.get("sticker").and_then(Value::as_str) {
        attachments.push(InboxAttachment {
            kind: "image",
            url: sticker.to_owned(),
        });
    }
    Some(InboxMessage {
        id,
        created_ms,
        from,
        to,
        text,
        attachments,
    })
}

/// An attachment of the Conversations API as a webhook would type it: a photo
/// (`image_data`), a video (`video_data`), else a file by its MIME type.
fn attachment(a: &Value) -> Option<InboxAttachment> {
    let url = |pointer: &str| {
        a.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mime = a.get("mime_type").and_then(Value::as_str).unwrap_or("");
    if let Some(url) = url("/image_data/url").or_else(|| url("/animated_image_data/url")) {
        return Some(InboxAttachment { kind: "image", url });
    }
    if let Some(url) = url("/video_data/url") {
        let kind = if mime.starts_with("audio/") {
            "audio"
        } else {
            "video"
        };
        return Some(InboxAttachment { kind, url });
    }
    let url = url("/file_url")?;
    let kind = if mime.starts_with("audio/") {
        "audio"
    } else if mime.starts_with("video/") {
        "video"
    } else if mime.starts_with("image/") {
        "image"
    } else {
        "file"
    };
    Some(InboxAttachment { kind, url })
}

/// A Graph time: `2024-05-01T10:00:00+0000` (what Meta sends), RFC 3339, or Unix seconds.
pub fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().map(|s| s.saturating_mul(1000)),
        Value::String(s) => {
            if let Ok(seconds) = s.parse::<i64>() {
                return Some(seconds.saturating_mul(1000));
            }
            parse_graph_time(s)
        }
        _ => None,
    }
}

fn parse_graph_time(s: &str) -> Option<i64> {
    if s.len() < 19 || !s.is_char_boundary(19) {
        return None;
    }
    let (civil, zone) = s.split_at(19);
    let offset_s: i64 = match zone {
        "" | "Z" => 0,
        _ => {
            let (sign, digits) = match zone.as_bytes()[0] {
                b'+' => (1, &zone[1..]),
                b'-' => (-1, &zone[1..]),
                _ => return None,
            };
            let digits: String = digits.chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i64 = digits[..2].parse().ok()?;
            let minutes: i64 = digits[2..].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let at = humantime::parse_rfc3339_weak(civil).ok()?;
    let seconds = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some((seconds - offset_s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn graph_times_are_read_in_every_form_meta_writes() {
        let at = 1_714_557_600_000; // 2024-05-01T10:00:00Z
        assert_eq!(time_ms(&json!("2024-05-01T10:00:00+0000")), Some(at));
        assert_eq!(time_ms(&json!("2024-05-01T10:00:00Z")), Some(at));
        assert_eq!(time_ms(&json!("2024-05-01T12:00:00+02:00")), Some(at));
        assert_eq!(time_ms(&json!("1714557600")), Some(at));
        assert_eq!(time_ms(&json!(1_714_557_600)), Some(at));
        for bad in [
            json!("yesterday"),
            json!("2024-05-01T10:00:00+zz00"),
            json!(null),
        ] {
            assert_eq!(time_ms(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_message_is_read_with_its_files_and_a_bad_one_is_left_out() {
        let m = json!({
            "id": "m_abc", "created_time": "2024-05-01T10:00:00+0000",
            "from": {"id": "123", "name": "A"}, "to": {"data": [{"id": "456"}]},
            "message": "hi",
            "attachments": {"data": [
                {"mime_type": "image/jpeg", "image_data": {"url": "https://cdn/x.jpg"}},
                {"mime_type": "audio/mpeg", "file_url": "https://cdn/v.mp3"},
                {"mime_type": "application/pdf", "file_url": "https://cdn/d.pdf"}
            ]}
        });
        let read = inbox_message(&m).unwrap();
        assert_eq!(read.from, "123");
        assert_eq!(read.to, ["456"]);
        let kinds: Vec<_> = read.attachments.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, ["image", "audio", "file"]);
        assert!(inbox_message(&json!({"id": "m_x", "from": {"id": "1"}})).is_none());
        assert!(
            inbox_message(&json!({"id": "m x/..", "created_time": 1, "from": {"id": "1"}}))
                .is_none()
        );
    }

    #[test]
    fn paging_follows_the_cursor_only_when_there_is_a_next_page() {
        let more = json!({"data": [], "paging": {"cursors": {"after": "QVFI"}, "next": "https://elsewhere/"}});
        assert_eq!(next_cursor(&more).as_deref(), Some("QVFI"));
        let last = json!({"data": [], "paging": {"cursors": {"after": "QVFI"}}});
        assert_eq!(next_cursor(&last), None);
    }
}
