//! Reconciliation: what an account's inbox holds (Meta's Conversations API) compared with
//! what webhooks brought, so that a message Meta never sent is not lost either.
//!
//! Each message of the window becomes the event its webhook would have been (a customer's
//! message, or an echo of one the account sent) and goes through the normal intake: parsed
//! by the same code, keyed by its `mid` like the webhook's, stored and delivered in order
//! with its conversation's other messages, attachments moved into Motion like any other.
//! What the queue already holds — the same `mid`, by webhook or by an earlier run — is
//! left alone, so a run twice adds nothing. Messages the account sent go the way of echoes:
//! ours are known by their ids, others become the outside-reply note when that is on.
//!
//! Meta lists conversations newest first with no time filter: a run pages until it is
//! past its window. Calls are paced (`reconcile.pace`); "too many calls" answers pause the
//! run (Meta's own estimate, else `reconcile.pause`) and resume it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Shared, instagram_login, intake};
use crate::config::{ReconcileConfig, Secret};
use crate::facebook::graph::conversations::{InboxMessage, Listing, Platform};
use crate::facebook::graph::{Disposition, GraphClient, GraphError};
use crate::facebook::webhook;
use crate::ids::Sender;
use crate::metrics::PageLabels;
use crate::model::DedupKey;
use crate::store::StoreError;

/// Pages of conversations one run reads at most (25 each).
const MAX_LIST_PAGES: usize = 80;
/// Further pages of one conversation's messages a run reads at most (25 each).
const MAX_MESSAGE_PAGES: usize = 8;
/// Pauses for "too many calls" a run takes before it gives up until the next one.
const MAX_PAUSES: usize = 6;
/// The longest pause a run takes at once, whatever Meta estimates.
const LONGEST_PAUSE: Duration = Duration::from_secs(3600);
/// Journal lines naming recovered messages, per account and run.
const MAX_LINES_PER_RUN: usize = 20;
/// The furthest back a run looks, whatever the daemon's downtime.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one account's comparison found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub account: String,
    pub conversations: usize,
    /// Messages of the window the inbox showed.
    pub messages: usize,
    /// Those the queue did not hold, oldest first.
    pub missing: Vec<Missing>,
    /// Of the missing, how many were stored now (0 with `--dry-run`; fewer than
    /// `missing` when a webhook brought one meanwhile).
    pub stored: usize,
}

impl Report {
    /// Missing messages the customer wrote.
    pub fn customer_missing(&self) -> usize {
        self.missing.iter().filter(|m| m.from_customer).count()
    }
}

/// A message of the inbox the queue did not hold.
#[derive(Debug, Clone)]
pub struct Missing {
    /// The customer's id (the conversation in Motion).
    pub customer: String,
    pub mid: String,
    pub at_ms: i64,
    pub from_customer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("no [[page]] or [[instagram]] account {0} in the config")]
    UnknownAccount(String),
    #[error("the Conversations API refused: {0}")]
    Graph(GraphError),
    #[error("Graph kept answering \"too many calls\" or not at all ({0})")]
    Unavailable(GraphError),
    #[error("the state database: {0}")]
    Store(#[from] StoreError),
}

impl ReconcileError {
    /// What an admin can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ReconcileError::UnknownAccount(_) => "name an id of the config's accounts",
            ReconcileError::Graph(e) if e.disposition == Disposition::MissingPermission => {
                "the token needs pages_messaging and pages_read_engagement (Messenger) or instagram_manage_messages (Instagram): run `fb-openchannel setup` again"
            }
            ReconcileError::Graph(e) if e.disposition == Disposition::TokenInvalid => {
                "the token no longer works: run `fb-openchannel setup` for this account"
            }
            ReconcileError::Graph(_) => "see Meta's message; the next run tries again",
            ReconcileError::Unavailable(_) => {
                "nothing to do: the next run tries again and looks back far enough to cover this one"
            }
            ReconcileError::Store(_) => "see the store's own lines in the journal",
        }
    }
}

/// Where an account's inbox is read, and as whom.
struct Inbox<'a> {
    graph: &'a GraphClient,
    token: Secret,
    /// The node whose `conversations` edge is read (the Page, or the Instagram account
    /// with Instagram Login).
    node: String,
    platform: Platform,
    /// The account as webhooks name it (`entry[].id`).
    account: String,
    object: &'static str,
}

/// Compares `account`'s inbox since `since_ms` with the queue and, unless `dry_run`,
/// stores every message the queue lacks through the normal intake.
pub async fn account(
    shared: &Shared,
    account: &str,
    since_ms: i64,
    dry_run: bool,
) -> Result<Report, ReconcileError> {
    let live = shared.live();
    let pacing = live.config.reconcile.clone();
    let inbox = if let Some(page) = live.config.page(account) {
        Inbox {
            graph: &live.graph,
            token: page.access_token.get_ref().clone(),
            node: account.to_owned(),
            platform: Platform::Messenger,
            account: account.to_owned(),
            object: "page",
        }
    } else if let Some(instagram) = live.config.instagram(account) {
        let calls = instagram_login::calls(shared, &live, instagram).await?;
        Inbox {
            graph: calls.graph,
            token: calls.token,
            node: calls.from.as_segment().to_owned(),
            platform: Platform::Instagram,
            account: account.to_owned(),
            object: "instagram",
        }
    } else {
        return Err(ReconcileError::UnknownAccount(account.to_owned()));
    };
    // Instagram details only a conversation's 20 latest messages.
    let per_conversation = match inbox.platform {
        Platform::Messenger => 25,
        Platform::Instagram => 20,
    };

    let mut report = Report {
        account: account.to_owned(),
        ..Report::default()
    };
    let mut events: Vec<(Value, Missing)> = Vec::new();
    let mut after: Option<String> = None;
    'list: for _ in 0..MAX_LIST_PAGES {
        let listing = paced(&pacing, || {
            inbox.graph.conversations(
                &inbox.token,
                &inbox.node,
                inbox.platform,
                per_conversation,
                after.as_deref(),
            )
        })
        .await?;
        for conversation in listing.entries {
            if conversation.updated_ms < since_ms {
                break 'list;
            }
            report.conversations += 1;
            let mut messages = conversation.messages.entries;
            let mut more = conversation.messages.after;
            // Older messages of a busy conversation, while still in the window (Instagram
            // shows no details past the 20 latest).
            for _ in 0..MAX_MESSAGE_PAGES {
                let (Some(cursor), Platform::Messenger) = (more.take(), inbox.platform) else {
                    break;
                };
                if messages.iter().map(|m| m.created_ms).min().unwrap_or(0) < since_ms {
                    break;
                }
                let page: Listing<InboxMessage> = paced(&pacing, || {
                    inbox.graph.conversation_messages(
                        &inbox.token,
                        &conversation.id,
                        25,
                        Some(cursor.as_str()),
                    )
                })
                .await?;
                messages.extend(page.entries);
                more = page.after;
            }
            messages.retain(|m| m.created_ms >= since_ms);
            messages.sort_by_key(|m| m.created_ms);
            messages.dedup_by(|a, b| a.id == b.id);
            for message in messages {
                report.messages += 1;
                if let Some(event) = event_of(&inbox.account, &message) {
                    events.push(event);
                }
            }
        }
        match listing.after {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    // What the queue already holds, by the keys the intake gives these events.
    let items = webhook::parse(&body_of(
        inbox.object,
        &inbox.account,
        events.iter().map(|(e, _)| e),
    ))
    .unwrap_or_default();
    let keys: HashMap<String, DedupKey> = items
        .iter()
        .filter_map(|item| {
            let Ok(webhook::Parsed::Messaging(m)) = &item.parsed else {
                return None;
            };
            let mid = m.mid()?.to_owned();
            Some((mid, intake::to_new_item(shared, item).dedup_key))
        })
        .collect();
    let known = shared
        .store
        .known_inbound(inbox.account.clone(), keys.values().cloned().collect())
        .await?;
    // An event the intake would not key by its id is left to the intake's own
    // deduplication.
    let missing: Vec<(Value, Missing)> = events
        .into_iter()
        .filter(|(_, m)| keys.get(&m.mid).is_none_or(|k| !known.contains(k)))
        .collect();
    report.missing = missing.iter().map(|(_, m)| m.clone()).collect();
    if !dry_run && !missing.is_empty() {
        let body = body_of(inbox.object, &inbox.account, missing.iter().map(|(e, _)| e));
        let outcome = intake::accept_webhook(shared, body).await?;
        report.stored = outcome.new;
    }
    Ok(report)
}

/// The webhook body (of `object`, `page` or `instagram`) that would have brought
/// these events of `account`.
pub(crate) fn body_of<'a>(
    object: &str,
    account: &str,
    events: impl Iterator<Item = &'a Value>,
) -> Vec<u8> {
    json!({
        "object": object,
        "entry": [{
            "id": account,
            "time": crate::time::now_ms(),
            "messaging": events.collect::<Vec<_>>(),
        }]
    })
    .to_string()
    .into_bytes()
}

/// The messaging event of `message` as its webhook carries it: the customer's message,
/// or the echo of one the account sent. None for what a webhook would not bring either
/// (no text and no file: a reaction, a share Meta shows no link for).
pub(crate) fn event_of(account: &str, message: &InboxMessage) -> Option<(Value, Missing)> {
    if message.text.is_none() && message.attachments.is_empty() {
        return None;
    }
    let from_customer = message.from != account;
    let customer = if from_customer {
        message.from.clone()
    } else {
        message.to.iter().find(|id| *id != account)?.clone()
    };
    let mut body = json!({ "mid": message.id });
    if let Some(text) = &message.text {
        body["text"] = json!(text);
    }
    if !message.attachments.is_empty() {
        body["attachments"] = message
            .attachments
            .iter()
            .map(|a| json!({"type": a.kind, "payload": {"url": a.url}}))
            .collect();
    }
    let (sender, recipient) = if from_customer {
        (&customer, account)
    } else {
        body["is_echo"] = json!(true);
        (&account.to_owned(), customer.as_str())
    };
    let event = json!({
        "sender": {"id": sender},
        "recipient": {"id": recipient},
        "timestamp": message.created_ms,
        "message": body,
    });
    Some((
        event,
        Missing {
            customer,
            mid: message.id.clone(),
            at_ms: message.created_ms,
            from_customer,
        },
    ))
}

/// One Conversations API call, paced, with its pauses for "too many calls".
async fn paced<T, F, Fut>(pacing: &ReconcileConfig, mut call: F) -> Result<T, ReconcileError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, GraphError>>,
{
    let mut pauses = 0;
    loop {
        let outcome = call().await;
        tokio::time::sleep(pacing.pace).await;
        match outcome {
            Ok(value) => return Ok(value),
            Err(e)
                if matches!(
                    e.disposition,
                    Disposition::SlowDown | Disposition::Retry | Disposition::RetryBriefly
                ) =>
            {
                pauses += 1;
                if pauses > MAX_PAUSES {
                    return Err(ReconcileError::Unavailable(e));
                }
                let pause = e.retry_after.unwrap_or(pacing.pause).min(LONGEST_PAUSE);
                info!(
                    "reconcile: Meta answered {e}; asking again in {}",
                    humantime::format_duration(pause)
                );
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(ReconcileError::Graph(e)),
        }
    }
}

/// Runs one comparison of `account` as the daemon does: records its metrics and says in
/// the journal what it found (one line when something was missing, or it failed).
pub async fn run_once(shared: &Shared, account: &str, since_ms: i64) -> Option<Report> {
    let labels = PageLabels {
        page_id: account.to_owned(),
    };
    match self::account(shared, account, since_ms, false).await {
        Ok(report) => {
            let m = &shared.metrics;
            m.reconcile_last_run
                .get_or_create(&labels)
                .set(crate::time::now_ms() as f64 / 1000.0);
            m.reconcile_conversations
                .get_or_create(&labels)
                .set(report.conversations as i64);
            m.reconcile_missing
                .get_or_create(&labels)
                .set(report.missing.len() as i64);
            let recovered = report.missing.iter().filter(|x| x.from_customer).count();
            m.reconcile_recovered
                .get_or_create(&labels)
                .inc_by(recovered.min(report.stored) as u64);
            // One line per recovered message, up to a bound; then one line for the rest.
            for missing in report.missing.iter().take(MAX_LINES_PER_RUN) {
                let who = if missing.from_customer {
                    "a customer message"
                } else {
                    "a message the account sent"
                };
                warn!(
                    page_id = %account,
                    conversation = %missing.customer,
                    "reconcile: {who} ({}, {}) is in the inbox of {account} but no webhook brought it; stored now and delivered in its conversation's order. Meta dropped a webhook: check the subscription with `fb-openchannel doctor`",
                    missing.mid,
                    crate::time::timestamp(missing.at_ms)
                );
            }
            if report.missing.len() > MAX_LINES_PER_RUN {
                warn!(
                    page_id = %account,
                    "reconcile: {} more messages of {account} no webhook brought were stored (`fb-openchannel queue list --page {account}` shows them)",
                    report.missing.len() - MAX_LINES_PER_RUN
                );
            }
            Some(report)
        }
        Err(e) => {
            warn!(page_id = %account, "reconcile: could not compare the inbox of {account}: {e}; {}", e.hint());
            None
        }
    }
}

/// Where the daemon's next run starts: `lookback` before now — and after a stop, before
/// the previous run (or the last webhook stored), at most [`MAX_WINDOW`] back and never
/// past `storage.keep` (older delivered messages are forgotten, and would come again).
pub fn window_start(now: i64, previous: Option<i64>, lookback: Duration, keep: Duration) -> i64 {
    let lookback = crate::time::duration_ms(lookback);
    let furthest = now
        - crate::time::duration_ms(MAX_WINDOW).min(
            crate::time::duration_ms(keep) - crate::time::duration_ms(Duration::from_secs(3600)),
        );
    let start = match previous {
        Some(previous) => (previous - lookback).min(now - lookback),
        None => now - lookback,
    };
    start.max(furthest)
}

/// Compares every account's inbox every `reconcile.every` (0 turns it off), until
/// `shutdown` turns true. The first run starts from the last webhook stored, so a
/// daemon that was down looks back over its downtime.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // Per account, when its last successful run started: a run that failed (Graph down,
    // a dead token) does not move its window, so the next one covers it.
    let started: Option<i64> = shared.store.last_webhook_at().await.ok().flatten();
    let mut previous: HashMap<String, i64> = HashMap::new();
    loop {
        let config = shared.live().config.clone();
        let every = config.reconcile.every;
        if every.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let accounts: Vec<String> = config
            .pages
            .iter()
            .map(|p| p.id.get_ref().clone())
            .chain(config.instagram.iter().map(|a| a.id.get_ref().clone()))
            .collect();
        for account in accounts {
            let now = crate::time::now_ms();
            let last = previous.get(&account).copied().or(started);
            let since = window_start(now, last, config.reconcile.lookback, config.storage.keep);
            tokio::select! {
                report = run_once(&shared, &account, since) => {
                    if report.is_some() {
                        previous.insert(account, now);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
