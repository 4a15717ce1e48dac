//! The inbound worker: delivers stored Facebook events to Motion.
//!
//! [`dispatch`] hands it one item per conversation at a time, in Facebook time order.
//! An item is made of steps (one notify each); progress is stored after each step so a
//! retry or a restart resumes where it stopped instead of notifying twice. Failures are
//! retried on the schedule of [`super::retry`], then parked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::PageConfig;
use crate::facebook::feed::FeedChange;
use crate::facebook::graph::{Disposition, DownloadError};
use crate::facebook::webhook::Messaging;
use crate::logging;
use crate::model::{DedupKey, ItemKind};
use crate::motion::{AttachmentId, MotionError, Notify, Upload};
use crate::relay::feed::{self, Envelope};
use crate::relay::messenger::{self, Context, Step};
use crate::relay::retry::RetryPolicy;
use crate::relay::{Customer, Shared, dispatch};
use crate::store::{Direction, Item, Profile, Write, duration_ms, now_ms};

/// How long a name Graph gave us is trusted.
const PROFILE_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// How long a refused lookup is remembered before asking Graph again.
const FALLBACK_TTL_MS: i64 = 24 * 3600 * 1000;

/// Why an item could not be delivered this time.
#[derive(Debug)]
enum Failure {
    /// May work later; `wait` is the peer's own hint, if it gave one.
    Transient {
        reason: String,
        wait: Option<Duration>,
    },
    /// Will not work as it is.
    Permanent(String),
}

impl From<MotionError> for Failure {
    fn from(e: MotionError) -> Self {
        match e {
            MotionError::Transient(reason) => Failure::Transient { reason, wait: None },
            MotionError::Permanent(reason) => Failure::Permanent(reason),
        }
    }
}

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
    let result = match live.page(&item.page_id) {
        Some(page) => deliver_steps(shared, page, &item).await,
        // Kept, not failed: the page may come back with the next reload.
        None => Err(Failure::Transient {
            reason: format!(
                "page {} is not in the config any more (add it back, or drop the item)",
                item.page_id
            ),
            wait: None,
        }),
    };
    let now = now_ms();
    let write = match result {
        Ok(steps) => {
            if logging::DELIVERED.admit() {
                info!(
                    page_id = %item.page_id,
                    conversation = %item.conversation,
                    item = item.id,
                    kind = %item.kind,
                    outcome = "delivered",
                    "delivered to Motion ({steps} notify call{})",
                    if steps == 1 { "" } else { "s" }
                );
            }
            shared.metrics.inbound(&item.page_id, "delivered");
            Write::Delivered {
                item: item.id,
                result: None,
                at: now,
            }
        }
        Err(Failure::Permanent(reason)) => {
            error!(
                page_id = %item.page_id,
                conversation = %item.conversation,
                item = item.id,
                kind = %item.kind,
                outcome = "failed",
                "delivery to Motion failed for good: {reason}. The item is kept as failed; fix the cause, then retry it"
            );
            shared.metrics.inbound(&item.page_id, "failed");
            Write::Failed {
                item: item.id,
                reason,
                at: now,
            }
        }
        Err(Failure::Transient { reason, wait }) => {
            let first = item.first_failure_at.unwrap_or(now);
            if live.retry.exhausted(first, now) {
                let reason = format!(
                    "gave up after {} of failures: {reason}",
                    humantime::format_duration(live.retry.give_up_after)
                );
                error!(
                    page_id = %item.page_id,
                    conversation = %item.conversation,
                    item = item.id,
                    kind = %item.kind,
                    outcome = "failed",
                    "delivery to Motion {reason}. The item is kept as failed; retry it once Motion is reachable"
                );
                shared.metrics.inbound(&item.page_id, "failed");
                Write::Failed {
                    item: item.id,
                    reason,
                    at: now,
                }
            } else {
                let failures = u32::try_from(item.attempts.saturating_add(1)).unwrap_or(u32::MAX);
                let delay = live.retry.delay(failures, wait);
                if logging::RETRYING.admit() {
                    warn!(
                        page_id = %item.page_id,
                        conversation = %item.conversation,
                        item = item.id,
                        kind = %item.kind,
                        outcome = "retry",
                        attempt = failures,
                        "delivery to Motion failed: {reason}; retrying in {}",
                        humantime::format_duration(RetryPolicy::whole_ms(delay))
                    );
                }
                shared.metrics.inbound(&item.page_id, "retry");
                Write::RetryAt {
                    item: item.id,
                    next_at: now.saturating_add(duration_ms(delay)),
                    error: reason,
                    at: now,
                }
            }
        }
    };
    // Kept in memory when the store refuses it: the item is not handed out again
    // until it is written (see `ledger`).
    shared.ledger.record(&shared.store, write).await;
}

/// Performs the item's remaining steps; returns how many notify calls it took in all.
async fn deliver_steps(shared: &Shared, page: &PageConfig, item: &Item) -> Result<usize, Failure> {
    let (envelope, steps) = match item.kind {
        ItemKind::Note => {
            // A note to the agents (a reply that was not delivered), in the customer's
            // interaction: see `outbound::tell_agent`.
            let note: crate::relay::outbound::AgentNote = serde_json::from_str(&item.payload)
                .map_err(|e| Failure::Permanent(format!("stored note does not parse: {e}")))?;
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
                .map_err(|e| Failure::Permanent(format!("stored change does not parse: {e}")))?;
            let change = FeedChange::parse(&change["value"]).map_err(Failure::Permanent)?;
            feed::plan(&change)
        }
        ItemKind::Messaging(_) | ItemKind::Standby { .. } => {
            messenger_plan(shared, page, item).await?
        }
        ItemKind::PageChange | ItemKind::Unparsed | ItemKind::Reply | ItemKind::WallReply => {
            return Err(Failure::Permanent(format!(
                "a {} item is never delivered to Motion",
                item.kind
            )));
        }
    };
    let receive_url = page.receive_url.get_ref();

    for (index, step) in steps
        .iter()
        .enumerate()
        .skip(usize::try_from(item.steps_done).unwrap_or(0))
    {
        let mut notify = Notify {
            from: envelope.from.clone(),
            map_key: page.map_key(&shared.live().config.motion).to_owned(),
            body: String::new(),
            first_name: envelope.first_name.clone(),
            last_name: envelope.last_name.clone(),
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
            } => match move_file(shared, receive_url, url).await {
                Ok((id, name)) => {
                    notify.attachment_id = Some(id);
                    notify.body = label.clone().unwrap_or(name);
                }
                Err(Failure::Permanent(reason)) => {
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
        shared.live().motion.notify(receive_url, &notify).await?;
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

/// A Messenger event's envelope (the customer and their name) and steps.
async fn messenger_plan(
    shared: &Shared,
    page: &PageConfig,
    item: &Item,
) -> Result<(Envelope, Vec<Step>), Failure> {
    let event: Messaging = serde_json::from_str(&item.payload)
        .map_err(|e| Failure::Permanent(format!("stored event does not parse: {e}")))?;
    let context = context_for(shared, &item.page_id, &event).await;
    let steps = messenger::plan(&event, &context);
    let customer = Customer::parse(event.customer_id().unwrap_or_default())
        .map_err(|e| Failure::Permanent(format!("the event is not deliverable: {e}")))?;
    let profile = customer_name(shared, page, &customer).await;
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
    receive_url: &str,
    url: &str,
) -> Result<(AttachmentId, String), Failure> {
    let file = shared
        .live()
        .graph
        .download(url)
        .await
        .map_err(|e| match e {
            DownloadError::Transient(reason) => Failure::Transient { reason, wait: None },
            DownloadError::Permanent(reason) => Failure::Permanent(reason),
        })?;
    let name = file.file_name.clone();
    let id = shared
        .live()
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
    Context {
        referenced_text: payload.as_deref().and_then(messenger::text_of),
    }
}

/// The customer's name: cached, else asked of Graph, else a stable readable fallback.
async fn customer_name(shared: &Shared, page: &PageConfig, customer: &Customer) -> Profile {
    let page_id = page.id.get_ref().clone();
    let now = now_ms();
    let psid = match customer {
        Customer::Facebook(id) => id,
        Customer::Simulated(_) => {
            return Profile {
                first_name: "Simulated".into(),
                last_name: "Customer".into(),
                source: "simulated".into(),
                fetched_at: now,
            };
        }
    };
    let fresh = |p: &Profile| {
        let ttl = if p.source == "graph" {
            PROFILE_TTL_MS
        } else {
            FALLBACK_TTL_MS
        };
        now - p.fetched_at < ttl
    };
    let key = (page_id.clone(), psid.to_string());
    if let Some(p) = shared
        .profiles
        .lock()
        .unwrap()
        .get(&key)
        .filter(|p| fresh(p))
    {
        return p.clone();
    }
    if let Ok(Some(cached)) = shared
        .store
        .profile(page_id.clone(), psid.to_string())
        .await
        && fresh(&cached)
    {
        remember(shared, key, &cached);
        return cached;
    }
    let lookup = shared
        .live()
        .graph
        .profile(page.access_token.get_ref(), psid)
        .await;
    shared.metrics.graph_call(
        &page_id,
        "profile",
        if lookup.is_ok() { "ok" } else { "error" },
    );
    match lookup {
        Ok(p) if p.first_name.is_some() || p.last_name.is_some() => {
            let profile = Profile {
                first_name: p.first_name.unwrap_or_default(),
                last_name: p.last_name.unwrap_or_default(),
                source: "graph".into(),
                fetched_at: now,
            };
            let _ = shared
                .store
                .put_profile(page_id, psid.to_string(), profile.clone())
                .await;
            remember(shared, key, &profile);
            profile
        }
        result => {
            let profile = fallback_profile(psid.as_str(), now);
            match result {
                Err(e)
                    if e.disposition == Disposition::Retry
                        || e.disposition == Disposition::SlowDown =>
                {
                    // Passing trouble: use the fallback now, ask again next time.
                    // Asked again at the customer's next message: while Graph is down
                    // that is every message, so the line is bounded.
                    if logging::NAME_LOOKUP_FAILED.admit() {
                        warn!(page_id = %page_id, conversation = %format!("psid:{psid}"), "customer name lookup failed ({e}); using {:?} for now", full_name(&profile));
                    }
                }
                other => {
                    if let Err(e) = other {
                        info!(page_id = %page_id, conversation = %format!("psid:{psid}"), "Facebook refused the customer name lookup ({e}); using {:?} (the Page may lack Advanced Access to pages_messaging / profile)", full_name(&profile));
                    }
                    let _ = shared
                        .store
                        .put_profile(page_id, psid.to_string(), profile.clone())
                        .await;
                    remember(shared, key, &profile);
                }
            }
            profile
        }
    }
}

/// Most customer names kept in memory; past this the cache starts over (the store keeps
/// them all, so this only costs a store read per customer).
const PROFILE_CACHE_MAX: usize = 50_000;

fn remember(shared: &Shared, key: (String, String), profile: &Profile) {
    let mut cache = shared.profiles.lock().unwrap();
    if cache.len() >= PROFILE_CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, profile.clone());
}

/// "Facebook user 1432": stable for a customer, readable, and never a real name.
pub fn fallback_profile(psid: &str, now: i64) -> Profile {
    let tail: String = psid
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Profile {
        first_name: "Facebook".into(),
        last_name: format!("user {tail}"),
        source: "fallback".into(),
        fetched_at: now,
    }
}

fn full_name(p: &Profile) -> String {
    format!("{} {}", p.first_name, p.last_name)
}
