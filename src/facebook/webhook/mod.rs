//! The webhook payloads Facebook POSTs, as plain data.
//!
//! Parsing is deliberately lenient: ids arrive as strings or numbers, unknown fields and
//! unknown event kinds are ignored, and an item that does not fit the model is reported
//! on its own without failing its neighbours. One POST may carry several `entry` items for
//! several Pages, each with several `messaging` / `standby` / `changes` items; every one
//! becomes an [`Item`].
//! Source: <https://developers.facebook.com/docs/messenger-platform/webhooks> and the
//! payload fixtures of restfb (see `tests/fixtures/SOURCES.md`).

#[cfg(test)]
mod tests;

use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::feed::{FeedChange, FeedKind};
pub use super::ids::FbId;
use crate::model::{ConversationKey, DedupKey, FeedObject, ItemKind};

/// A number that may arrive as a JSON number or a numeric string (`"num_edit": "37"`).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Party {
    #[serde(default)]
    pub id: Option<FbId>,
}

/// One item of `entry[].messaging[]` or `entry[].standby[]`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Messaging {
    #[serde(default)]
    pub sender: Option<Party>,
    #[serde(default)]
    pub recipient: Option<Party>,
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub message_edit: Option<MessageEdit>,
    #[serde(default)]
    pub reaction: Option<Reaction>,
    #[serde(default)]
    pub postback: Option<Postback>,
    #[serde(default)]
    pub referral: Option<Value>,
    #[serde(default)]
    pub read: Option<Value>,
    #[serde(default)]
    pub delivery: Option<Value>,
    #[serde(default)]
    pub optin: Option<Value>,
    #[serde(default)]
    pub pass_thread_control: Option<Value>,
    #[serde(default)]
    pub take_thread_control: Option<Value>,
    #[serde(default)]
    pub request_thread_control: Option<Value>,
    #[serde(default)]
    pub app_roles: Option<Value>,
    /// Meta warned, blocked or unblocked the Page (`messaging_policy_enforcement`):
    /// `{"action": "warning"|"block"|"unblock", "reason": …}` (Messenger Platform →
    /// Webhook events → messaging_policy_enforcement; older pages spell the key with a
    /// hyphen).
    #[serde(default, alias = "policy-enforcement")]
    pub policy_enforcement: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Message {
    #[serde(default)]
    pub mid: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub quick_reply: Option<Value>,
    #[serde(default)]
    pub reply_to: Option<ReplyTo>,
    #[serde(default)]
    pub is_echo: bool,
    #[serde(default)]
    pub app_id: Option<FbId>,
    #[serde(default)]
    pub is_deleted: bool,
    /// Instagram: the customer sent something Instagram does not pass on to apps.
    #[serde(default)]
    pub is_unsupported: bool,
    #[serde(default)]
    pub sticker_id: Option<FbId>,
    /// Echoes carry back the `metadata` the sender set; ours start with `fb-openchannel:`.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Where the customer came from, on the first message after an ad (`ADS`).
    #[serde(default)]
    pub referral: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct ReplyTo {
    #[serde(default)]
    pub mid: Option<String>,
    /// Instagram: the account's story the customer answered (`{id, url}`).
    #[serde(default)]
    pub story: Option<Value>,
}

impl ReplyTo {
    /// The link to the story a customer answered (Instagram), when there is one.
    pub fn story_url(&self) -> Option<&str> {
        self.story.as_ref()?.get("url").and_then(Value::as_str)
    }
}

/// `message.attachments[]`. `payload` is an object for media but a bare string for
/// legacy `fallback` attachments, so it stays a [`Value`] read through accessors.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Attachment {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

impl Attachment {
    pub fn payload_url(&self) -> Option<&str> {
        self.payload.get("url").and_then(Value::as_str)
    }

    pub fn payload_title(&self) -> Option<&str> {
        self.payload.get("title").and_then(Value::as_str)
    }

    pub fn sticker_id(&self) -> Option<String> {
        match self.payload.get("sticker_id")? {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// `(latitude, longitude)` of a location attachment.
    pub fn coordinates(&self) -> Option<(f64, f64)> {
        let c = self.payload.get("coordinates")?;
        Some((c.get("lat")?.as_f64()?, c.get("long")?.as_f64()?))
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct MessageEdit {
    #[serde(default)]
    pub mid: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub num_edit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Reaction {
    #[serde(default)]
    pub mid: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub emoji: Option<String>,
    #[serde(default)]
    pub reaction: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Postback {
    #[serde(default)]
    pub mid: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub payload: Option<String>,
    /// Where the customer came from, on "Get Started" or a link's button.
    #[serde(default)]
    pub referral: Option<Value>,
}

/// A Facebook time in milliseconds. Messenger's `timestamp` is in ms, but some events
/// carry it in seconds (RapidPro Courier keeps such a referral fixture), and feed times
/// are in seconds: a value below 10^11 (March 1973 in ms, year 5138 in s) is seconds.
/// Read in ms as it was, such an event sorted first in its conversation and made the
/// customer look 56 years silent, so an agent's answer was refused as out of window.
pub fn facebook_ms(t: i64) -> i64 {
    if t < 100_000_000_000 {
        t.saturating_mul(1000)
    } else {
        t
    }
}

use crate::facebook::ig_comment::{InstagramComment, InstagramMention};
pub use crate::model::MessagingKind;

impl Messaging {
    pub fn kind(&self) -> MessagingKind {
        if let Some(m) = &self.message {
            if m.is_echo {
                MessagingKind::Echo
            } else if m.is_deleted {
                MessagingKind::Deleted
            } else {
                MessagingKind::Message
            }
        } else if self.message_edit.is_some() {
            MessagingKind::Edit
        } else if self.reaction.is_some() {
            MessagingKind::Reaction
        } else if self.postback.is_some() {
            MessagingKind::Postback
        } else if self.referral.is_some() {
            MessagingKind::Referral
        } else if self.read.is_some() {
            MessagingKind::Read
        } else if self.delivery.is_some() {
            MessagingKind::Delivery
        } else if self.optin.is_some() {
            MessagingKind::Optin
        } else if self.pass_thread_control.is_some()
            || self.take_thread_control.is_some()
            || self.request_thread_control.is_some()
            || self.app_roles.is_some()
        {
            MessagingKind::Handover
        } else {
            MessagingKind::Unknown
        }
    }

    fn sender_id(&self) -> Option<&str> {
        self.sender.as_ref()?.id.as_ref().map(|i| i.0.as_str())
    }

    fn recipient_id(&self) -> Option<&str> {
        self.recipient.as_ref()?.id.as_ref().map(|i| i.0.as_str())
    }

    /// The customer's PSID: the sender, except for echoes, which the Page sent to the customer.
    pub fn customer_id(&self) -> Option<&str> {
        if self.kind() == MessagingKind::Echo {
            self.recipient_id()
        } else {
            self.sender_id()
        }
    }

    /// The Facebook message id this item is about, if it has one.
    pub fn mid(&self) -> Option<&str> {
        if let Some(m) = &self.message {
            return m.mid.as_deref();
        }
        if let Some(e) = &self.message_edit {
            return e.mid.as_deref();
        }
        if let Some(p) = &self.postback {
            return p.mid.as_deref();
        }
        None
    }
}

/// Where in an entry an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `entry[].messaging[]`: this app owns the thread.
    Messaging,
    /// `entry[].standby[]`: another app (e.g. Page Inbox) owns the thread; we only watch.
    Standby,
    /// `entry[].changes[]`: Page feed (wall posts, comments, reactions).
    Changes,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Messaging => "messaging",
            Source::Standby => "standby",
            Source::Changes => "changes",
        }
    }
}

/// What a webhook is about (its `object`): a Facebook Page, an Instagram professional
/// account, or something this daemon does not handle (kept, named in its state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookObject {
    Page,
    Instagram,
    Other(String),
}

impl WebhookObject {
    fn parse(text: String) -> WebhookObject {
        match text.as_str() {
            "page" => WebhookObject::Page,
            "instagram" => WebhookObject::Instagram,
            _ => WebhookObject::Other(text),
        }
    }
}

impl std::fmt::Display for WebhookObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WebhookObject::Page => "page",
            WebhookObject::Instagram => "instagram",
            WebhookObject::Other(text) => text,
        })
    }
}

/// One event taken out of a webhook body, with what the store needs to know about it.
#[derive(Debug, Clone)]
pub struct Item {
    /// What the webhook is about.
    pub object: WebhookObject,
    /// `entry[].id`: the Page (or account) the event belongs to.
    pub page_id: String,
    /// `entry[].time` in ms: the fallback when an item has no time of its own.
    pub entry_time_ms: i64,
    pub source: Source,
    /// The item's JSON as it is stored: for a `messaging` or `standby` event read
    /// straight from its text, that text as Facebook sent it; else the parsed tree
    /// printed again (keys in order), or text that is not JSON as a JSON string.
    pub raw: String,
    /// The typed view, or why the item does not fit the model.
    pub parsed: Result<Parsed, String>,
}

#[derive(Debug, Clone)]
pub enum Parsed {
    Messaging(Box<Messaging>),
    /// A change of the Page: `field` says which (`feed` for the wall), `value` is its
    /// JSON, `change` the value read once as a feed change (or why it is not one).
    Change {
        field: String,
        value: Value,
        change: Box<Result<FeedChange, String>>,
    },
    /// A comment on one of an Instagram account's media (field `comments`).
    InstagramComment(Box<InstagramComment>),
    /// The account @mentioned elsewhere on Instagram.
    InstagramMention(Box<InstagramMention>),
}

impl Item {
    /// Facebook time of the event in milliseconds (feed times come in seconds).
    pub fn timestamp_ms(&self) -> i64 {
        let entry_time_ms = self.entry_time_ms;
        match &self.parsed {
            Ok(Parsed::Messaging(m)) => m.timestamp.map_or(entry_time_ms, facebook_ms),
            Ok(Parsed::InstagramComment(_) | Parsed::InstagramMention(_)) => entry_time_ms,
            Ok(Parsed::Change { value, .. }) => value
                .get("created_time")
                .and_then(|t| t.as_i64().or_else(|| t.as_str()?.parse().ok()))
                .map(|s: i64| s.saturating_mul(1000))
                .unwrap_or(entry_time_ms),
            Err(_) => entry_time_ms,
        }
    }

    /// The conversation an item belongs to: one customer of one Page on Messenger, one
    /// post on the wall. An id that does not look like one (a forged or broken event,
    /// kept as failed) gives `…:invalid`: it reaches no key, log or URL.
    pub fn conversation(&self) -> ConversationKey {
        match &self.parsed {
            Ok(Parsed::Messaging(m)) => {
                let customer = m.customer_id().unwrap_or("");
                match self.object {
                    WebhookObject::Instagram => ConversationKey::instagram_customer(customer),
                    _ => ConversationKey::customer(customer),
                }
            }
            Ok(Parsed::Change { change, .. }) => {
                match (**change).as_ref().ok().and_then(FeedChange::post_id) {
                    Some(post) => ConversationKey::post(post),
                    None => ConversationKey::unknown_post(),
                }
            }
            Ok(Parsed::InstagramComment(c)) => ConversationKey::instagram_media(&c.media.id.0),
            Ok(Parsed::InstagramMention(m)) => {
                ConversationKey::instagram_media(m.media_id.as_str())
            }
            Err(_) => ConversationKey::unparsed(),
        }
    }

    /// The key that makes a redelivered event a duplicate (DESIGN §4 rule 3): the
    /// message id where there is one, else a digest of the item itself (a redelivery
    /// repeats the same JSON).
    pub fn dedup_key(&self) -> DedupKey {
        match &self.parsed {
            Ok(Parsed::Messaging(m)) => {
                let kind = m.kind();
                match (kind, m.mid()) {
                    (MessagingKind::Message | MessagingKind::Echo, Some(mid)) => {
                        DedupKey::message(mid)
                    }
                    (MessagingKind::Deleted, Some(mid)) => DedupKey::deleted(mid),
                    (MessagingKind::Edit, Some(mid)) => DedupKey::edit(
                        mid,
                        m.message_edit
                            .as_ref()
                            .and_then(|e| e.num_edit)
                            .unwrap_or(0),
                    ),
                    (MessagingKind::Postback, Some(mid)) => DedupKey::postback(mid),
                    // Standby items share their kind's key (as stored since standby came).
                    _ => DedupKey::digest(
                        match self.object {
                            WebhookObject::Instagram => ItemKind::Instagram(kind),
                            _ => ItemKind::Messaging(kind),
                        },
                        &self.digest(),
                    ),
                }
            }
            Ok(Parsed::Change { change, .. }) => (**change)
                .as_ref()
                .ok()
                .and_then(feed_dedup_key)
                .unwrap_or_else(|| DedupKey::digest(self.kind(), &self.digest())),
            Ok(Parsed::InstagramComment(c)) => DedupKey::instagram_comment(&c.id.0),
            Ok(Parsed::InstagramMention(m)) => DedupKey::instagram_mention(
                m.comment_id.as_ref().map(|c| c.as_str()),
                m.media_id.as_str(),
            ),
            Err(_) => DedupKey::digest(self.kind(), &self.digest()),
        }
    }

    /// What the item is: for storage, routing, logs and metrics.
    pub fn kind(&self) -> ItemKind {
        match &self.parsed {
            // Instagram's standby events are told apart by their state, not their kind.
            Ok(Parsed::Messaging(m)) if self.object == WebhookObject::Instagram => {
                ItemKind::Instagram(m.kind())
            }
            Ok(Parsed::Messaging(m)) if self.source == Source::Standby => ItemKind::Standby {
                echo: m.kind() == MessagingKind::Echo,
            },
            Ok(Parsed::Messaging(m)) => ItemKind::Messaging(m.kind()),
            Ok(Parsed::Change { field, change, .. }) if field == "feed" => ItemKind::Feed(
                (**change)
                    .as_ref()
                    .map_or(FeedKind::Other, FeedChange::kind),
            ),
            Ok(Parsed::Change { .. }) => ItemKind::PageChange,
            Ok(Parsed::InstagramComment(_)) => ItemKind::InstagramComment,
            Ok(Parsed::InstagramMention(_)) => ItemKind::InstagramMention,
            Err(_) => ItemKind::Unparsed,
        }
    }

    fn digest(&self) -> String {
        // Of the parsed tree printed again (serde_json's map is ordered by key), so the
        // same JSON always gives the same digest, whichever way `raw` holds it.
        let printed = serde_json::from_str::<Value>(&self.raw).map(|v| v.to_string());
        let mut h = Sha256::new();
        h.update(self.page_id.as_bytes());
        h.update([0]);
        h.update(printed.as_deref().unwrap_or(&self.raw).as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// DESIGN §4 rule 3 for the wall: a comment by its id and verb, a post by its id and
/// verb; an edit also by its new text, since a comment can be edited many times.
fn feed_dedup_key(change: &FeedChange) -> Option<DedupKey> {
    let object = match change.kind() {
        FeedKind::Comment => FeedObject::Comment(change.comment_id()?),
        FeedKind::Post => FeedObject::Post(change.post_id()?),
        FeedKind::Reaction | FeedKind::Other => return None,
    };
    let edit = (change.verb == "edited").then(|| {
        let digest = Sha256::digest(change.message.as_deref().unwrap_or("").as_bytes());
        hex::encode(&digest[..8])
    });
    Some(DedupKey::feed(object, &change.verb, edit.as_deref()))
}

/// Why a signed body could not be read as a webhook at all.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("body is JSON but not a webhook: {0}")]
    NotWebhook(&'static str),
}

/// All the events in one webhook body, in the order Facebook listed them.
///
/// The envelope is read first with every entry left as raw text, then each entry, then
/// each item: one that does not parse — a lone UTF-16 surrogate in a string, say, which
/// makes the whole body invalid for a strict JSON reader — becomes a failed item on its
/// own (its text kept), and its neighbours are delivered.
pub fn parse(body: &[u8]) -> Result<Vec<Item>, WebhookError> {
    let root: std::collections::HashMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                WebhookError::NotWebhook("the body is not a JSON object")
            } else {
                WebhookError::NotJson(e)
            }
        })?;
    let object = root
        .get("object")
        .and_then(|o| serde_json::from_str(o.get()).ok())
        .map(WebhookObject::parse)
        .ok_or(WebhookError::NotWebhook("no \"object\" field"))?;
    let entries: Vec<&RawValue> = root
        .get("entry")
        .and_then(|e| serde_json::from_str(e.get()).ok())
        .ok_or(WebhookError::NotWebhook("no \"entry\" array"))?;

    let mut items = Vec::new();
    for entry in entries {
        parse_entry(&object, entry, &mut items);
    }
    Ok(items)
}

/// Text that did not read as what it should be, kept whole as a JSON string (the
/// payload of the failed item that holds it).
fn quoted(raw: &RawValue) -> String {
    serde_json::to_string(raw.get()).unwrap_or_default()
}

fn parse_entry(object: &WebhookObject, raw: &RawValue, items: &mut Vec<Item>) {
    #[derive(Deserialize)]
    struct Entry<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        time: Option<&'a RawValue>,
        #[serde(borrow, default)]
        messaging: Option<Vec<&'a RawValue>>,
        #[serde(borrow, default)]
        standby: Option<Vec<&'a RawValue>>,
        #[serde(borrow, default)]
        changes: Option<Vec<&'a RawValue>>,
        /// Instagram Login's comment webhooks, as Meta's examples show them, carry one
        /// change on the entry itself: `{id, time, field, value}` (no `changes[]`).
        #[serde(borrow, default)]
        field: Option<&'a RawValue>,
        #[serde(borrow, default)]
        value: Option<&'a RawValue>,
    }
    let failed = |why: String| Item {
        object: object.clone(),
        page_id: "unknown".into(),
        entry_time_ms: 0,
        source: Source::Changes,
        raw: quoted(raw),
        parsed: Err(why),
    };
    let entry: Entry = match serde_json::from_str(raw.get()) {
        Ok(e) => e,
        Err(e) => {
            items.push(failed(format!("an entry does not fit the model: {e}")));
            return;
        }
    };
    let page_id = match entry.id.map(|id| serde_json::from_str::<Value>(id.get())) {
        Some(Ok(Value::String(s))) => s,
        Some(Ok(Value::Number(n))) => n.to_string(),
        _ => {
            items.push(failed("an entry has no \"id\"".into()));
            return;
        }
    };
    // Messenger entries give `time` in ms, feed entries in seconds.
    let entry_time_ms = facebook_ms(
        entry
            .time
            .and_then(|t| serde_json::from_str::<i64>(t.get()).ok())
            .unwrap_or(0),
    );
    // A change on the entry itself is one more change.
    let own_change = match (entry.field, entry.value) {
        (Some(field), Some(value)) => Some(format!(
            r#"{{"field":{},"value":{}}}"#,
            field.get(),
            value.get()
        )),
        _ => None,
    };
    let own_change: Option<Box<RawValue>> =
        own_change.and_then(|text| RawValue::from_string(text).ok());
    let mut changes = entry.changes.unwrap_or_default();
    if let Some(change) = &own_change {
        changes.push(change);
    }
    let before = items.len();
    let lists = [
        (entry.messaging, "messaging", Source::Messaging),
        (entry.standby, "standby", Source::Standby),
        (Some(changes), "changes", Source::Changes),
    ];
    for (list, field, source) in lists {
        for raw in list.into_iter().flatten() {
            let (raw, parsed) = read_item(object, raw, field, source);
            items.push(Item {
                object: object.clone(),
                page_id: page_id.clone(),
                entry_time_ms,
                source,
                raw,
                parsed,
            });
        }
    }
    // An entry with nothing the daemon reads is kept as a failed item (counted, logged,
    // replayable after an upgrade), never dropped in silence.
    if items.len() == before {
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(raw.get())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        items.push(Item {
            page_id,
            entry_time_ms,
            ..failed(format!(
                "an entry carries nothing the daemon reads (its keys: {})",
                keys.join(", ")
            ))
        });
    }
}

/// One item of `entry[].<field>`: its JSON as stored ([`Item::raw`]) and its typed view.
///
/// A Messenger or Instagram event (`messaging`, `standby`) is read straight from its text
/// into [`Messaging`] and keeps that text: no tree of it is built, then read, then printed
/// again (reading a webhook and making its items took 38,000 instructions, 24,000 this
/// way: callgrind, the benchmark's messages). What that reading
/// refuses (a key given twice, which a tree keeps the last of) goes the tree's way, as
/// every other item does, and is stored as the tree prints.
fn read_item(
    object: &WebhookObject,
    raw: &RawValue,
    field: &str,
    source: Source,
) -> (String, Result<Parsed, String>) {
    if matches!(source, Source::Messaging | Source::Standby)
        && let Ok(m) = serde_json::from_str::<Messaging>(raw.get())
    {
        return (raw.get().to_owned(), Ok(Parsed::Messaging(Box::new(m))));
    }
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(value) => {
            let parsed = parse_item(object, &value, field, source);
            (value.to_string(), parsed)
        }
        Err(e) => (
            quoted(raw),
            Err(format!("{field} item is not valid JSON text ({e})")),
        ),
    }
}

/// The typed view of one item of `entry[].<field>`.
fn parse_item(
    object: &WebhookObject,
    raw: &Value,
    field: &str,
    source: Source,
) -> Result<Parsed, String> {
    let value = raw.get("value").unwrap_or(&Value::Null);
    match (object, source, raw.get("field").and_then(Value::as_str)) {
        (WebhookObject::Instagram, Source::Changes, Some("comments")) => {
            return InstagramComment::parse(value).map(|c| Parsed::InstagramComment(Box::new(c)));
        }
        (WebhookObject::Instagram, Source::Changes, Some("mentions")) => {
            return InstagramMention::parse(value).map(|m| Parsed::InstagramMention(Box::new(m)));
        }
        _ => {}
    }
    match source {
        Source::Messaging | Source::Standby => Messaging::deserialize(raw)
            .map(|m| Parsed::Messaging(Box::new(m)))
            .map_err(|e| format!("{field} item does not fit the model: {e}")),
        Source::Changes => match (raw.get("field").and_then(Value::as_str), raw.get("value")) {
            (Some(field), Some(value)) if value.is_object() => Ok(Parsed::Change {
                field: field.to_owned(),
                value: value.clone(),
                change: Box::new(FeedChange::parse(value)),
            }),
            _ => Err("change item has no \"field\" or no object \"value\"".to_owned()),
        },
    }
}
