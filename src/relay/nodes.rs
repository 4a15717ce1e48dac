//! What the nodes of a shared queue (PostgreSQL, two hosts) tell each other of Facebook's
//! throttling: a feature of a Page paused, working again, or the whole Page slowed down
//! by a rate limit. Both nodes call Graph with the same app and Page tokens, so what one
//! meets holds for the other; it is told through the `pauses` table and taken in every
//! 10 s ([`hear_other_nodes`]). On SQLite (one host) nothing is told.

use std::sync::Mutex;

use tracing::{debug, info, warn};

use crate::relay::Shared;
use crate::relay::pauses::{Feature, Pause};
use crate::store::{SharedPause, now_ms};
use crate::time::duration_ms;

/// Tells the other nodes that `feature` of the Page is paused.
pub fn tell_pause(shared: &Shared, page_id: &str, feature: Feature, pause: &Pause) {
    let row = shared_pause(page_id, feature.as_str(), pause);
    tell_other_nodes(shared, page_id, feature.as_str(), Some(row));
}

/// Tells the other nodes that a call of `feature` of the Page went through.
pub fn tell_works(shared: &Shared, page_id: &str, feature: Feature) {
    tell_other_nodes(shared, page_id, feature.as_str(), None);
}

/// A Page's slow-down (Facebook's rate limit: every call of the Page waits) as a row of
/// the shared `pauses` table.
const SLOW_DOWN: &str = "slow_down";

fn shared_pause(page_id: &str, what: &str, p: &Pause) -> SharedPause {
    SharedPause {
        page_id: page_id.to_owned(),
        feature: what.to_owned(),
        since: p.since,
        until: p.until,
        length_ms: duration_ms(p.length),
        reason: p.reason.clone(),
    }
}

/// On a shared queue, tells the other nodes that Facebook asked the Page to slow down
/// until `until` (ms): they use the same app and Page token, so the same limit.
pub fn tell_slow_down(shared: &Shared, page_id: &str, until: i64) {
    let now = now_ms();
    let pause = Pause {
        since: now,
        until,
        length: crate::time::until(until, now),
        reason: "Facebook rate-limited this page".into(),
    };
    tell_other_nodes(
        shared,
        page_id,
        SLOW_DOWN,
        Some(shared_pause(page_id, SLOW_DOWN, &pause)),
    );
}

/// On a shared queue, tells the other nodes that `what` (a feature, or [`SLOW_DOWN`]) of
/// the Page is paused, or that it works again (`None`). In the background: a node that
/// does not hear of it meets the throttle itself, as it would alone.
fn tell_other_nodes(shared: &Shared, page_id: &str, what: &'static str, row: Option<SharedPause>) {
    if shared.store.shared().is_none() {
        return;
    }
    let store = shared.store.clone();
    let page_id = page_id.to_owned();
    tokio::spawn(async move {
        let told = match row {
            Some(row) => store.put_pause(row).await,
            None => store.end_pause(&page_id, what, now_ms()).await,
        };
        if let Err(e) = told {
            debug!(
                page_id,
                what, "cannot tell the other nodes about the pause ({e})"
            );
        }
    });
}

/// How often a node of a shared queue takes in the pauses the other nodes met.
const HEAR_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// On a shared queue: takes in, every 10 s until `shutdown`, the pauses the other nodes
/// met and the ones their calls ended (see [`Pauses::merge`](super::pauses::Pauses::merge)),
/// and compares this node's config with theirs ([`compare_configs`]).
pub async fn hear_other_nodes(
    shared: std::sync::Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if shared.store.shared().is_none() {
        return;
    }
    loop {
        compare_configs(&shared).await;
        tokio::select! {
            _ = tokio::time::sleep(HEAR_EVERY) => {}
            _ = shared.config_drift.wake.notified() => continue,
            _ = shutdown.changed() => return,
        }
        // The server away: the other nodes' pauses wait for it, as everything does.
        let Ok(rows) = shared.store.pauses().await else {
            continue;
        };
        let now = now_ms();
        for (page_id, until) in shared.health.merge_slow_downs(&rows, SLOW_DOWN, now) {
            info!(
                page_id,
                "Facebook rate-limited page {page_id} for another node of the shared queue: this node's calls for the page wait too, until {}",
                crate::time::when(until / 1000)
            );
        }
        for (page_id, feature, pause, started) in shared.pauses.merge(&rows, now) {
            if started {
                warn!(
                    page_id,
                    feature = feature.as_str(),
                    "Facebook throttles {} on page {page_id} ({}), as another node of the shared queue met; {} are paused here too until {}, other features go on",
                    feature.words(),
                    pause.reason,
                    feature.words(),
                    crate::time::when(pause.until / 1000)
                );
            } else {
                info!(
                    page_id,
                    feature = feature.as_str(),
                    "{} work again on page {page_id}: a call of another node of the shared queue went through",
                    feature.words()
                );
            }
        }
    }
}

/// A node that has not written its config's row for this long is gone (stopped, or
/// cut from the server).
const ALIVE_MS: i64 = 3 * HEAR_EVERY.as_millis() as i64;

/// What the other living nodes run that differs from this node's config, by node.
#[derive(Default)]
pub struct Drift {
    known: Mutex<Vec<(String, Vec<String>)>>,
    /// The accounts (`page 123`, `instagram 1784…`) in the config of another node that
    /// wrote its row within the last hour.
    elsewhere: Mutex<std::collections::HashSet<String>>,
    /// Poked by a reload: the nodes compare the new config at once.
    pub wake: tokio::sync::Notify,
}

impl Drift {
    pub fn all(&self) -> Vec<(String, Vec<String>)> {
        self.known.lock().expect("drift lock").clone()
    }

    /// Whether another node of the shared queue (alive within the hour) has `account`
    /// (`page 123`, `instagram 1784…`) in its config.
    pub fn elsewhere(&self, account: &str) -> bool {
        self.elsewhere.lock().expect("drift lock").contains(account)
    }

    /// Whether another node (alive within the hour) has the page or Instagram account `id`.
    pub fn elsewhere_id(&self, id: &str) -> bool {
        let elsewhere = self.elsewhere.lock().expect("drift lock");
        ["page", "instagram"]
            .iter()
            .any(|kind| elsewhere.contains(&[*kind, id].join(" ")))
    }
}

/// How long a node leaves to the others a conversation whose account it lacks (then it
/// looks again: the other node may have stopped, or this node's config may have it).
pub const HAND_OVER_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether this node leaves the item to another node of the shared queue: its account
/// is not in this node's config but is in another node's, alive within the hour (a
/// config copied to one node only, after `setup`). Its conversation is passed over here for
/// [`HAND_OVER_HOLD`], and the other nodes are told; nothing is recorded of it.
pub fn left_to_another_node(
    shared: &Shared,
    live: &crate::relay::Live,
    direction: crate::store::Direction,
    item: &crate::store::Item,
) -> bool {
    if live.account(&item.page_id).is_some() || !shared.config_drift.elsewhere_id(&item.page_id) {
        return false;
    }
    if crate::logging::HANDED_OVER.admit() {
        warn!(
            page_id = %item.page_id,
            conversation = %item.conversation,
            item = item.id,
            "account {} is not in this node's config but another node of the shared queue has it: item {} is left to that node; {SAME_CONFIG}",
            item.page_id,
            item.id
        );
    }
    shared.store.hand_over(direction, item, HAND_OVER_HOLD);
    shared.metrics.left_to_other_nodes.inc();
    true
}

/// What to do about another config, in the journal and `/readyz`.
pub const SAME_CONFIG: &str = "copy the same config file to every node and reload them (systemctl reload fb-openchannel): a webhook or a Reply URL call is handled by whichever node gets it";

/// Writes this node's config digests to the shared queue and compares the other living
/// nodes' with them; says in the journal when what differs changes. The server away:
/// what was known stays.
async fn compare_configs(shared: &Shared) {
    let mine = crate::config::digest(&shared.live().config);
    let text = serde_json::to_string(&mine).expect("a map of strings serialises");
    // Every row kept (an hour): an account a node had that recently is not skipped
    // here while that node is down; its items wait for it.
    let Ok(mut rows) = shared.store.exchange_configs(text, 0).await else {
        return;
    };
    let mut drift = Vec::new();
    let mut elsewhere = std::collections::HashSet::new();
    for row in &rows {
        let Ok(theirs) = serde_json::from_str::<crate::config::Digest>(&row.digest) else {
            debug!(node = %row.node, "another node's config digests are unreadable");
            continue;
        };
        elsewhere.extend(
            theirs
                .keys()
                .filter(|k| crate::config::is_account(k))
                .cloned(),
        );
        if row.seen_at < now_ms() - ALIVE_MS {
            continue;
        }
        let differs = crate::config::differences(&mine, &theirs);
        if !differs.is_empty() {
            drift.push((row.node.clone(), differs));
        }
    }
    *shared.config_drift.elsewhere.lock().expect("drift lock") = elsewhere;
    rows.retain(|r| r.seen_at >= now_ms() - ALIVE_MS);
    let before = std::mem::replace(
        &mut *shared.config_drift.known.lock().expect("drift lock"),
        drift.clone(),
    );
    for (node, differs) in &drift {
        if !before.iter().any(|(n, d)| n == node && d == differs) {
            warn!(
                node = %node,
                "node {node} of the shared queue runs another config than this node: {}; {SAME_CONFIG}",
                differs.join("; ")
            );
        }
    }
    for (node, _) in &before {
        if drift.iter().any(|(n, _)| n == node) {
            continue;
        }
        if rows.iter().any(|r| &r.node == node) {
            info!(node = %node, "node {node} of the shared queue runs the same config as this node now");
        } else {
            info!(node = %node, "node {node} of the shared queue stopped (or lost the server): its config is no longer compared");
        }
    }
}
