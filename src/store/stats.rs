//! The store's counters, for tests, logs and metrics: kept by the engine's threads (the
//! writer, the fsync thread, the checkpoint thread) and read by `/metrics` and `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::now_ms;

/// Counters about the store thread, for tests, logs and metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions that wrote something durable (each answered after an fsync of the
    /// WAL, which one or more of them share).
    pub write_commits: AtomicU64,
    /// Transactions that wrote only relaxed outcomes (no fsync of their own).
    pub relaxed_commits: AtomicU64,
    /// Fsyncs of the WAL by the sync thread, each for one or more durable commits.
    pub wal_syncs: AtomicU64,
    /// Write requests served.
    pub write_requests: AtomicU64,
    /// Checkpoint passes of the checkpoint thread.
    pub checkpoints: AtomicU64,
    /// Requests sent to the store thread and not taken by it yet: a slow or stalled
    /// disk (or another process holding the database's lock) shows here first.
    pub waiting: AtomicU64,
    /// Where acknowledged requests spent their time in the store (`/metrics`, the
    /// benchmark's breakdown of an acknowledgement).
    pub durable: DurableTimes,
    /// The writer's checkpoints of a WAL tail, and the time they held it (µs): every
    /// request that came in meanwhile waited that long.
    pub tail_checkpoints: AtomicU64,
    pub tail_checkpoint_us: AtomicU64,
    /// Set by the checkpoint thread when frames written during its pass are left: the
    /// writer copies that short tail between two batches (see [`super::checkpoints::run_checkpoints`]).
    pub(super) tail_checkpoint: AtomicBool,
    /// Since when (ms) and why writes fail, until one succeeds again: `/readyz`.
    write_failure: std::sync::Mutex<Failures>,
}

/// Where the requests acknowledged to a peer (webhooks, Reply URL calls) spent their
/// time in the store, each stage summed over the requests in it, in microseconds: the
/// mean of a stage is its sum over `requests`. A request waits for the whole of its
/// batch's commit and of its fsync, so those count once per request in them. On SQLite
/// the four stages are the store's whole part of an acknowledgement; on PostgreSQL only
/// `queue` is kept (the server's commit is one step the daemon does not see into).
#[derive(Debug, Default)]
pub struct DurableTimes {
    /// Requests taken by the store thread (or a PostgreSQL worker).
    pub requests: AtomicU64,
    /// Waiting to be taken: the store thread was running other batches.
    pub queue_us: AtomicU64,
    /// Their transaction, from its start to its commit.
    pub commit_us: AtomicU64,
    /// Committed, waiting for the fsync already running when they committed to end.
    pub sync_wait_us: AtomicU64,
    /// Their own fsync of the WAL.
    pub sync_us: AtomicU64,
}

pub(super) fn add_us(total: &AtomicU64, took: std::time::Duration, requests: usize) {
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    total.fetch_add(us.saturating_mul(requests as u64), Ordering::Relaxed);
}

impl DurableTimes {
    /// Requests taken now, sent at `sent`.
    pub(super) fn taken(&self, sent: impl Iterator<Item = std::time::Instant>) {
        let now = std::time::Instant::now();
        for sent in sent {
            self.requests.fetch_add(1, Ordering::Relaxed);
            add_us(&self.queue_us, now.saturating_duration_since(sent), 1);
        }
    }
}

/// What fails, by step: a commit, and the fsync of the WAL after it. Each is cleared by
/// a success of the same step only: with a disk that takes writes but fails every fsync,
/// commits kept clearing the fsync's failure, and `/readyz` flapped between ready and
/// not ready while every webhook was answered 503.
#[derive(Debug, Default)]
struct Failures {
    commit: Option<(i64, String)>,
    sync: Option<(i64, String)>,
}

fn note(slot: &mut Option<(i64, String)>, outcome: &Result<(), String>) {
    match outcome {
        Ok(()) => *slot = None,
        Err(e) => {
            let since = slot.as_ref().map_or_else(now_ms, |(since, _)| *since);
            *slot = Some((since, e.clone()));
        }
    }
}

impl StoreStats {
    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.write_failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Since when (ms) and why the store refuses writes, if it does: the older of a
    /// failing commit and a failing fsync.
    pub fn write_failure(&self) -> Option<(i64, String)> {
        let failures = self.failures();
        [&failures.commit, &failures.sync]
            .into_iter()
            .flatten()
            .min_by_key(|(since, _)| *since)
            .cloned()
    }

    /// The outcome of a commit (or, on PostgreSQL, of a write).
    pub(super) fn note_write(&self, outcome: &Result<(), String>) {
        note(&mut self.failures().commit, outcome);
    }

    /// The outcome of an fsync of the WAL.
    pub(super) fn note_sync(&self, outcome: &Result<(), String>) {
        note(&mut self.failures().sync, outcome);
    }
}
