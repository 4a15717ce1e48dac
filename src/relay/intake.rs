//! What happens to a verified webhook body: every event in it is stored with its fate
//! (pending, skipped with a reason, or failed) in the same transaction as the raw body,
//! and only then may the listener answer 200 (DESIGN §4 rules 1 and 2).

use tracing::{debug, info, warn};

use crate::config::Notes;
use crate::facebook::webhook::{self, Item, Parsed, Source, WebhookObject};
use crate::ids::{IdError, ObjectId};
use crate::metrics::{EventLabels, PageLabels};
use crate::model::{ItemKind, MessagingKind};
use crate::relay::{Customer, Shared, feed, instagram, messenger, routing};
use crate::store::{Direction, IntakeOutcome, NewItem, NewState, StoreError};

/// Stores a verified webhook body. Returns once it is on disk.
pub async fn accept_webhook(shared: &Shared, body: Vec<u8>) -> Result<IntakeOutcome, StoreError> {
    let outcome = match webhook::parse(&body) {
        Err(e) => {
            let outcome = shared
                .store
                .intake(body, Some(e.to_string()), Vec::new())
                .await?;
            shared.metrics.unreadable.inc();
            warn!(
                webhook_id = outcome.webhook_id,
                "signed webhook body could not be read ({e}); kept as failed webhook {} so it can be replayed after an upgrade",
                outcome.webhook_id
            );
            outcome
        }
        Ok(items) => {
            let mut new_items: Vec<NewItem> =
                items.iter().map(|item| to_new_item(shared, item)).collect();
            for (item, new) in items.iter().zip(new_items.iter_mut()) {
                if echo_to_sort(shared, item, new) {
                    sort_echo(shared, item, new).await;
                }
            }
            watch_routing(shared, &items);
            watch_policy(shared, &items);
            let unreadable = items.iter().filter(|i| i.parsed.is_err()).count();
            shared.metrics.unreadable.inc_by(unreadable as u64);
            for (item, new) in items.iter().zip(&new_items) {
                if let NewState::Failed(reason) = &new.state
                    && crate::logging::ITEM_FAILED.admit()
                {
                    warn!(page_id = %item.page_id, conversation = %new.conversation, "webhook item kept as failed: {reason}; see `fb-openchannel queue list --failed`");
                }
            }
            // Page ids are labels only for configured pages: entries for any other id
            // (7,000 of them once made 14,000 series) all count as "unconfigured".
            let live = shared.live();
            let counts: Vec<(String, String, String)> = new_items
                .iter()
                .map(|n| {
                    let state = match n.state {
                        NewState::Pending => "pending",
                        NewState::Skipped(_) => "skipped",
                        NewState::Failed(_) => "failed",
                    };
                    let page = if live.config.knows_account(&n.page_id) {
                        n.page_id.clone()
                    } else {
                        "unconfigured".to_owned()
                    };
                    (page, n.kind.as_str().to_owned(), state.to_owned())
                })
                .collect();
            let outcome = shared.store.intake(body, None, new_items).await?;
            let now = crate::time::now_ms() as f64 / 1000.0;
            for (page_id, kind, state) in counts {
                shared
                    .metrics
                    .events
                    .get_or_create(&EventLabels {
                        page_id: page_id.clone(),
                        kind,
                        state,
                    })
                    .inc();
                if page_id != "unconfigured" {
                    shared
                        .metrics
                        .last_event
                        .get_or_create(&PageLabels { page_id })
                        .set(now);
                }
            }
            outcome
        }
    };
    debug!(
        webhook_id = outcome.webhook_id,
        new = outcome.new,
        duplicates = outcome.duplicates,
        pending = outcome.pending,
        "webhook stored"
    );
    if outcome.pending > 0 {
        shared.store.new_work(crate::store::Direction::Inbound);
    }
    Ok(outcome)
}

/// Keeps the per-page routing signal: customer messages through `messaging` or only as
/// `standby` (see `routing`); says it once when a Page's conversations look routed to
/// another app.
fn watch_routing(shared: &Shared, items: &[Item]) {
    let live = shared.live();
    for item in items {
        let Ok(Parsed::Messaging(m)) = &item.parsed else {
            continue;
        };
        if !messenger::is_customer_message(m) || live.page(&item.page_id).is_none() {
            continue;
        }
        match item.source {
            Source::Messaging => shared.routing.messaging(&item.page_id),
            Source::Standby => {
                if shared.routing.standby(&item.page_id) {
                    warn!(page_id = %item.page_id, "page {}: {}", item.page_id, routing::FIX);
                }
            }
            Source::Changes => {}
        }
    }
}

/// Meta's policy enforcement (`messaging_policy_enforcement`): a Page blocked from
/// messaging cannot answer anyone until an admin resolves it — `/readyz` names it and the
/// journal says it once per change; an `unblock` ends it.
fn watch_policy(shared: &Shared, items: &[Item]) {
    let live = shared.live();
    for item in items {
        let Ok(Parsed::Messaging(m)) = &item.parsed else {
            continue;
        };
        let Some(policy) = &m.policy_enforcement else {
            continue;
        };
        if live.page(&item.page_id).is_none() {
            continue;
        }
        let action = policy["action"].as_str().unwrap_or_default();
        // Meta's words, on one bounded line.
        let reason: String = policy["reason"]
            .as_str()
            .unwrap_or("no reason given")
            .chars()
            .take(300)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if action.eq_ignore_ascii_case("unblock") {
            shared.health.sent(&item.page_id);
            warn!(page_id = %item.page_id, "page {}: Meta lifted its messaging block (policy enforcement)", item.page_id);
        } else if action.eq_ignore_ascii_case("warning") {
            warn!(page_id = %item.page_id, "page {}: Meta warns the Page about its messaging (policy enforcement: {reason}); a block may follow — see Meta Business Suite → Page quality", item.page_id);
        } else {
            shared.health.problem(
                &item.page_id,
                format!("Meta blocked the Page from messaging (policy enforcement: {reason}): see Meta Business Suite → Page quality and request a review"),
            );
            warn!(page_id = %item.page_id, "page {}: Meta blocked the Page from messaging (policy enforcement: {reason}); answers fail until it is resolved in Meta Business Suite → Page quality", item.page_id);
        }
    }
}

/// An echo without our metadata may still be ours (sent before metadata existed, or by
/// a retry): our sent message ids decide. Echoes from other tools are worth a line: an
/// admin answered outside Motion.
async fn sort_echo(shared: &Shared, item: &Item, new: &mut NewItem) {
    let Ok(Parsed::Messaging(m)) = &item.parsed else {
        return;
    };
    let mid = m.mid().unwrap_or_default().to_owned();
    if shared
        .store
        .is_our_send(item.page_id.clone(), mid.clone())
        .await
        .unwrap_or(false)
    {
        new.state = NewState::Skipped(messenger::ECHO_OURS.into());
        return;
    }
    let app = m
        .message
        .as_ref()
        .and_then(|msg| msg.app_id.as_ref())
        .map(|a| format!(" by app {a}"))
        .unwrap_or_default();
    let what = match new.state {
        NewState::Pending => "forwarded to Motion as a note in the customer's interaction",
        _ => "recorded only (outside_replies = \"ignore\", or nothing to show)",
    };
    info!(
        page_id = %item.page_id,
        conversation = %new.conversation,
        "the account sent a message to this customer from another tool{app} (Meta Business Suite, the Pages or Instagram app…); {what}"
    );
}

pub(super) fn to_new_item(shared: &Shared, item: &Item) -> NewItem {
    NewItem {
        direction: Direction::Inbound,
        page_id: item.page_id.clone(),
        conversation: item.conversation(),
        dedup_key: item.dedup_key(),
        kind: item.kind().to_owned(),
        event_ts: item.timestamp_ms(),
        payload: item.raw.clone(),
        state: fate(shared, item),
    }
}

/// Whether `new` is the echo of a message the Page sent without our metadata, recorded
/// for a configured page: ours or another tool's, our sent ids decide ([`sort_echo`]).
fn echo_to_sort(shared: &Shared, item: &Item, new: &NewItem) -> bool {
    matches!(
        new.kind,
        ItemKind::Messaging(MessagingKind::Echo) | ItemKind::Instagram(MessagingKind::Echo)
    ) && !matches!(new.state, NewState::Failed(_))
        && shared.live().config.knows_account(&item.page_id)
        && matches!(&item.parsed, Ok(Parsed::Messaging(m)) if !messenger::marked_ours(m))
}

/// Whether an item is delivered, and if not, why.
fn fate(shared: &Shared, item: &Item) -> NewState {
    if let Err(reason) = &item.parsed {
        return NewState::Failed(reason.clone());
    }
    let live = shared.live();
    // An account another node of a shared queue has, though this node's config lacks it
    // (copied to one node only): kept and decided with the default settings, for that
    // node to deliver, rather than skipped here.
    let stand_in_page;
    let stand_in_instagram;
    let state = match &item.object {
        WebhookObject::Page => {
            let page = match live.page(&item.page_id) {
                Some(page) => page,
                None if shared
                    .config_drift
                    .elsewhere(&["page", &item.page_id].join(" ")) =>
                {
                    stand_in_page = crate::config::PageConfig::stand_in(&item.page_id);
                    &stand_in_page
                }
                None => {
                    return NewState::Skipped(format!(
                        "page {} is not configured (add a [[page]] for it, or unsubscribe the app from it)",
                        item.page_id
                    ));
                }
            };
            match &item.parsed {
                Ok(Parsed::Messaging(_)) => messenger::intake_state(
                    item,
                    messenger::Forward {
                        standby: page.standby == crate::config::Standby::Forward,
                        outside_replies: page.outside_replies == Notes::Note,
                        reactions: page.reactions == Notes::Note,
                    },
                ),
                Ok(Parsed::Change { field, change, .. }) => feed::intake_state(field, change, page),
                Ok(Parsed::InstagramComment(_) | Parsed::InstagramMention(_)) => {
                    unreachable!("only Instagram webhooks carry them")
                }
                Err(_) => unreachable!("handled above"),
            }
        }
        WebhookObject::Instagram => {
            let account = match live.config.instagram(&item.page_id) {
                Some(account) => account,
                None if shared
                    .config_drift
                    .elsewhere(&["instagram", &item.page_id].join(" ")) =>
                {
                    stand_in_instagram = crate::config::InstagramConfig::stand_in(&item.page_id);
                    &stand_in_instagram
                }
                None => {
                    return NewState::Skipped(format!(
                        "Instagram account {} is not configured (add an [[instagram]] for it, or unsubscribe the app from it)",
                        item.page_id
                    ));
                }
            };
            match &item.parsed {
                Ok(Parsed::Messaging(_)) => instagram::intake_state(
                    item,
                    messenger::Forward {
                        standby: true,
                        outside_replies: account.outside_replies == Notes::Note,
                        reactions: account.reactions == Notes::Note,
                    },
                ),
                Ok(Parsed::InstagramComment(c)) => instagram::comment_state(c, account),
                Ok(Parsed::InstagramMention(_)) if !account.comments => {
                    NewState::Skipped("comments = false for this Instagram account".into())
                }
                Ok(Parsed::InstagramMention(_)) => NewState::Pending,
                Ok(Parsed::Change { field, .. }) => NewState::Skipped(format!(
                    "Instagram change of field {field:?}: not handled by this version"
                )),
                Err(_) => unreachable!("handled above"),
            }
        }
        WebhookObject::Other(object) => {
            return NewState::Skipped(format!(
                "object {object:?} is neither a Facebook Page nor an Instagram account; not handled"
            ));
        }
    };
    // What will be delivered is answered later: its ids go into Graph URLs. One that is
    // not an id is kept as failed (rule 2), never used.
    match (&state, ids_of(item)) {
        (NewState::Pending, Err(e)) => NewState::Failed(format!("{e}; kept, not delivered")),
        _ => state,
    }
}

/// Whether the ids a deliverable item carries are Facebook ids.
fn ids_of(item: &Item) -> Result<(), IdError> {
    match &item.parsed {
        Ok(Parsed::Messaging(m)) => Customer::parse(m.customer_id().unwrap_or_default()).map(drop),
        Ok(Parsed::Change { change, .. }) => {
            let Ok(change) = &**change else {
                return Ok(());
            };
            Customer::parse(change.author_id().unwrap_or_default())?;
            ObjectId::parse(change.post_id().unwrap_or_default())?;
            for id in [change.comment_id(), change.parent_id()]
                .into_iter()
                .flatten()
            {
                ObjectId::parse(id)?;
            }
            Ok(())
        }
        // Parsed as ids already.
        Ok(Parsed::InstagramMention(_)) => Ok(()),
        Ok(Parsed::InstagramComment(c)) => {
            Customer::parse(c.author_id().unwrap_or_default())?;
            for id in [Some(&c.id), Some(&c.media.id), c.parent_id.as_ref()]
                .into_iter()
                .flatten()
            {
                ObjectId::parse(&id.0)?;
            }
            Ok(())
        }
        Err(_) => Ok(()),
    }
}
