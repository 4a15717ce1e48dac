//! The outbound worker: sends agents' replies to customers with the Graph Send API.
//!
//! Where an agent's reply becomes Send API calls. The pure decisions are here too and
//! unit-tested: which `messaging_type` the reply window allows ([`messaging_type`]), how a
//! long text is split ([`split_text`]), which attachment type a MIME type is
//! ([`AttachmentType::of_mime`]). A reply is made of steps (text chunks, then the file); progress
//! is stored after each so a retry never sends a chunk twice.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{CommentReply, PageConfig};
use crate::facebook::feed::FeedChange;
use crate::facebook::graph::{
    AttachmentType, Disposition, Download, GraphError, MAX_FILE_BYTES, MessagingType, Recipient,
    Send,
};
use crate::facebook::ids::ObjectId;
use crate::model::{ConversationKey, DedupKey, FeedKind, ItemKind};
use crate::motion::{AgentFile, MotionError};
use crate::relay::feed::{self, PrivateTo};
use crate::relay::messenger::OUR_METADATA;
use crate::relay::outcome::{self, Delivered, Failure, Settled};
use crate::relay::pauses::{Feature, Pause};
use crate::relay::reply::{FirstAttempt, OutboundReply};
use crate::relay::{Customer, Shared, dispatch};
use crate::store::{Direction, Item, NewItem, NewState, Write, now_ms};

/// The Send API's limit for one text message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
const HOUR_MS: i64 = 3600 * 1000;
/// Standard messaging: replies within 24 hours of the customer's last message.
const WINDOW_MS: i64 = 24 * HOUR_MS;
/// The HUMAN_AGENT tag: a human's answer up to 7 days after it.
const HUMAN_AGENT_WINDOW_MS: i64 = 7 * 24 * HOUR_MS;

/// Which `messaging_type` a reply may use, from the time of the customer's last own
/// action (`None`: never seen, Facebook decides) — or why it may not be sent at all.
pub fn messaging_type(
    last_customer_ms: Option<i64>,
    now_ms: i64,
    human_agent_tag: bool,
) -> Result<MessagingType, String> {
    let Some(last) = last_customer_ms else {
        return Ok(MessagingType::Response);
    };
    let age = now_ms.saturating_sub(last);
    let ago = describe_age(age);
    if age < WINDOW_MS {
        Ok(MessagingType::Response)
    } else if age < HUMAN_AGENT_WINDOW_MS {
        if human_agent_tag {
            Ok(MessagingType::HumanAgent)
        } else {
            Err(format!(
                "Not sent: the customer last wrote {ago} ago, and Facebook only allows replies within 24 hours. \
                 To answer up to 7 days, the Page needs Facebook's Human Agent permission and human_agent_tag = true \
                 in this page's config; otherwise wait for the customer to write again."
            ))
        }
    } else {
        Err(format!(
            "Not sent: the customer last wrote {ago} ago; Facebook allows no reply after 7 days. \
             The customer has to write to the Page again first."
        ))
    }
}

fn describe_age(ms: i64) -> String {
    let hours = ms / HOUR_MS;
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else {
        format!("{hours} h")
    }
}

/// Splits `text` into pieces of at most `max` characters, at whitespace where possible,
/// keeping every character (the pieces concatenate back to the text).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        // Byte offset just past the first `max` characters.
        let limit = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let head = &rest[..limit];
        // Cut after the last whitespace in the head, if that keeps a useful piece.
        let cut = head
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8())
            .filter(|&i| i > limit / 2)
            .unwrap_or(limit);
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

/// Runs the outbound worker until `shutdown` turns true (see [`dispatch::run`]).
pub async fn run(shared: Arc<Shared>, shutdown: watch::Receiver<bool>, drain: Duration) {
    let wake = shared.clone();
    dispatch::run(
        shared,
        Direction::Outbound,
        move || wake.outbound_wake.clone().notified_owned(),
        shutdown,
        drain,
        |shared, item| async move { send(&shared, item).await },
    )
    .await
}

/// Sends one reply, records the outcome, and tells a waiting Reply URL call.
async fn send(shared: &Shared, item: Item) {
    let live = shared.live();
    let result = match live.page(&item.page_id) {
        Some(page) => send_steps(shared, page, &item).await,
        None => Err(Failure::Permanent {
            status: 404,
            reason: format!(
                "Not sent: page {} is no longer in fb-openchannel's config.",
                item.page_id
            ),
        }),
    };
    // A reply refused while the Page's conversations are routed to another app: say so.
    let note = if shared.routing.elsewhere(&item.page_id).is_some() {
        " — this Page's conversations are routed to another app (its customers' messages come as standby events), which may be why: see `fb-openchannel doctor`"
    } else {
        ""
    };
    let mut message_ids = Vec::new();
    let result = result.map(|ids| {
        shared.page_problems.lock().unwrap().remove(&item.page_id);
        let delivered = Delivered {
            result: Some(serde_json::json!({ "message_ids": ids }).to_string()),
            summary: format!(
                "agent reply delivered to the customer ({} message{}: {})",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                ids.join(", ")
            ),
        };
        message_ids = ids;
        delivered
    });
    let first = match outcome::record(shared, &live, Direction::Outbound, &item, result, note).await
    {
        Settled::Delivered => FirstAttempt::Delivered { message_ids },
        Settled::Failed { status, reason } => FirstAttempt::Failed {
            status,
            message: reason,
        },
        Settled::Retry { reason, .. } => FirstAttempt::Queued {
            message: format!(
                "Queued: {reason}. It will be sent automatically when Facebook accepts it."
            ),
        },
    };
    let waiter = shared
        .reply_waiters
        .lock()
        .unwrap()
        .remove(&(item.page_id.clone(), item.dedup_key.clone()));
    match (waiter, first) {
        (Some(waiter), first) => {
            let _ = waiter.send(first);
        }
        // Motion's call was answered long ago (202, queued): the agent hears of the
        // failure in the conversation itself.
        (None, FirstAttempt::Failed { message, .. }) => tell_agent(shared, &item, &message).await,
        (None, _) => {}
    }
}

/// Puts a note into the customer's interaction in Motion saying that an agent's reply
/// was not delivered, and why: the only way to reach the agent once the Reply URL call
/// is over. It is an inbound item of its own (kind `note`), delivered in order with the
/// conversation, clearly marked so that nobody takes it for the customer's words.
async fn tell_agent(shared: &Shared, item: &Item, why: &str) {
    let Ok(reply) = serde_json::from_str::<OutboundReply>(&item.payload) else {
        return;
    };
    let mut quoted: String = reply.text.chars().take(80).collect();
    if reply.text.chars().count() > 80 {
        quoted.push('…');
    }
    let note = AgentNote {
        customer: reply.recipient.clone(),
        thread_id: reply.thread_id.clone(),
        text: format!(
            "[fb-openchannel] The reply \"{quoted}\" was NOT delivered to the customer. {why}"
        ),
    };
    let stored = shared
        .store
        .enqueue(NewItem {
            direction: Direction::Inbound,
            page_id: item.page_id.clone(),
            conversation: item.conversation.clone(),
            dedup_key: DedupKey::note(item.id),
            kind: ItemKind::Note,
            event_ts: now_ms(),
            payload: serde_json::to_string(&note).expect("a note serialises"),
            state: NewState::Pending,
        })
        .await;
    match stored {
        Ok(_) => shared.inbound_wake.notify_one(),
        Err(e) => {
            error!(page_id = %item.page_id, conversation = %item.conversation, item = item.id, "cannot tell the agent in Motion that the reply failed ({e}); it is kept as failed: `fb-openchannel queue list --failed`")
        }
    }
}

/// A message to the agents in a customer's interaction (see [`tell_agent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNote {
    /// Whose interaction: the customer's id (a PSID, or a wall author's id).
    pub customer: String,
    /// The wall thread, for a reply in one.
    #[serde(default)]
    pub thread_id: Option<ObjectId>,
    pub text: String,
}

/// Sends the reply's remaining steps; returns the Graph message ids of all of them.
async fn send_steps(
    shared: &Shared,
    page: &PageConfig,
    item: &Item,
) -> Result<Vec<String>, Failure> {
    let reply: OutboundReply =
        serde_json::from_str(&item.payload).map_err(|e| Failure::Permanent {
            status: 500,
            reason: format!("stored reply does not parse: {e}"),
        })?;
    let customer = Customer::parse(&reply.recipient).map_err(|e| Failure::Permanent {
        status: 400,
        reason: format!("Not sent: {e}."),
    })?;
    if let Customer::Simulated(_) = customer {
        // `fb-openchannel simulate` made this customer up: acknowledge, never call Graph.
        info!(
            page_id = %item.page_id,
            conversation = %item.conversation,
            item = item.id,
            outcome = "simulated",
            "simulated delivery: the agent's reply to a simulated customer was accepted and not sent to Facebook"
        );
        return Ok(vec![format!("simulated-{}", item.id)]);
    }
    let page_id = item.page_id.as_str();
    let page_ref = page.page_id();
    let paused_until = shared
        .page_paused_until
        .lock()
        .unwrap()
        .get(page_id)
        .copied();
    if let Some(until) = paused_until.filter(|&u| u > now_ms()) {
        return Err(Failure::Transient {
            reason: "Facebook rate-limited this page".into(),
            wait: Some(crate::store::until(until, now_ms())),
            rate_limited: false,
            brief: false,
        });
    }

    if let Some(post) = &reply.thread_id {
        return send_wall_reply(shared, page, item, &reply, post).await;
    }
    let Customer::Facebook(psid) = customer else {
        unreachable!("a simulated customer was answered above");
    };
    // Throttled by Facebook: queued without calling Graph.
    check_pause(shared, page_id, Feature::Messages)?;

    let last = shared
        .store
        .last_customer_activity(page_id.to_owned(), item.conversation.clone())
        .await
        .map_err(|e| Failure::Transient {
            reason: e.to_string(),
            wait: None,
            rate_limited: false,
            brief: false,
        })?;
    let messaging_type =
        messaging_type(last, now_ms(), page.human_agent_tag).map_err(|reason| {
            Failure::Permanent {
                status: 422,
                reason,
            }
        })?;

    let file = fetch_agent_file(shared, page, &reply).await?;
    // For a file, Motion puts its name in the body: that is not text to send.
    let text_is_file_name = file.as_ref().is_some_and(|f| f.is_named(&reply.text));
    let mut steps: Vec<Step> = Vec::new();
    if !text_is_file_name && !reply.text.trim().is_empty() {
        steps.extend(
            split_text(&reply.text, MAX_TEXT_CHARS)
                .into_iter()
                .map(Step::Text),
        );
    }
    if let Some(f) = file {
        steps.push(Step::File(f));
    }

    let metadata = format!("{OUR_METADATA}{}", item.id);
    let send = Send {
        recipient: Recipient::Psid(psid),
        messaging_type,
        metadata: &metadata,
    };
    let token = page.access_token.get_ref();
    let mut ids = previous_ids(shared, item).await?;
    let total = steps.len();
    for (index, step) in steps
        .into_iter()
        .enumerate()
        .skip(usize::try_from(item.steps_done).unwrap_or(0))
    {
        let sent = match step {
            Step::Text(text) => {
                shared
                    .live()
                    .graph
                    .send_text(token, &page_ref, &send, &text)
                    .await
            }
            Step::File(f) => {
                let kind = AttachmentType::of_mime(&f.content_type);
                let download = Download::from(f);
                shared
                    .live()
                    .graph
                    .send_file(token, &page_ref, &send, kind, download)
                    .await
            }
        };
        let message_id =
            sent.map_err(|e| graph_failure(shared, page_id, Feature::Messages, "send", e))?;
        shared.metrics.graph_call(page_id, "send", "ok");
        feature_works(shared, page_id, Feature::Messages);
        debug!(page_id, conversation = %item.conversation, item = item.id, message_id = %message_id, "Send API accepted step {}/{total}", index + 1);
        record_sent(shared, page_id, &message_id, item.id).await;
        ids.push(message_id);
        if index + 1 < total {
            let write = Write::Progress {
                item: item.id,
                steps_done: i64::try_from(index + 1).unwrap_or(i64::MAX),
                at: now_ms(),
            };
            shared.ledger.record(&shared.store, write).await;
        }
    }
    Ok(ids)
}

/// The file an agent attached, fetched from Motion (refused over 25 MB).
async fn fetch_agent_file(
    shared: &Shared,
    page: &PageConfig,
    reply: &OutboundReply,
) -> Result<Option<AgentFile>, Failure> {
    Ok(match &reply.attachment_id {
        Some(id) => Some(
            shared
                .live()
                .motion
                .fetch_attachment(page.receive_url.get_ref(), *id, MAX_FILE_BYTES)
                .await
                .map_err(|e| match e {
                    MotionError::Transient(reason) => Failure::Transient {
                        reason,
                        wait: None,
                        rate_limited: false,
                        brief: false,
                    },
                    MotionError::TooLarge(reason) => Failure::Permanent {
                        status: 413,
                        reason: format!("Not sent: {reason}; Facebook accepts files up to 25 MB."),
                    },
                    MotionError::Permanent(reason) => Failure::Permanent {
                        status: 502,
                        reason: format!(
                            "Not sent: the attached file could not be read from Motion: {reason}"
                        ),
                    },
                })?,
        ),
        None => None,
    })
}

/// Facebook's limit for private replies: 7 days after the customer's post or comment.
const PRIVATE_REPLY_WINDOW_S: i64 = 7 * 24 * 3600;

/// Answers in a wall thread: a comment under the customer's latest comment (or on the
/// post), or, with `comment_reply = "private"`, a private Messenger reply to it.
async fn send_wall_reply(
    shared: &Shared,
    page: &PageConfig,
    item: &Item,
    reply: &OutboundReply,
    post: &ObjectId,
) -> Result<Vec<String>, Failure> {
    let page_id = item.page_id.as_str();
    let page_ref = page.page_id();
    let transient = |e: crate::store::StoreError| Failure::Transient {
        reason: e.to_string(),
        wait: None,
        rate_limited: false,
        brief: false,
    };
    let refuse = |status: u16, reason: String| Failure::Permanent { status, reason };

    let file = fetch_agent_file(shared, page, reply).await?;
    let text_is_file_name = file.as_ref().is_some_and(|f| f.is_named(&reply.text));
    let message = if text_is_file_name {
        ""
    } else {
        reply.text.trim()
    };

    // The customer's own objects in this thread, newest first.
    let events = shared
        .store
        .wall_thread(page_id.to_owned(), ConversationKey::post(post.as_str()))
        .await
        .map_err(transient)?;
    let mut comments = Vec::new();
    let mut post_created = None;
    for (kind, payload) in events {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&payload) else {
            continue;
        };
        let Ok(change) = FeedChange::parse(&value["value"]) else {
            continue;
        };
        if change.author_id() != Some(reply.recipient.as_str()) || change.verb != "add" {
            continue;
        }
        match kind {
            ItemKind::Feed(FeedKind::Comment) => comments.push(change),
            ItemKind::Feed(FeedKind::Post) => post_created = post_created.or(change.created_time()),
            _ => {}
        }
    }
    let target = feed::reply_target(post, &comments, post_created);
    let token = page.access_token.get_ref();

    let id = match page.comment_reply {
        CommentReply::Public => {
            let photo = match file {
                Some(f) if AttachmentType::of_mime(&f.content_type) == AttachmentType::Image => {
                    Some(Download::from(f))
                }
                Some(f) => {
                    return Err(refuse(
                        422,
                        format!(
                            "Not sent: a Facebook comment can carry a photo, not a {} file ({}). Send the file by Messenger instead.",
                            AttachmentType::of_mime(&f.content_type).as_str(),
                            f.name
                        ),
                    ));
                }
                None => None,
            };
            if message.is_empty() && photo.is_none() {
                return Err(refuse(400, "Not sent: the reply is empty.".into()));
            }
            check_pause(shared, page_id, Feature::Comments)?;
            // Comments of a page go out at a pace: bursts are what Facebook throttles.
            let slot = shared
                .pauses
                .comment_slot(page_id, page.comment_interval, now_ms());
            tokio::time::sleep(crate::store::until(slot, now_ms())).await;
            let id = shared
                .live()
                .graph
                .comment(token, &target.comment_on, message, photo)
                .await
                .map_err(|e| graph_failure(shared, page_id, Feature::Comments, "comment", e))?;
            shared.metrics.graph_call(page_id, "comment", "ok");
            feature_works(shared, page_id, Feature::Comments);
            id
        }
        CommentReply::Private => {
            let object = match &target.private_to {
                PrivateTo::Comment(id) | PrivateTo::Post(id) => id.clone(),
            };
            if file.is_some() && !message.is_empty() {
                return Err(refuse(
                    422,
                    "Not sent: a private reply is one single message; send either the text or the file.".into(),
                ));
            }
            if let Some(created) = target.created_time
                && (now_ms() / 1000).saturating_sub(created) > PRIVATE_REPLY_WINDOW_S
            {
                return Err(refuse(
                    422,
                    "Not sent: Facebook allows a private reply only within 7 days of the customer's comment.".into(),
                ));
            }
            if let Some(owner) = shared
                .store
                .private_reply_owner(page_id.to_owned(), object.to_string())
                .await
                .map_err(transient)?
                && owner != item.id
            {
                return Err(refuse(
                    422,
                    "Not sent: this comment already got its private reply, and Facebook allows only one. \
                     When the customer answers it, the conversation continues on Messenger."
                        .into(),
                ));
            }
            check_pause(shared, page_id, Feature::PrivateReplies)?;
            let recipient = match target.private_to {
                PrivateTo::Comment(id) => Recipient::CommentId(id),
                PrivateTo::Post(id) => Recipient::PostId(id),
            };
            let metadata = format!("{OUR_METADATA}{}", item.id);
            let send = Send {
                recipient,
                messaging_type: MessagingType::Response,
                metadata: &metadata,
            };
            let sent = match file {
                Some(f) => {
                    let kind = AttachmentType::of_mime(&f.content_type);
                    let download = Download::from(f);
                    shared
                        .live()
                        .graph
                        .send_file(token, &page_ref, &send, kind, download)
                        .await
                }
                None => {
                    shared
                        .live()
                        .graph
                        .send_text(token, &page_ref, &send, message)
                        .await
                }
            };
            let id = sent
                .map_err(|e| graph_failure(shared, page_id, Feature::PrivateReplies, "send", e))?;
            shared.metrics.graph_call(page_id, "send", "ok");
            feature_works(shared, page_id, Feature::PrivateReplies);
            let write = Write::PrivateReply {
                page_id: page_id.to_owned(),
                object_id: object.to_string(),
                item: item.id,
                at: now_ms(),
            };
            shared.ledger.record(&shared.store, write).await;
            id
        }
    };
    record_sent(shared, page_id, &id, item.id).await;
    Ok(vec![id])
}

/// Remembers a Graph message id of ours, so that its echo is recognised.
async fn record_sent(shared: &Shared, page_id: &str, message_id: &str, item: i64) {
    let write = Write::Sent {
        page_id: page_id.to_owned(),
        message_id: message_id.to_owned(),
        item,
        at: now_ms(),
    };
    shared.ledger.record(&shared.store, write).await;
}

enum Step {
    Text(String),
    File(AgentFile),
}

/// Message ids of steps done by earlier attempts of this item. Not knowing them is a
/// reason to try later: answered without them, Motion would miss what was sent.
async fn previous_ids(shared: &Shared, item: &Item) -> Result<Vec<String>, Failure> {
    if item.steps_done == 0 {
        return Ok(Vec::new());
    }
    shared
        .store
        .sent_ids_of(item.id)
        .await
        .map_err(|e| Failure::transient(e.to_string()))
}

/// Records why a page cannot send (shown by /readyz until a send succeeds) and fails
/// the reply with that reason.
fn mark_unhealthy(shared: &Shared, page_id: &str, problem: String) -> Failure {
    shared
        .page_problems
        .lock()
        .unwrap()
        .insert(page_id.to_owned(), problem.clone());
    Failure::Permanent {
        status: 502,
        reason: format!("Not sent: {problem}"),
    }
}

/// What a Graph error means for this reply, for the feature it used and for the page.
fn graph_failure(
    shared: &Shared,
    page_id: &str,
    feature: Feature,
    call: &str,
    e: GraphError,
) -> Failure {
    let label = match e.disposition {
        Disposition::Retry | Disposition::RetryBriefly => "retry",
        Disposition::SlowDown => "rate_limited",
        Disposition::TokenInvalid => "token_invalid",
        Disposition::FeatureBlocked => "feature_blocked",
        Disposition::MissingPermission => "missing_permission",
        Disposition::Permanent => "refused",
    };
    shared.metrics.graph_call(page_id, call, label);
    match e.disposition {
        Disposition::Retry | Disposition::RetryBriefly => Failure::Transient {
            reason: e.to_string(),
            wait: None,
            rate_limited: false,
            brief: e.disposition == Disposition::RetryBriefly,
        },
        Disposition::SlowDown => Failure::Transient {
            reason: format!("Facebook rate-limited this page: {e}"),
            wait: e.retry_after,
            rate_limited: true,
            brief: false,
        },
        Disposition::TokenInvalid => mark_unhealthy(
            shared,
            page_id,
            format!(
                "the Page access token is invalid or expired ({e}): put a new token in this page's access_token and reload"
            ),
        ),
        Disposition::FeatureBlocked => {
            let now = now_ms();
            let first = shared.live().config.facebook.block_pause;
            let (pause, fresh) = shared
                .pauses
                .block(page_id, feature, now, first, e.to_string());
            if fresh {
                warn!(
                    page_id,
                    feature = feature.as_str(),
                    "Facebook throttles {} on page {page_id} ({e}); {} are paused for {} and tried again then, other features go on. It usually lasts hours; see the Page's Support Inbox if it does not end",
                    feature.words(),
                    feature.words(),
                    humantime::format_duration(pause.length)
                );
            }
            paused(feature, &pause, now)
        }
        Disposition::MissingPermission => Failure::Permanent {
            status: 502,
            reason: format!(
                "Not sent: the Page token lacks a permission — {} is needed for {} ({e}). Grant it to the app and make a new Page token.",
                feature.permission(),
                feature.words()
            ),
        },
        Disposition::Permanent => Failure::Permanent {
            status: 502,
            reason: format!("Not sent: Facebook refused the message: {}", e),
        },
    }
}

/// The failure of a reply whose feature is paused: queued until the pause ends.
fn paused(feature: Feature, pause: &Pause, now: i64) -> Failure {
    Failure::Transient {
        reason: format!(
            "Facebook is throttling {} on this Page; queued, next try at {} UTC",
            feature.words(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(u64::try_from(pause.until).unwrap_or(0))
            )
        ),
        wait: Some(crate::store::until(pause.until, now)),
        rate_limited: false,
        brief: false,
    }
}

/// Fails fast without calling Graph while a feature is paused.
fn check_pause(shared: &Shared, page_id: &str, feature: Feature) -> Result<(), Failure> {
    let now = now_ms();
    match shared.pauses.active(page_id, feature, now) {
        Some(pause) => Err(paused(feature, &pause, now)),
        None => Ok(()),
    }
}

/// A call of `feature` went through: a pause of it, if any, is over.
fn feature_works(shared: &Shared, page_id: &str, feature: Feature) {
    if let Some(pause) = shared.pauses.clear(page_id, feature) {
        info!(
            page_id,
            feature = feature.as_str(),
            "{} work again on page {page_id} after a pause of {} (Facebook's throttle is over)",
            feature.words(),
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from(now_ms().saturating_sub(pause.since) / 1000).unwrap_or(0)
            ))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn reply_window() {
        let h = |hours: i64| Some(NOW - hours * HOUR_MS);
        assert_eq!(
            messaging_type(None, NOW, false),
            Ok(MessagingType::Response)
        );
        assert_eq!(
            messaging_type(h(1), NOW, false),
            Ok(MessagingType::Response)
        );
        assert_eq!(
            messaging_type(h(23), NOW, true),
            Ok(MessagingType::Response)
        );
        let refused = messaging_type(h(28), NOW, false).unwrap_err();
        assert!(
            refused.contains("28 h ago") && refused.contains("human_agent_tag"),
            "{refused}"
        );
        assert_eq!(
            messaging_type(h(28), NOW, true),
            Ok(MessagingType::HumanAgent)
        );
        assert_eq!(
            messaging_type(h(167), NOW, true),
            Ok(MessagingType::HumanAgent)
        );
        let refused = messaging_type(h(8 * 24), NOW, true).unwrap_err();
        assert!(
            refused.contains("8 days ago") && refused.contains("after 7 days"),
            "{refused}"
        );
    }

    #[test]
    fn long_text_is_split_on_word_boundaries() {
        let words: Vec<String> = (0..900).map(|i| format!("w{i:03}")).collect();
        let text = words.join(" "); // 4499 characters
        let pieces = split_text(&text, MAX_TEXT_CHARS);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert_eq!(pieces.concat(), text, "nothing lost or added");
        for p in &pieces[..2] {
            assert!(
                p.ends_with(' '),
                "cut after a space: {:?}",
                &p[p.len() - 5..]
            );
        }
    }

    #[test]
    fn split_counts_characters_not_bytes_and_cuts_unbroken_text() {
        let text = "é".repeat(2500);
        let pieces = split_text(&text, MAX_TEXT_CHARS);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [2000, 500]
        );
        assert_eq!(split_text("short", 2000), ["short"]);
        assert!(split_text("", 2000).is_empty());
    }

    #[test]
    fn mime_types_map_to_send_api_kinds() {
        assert_eq!(AttachmentType::of_mime("image/png"), AttachmentType::Image);
        assert_eq!(
            AttachmentType::of_mime("Image/JPEG; q=1"),
            AttachmentType::Image
        );
        assert_eq!(AttachmentType::of_mime("video/mp4"), AttachmentType::Video);
        assert_eq!(AttachmentType::of_mime("audio/mpeg"), AttachmentType::Audio);
        assert_eq!(
            AttachmentType::of_mime("application/pdf"),
            AttachmentType::File
        );
        assert_eq!(AttachmentType::of_mime(""), AttachmentType::File);
    }
}
