//! What a delivery learned from a peer but could not write yet: a full disk must delay
//! messages, never double them (DESIGN §4 rule 12).
//!
//! Once Motion took a notify or Graph took a message, the fact must reach the store
//! before the item can be looked at again — else the item is still pending there and
//! the dispatcher hands it out once more (on a full disk that was ~10,000 notifies of
//! the same message in a few seconds). So every such write goes through the
//! [`Ledger`]: it is written at once when the store works; when it does not, it is kept
//! here, in order, and both dispatchers stop handing out work until [`Ledger::flush`]
//! has written everything, trying again on a backoff. `/readyz` says why meanwhile, and
//! the log says it once per interval (the `STORE_FAILED` topic), not per attempt.
//!
//! A write kept here is lost if the process dies before the disk has room again; its
//! item is then delivered again at the next start — like a call in flight at a crash.

use std::sync::Mutex;
use std::time::Duration;

use tracing::{error, info};

use crate::logging;
use crate::store::{Store, StoreError, Write, now_ms};

/// Longest wait between two tries to write what is kept: a disk that has room again is
/// noticed within this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct State {
    /// Facts not yet in the store, oldest first.
    kept: Vec<Write>,
    /// When the store first refused (ms), and why.
    since: Option<(i64, String)>,
    /// When to try again (ms), and the wait after that try fails.
    next_try: i64,
    backoff: Duration,
    /// A flush is writing: another one (the other direction's dispatcher) waits.
    flushing: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
    /// Tries to write what is kept that the store refused (metrics, tests).
    failed_flushes: std::sync::atomic::AtomicU64,
}

/// What `/readyz` says while writes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    pub since_ms: i64,
    pub reason: String,
    pub kept: usize,
    pub next_try_ms: i64,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `write`: in the store now if it takes it, else kept for [`Ledger::flush`].
    /// Either way the fact is not lost while the process lives, so the caller goes on.
    pub async fn record(&self, store: &Store, write: Write) {
        {
            let mut state = self.lock();
            if !state.kept.is_empty() {
                // Behind earlier writes, in order.
                state.kept.push(write);
                return;
            }
        }
        if let Err(e) = store.apply(vec![write.clone()]).await {
            self.keep(write, &e);
        }
    }

    fn keep(&self, write: Write, e: &StoreError) {
        let mut state = self.lock();
        let item = write.item();
        state.kept.push(write);
        if state.since.is_none() {
            let now = now_ms();
            state.since = Some((now, e.to_string()));
            state.backoff = FIRST_BACKOFF;
            state.next_try = now.saturating_add(crate::time::duration_ms(FIRST_BACKOFF));
            drop(state);
            if logging::STORE_FAILED.admit() {
                error!(
                    item,
                    "cannot write a delivery outcome ({e}); it is kept in memory and written first when the state database works again. Deliveries pause until then (nothing is sent twice); webhooks are answered 503 so Facebook sends them again. Free disk space: the daemon resumes by itself"
                );
            }
        }
    }

    /// Whether everything is written, so the dispatchers may hand out work. When not,
    /// tries to write what is kept once its backoff is over; returns how long to wait
    /// before asking again.
    pub async fn flush(&self, store: &Store) -> Result<(), Duration> {
        let (writes, now) = {
            let mut state = self.lock();
            if state.kept.is_empty() {
                return Ok(());
            }
            if state.flushing {
                return Err(FIRST_BACKOFF);
            }
            let now = now_ms();
            if now < state.next_try {
                return Err(crate::time::until(state.next_try, now));
            }
            state.flushing = true;
            (state.kept.clone(), now)
        };
        let count = writes.len();
        let written = store.apply(writes).await;
        self.lock().flushing = false;
        match written {
            Ok(()) => {
                let mut state = self.lock();
                // Writes recorded meanwhile stay, after the written ones.
                state.kept.drain(..count);
                let since = state.since.take();
                let left = state.kept.len();
                if left > 0 {
                    state.since = since.clone();
                }
                drop(state);
                if let Some((since, _)) = since {
                    info!(
                        written = count,
                        "the state database writes again: {count} delivery outcome(s) kept in memory for {} are written; deliveries resume",
                        humantime::format_duration(Duration::from_secs(
                            u64::try_from(now.saturating_sub(since) / 1000).unwrap_or(0)
                        ))
                    );
                }
                if left > 0 {
                    Err(Duration::ZERO)
                } else {
                    Ok(())
                }
            }
            Err(e) => {
                self.failed_flushes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut state = self.lock();
                let wait = state.backoff;
                state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                state.next_try = now_ms().saturating_add(crate::time::duration_ms(wait));
                if let Some(since) = &mut state.since {
                    since.1 = e.to_string();
                }
                let kept = state.kept.len();
                drop(state);
                if logging::STORE_FAILED.admit() {
                    error!(
                        kept,
                        "the state database still cannot write ({e}); {kept} delivery outcome(s) kept in memory, deliveries paused, next try in {}",
                        humantime::format_duration(wait)
                    );
                }
                Err(wait)
            }
        }
    }

    /// Tries to write what is kept now, whatever the backoff (at shutdown).
    pub async fn flush_now(&self, store: &Store) -> Result<(), Duration> {
        self.lock().next_try = 0;
        self.flush(store).await
    }

    /// Why deliveries are paused, if they are.
    pub fn trouble(&self) -> Option<Trouble> {
        let state = self.lock();
        let (since_ms, reason) = state.since.clone()?;
        Some(Trouble {
            since_ms,
            reason,
            kept: state.kept.len(),
            next_try_ms: state.next_try,
        })
    }

    /// Tries to write what is kept that the store refused, since the start.
    pub fn failed_flushes(&self) -> u64 {
        self.failed_flushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of writes kept in memory.
    pub fn kept(&self) -> usize {
        self.lock().kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the store refuses writes every write is kept, in order, and tried again on
    /// a backoff; once it takes them they are written with the times they happened.
    #[tokio::test]
    async fn kept_writes_are_written_in_order_when_the_store_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        let ledger = Ledger::default();
        let item = store
            .enqueue(crate::store::NewItem {
                direction: crate::store::Direction::Inbound,
                page_id: "1".into(),
                conversation: crate::model::ConversationKey::customer("2"),
                dedup_key: crate::model::DedupKey::message("x"),
                kind: crate::model::ItemKind::Messaging(crate::model::MessagingKind::Message),
                event_ts: 1,
                payload: "{}".into(),
                state: crate::store::NewState::Pending,
            })
            .await
            .unwrap()
            .id;
        // Nothing kept: flush says go.
        assert_eq!(ledger.flush(&store).await, Ok(()));

        // Make every write to an item fail, as a full disk does.
        let side = rusqlite::Connection::open(&path).unwrap();
        side.execute_batch(
            "CREATE TRIGGER full BEFORE UPDATE ON items BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .unwrap();
        ledger
            .record(
                &store,
                Write::Progress {
                    item,
                    steps_done: 1,
                    at: 5,
                },
            )
            .await;
        ledger
            .record(
                &store,
                Write::Delivered {
                    item,
                    result: None,
                    at: 6,
                    earlier_attempts: false,
                },
            )
            .await;
        assert_eq!(ledger.kept(), 2);
        let trouble = ledger.trouble().unwrap();
        assert!(trouble.reason.contains("disk is full"), "{trouble:?}");
        // Before the backoff is over nothing is tried; after it, the store still refuses.
        let wait = ledger.flush(&store).await.unwrap_err();
        assert!(wait <= FIRST_BACKOFF, "{wait:?}");
        tokio::time::sleep(wait).await;
        assert!(ledger.flush(&store).await.is_err());
        assert_eq!(ledger.kept(), 2);

        side.execute_batch("DROP TRIGGER full").unwrap();
        let mut result = ledger.flush(&store).await;
        while let Err(wait) = result {
            tokio::time::sleep(wait).await;
            result = ledger.flush(&store).await;
        }
        assert_eq!(ledger.kept(), 0);
        assert!(ledger.trouble().is_none());
        let conn = crate::store::queue::open(store.path()).unwrap();
        let d = crate::store::queue::show(&crate::store::sql::Sql::Lite(&conn), item)
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.row.state, d.steps_done, d.row.updated_at),
            (crate::model::ItemState::Done, 1, 6),
            "written in order, with their own times"
        );
    }
}
