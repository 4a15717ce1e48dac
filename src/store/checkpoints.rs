//! Copying the WAL back into the database file: a thread of its own copies the bulk
//! beside the writer, and the writer copies the short tail left once a second.

use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::stats::{StoreStats, add_us};

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Under steady writes the writer copies the WAL's tail at every this many checkpoint
/// passes (once a second), or sooner when the WAL holds [`TAIL_AT_BYTES`].
const TAIL_EVERY_PASSES: u64 = 5;

/// A WAL this long has its tail copied by the writer at the next pass, whatever the
/// time: half the size a WAL that starts over is cut back to (`journal_size_limit`).
const TAIL_AT_BYTES: i64 = 32 * 1024 * 1024;

/// Checkpoints the WAL in PASSIVE mode (never blocking the writer) until the store is
/// dropped.
///
/// SQLite starts the WAL over only when a write transaction begins with every frame
/// copied back. Under steady load a checkpoint beside the writer never gets there (frames
/// keep coming while it copies) and the WAL grew without end: 2 GB in 12 s in the
/// benchmark, every commit appending to a growing file. So this thread copies the bulk,
/// and when frames written meanwhile are left, asks the writer to copy that short tail
/// itself between two batches; its next transaction then rewrites the WAL from the start.
///
/// The writer's copy stops every webhook for its length: it fsyncs the WAL, writes the
/// tail into the database and fsyncs that, 3 to 5 ms under load. So it is asked for once
/// a second ([`TAIL_EVERY_PASSES`]), or sooner when the WAL has grown to
/// [`TAIL_AT_BYTES`], not at every pass: at every pass it held the writer 2.5 % of the
/// time at 16 connections, and each pass had fewer changes of the same pages to fold
/// into one write to the database. Without steady writes a pass copies everything and
/// the WAL starts over by itself.
pub(super) fn run_checkpoints(conn: Connection, alive: std::sync::Weak<StoreStats>) {
    let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
    let page: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap_or(4096);
    let mut passes: u64 = 0;
    while let Some(stats) = alive.upgrade() {
        drop(stats);
        std::thread::sleep(CHECKPOINT_EVERY);
        let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        let Some(stats) = alive.upgrade() else { break };
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        passes += 1;
        // What it reports is as of its start; whatever came in meanwhile is the tail.
        if tail_due(passes, pass.unwrap_or(0), page) {
            stats.tail_checkpoint.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether the writer is to copy the WAL's tail after the checkpoint thread's pass
/// number `passes`, which found `frames` frames of `page` bytes in the WAL.
fn tail_due(passes: u64, frames: i64, page: i64) -> bool {
    frames > 0
        && (passes.is_multiple_of(TAIL_EVERY_PASSES)
            || frames.saturating_mul(page) >= TAIL_AT_BYTES)
}

/// The writer's part of checkpointing: the frames the checkpoint thread could not copy.
pub(super) fn checkpoint_tail(conn: &Connection, stats: &StoreStats) {
    if stats.tail_checkpoint.swap(false, Ordering::Relaxed) {
        let started = std::time::Instant::now();
        let _ = conn
            .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
            .and_then(|mut s| s.query_row([], |_| Ok(())));
        stats.tail_checkpoints.fetch_add(1, Ordering::Relaxed);
        add_us(&stats.tail_checkpoint_us, started.elapsed(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer copies the tail once a second, sooner when the WAL is long, and never
    /// when there is nothing in it.
    #[test]
    fn the_writer_copies_the_tail_once_a_second_or_when_the_wal_is_long() {
        let due: Vec<u64> = (1..=12).filter(|&p| tail_due(p, 10, 2048)).collect();
        assert_eq!(due, [5, 10]);
        assert!(tail_due(3, TAIL_AT_BYTES / 2048, 2048));
        assert!(!tail_due(3, TAIL_AT_BYTES / 2048 - 1, 2048));
        assert!(tail_due(1, TAIL_AT_BYTES / 4096, 4096));
        assert!(!tail_due(5, 0, 2048));
    }
}
