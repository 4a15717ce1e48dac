//! The dispatcher shared by both directions: runs queued items as tasks, never two of
//! one conversation at once, and at most `delivery.concurrency` at a time.
//!
//! It asks the store for the head item of each conversation (the oldest pending one by
//! Facebook time, then arrival) whose retry time has come. A conversation whose head is
//! waiting for a retry waits as a whole: a later message never overtakes an earlier one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::model::ConversationKey;
use crate::relay::Shared;
use crate::store::{Direction, Item, now_ms};

/// The longest the dispatcher sleeps without looking at the queue; also how soon an item
/// retried by an operator from another process is picked up.
const POLL: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true, then lets in-flight items finish (bounded by
/// `drain`; what is cut stays pending for the next start) and returns.
pub async fn run<W, WF, D, DF>(
    shared: Arc<Shared>,
    direction: Direction,
    wake: W,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    deliver: D,
) where
    W: Fn() -> WF,
    WF: Future<Output = ()>,
    D: Fn(Arc<Shared>, Item) -> DF,
    DF: Future<Output = ()> + Send + 'static,
{
    let concurrency = shared.live().config.delivery.concurrency;
    // Each task gives back its conversation, whose claim then ends.
    let mut tasks: JoinSet<(String, ConversationKey)> = JoinSet::new();

    while !*shutdown.borrow() {
        // Registered before looking at the queue, so a wake-up in between is not lost.
        let woken = wake();
        // Outcomes the store could not take (a full disk) are written first: until they
        // are, their items look pending and must not be handed out again.
        let paused = shared.ledger.flush(&shared.store).await.err();
        let free = if paused.is_some() {
            0
        } else {
            concurrency.saturating_sub(tasks.len())
        };
        // With no free slot, a finishing task is what wakes us; else the next retry.
        let mut wait = paused.unwrap_or(POLL);
        if free > 0 {
            match shared.store.claim_heads(direction, now_ms(), free).await {
                Ok((items, next_due)) => {
                    for item in items {
                        let key = (item.page_id.clone(), item.conversation.clone());
                        // On the heap, so that the task's own future is small: a
                        // delivery's state (the notify's request and client futures
                        // within) is large, and a task's future is moved as a whole
                        // when it is spawned and again when it ends.
                        let work = Box::pin(deliver(shared.clone(), item));
                        tasks.spawn(async move {
                            work.await;
                            key
                        });
                    }
                    if let Some(at) = next_due {
                        wait = crate::time::until(at, now_ms()).min(POLL);
                    }
                }
                Err(e) => {
                    if crate::logging::STORE_FAILED.admit() {
                        error!(
                            direction = direction.as_str(),
                            "cannot read the queue: {e}; trying again in a second"
                        );
                    }
                }
            }
        }
        tokio::select! {
            _ = woken => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((page, conversation)) = done {
                    shared.store.release(direction, &page, &conversation);
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        // Collect every other finished task too, so their conversations free up.
        while let Some(done) = tasks.try_join_next() {
            if let Ok((page, conversation)) = done {
                shared.store.release(direction, &page, &conversation);
            }
        }
    }

    if !tasks.is_empty() {
        info!(
            direction = direction.as_str(),
            in_flight = tasks.len(),
            "stopping: waiting for deliveries in flight to finish"
        );
        let drained =
            tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                direction = direction.as_str(),
                in_flight = tasks.len(),
                "stopping: deliveries still in flight after {drain:?} were cut; they stay pending and are sent again at the next start"
            );
            tasks.abort_all();
        }
    }
    // Last chance for outcomes kept in memory (the backoff does not matter now).
    if shared.ledger.kept() > 0 && shared.ledger.flush_now(&shared.store).await.is_err() {
        error!(
            direction = direction.as_str(),
            kept = shared.ledger.kept(),
            "stopping with delivery outcomes that could not be written (the state database refuses writes); their items are delivered again at the next start"
        );
    }
}
