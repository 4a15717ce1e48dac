//! The inbound worker: delivers stored Facebook events to Motion.
//!
//! [`dispatch`] hands it one item per conversation at a time, in Facebook time order.
//! An item is made of steps (one notify each); progress is stored after each step so a
//! retry or a restart resumes where it stopped instead of notifying twice. Failures are
//! retried on the schedule of [`super::retry`], then parked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::facebook::feed::FeedChange;
use crate::facebook::graph::DownloadError;
use crate::facebook::ig_comment::InstagramComment;
use crate::facebook::webhook::Messaging;
use crate::model::{DedupKey, ItemKind};
use crate::motion::{AttachmentId, Notify, Upload};
use crate::relay::feed::{self, Envelope};
use crate::relay::instagram;
use crate::relay::messenger::{self, Context, Step};
use crate::relay::names::{customer_name, name_for_motion};
use crate::relay::outcome::{self, Delivered, Failure};
use crate::relay::{Account, Customer, Live, Shared, dispatch};
use crate::store::{Direction, Item, Write, now_ms};

/// Runs the inbound worker until `shutdown` turns true (see [`dispatch::run`]).
pub async fn run(shared: Arc<Shared>, shutdown: watch::Receiver<bool>, drain: Duration) {
    let wake = shared.clone();
    dispatch::run(
        shared,
        Direction::Inbound,
        move || wake.inbound_wake.clone().notified_owned(),
        shutdown,
        drain,
        |shared, item| async move { deliver(&shared, item).await },
    )
    .await
}

/// Delivers one item and records the outcome.
async fn deliver(shared: &Shared, item: Item) {
    let live = shared.live();
    if crate::relay::nodes::left_to_another_node(shared, &live, Direction::Inbound, &item) {
        return;
    }
    let result = deliver_steps(shared, &live, &item)
        .await
        .map(|steps| Delivered {
            result: None,
            summary: format!(
                "delivered to Motion ({steps} notify call{})",
                if steps == 1 { "" } else { "s" }
            ),
        });
    outcome::record(shared, &live, Direction::Inbound, &item, result, "").await;
}

/// Performs the item's remaining steps; returns how many notify calls it took in all.
/// (`live`: the one config snapshot this attempt runs with.)
async fn deliver_steps(shared: &Shared, live: &Live, item: &Item) -> Result<usize, Failure> {
    // Kept, not failed, when its account is gone: it may come back with the next reload.
    let account = live.account(&item.page_id).ok_or_else(|| {
        Failure::transient(format!(
            "account {} is not in the config any more (add its [[page]] or [[instagram]] back, or drop the item)",
            item.page_id
        ))
    })?;
    let (envelope, steps) = match item.kind {
        ItemKind::Note => {
            // A note to the agents (a reply that was not delivered), in the customer's
            // interaction: see `outbound::tell_agent`.
            let note: crate::relay::outbound::AgentNote = serde_json::from_str(&item.payload)
                .map_err(|e| Failure::permanent(format!("stored note does not parse: {e}")))?;
            (
                Envelope {
                    from: note.customer,
                    first_name: None,
                    last_name: None,
                    thread_id: note.thread_id.map(|t| t.to_string()),
                    external_url: None,
                },
                vec![Step::Text(note.text)],
            )
        }
        ItemKind::Feed(_) => {
            let change: serde_json::Value = serde_json::from_str(&item.payload)
                .map_err(|e| Failure::permanent(format!("stored change does not parse: {e}")))?;
            let change = FeedChange::parse(&change["value"]).map_err(Failure::permanent)?;
            feed::plan(&change)
        }
        ItemKind::Messaging(_) | ItemKind::Standby { .. } | ItemKind::Instagram(_) => {
            customer_plan(shared, live, account, item).await?
        }
        ItemKind::InstagramComment => {
            let change: serde_json::Value = serde_json::from_str(&item.payload)
                .map_err(|e| Failure::permanent(format!("stored comment does not parse: {e}")))?;
            let comment = InstagramComment::parse(&change["value"]).map_err(Failure::permanent)?;
            let context = match &comment.parent_id {
                Some(parent) => Context {
                    referenced_text: shared
                        .store
                        .payload_by_key(
                            item.page_id.clone(),
                            DedupKey::instagram_comment(&parent.0),
                        )
                        .await
                        .ok()
                        .flatten()
                        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                        .and_then(|v| v["value"]["text"].as_str().map(str::to_owned)),
                },
                None => Context::default(),
            };
            let (mut envelope, steps) = instagram::comment_plan(&comment, &context);
            if let Account::Instagram(instagram_account) = account {
                envelope.external_url =
                    instagram::permalink(shared, live, instagram_account, &comment.media.id.0)
                        .await;
            }
            (envelope, steps)
        }
        ItemKind::InstagramMention => {
            let Account::Instagram(instagram_account) = account else {
                return Err(Failure::permanent(format!(
                    "a mention stored for {}, which is not an Instagram account",
                    item.page_id
                )));
            };
            let change: serde_json::Value = serde_json::from_str(&item.payload)
                .map_err(|e| Failure::permanent(format!("stored mention does not parse: {e}")))?;
            let mention = crate::facebook::ig_comment::InstagramMention::parse(&change["value"])
                .map_err(Failure::permanent)?;
            instagram::mention_plan(shared, live, instagram_account, &mention).await?
        }
        ItemKind::PageChange
        | ItemKind::Unparsed
        | ItemKind::Reply
        | ItemKind::WallReply
        | ItemKind::InstagramReply => {
            return Err(Failure::permanent(format!(
                "a {} item is never delivered to Motion",
                item.kind
            )));
        }
    };
    notify_steps(shared, live, account, item, &envelope, &steps).await
}

/// Sends the steps not done yet, one notify each, recording progress between them so
/// that a retry resumes after the last one Motion took.
async fn notify_steps(
    shared: &Shared,
    live: &Live,
    account: Account<'_>,
    item: &Item,
    envelope: &Envelope,
    steps: &[Step],
) -> Result<usize, Failure> {
    let receive_url = account.receive_url();
    for (index, step) in steps
        .iter()
        .enumerate()
        .skip(usize::try_from(item.steps_done).unwrap_or(0))
    {
        let mut notify = Notify {
            from: envelope.from.clone(),
            map_key: account.map_key(&live.config.motion).to_owned(),
            body: String::new(),
            first_name: envelope.first_name.as_deref().map(name_for_motion),
            last_name: envelope.last_name.as_deref().map(name_for_motion),
            thread_id: envelope.thread_id.clone(),
            external_url: envelope.external_url.clone(),
            attachment_id: None,
        };
        match step {
            Step::Text(body) => notify.body = body.clone(),
            Step::File {
                url,
                fallback,
                label,
            } => match move_file(shared, live, receive_url, url).await {
                Ok((id, name)) => {
                    notify.attachment_id = Some(id);
                    notify.body = label.clone().unwrap_or(name);
                }
                Err(Failure::Refused { reason, .. } | Failure::TooLarge { reason, .. }) => {
                    warn!(
                        page_id = %item.page_id,
                        conversation = %item.conversation,
                        item = item.id,
                        "attachment could not be moved to Motion ({reason}); sending its link instead"
                    );
                    notify.body = fallback.clone();
                }
                Err(transient) => return Err(transient),
            },
        }
        live.motion.notify(receive_url, &notify).await?;
        if index + 1 < steps.len() {
            let write = Write::Progress {
                item: item.id,
                steps_done: i64::try_from(index + 1).unwrap_or(i64::MAX),
                at: now_ms(),
            };
            shared.ledger.record(&shared.store, write).await;
        }
    }
    Ok(steps.len())
}

/// A messaging event's envelope (the customer and their name) and steps: planned by
/// Messenger's rules for a page, by Instagram's for an Instagram account.
async fn customer_plan(
    shared: &Shared,
    live: &Live,
    account: Account<'_>,
    item: &Item,
) -> Result<(Envelope, Vec<Step>), Failure> {
    let event: Messaging = serde_json::from_str(&item.payload)
        .map_err(|e| Failure::permanent(format!("stored event does not parse: {e}")))?;
    // The echo of one of our own sends whose id was stored after the echo came in: ours
    // after all, nothing to show.
    if matches!(
        item.kind,
        ItemKind::Messaging(crate::model::MessagingKind::Echo)
            | ItemKind::Instagram(crate::model::MessagingKind::Echo)
    ) && echo_is_ours(shared, live, &item.page_id, &event).await
    {
        let envelope = Envelope {
            from: String::new(),
            first_name: None,
            last_name: None,
            thread_id: None,
            external_url: None,
        };
        return Ok((envelope, Vec::new()));
    }
    let context = context_for(shared, &item.page_id, &event).await;
    let mut steps = match item.kind {
        ItemKind::Instagram(_) => instagram::plan(&event, &context),
        _ => messenger::plan(&event, &context),
    };
    if let Some(line) = referral_for(shared, item, &event).await {
        messenger::first_line(&mut steps, &line);
    }
    let customer = Customer::parse(event.customer_id().unwrap_or_default())
        .map_err(|e| Failure::permanent(format!("the event is not deliverable: {e}")))?;
    let profile = customer_name(shared, live, account, &customer).await;
    let envelope = Envelope {
        from: customer.as_str().to_owned(),
        first_name: Some(profile.first_name),
        last_name: Some(profile.last_name),
        thread_id: None,
        external_url: None,
    };
    Ok((envelope, steps))
}

/// Downloads a Facebook file and uploads it to Motion: `(attachment id, file name)`.
async fn move_file(
    shared: &Shared,
    live: &Live,
    receive_url: &str,
    url: &str,
) -> Result<(AttachmentId, String), Failure> {
    // Its room in the file budget is held from before the download until the upload.
    let file = live
        .graph
        .download(url, &shared.files)
        .await
        .map_err(|e| match e {
            DownloadError::Transient(reason) => Failure::transient(reason),
            DownloadError::Permanent(reason) => Failure::permanent(reason),
        })?;
    let name = file.file_name.clone();
    let id = live
        .motion
        .upload_attachment(
            receive_url,
            Upload {
                file_name: file.file_name,
                content_type: file.content_type,
                bytes: file.bytes,
            },
        )
        .await?;
    Ok((id, name))
}

/// Where the customer came from, for their message or button: a referral in the event
/// itself (an ad's first message, "Get Started" with a `ref`), else the latest referral
/// event of the conversation since their previous message — asked of the store only in
/// a conversation that has had one.
async fn referral_for(shared: &Shared, item: &Item, event: &Messaging) -> Option<String> {
    use crate::model::MessagingKind as K;
    if !matches!(event.kind(), K::Message | K::Postback) {
        return None;
    }
    let inline = [
        event.message.as_ref().and_then(|m| m.referral.as_ref()),
        event.postback.as_ref().and_then(|p| p.referral.as_ref()),
    ]
    .into_iter()
    .flatten()
    .find(|r| r.is_object());
    let referral = match inline {
        Some(r) => r.clone(),
        None if !item.after_referral => return None,
        None => {
            let stored = shared
                .store
                .referral_before(
                    item.page_id.clone(),
                    item.conversation.clone(),
                    item.event_ts,
                )
                .await
                .ok()??;
            serde_json::from_str::<serde_json::Value>(&stored).ok()?["referral"].clone()
        }
    };
    messenger::referral_line(&referral)
}

/// Whether an echo is of a message we sent: its id among our sends, or our app's id on it.
async fn echo_is_ours(shared: &Shared, live: &Live, page_id: &str, event: &Messaging) -> bool {
    let app_is_ours = match (
        &live.config.facebook.app_id,
        event.message.as_ref().and_then(|m| m.app_id.as_ref()),
    ) {
        (Some(ours), Some(theirs)) => ours.get_ref() == &theirs.to_string(),
        _ => false,
    };
    app_is_ours
        || messenger::marked_ours(event)
        || shared
            .store
            .is_our_send(
                page_id.to_owned(),
                event.mid().unwrap_or_default().to_owned(),
            )
            .await
            .unwrap_or(false)
}

/// Earlier texts an event refers to (the message replied to, edited or deleted).
async fn context_for(shared: &Shared, page_id: &str, event: &Messaging) -> Context {
    let Some(mid) = messenger::referenced_mid(event) else {
        return Context::default();
    };
    let payload = shared
        .store
        .payload_by_key(page_id.to_owned(), DedupKey::message(mid))
        .await
        .ok()
        .flatten();
    let referenced_text = match payload.as_deref().and_then(messenger::text_of) {
        Some(text) => Some(text),
        // A reaction to, or a reply quoting, an agent's answer: the reply we sent.
        None => shared
            .store
            .sent_payload(page_id.to_owned(), mid.to_owned())
            .await
            .ok()
            .flatten()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .and_then(|v| v["text"].as_str().map(str::to_owned))
            .filter(|t| !t.trim().is_empty()),
    };
    Context { referenced_text }
}
