//! Keeps the state database from growing without end: delivered and skipped items older
//! than `storage.keep` are deleted, with the webhook bodies and attempt history behind
//! them. Failed and pending items stay until they are delivered or an operator drops
//! them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::relay::Shared;
use crate::store::{Pruned, duration_ms, now_ms};

/// Rows deleted per store request: a few milliseconds of the store thread at most.
const CHUNK: usize = 500;
/// The first pass waits this long after the start (a restart has its backlog to send).
const FIRST_PASS: Duration = Duration::from_secs(60);
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes a minute after the start, then every hour, until `shutdown` turns true.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut wait = FIRST_PASS;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = EVERY;
        prune_now(&shared).await;
    }
}

/// The time before which delivered history may go: never in the future, whatever
/// `keep` is (a wrapped conversion once made it so, and everything was deleted).
pub fn cutoff(now: i64, keep: Duration) -> i64 {
    now.saturating_sub(duration_ms(keep))
}

/// Deletes everything older than `storage.keep` that may go, in small steps; returns
/// what was deleted.
pub async fn prune_now(shared: &Shared) -> Pruned {
    let keep = shared.live().config.storage.keep;
    let cutoff = cutoff(now_ms(), keep);
    let mut total = Pruned::default();
    loop {
        match shared.store.prune(cutoff, CHUNK).await {
            Ok(step) if step.total() == 0 => break,
            Ok(step) => total += step,
            Err(e) => {
                error!(
                    "cannot delete items older than {} (storage.keep): {e}; the database keeps growing until this works, next try in an hour",
                    humantime::format_duration(keep)
                );
                break;
            }
        }
    }
    if total.total() > 0 {
        info!(
            items = total.items,
            webhooks = total.webhooks,
            other = total.other,
            "deleted {} delivered or skipped items, {} webhook bodies and {} other records older than {} (storage.keep)",
            total.items,
            total.webhooks,
            total.other,
            humantime::format_duration(keep)
        );
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_never_reaches_past_now_whatever_keep_is() {
        let now = 1_800_000_000_000;
        assert_eq!(cutoff(now, Duration::from_secs(86_400)), now - 86_400_000);
        for keep in [
            Duration::MAX,
            Duration::from_secs(300_000_000 * 365 * 86_400),
            Duration::from_millis(u64::MAX),
        ] {
            let c = cutoff(now, keep);
            assert!(c <= now, "{keep:?} gave a cutoff after now: {c}");
        }
        assert_eq!(cutoff(i64::MIN + 5, Duration::from_secs(1)), i64::MIN);
    }
}
