//! What happens when Motion calls the Reply URL: the agent's reply is stored first
//! (idempotent on Motion's message id), then the call waits — up to `local.reply_wait` —
//! for the outbound worker's first attempt, so the agent learns at once whether the
//! customer got it (DESIGN §4 rules 3 and 6).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tracing::info;

use crate::ids::ObjectId;
use crate::model::{ConversationKey, DedupKey, ItemKind, ItemState};
use crate::motion::AttachmentId;
use crate::motion::reply::{self, Reply};
use crate::relay::outcome::{Cause, Refusal};
use crate::relay::{Account, Customer, Shared};
use crate::store::{Direction, NewItem, NewState, now_ms};

/// Instagram's limit for a private reply to a comment, which cannot be split (one per
/// comment); the same 1,000 bytes of UTF-8 as one direct message.
pub const MAX_PRIVATE_REPLY_BYTES: usize = 1000;

/// An agent's reply as stored in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundReply {
    /// The customer's PSID.
    pub recipient: String,
    /// The agent's text (may be only the attached file's name).
    pub text: String,
    /// Motion's id of a file the agent attached.
    #[serde(default)]
    pub attachment_id: Option<AttachmentId>,
    /// For logs and idempotency.
    #[serde(default)]
    pub motion_message_id: Option<String>,
    #[serde(default)]
    pub interaction_id: Option<String>,
    /// Set for an answer in a wall thread: the post the interaction is about.
    #[serde(default)]
    pub thread_id: Option<ObjectId>,
}

/// The outcome of a reply's first send attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstAttempt {
    /// The customer got it; the Graph message ids, in order.
    Delivered { message_ids: Vec<String> },
    /// It will not be sent, because of `cause`; `message` is for the agent.
    Failed { cause: Cause, message: String },
    /// A passing problem; it is queued and retried.
    Queued { message: String },
}

/// The HTTP status that tells the agent's Motion why a reply was not sent: chosen here,
/// at the Reply URL, and nowhere else.
fn status(cause: Cause) -> u16 {
    match cause {
        Cause::Refused(Refusal::BadRequest) => 400,
        Cause::Refused(Refusal::UnknownPage) => 404,
        Cause::Refused(Refusal::Policy) => 422,
        Cause::Refused(Refusal::Peer) | Cause::TokenInvalid => 502,
        Cause::Refused(Refusal::Broken) => 500,
        Cause::TooLarge => 413,
        Cause::GaveUp => 504,
    }
}

/// The HTTP answer to Motion: status and JSON body (always with a `message`).
pub type Answer = (u16, serde_json::Value);

fn answer(first: FirstAttempt) -> Answer {
    match first {
        FirstAttempt::Delivered { message_ids } => (
            200,
            json!({
                "message": "Delivered to the customer on Facebook.",
                "message_id": message_ids.first(),
                "message_ids": message_ids,
            }),
        ),
        FirstAttempt::Failed { cause, message } => (status(cause), json!({ "message": message })),
        FirstAttempt::Queued { message } => (202, json!({ "message": message })),
    }
}

/// Handles one Reply URL call for `account` with the raw request body.
pub async fn accept_reply(shared: &Shared, account: Account<'_>, body: &[u8]) -> Answer {
    let live = shared.live();
    let map_key = account.map_key(&live.config.motion).to_owned();
    let reply = match reply::parse(body, &map_key) {
        Ok(r) => r,
        Err(e) => {
            return (
                400,
                json!({ "message": format!("Not sent: {e}. Motion's Reply URL body must be JSON with a \"body\" text.") }),
            );
        }
    };
    let Some(recipient) = reply.recipient.clone() else {
        return (
            400,
            json!({ "message": format!("Not sent: the reply names no customer (Contact.{map_key}, contact.{map_key} or to). Check the Openchannel account's map key: it must be map_key of this account in fb-openchannel's config.") }),
        );
    };
    let recipient = match Customer::parse(&recipient) {
        Ok(c) => c.as_str().to_owned(),
        Err(e) => {
            return (
                400,
                json!({ "message": format!("Not sent: {e}. Check the Openchannel account's map key: the contact field must hold the customer's Facebook id.") }),
            );
        }
    };
    let page_id = account.id().to_owned();
    // A wall or Instagram comment thread: its own conversation (answers in it stay in
    // order); Messenger's and Instagram's direct conversation is the customer.
    let (conversation, kind) = match (account, &reply.thread_id) {
        (Account::Instagram(_), Some(media)) => (
            ConversationKey::instagram_media(media.as_str()),
            ItemKind::InstagramReply,
        ),
        (Account::Instagram(_), None) => (
            ConversationKey::instagram_customer(&recipient),
            ItemKind::InstagramReply,
        ),
        (Account::Page(_), Some(post)) => {
            (ConversationKey::post(post.as_str()), ItemKind::WallReply)
        }
        (Account::Page(_), None) => (ConversationKey::customer(&recipient), ItemKind::Reply),
    };
    // An answer in a thread answers one the daemon delivered, and nothing else: the id
    // names which object the token comments on.
    if reply.thread_id.is_some() {
        match shared
            .store
            .has_thread(page_id.clone(), conversation.clone())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return (
                    422,
                    json!({ "message": format!("Not sent: this {} is not one fb-openchannel delivered to Motion for this account, so it does not know what to answer.", match account {
                        Account::Page(_) => "wall thread",
                        Account::Instagram(_) => "Instagram comment thread",
                    }) }),
                );
            }
            Err(e) => {
                return (
                    503,
                    json!({ "message": format!("Not stored, please retry: {e}") }),
                );
            }
        }
    }
    // An Instagram private reply is one message per comment: it cannot be cut into
    // pieces like a direct answer. Said now, with the limit, not after Graph refuses it.
    if let (Account::Instagram(ig), Some(_)) = (account, &reply.thread_id)
        && ig.comment_reply == crate::config::CommentReply::Private
        && reply.body.trim().len() > MAX_PRIVATE_REPLY_BYTES
    {
        return (
            422,
            json!({ "message": format!(
                "Not sent: an Instagram private reply is one message of at most {} bytes ({} here), and only one is allowed per comment. Shorten it, or answer in the customer's direct messages once they write.",
                MAX_PRIVATE_REPLY_BYTES,
                reply.body.trim().len()
            ) }),
        );
    }
    let dedup_key = dedup_key(&reply, body);
    let payload = OutboundReply {
        recipient: recipient.clone(),
        text: reply.body.clone(),
        attachment_id: reply.attachment_id,
        motion_message_id: reply.message_id.clone(),
        interaction_id: reply.interaction_id.clone(),
        thread_id: reply.thread_id.clone(),
    };

    // Registered before the item exists, so the worker cannot finish before we listen.
    let (tx, rx) = oneshot::channel();
    let key = (page_id.clone(), dedup_key.clone());
    shared.reply_waiters.lock().unwrap().insert(key.clone(), tx);

    let stored = shared
        .store
        .enqueue(NewItem {
            direction: Direction::Outbound,
            page_id: page_id.clone(),
            conversation: conversation.clone(),
            dedup_key,
            kind,
            event_ts: now_ms(),
            payload: serde_json::to_string(&payload).expect("reply serialises"),
            state: NewState::Pending,
        })
        .await;
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            shared.reply_waiters.lock().unwrap().remove(&key);
            if crate::logging::STORE_REFUSED.admit() {
                tracing::error!(page_id = %page_id, conversation = %conversation, "agent reply NOT stored, answered 503 so the agent can send it again: {e}");
            }
            return (
                503,
                json!({ "message": format!("Not stored, please retry: {e}") }),
            );
        }
    };
    if !stored.new {
        shared.reply_waiters.lock().unwrap().remove(&key);
        info!(page_id = %page_id, conversation = %conversation, item = stored.id, motion_message = ?reply.message_id, "repeated Reply URL call: answered from the stored outcome, nothing sent again");
        return answer(from_store(stored).unwrap_or_else(|| FirstAttempt::Queued {
            message: "Queued: this reply was received before and is still being sent.".into(),
        }));
    }
    shared.outbound_wake.notify_one();
    info!(page_id = %page_id, conversation = %conversation, item = stored.id, motion_message = ?reply.message_id, "agent reply received from Motion");

    let wait: Duration = live.config.local.reply_wait;
    let first = async {
        if shared.store.shared().is_none() {
            return rx.await.ok();
        }
        // On a queue shared by several daemons another node may send it: its outcome is
        // in the store.
        let mut rx = rx;
        loop {
            tokio::select! {
                first = &mut rx => return first.ok(),
                _ = tokio::time::sleep(SHARED_OUTCOME_POLL) => {}
            }
            if let Ok(Some(now)) = shared.store.stored(stored.id).await
                && let Some(first) = from_store(now)
            {
                return Some(first);
            }
        }
    };
    match tokio::time::timeout(wait, first).await {
        Ok(Some(first)) => answer(first),
        _ => {
            shared.reply_waiters.lock().unwrap().remove(&key);
            answer(FirstAttempt::Queued {
                message: format!(
                    "Queued: no answer from Facebook within {}; the reply will be sent as soon as possible.",
                    humantime::format_duration(wait)
                ),
            })
        }
    }
}

/// How often a Reply URL call on a shared queue looks for the outcome of an attempt
/// made by another node.
const SHARED_OUTCOME_POLL: Duration = Duration::from_millis(200);

/// What the store says of a reply's first attempt, once there was one (or it is
/// settled): a repeated call, or one whose reply another node sent.
fn from_store(stored: crate::store::Enqueued) -> Option<FirstAttempt> {
    match stored.state {
        ItemState::Done => {
            let ids: Vec<String> = stored
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
                .and_then(|v| serde_json::from_value(v["message_ids"].clone()).ok())
                .unwrap_or_default();
            Some(FirstAttempt::Delivered { message_ids: ids })
        }
        ItemState::Failed => Some(FirstAttempt::Failed {
            cause: Cause::Refused(Refusal::Policy),
            message: stored.last_error.unwrap_or_else(|| "Not sent.".into()),
        }),
        ItemState::Pending if stored.attempts > 0 => Some(FirstAttempt::Queued {
            message: format!(
                "Queued: the first attempt did not go through ({}); it is sent again.",
                stored.last_error.as_deref().unwrap_or("no reason given")
            ),
        }),
        ItemState::Pending | ItemState::Skipped => None,
    }
}

/// Motion's message id makes a repeated call the same reply; without one, the exact
/// bytes of the call do.
fn dedup_key(reply: &Reply, body: &[u8]) -> DedupKey {
    match &reply.message_id {
        Some(id) => DedupKey::motion_message(id),
        None => DedupKey::reply_body(&hex::encode(&Sha256::digest(body)[..16])),
    }
}
