//! The durable queue: one SQLite database in WAL mode with `synchronous = FULL`.
//!
//! All access goes through one dedicated OS thread that owns the connection, so the async
//! runtime never waits on disk. Callers send it closures; the thread takes every request
//! that is waiting, runs them all in **one transaction** and commits once — one fsync for
//! the whole batch (group commit) — and only then answers each caller. A webhook is
//! therefore acknowledged only after its bytes are on disk, and fifty concurrent webhooks
//! cost a handful of fsyncs, not fifty. Each write runs inside its own savepoint, so
//! one failing request does not undo its neighbours. The reads of a batch run first, in
//! a read transaction of their own: they never see writes that may yet be rolled back,
//! and they are answered even when the writes cannot commit (a full disk).
//!
//! Tables: `webhooks` (raw bodies as received), `items` (one row per event or reply, the
//! queue), `profiles` (cached customer names).

pub mod queue;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};

pub use crate::model::Direction;
use crate::model::{ConversationKey, DedupKey, ItemKind, ItemState};

/// Most requests folded into one transaction. Large enough to absorb a burst, small
/// enough that one commit never holds callers for long.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database could not commit ({0}); nothing of this batch was stored")]
    Commit(String),
    #[error("state database is closed")]
    Closed,
    #[error("cannot open the state database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
}

/// Where webhook bodies not verified yet are spooled: `spool/` beside the database.
pub fn spool_dir(store_path: &Path) -> PathBuf {
    store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("spool")
}

/// The database, its WAL and shared-memory files and the spool directory are for the
/// service user alone: they hold every message and the Reply URL calls. SQLite gives
/// the WAL and -shm files the database file's mode, so the database is created 0600
/// (whatever the umask: outside systemd it was 0644), and files left readable by an
/// earlier version are tightened.
fn private_files(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    }
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot make {} private (0600): {e}", file.display()))?;
        }
    }
    let spool = spool_dir(path);
    match std::fs::DirBuilder::new().mode(0o700).create(&spool) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", spool.display())),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in milliseconds, saturating at `i64::MAX` instead of wrapping negative
/// (a `Duration` holds far more than an `i64` of milliseconds). Every duration that
/// meets a timestamp goes through here, and the sum or difference saturates too.
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The time span from `now` to `at` (ms), zero when `at` is not in the future.
pub fn until(at: i64, now: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// How a new item enters the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewState {
    /// To be delivered.
    Pending,
    /// Recorded, deliberately not delivered; the reason says why.
    Skipped(String),
    /// Cannot be delivered as it is (kept for an operator and for replay after an upgrade).
    Failed(String),
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub direction: Direction,
    pub page_id: String,
    pub conversation: ConversationKey,
    pub dedup_key: DedupKey,
    pub kind: ItemKind,
    pub event_ts: i64,
    pub payload: String,
    pub state: NewState,
}

/// A queued item, as a worker sees it.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: i64,
    pub page_id: String,
    pub conversation: ConversationKey,
    pub dedup_key: DedupKey,
    pub kind: ItemKind,
    pub event_ts: i64,
    pub payload: String,
    pub attempts: i64,
    /// Steps (notify calls) of this item already done: a retry resumes after them.
    pub steps_done: i64,
    pub first_failure_at: Option<i64>,
}

/// One row of the queue, as operators and tests see it.
#[derive(Debug, Clone)]
pub struct ItemSummary {
    pub id: i64,
    pub direction: Direction,
    pub page_id: String,
    pub conversation: ConversationKey,
    pub kind: ItemKind,
    pub state: ItemState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub event_ts: i64,
}

/// The state of an item after [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when the same item was stored before (a repeated call).
    pub new: bool,
    pub state: ItemState,
    pub last_error: Option<String>,
    pub result: Option<String>,
}

/// Pending work of one page in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    pub page_id: String,
    pub direction: String,
    pub pending: i64,
    /// When the oldest pending item was stored (ms).
    pub oldest_created_at: i64,
}

/// What one webhook did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeOutcome {
    pub webhook_id: i64,
    /// Items new to the store.
    pub new: usize,
    /// Items already stored from an earlier delivery of the same event.
    pub duplicates: usize,
    /// New items queued for delivery.
    pub pending: usize,
}

/// What one [`Store::prune`] step deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Delivered or skipped items (with their attempt history).
    pub items: usize,
    /// Webhook bodies no item refers to any more.
    pub webhooks: usize,
    /// Sent-message ids, private-reply records and cached names.
    pub other: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.items + self.webhooks + self.other
    }
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, o: Pruned) {
        self.items += o.items;
        self.webhooks += o.webhooks;
        self.other += o.other;
    }
}

/// A cached customer name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub first_name: String,
    pub last_name: String,
    /// `graph` when Facebook told us, `fallback` when we made it up.
    pub source: String,
    pub fetched_at: i64,
}

/// A fact learned from a peer that the store must keep: what a delivery did. `at` is
/// when it happened (ms), which may be before it is written (see `relay::ledger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// The first `steps_done` steps of an item are done (a retry resumes after them).
    Progress { item: i64, steps_done: i64, at: i64 },
    /// Graph gave this message id to one of our sends: its echo is ours.
    Sent {
        page_id: String,
        message_id: String,
        item: i64,
        at: i64,
    },
    /// `item` sent the one private reply `object_id` may have.
    PrivateReply {
        page_id: String,
        object_id: String,
        item: i64,
        at: i64,
    },
    /// The item is delivered, with what it produced (JSON), if anything.
    Delivered {
        item: i64,
        result: Option<String>,
        at: i64,
    },
    /// Another attempt at `next_at` (ms).
    RetryAt {
        item: i64,
        next_at: i64,
        error: String,
        at: i64,
    },
    /// Parked as failed for an operator.
    Failed { item: i64, reason: String, at: i64 },
}

impl Write {
    /// The item the write is about.
    pub fn item(&self) -> i64 {
        match self {
            Write::Progress { item, .. }
            | Write::Sent { item, .. }
            | Write::PrivateReply { item, .. }
            | Write::Delivered { item, .. }
            | Write::RetryAt { item, .. }
            | Write::Failed { item, .. } => *item,
        }
    }
}

fn write_one(conn: &Connection, write: &Write) -> rusqlite::Result<()> {
    match write {
        Write::Progress {
            item,
            steps_done,
            at,
        } => conn
            .prepare_cached("UPDATE items SET steps_done = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![item, steps_done, at])
            .map(drop),
        Write::Sent {
            page_id,
            message_id,
            item,
            at,
        } => conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sent_messages (page_id, message_id, item_id, sent_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![page_id, message_id, item, at])
            .map(drop),
        Write::PrivateReply {
            page_id,
            object_id,
            item,
            at,
        } => conn
            .prepare_cached(
                "INSERT OR IGNORE INTO private_replies (page_id, object_id, item_id, sent_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![page_id, object_id, item, at])
            .map(drop),
        Write::Delivered { item, result, at } => {
            conn.prepare_cached(
                "UPDATE items SET state = 'done', attempts = attempts + 1, result = ?2,
                        updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![item, result, at])?;
            record_attempt(conn, *item, *at, "delivered", None)
        }
        Write::RetryAt {
            item,
            next_at,
            error,
            at,
        } => {
            conn.prepare_cached(
                "UPDATE items SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3,
                        first_failure_at = COALESCE(first_failure_at, ?4), updated_at = ?4
                  WHERE id = ?1",
            )?
            .execute(params![item, next_at, error, at])?;
            record_attempt(conn, *item, *at, "retry", Some(error))
        }
        Write::Failed { item, reason, at } => {
            conn.prepare_cached(
                "UPDATE items SET state = 'failed', attempts = attempts + 1, last_error = ?2,
                        first_failure_at = COALESCE(first_failure_at, ?3), updated_at = ?3
                  WHERE id = ?1",
            )?
            .execute(params![item, reason, at])?;
            record_attempt(conn, *item, *at, "failed", Some(reason))
        }
    }
}

/// What a request does to the database, and what its caller is promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Writes on disk (fsync) before the caller hears back: what we acknowledge to a
    /// peer (a webhook, a Reply URL call).
    Durable,
    /// Writes that survive a crash of the process at once, and a power cut once the next
    /// durable commit or checkpoint pass (at most ~0.2 s later) syncs the WAL: delivery
    /// outcomes. One lost to a power cut makes its item go out again; it is never lost.
    /// Batches of these alone skip the fsync, which at one connection was half the
    /// store thread's time (one fsync for the webhook, one for its delivery).
    Relaxed,
}

/// Counters about the store thread, for tests, logs and metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions that wrote something durable (each one fsync of the WAL).
    pub write_commits: AtomicU64,
    /// Transactions that wrote only relaxed outcomes (no fsync of their own).
    pub relaxed_commits: AtomicU64,
    /// Write requests served.
    pub write_requests: AtomicU64,
    /// Checkpoint passes of the checkpoint thread.
    pub checkpoints: AtomicU64,
    /// Set by the checkpoint thread when frames written during its pass are left: the
    /// writer copies that short tail between two batches (see [`run_checkpoints`]).
    tail_checkpoint: AtomicBool,
    /// Since when (ms) and why writes fail, until one succeeds again: `/readyz`.
    write_failure: std::sync::Mutex<Option<(i64, String)>>,
}

impl StoreStats {
    /// Since when (ms) and why the store refuses writes, if it does.
    pub fn write_failure(&self) -> Option<(i64, String)> {
        self.write_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note_write(&self, outcome: &Result<(), String>) {
        let mut failure = self.write_failure.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => *failure = None,
            Err(e) => {
                let since = failure.as_ref().map_or_else(now_ms, |(since, _)| *since);
                *failure = Some((since, e.clone()));
            }
        }
    }
}

/// Runs a request (or, given `None`, skips it because its transaction could not start).
type Job = Box<dyn FnOnce(Option<&Connection>) -> Finish + Send>;
/// Called after the batch's commit with its outcome, to answer the caller.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Request {
    access: Access,
    job: Job,
}

/// Handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<Request>,
    stats: Arc<StoreStats>,
    path: Arc<PathBuf>,
    recent_bodies: Arc<RecentBodies>,
}

/// How many of the latest webhook bodies are found again by their digest.
const RECENT_BODIES: usize = 4096;

/// The digests of the latest webhook bodies and their rows, so that a body received
/// again (Facebook's redelivery, a captured body replayed a thousand times) points at
/// the stored copy instead of adding one. In memory, not an index: an index of random
/// digests cost a B-tree leaf per webhook (+78 % WAL written at intake). A body older
/// than the last [`RECENT_BODIES`], or received again after a restart, is stored once
/// more; its items are deduplicated either way. Used by the store thread only.
#[derive(Default)]
struct RecentBodies {
    inner: std::sync::Mutex<Recent>,
}

/// Digest → row, and the digests oldest first (the next to forget).
#[derive(Default)]
struct Recent {
    rows: std::collections::HashMap<[u8; 32], i64>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl RecentBodies {
    /// The row holding a body with this digest, if it is recent and still stored (a
    /// row remembered from a batch that could not commit, or pruned since, is not).
    fn stored(&self, conn: &Connection, digest: &[u8; 32]) -> rusqlite::Result<Option<i64>> {
        let id = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.rows.get(digest).copied()
        };
        let Some(id) = id else { return Ok(None) };
        let found: Option<Vec<u8>> = conn
            .prepare_cached("SELECT digest FROM webhooks WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(found.filter(|d| d[..] == digest[..]).map(|_| id))
    }

    fn remember(&self, digest: [u8; 32], id: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Recent { rows, order } = &mut *inner;
        if rows.insert(digest, id).is_none() {
            order.push_back(digest);
        }
        while order.len() > RECENT_BODIES {
            if let Some(old) = order.pop_front() {
                rows.remove(&old);
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        private_files(path).map_err(open_err)?;
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        schema::prepare(&conn).map_err(|e| open_err(e.to_string()))?;
        // Every statement of the store stays prepared (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);

        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(StoreStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run_store_thread(conn, rx, &thread_stats))
            .map_err(|e| open_err(e.to_string()))?;
        // Checkpoints run beside the writer, not inside one of its commits: SQLite's
        // automatic checkpoint would hold up every request of that batch.
        let checkpointer = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        let alive = Arc::downgrade(&stats);
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run_checkpoints(checkpointer, alive))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store {
            tx,
            stats,
            path: Arc::new(path.to_owned()),
            recent_bodies: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Runs `f` on the store thread inside the current batch's transaction and returns
    /// its result once the batch is committed (see [`Access`] for what that promises).
    pub async fn call<R, F>(&self, access: Access, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (answer, wait) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = conn.map(|conn| run_request(conn, access != Access::Read, f));
            Box::new(move |commit: Result<(), String>| {
                let outcome = match (result, commit) {
                    (Some(Ok(r)), Ok(())) => Ok(r),
                    (Some(Err(e)), _) => Err(StoreError::Sqlite(e)),
                    (_, Err(e)) => Err(StoreError::Commit(e)),
                    (None, Ok(())) => Err(StoreError::Closed),
                };
                let _ = answer.send(outcome);
            })
        });
        self.tx
            .send(Request { access, job })
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores one verified webhook: its raw bytes and every event in it, in one
    /// transaction. Events already stored (same direction, page and dedup key) count as
    /// duplicates and are left as they are.
    pub async fn intake(
        &self,
        body: Vec<u8>,
        parse_error: Option<String>,
        items: Vec<NewItem>,
    ) -> Result<IntakeOutcome, StoreError> {
        // Hashed here, off the store thread.
        let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
        let recent = self.recent_bodies.clone();
        self.call(Access::Durable, move |conn| {
            let now = now_ms();
            let webhook_id = match recent.stored(conn, &digest)? {
                Some(id) => id,
                None => {
                    conn.prepare_cached(
                        "INSERT INTO webhooks (received_at, body, parse_error, digest)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![now, body, parse_error, &digest[..]])?;
                    let id = conn.last_insert_rowid();
                    recent.remember(digest, id);
                    id
                }
            };
            let mut outcome = IntakeOutcome {
                webhook_id,
                new: 0,
                duplicates: 0,
                pending: 0,
            };
            let mut insert = conn.prepare_cached(
                "INSERT OR IGNORE INTO items
                   (direction, page_id, conversation, dedup_key, kind, event_ts, payload,
                    webhook_id, state, last_error, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            )?;
            for item in items {
                let (state, reason) = match &item.state {
                    NewState::Pending => ("pending", None),
                    NewState::Skipped(r) => ("skipped", Some(r.as_str())),
                    NewState::Failed(r) => ("failed", Some(r.as_str())),
                };
                let inserted = insert.execute(params![
                    item.direction.as_str(),
                    item.page_id,
                    item.conversation,
                    item.dedup_key,
                    item.kind,
                    item.event_ts,
                    item.payload,
                    webhook_id,
                    state,
                    reason,
                    now
                ])?;
                if inserted == 0 {
                    outcome.duplicates += 1;
                } else {
                    outcome.new += 1;
                    if item.state == NewState::Pending {
                        outcome.pending += 1;
                    }
                }
            }
            Ok(outcome)
        })
        .await
    }

    /// The next deliverable item of each conversation that has one due (its head: the
    /// oldest pending item by Facebook time, then arrival), at most `limit`, leaving out
    /// conversations in `busy` (they have an item in flight) — and when the next head
    /// that is not busy becomes due, if one is waiting for a retry.
    pub async fn due_heads(
        &self,
        direction: Direction,
        now: i64,
        limit: usize,
        busy: Vec<(String, ConversationKey)>,
    ) -> Result<(Vec<Item>, Option<i64>), StoreError> {
        self.call(Access::Read, move |conn| {
            // The direction is part of the text, not a parameter: with one statement for
            // both, SQLite re-planned it at every call (alternating bindings).
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT i.id, i.page_id, i.conversation, i.dedup_key, i.kind, i.event_ts, i.payload,
                        i.attempts, i.steps_done, i.first_failure_at, h.next_attempt_at
                   FROM heads h JOIN items i ON i.id = h.item_id
                  WHERE h.direction = '{}'
                  ORDER BY h.next_attempt_at, i.event_ts, i.id
                  LIMIT ?1",
                direction.as_str()
            ))?;
            // Enough rows to fill `limit` after skipping the busy ones, plus one more to
            // learn when the next retry is due.
            let want = (limit + busy.len() + 1) as i64;
            let mut rows = stmt.query(params![want])?;
            let mut items = Vec::new();
            while let Some(r) = rows.next()? {
                let (page_id, conversation): (String, ConversationKey) = (r.get(1)?, r.get(2)?);
                if busy
                    .iter()
                    .any(|(p, c)| *p == page_id && *c == conversation)
                {
                    continue;
                }
                let next_attempt_at: i64 = r.get(10)?;
                if next_attempt_at > now {
                    return Ok((items, Some(next_attempt_at)));
                }
                if items.len() == limit {
                    break;
                }
                items.push(Item {
                    id: r.get(0)?,
                    page_id,
                    conversation,
                    dedup_key: r.get(3)?,
                    kind: r.get(4)?,
                    event_ts: r.get(5)?,
                    payload: r.get(6)?,
                    attempts: r.get(7)?,
                    steps_done: r.get(8)?,
                    first_failure_at: r.get(9)?,
                });
            }
            Ok((items, None))
        })
        .await
    }

    /// Records that the first `steps_done` steps of an item are done.
    pub async fn record_progress(&self, id: i64, steps_done: i64) -> Result<(), StoreError> {
        self.apply(vec![Write::Progress {
            item: id,
            steps_done,
            at: now_ms(),
        }])
        .await
    }

    /// Marks an item delivered, with what it produced (JSON), if anything.
    pub async fn complete(&self, id: i64, result: Option<String>) -> Result<(), StoreError> {
        self.apply(vec![Write::Delivered {
            item: id,
            result,
            at: now_ms(),
        }])
        .await
    }

    /// Writes facts learned from a peer, in order, in one transaction: either all of
    /// them or none. Delivery outcomes are [`Access::Relaxed`]; a private reply's
    /// record is durable (Facebook allows one).
    pub async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let access = if writes
            .iter()
            .any(|w| matches!(w, Write::PrivateReply { .. }))
        {
            Access::Durable
        } else {
            Access::Relaxed
        };
        self.call(access, move |conn| {
            for w in &writes {
                write_one(conn, w)?;
            }
            Ok(())
        })
        .await
    }

    /// Queues one item unless its twin (same direction, page, dedup key) is stored
    /// already; either way returns the stored item's current state.
    pub async fn enqueue(&self, item: NewItem) -> Result<Enqueued, StoreError> {
        self.call(Access::Durable, move |conn| {
            let now = now_ms();
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO items
                   (direction, page_id, conversation, dedup_key, kind, event_ts, payload,
                    state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)",
                )?
                .execute(params![
                    item.direction.as_str(),
                    item.page_id,
                    item.conversation,
                    item.dedup_key,
                    item.kind,
                    item.event_ts,
                    item.payload,
                    now
                ])?;
            conn.prepare_cached(
                "SELECT id, state, last_error, result FROM items
                  WHERE direction = ?1 AND page_id = ?2 AND dedup_key = ?3",
            )?
            .query_row(
                params![item.direction.as_str(), item.page_id, item.dedup_key],
                |r| {
                    Ok(Enqueued {
                        id: r.get(0)?,
                        new: inserted > 0,
                        state: r.get(1)?,
                        last_error: r.get(2)?,
                        result: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    /// Remembers the Graph message id of one of our sends.
    pub async fn record_sent(
        &self,
        page_id: String,
        message_id: String,
        item_id: i64,
    ) -> Result<(), StoreError> {
        self.apply(vec![Write::Sent {
            page_id,
            message_id,
            item: item_id,
            at: now_ms(),
        }])
        .await
    }

    /// The posts and comments of a wall thread (`post:<id>`), newest first:
    /// `(kind, payload)`.
    pub async fn wall_thread(
        &self,
        page_id: String,
        conversation: ConversationKey,
    ) -> Result<Vec<(ItemKind, String)>, StoreError> {
        self.call(Access::Read, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, payload FROM items
                  WHERE kind IN ('wall_post', 'wall_comment') AND direction = 'in'
                    AND page_id = ?1 AND conversation = ?2
                  ORDER BY event_ts DESC, id DESC",
            )?;
            let rows = stmt.query_map(params![page_id, conversation], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    /// Whether a wall thread (`post:<id>`) of this page was ever received.
    pub async fn has_thread(
        &self,
        page_id: String,
        conversation: ConversationKey,
    ) -> Result<bool, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM items
                  WHERE kind IN ('wall_post', 'wall_comment') AND direction = 'in'
                    AND page_id = ?1 AND conversation = ?2)",
            )?
            .query_row(params![page_id, conversation], |r| r.get(0))
        })
        .await
    }

    /// The item that sent the private reply to `object_id`, if one did.
    pub async fn private_reply_owner(
        &self,
        page_id: String,
        object_id: String,
    ) -> Result<Option<i64>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.prepare_cached(
                "SELECT item_id FROM private_replies WHERE page_id = ?1 AND object_id = ?2",
            )?
            .query_row(params![page_id, object_id], |r| r.get(0))
            .optional()
        })
        .await
    }

    /// Records that `item_id` sent the private reply to `object_id`.
    pub async fn record_private_reply(
        &self,
        page_id: String,
        object_id: String,
        item_id: i64,
    ) -> Result<(), StoreError> {
        self.apply(vec![Write::PrivateReply {
            page_id,
            object_id,
            item: item_id,
            at: now_ms(),
        }])
        .await
    }

    /// Whether `message_id` is one we sent for `page_id`.
    pub async fn is_our_send(
        &self,
        page_id: String,
        message_id: String,
    ) -> Result<bool, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM sent_messages WHERE page_id = ?1 AND message_id = ?2",
            )?
            .query_row(params![page_id, message_id], |r| r.get::<_, i64>(0))
            .map(|n| n > 0)
        })
        .await
    }

    /// Facebook time (ms) of the customer's latest own action in a conversation: what
    /// opens Messenger's reply window. `None` when we never saw the customer.
    pub async fn last_customer_activity(
        &self,
        page_id: String,
        conversation: ConversationKey,
    ) -> Result<Option<i64>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.prepare_cached(
                "SELECT last_ts FROM customer_activity WHERE page_id = ?1 AND conversation = ?2",
            )?
            .query_row(params![page_id, conversation], |r| r.get(0))
            .optional()
        })
        .await
    }

    /// Schedules another attempt of an item at `next_at` (ms).
    pub async fn retry_later(
        &self,
        id: i64,
        next_at: i64,
        error: String,
    ) -> Result<(), StoreError> {
        self.apply(vec![Write::RetryAt {
            item: id,
            next_at,
            error,
            at: now_ms(),
        }])
        .await
    }

    /// Parks an item as failed, with the reason, for an operator to see, retry or drop.
    pub async fn fail(&self, id: i64, reason: String) -> Result<(), StoreError> {
        self.apply(vec![Write::Failed {
            item: id,
            reason,
            at: now_ms(),
        }])
        .await
    }

    /// The payload of a stored inbound event by its dedup key (e.g. `mid:…`).
    pub async fn payload_by_key(
        &self,
        page_id: String,
        dedup_key: DedupKey,
    ) -> Result<Option<String>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.prepare_cached("SELECT payload FROM items WHERE direction = 'in' AND page_id = ?1 AND dedup_key = ?2")?.query_row(params![page_id, dedup_key],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    pub async fn profile(
        &self,
        page_id: String,
        psid: String,
    ) -> Result<Option<Profile>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.prepare_cached(
                "SELECT first_name, last_name, source, fetched_at FROM profiles
                  WHERE page_id = ?1 AND psid = ?2",
            )?
            .query_row(params![page_id, psid], |r| {
                Ok(Profile {
                    first_name: r.get(0)?,
                    last_name: r.get(1)?,
                    source: r.get(2)?,
                    fetched_at: r.get(3)?,
                })
            })
            .optional()
        })
        .await
    }

    pub async fn put_profile(
        &self,
        page_id: String,
        psid: String,
        profile: Profile,
    ) -> Result<(), StoreError> {
        self.call(Access::Relaxed, move |conn| {
            conn.prepare_cached(
                "INSERT INTO profiles (page_id, psid, first_name, last_name, source, fetched_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (page_id, psid) DO UPDATE SET first_name = excluded.first_name,
                   last_name = excluded.last_name, source = excluded.source,
                   fetched_at = excluded.fetched_at",
            )?
            .execute(params![
                page_id,
                psid,
                profile.first_name,
                profile.last_name,
                profile.source,
                profile.fetched_at
            ])
            .map(drop)
        })
        .await
    }

    /// Deletes up to `chunk` delivered or skipped items last changed before `cutoff` (ms)
    /// with their attempt history, up to `chunk` webhook bodies received before `cutoff`
    /// that no item refers to any more (bodies that could not be read stay, for replay),
    /// and up to `chunk` each of older sent-message ids, private-reply records and cached
    /// names. Pending and failed items are never touched. Call it again while it deletes
    /// something: small steps leave the store thread to the webhooks in between.
    pub async fn prune(&self, cutoff: i64, chunk: usize) -> Result<Pruned, StoreError> {
        self.call(Access::Relaxed, move |conn| {
            let chunk = chunk as i64;
            let item_bound = first_id_since(conn, "items", "created_at", cutoff)?;
            let items = conn
                .prepare_cached(
                    "DELETE FROM items WHERE id IN (
                        SELECT id FROM items
                         WHERE id < ?2 AND state IN ('done', 'skipped') AND updated_at < ?1
                         ORDER BY id LIMIT ?3)",
                )?
                .execute(params![cutoff, item_bound, chunk])?;
            let webhook_bound = first_id_since(conn, "webhooks", "received_at", cutoff)?;
            let webhooks = conn
                .prepare_cached(
                    "DELETE FROM webhooks WHERE id IN (
                        SELECT w.id FROM webhooks w
                         WHERE w.id < ?1 AND w.parse_error IS NULL
                           AND NOT EXISTS (SELECT 1 FROM items i WHERE i.webhook_id = w.id)
                         ORDER BY w.id LIMIT ?2)",
                )?
                .execute(params![webhook_bound, chunk])?;
            let mut other = 0;
            for sql in [
                // A reply still pending (give_up_after may exceed keep) needs the ids
                // of its parts already sent, or a retry would send them again.
                "DELETE FROM sent_messages WHERE rowid IN
                    (SELECT rowid FROM sent_messages WHERE sent_at < ?1
                        AND (item_id IS NULL
                             OR item_id NOT IN (SELECT id FROM items WHERE state = 'pending'))
                      LIMIT ?2)",
                "DELETE FROM private_replies WHERE rowid IN
                    (SELECT rowid FROM private_replies WHERE sent_at < ?1 LIMIT ?2)",
                "DELETE FROM profiles WHERE rowid IN
                    (SELECT rowid FROM profiles WHERE fetched_at < ?1 LIMIT ?2)",
            ] {
                other += conn.prepare_cached(sql)?.execute(params![cutoff, chunk])?;
            }
            Ok(Pruned {
                items,
                webhooks,
                other,
            })
        })
        .await
    }

    /// Every item, oldest first.
    pub async fn items(&self) -> Result<Vec<ItemSummary>, StoreError> {
        self.call(Access::Read, |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, direction, page_id, conversation, kind, state, attempts, last_error, event_ts
                   FROM items ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ItemSummary {
                    id: r.get(0)?,
                    direction: r.get(1)?,
                    page_id: r.get(2)?,
                    conversation: r.get(3)?,
                    kind: r.get(4)?,
                    state: r.get(5)?,
                    attempts: r.get(6)?,
                    last_error: r.get(7)?,
                    event_ts: r.get(8)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Stored webhook bodies that could not be read: `(id, parse_error)`.
    pub async fn failed_webhooks(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.call(Access::Read, |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, parse_error FROM webhooks WHERE parse_error IS NOT NULL ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Number of stored webhook bodies.
    pub async fn webhook_count(&self) -> Result<i64, StoreError> {
        self.call(Access::Read, |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM webhooks")?
                .query_row([], |r| r.get(0))
        })
        .await
    }

    /// Pending items per page and direction, with the creation time of the oldest.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        self.call(Access::Read, |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT page_id, direction, COUNT(*), MIN(created_at) FROM items
                  WHERE state = 'pending' GROUP BY page_id, direction ORDER BY page_id, direction",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(QueueStat {
                    page_id: r.get(0)?,
                    direction: r.get(1)?,
                    pending: r.get(2)?,
                    oldest_created_at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Number of items per state, e.g. `[("done", 3), ("pending", 1)]`.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.call(Access::Read, |conn| {
            let mut stmt =
                conn.prepare("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }
}

/// Adds a row to an item's attempt history.
/// The first id of `table` stored at or after `since` (ms), or one past the last id.
/// Ids grow with time, so a scan for older rows can stop there instead of reading the
/// whole table.
fn first_id_since(
    conn: &Connection,
    table: &'static str,
    stored_at: &'static str,
    since: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(&format!(
        "SELECT COALESCE(
            (SELECT id FROM {table} WHERE {stored_at} >= ?1 ORDER BY id LIMIT 1),
            (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}))"
    ))?
    .query_row([since], |r| r.get(0))
}

pub(crate) fn record_attempt(
    conn: &Connection,
    item: i64,
    at: i64,
    outcome: &str,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO attempts (item_id, at, outcome, error) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![item, at, outcome, error])
    .map(drop)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Checkpoints the WAL in PASSIVE mode (never blocking the writer) until the store is
/// dropped.
///
/// SQLite starts the WAL over only when a write transaction begins with every frame
/// copied back. Under steady load a checkpoint beside the writer never gets there (frames
/// keep coming while it copies) and the WAL grew without end: 2 GB in 12 s in the
/// benchmark, every commit appending to a growing file. So this thread copies the bulk,
/// and when frames written meanwhile are left, asks the writer to copy that short tail
/// itself between two batches; its next transaction then rewrites the WAL from the start.
fn run_checkpoints(conn: Connection, alive: std::sync::Weak<StoreStats>) {
    let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
    while let Some(stats) = alive.upgrade() {
        drop(stats);
        std::thread::sleep(CHECKPOINT_EVERY);
        let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        let Some(stats) = alive.upgrade() else { break };
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        // What it reports is as of its start; whatever came in meanwhile is the tail.
        if pass.is_ok_and(|frames| frames > 0) {
            stats.tail_checkpoint.store(true, Ordering::Relaxed);
        }
    }
}

/// The writer's part of checkpointing: the frames the checkpoint thread could not copy.
fn checkpoint_tail(conn: &Connection, stats: &StoreStats) {
    if stats.tail_checkpoint.swap(false, Ordering::Relaxed) {
        let _ = conn
            .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
            .and_then(|mut s| s.query_row([], |_| Ok(())));
    }
}

/// Runs one SQL statement without arguments, prepared once per connection: the store
/// thread runs these thousands of times a second.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs a request. A write runs inside its own savepoint, so that a failing one is undone
/// alone and the rest of the batch goes on; a read changes nothing and needs none.
fn run_request<R>(
    conn: &Connection,
    write: bool,
    f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    if !write {
        return f(conn);
    }
    run_cached(conn, "SAVEPOINT request")?;
    match f(conn) {
        Ok(r) => {
            run_cached(conn, "RELEASE request")?;
            Ok(r)
        }
        Err(e) => {
            let _ = run_cached(conn, "ROLLBACK TO request");
            let _ = run_cached(conn, "RELEASE request");
            Err(e)
        }
    }
}

fn run_store_thread(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: &StoreStats,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    // schema::prepare left the connection at synchronous = FULL.
    let mut syncing = true;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Reads first, in a transaction of their own: they see only committed data, and
        // a batch whose writes cannot commit (a full disk) still answers them — the
        // queue, /readyz and /metrics keep working.
        let (reads, rest): (Vec<Request>, Vec<Request>) =
            batch.drain(..).partition(|r| r.access == Access::Read);
        batch = rest;
        if !reads.is_empty() {
            let begin = run_cached(&conn, "BEGIN").map_err(|e| e.to_string());
            let run = begin.is_ok().then_some(&conn);
            let finishers: Vec<Finish> = reads.into_iter().map(|r| (r.job)(run)).collect();
            let outcome = begin.and_then(|()| {
                run_cached(&conn, "COMMIT").map_err(|e| {
                    let _ = run_cached(&conn, "ROLLBACK");
                    e.to_string()
                })
            });
            for finish in finishers {
                finish(outcome.clone());
            }
        }
        if batch.is_empty() {
            checkpoint_tail(&conn, stats);
            continue;
        }
        let writes = batch.len() as u64;
        // One durable request makes the whole batch fsync at its commit (which also
        // syncs every relaxed commit before it: they are earlier frames of the same WAL).
        let durable = batch.iter().any(|r| r.access == Access::Durable);
        let mut mode = Ok(());
        if durable != syncing {
            let set = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            mode = run_cached(&conn, set).map_err(|e| e.to_string());
            if mode.is_ok() {
                syncing = durable;
            }
        }
        // A durable batch that could not turn the fsync on must not be acknowledged; a
        // relaxed one that stays at FULL only costs time.
        let begin = match mode {
            Err(e) if durable => Err(e),
            _ => run_cached(&conn, "BEGIN IMMEDIATE").map_err(|e| e.to_string()),
        };
        let run = begin.is_ok().then_some(&conn);
        let finishers: Vec<Finish> = batch.drain(..).map(|request| (request.job)(run)).collect();
        let outcome = match begin {
            Err(e) => Err(e),
            Ok(()) => match run_cached(&conn, "COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = run_cached(&conn, "ROLLBACK");
                    Err(e.to_string())
                }
            },
        };
        if outcome.is_ok() {
            if durable {
                stats.write_commits.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.relaxed_commits.fetch_add(1, Ordering::Relaxed);
            }
            stats.write_requests.fetch_add(writes, Ordering::Relaxed);
        }
        stats.note_write(&outcome);
        if let Err(e) = &outcome
            && crate::logging::STORE_FAILED.admit()
        {
            tracing::error!(error = %e, "state database transaction failed ({e}); the requests in it were answered with an error and nothing was acknowledged. A full disk or a read-only filesystem: free space, then the daemon resumes by itself");
        }
        for finish in finishers {
            finish(outcome.clone());
        }
        checkpoint_tail(&conn, stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> NewItem {
        NewItem {
            direction: Direction::Inbound,
            page_id: "1".into(),
            conversation: crate::model::ConversationKey::customer(&(n % 16).to_string()),
            dedup_key: crate::model::DedupKey::message(&n.to_string()),
            kind: crate::model::ItemKind::Messaging(crate::model::MessagingKind::Message),
            event_ts: n as i64,
            payload: "{}".into(),
            state: NewState::Pending,
        }
    }

    /// A body received again points at its stored copy, unless that copy is gone (pruned,
    /// or never committed): then it is stored again, never pointed at a missing row.
    #[tokio::test]
    async fn a_recent_body_is_stored_once_and_a_missing_copy_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let first = store
            .intake(b"{1}".to_vec(), None, vec![event(1)])
            .await
            .unwrap();
        let again = store
            .intake(b"{1}".to_vec(), None, vec![event(1)])
            .await
            .unwrap();
        assert_eq!(again.webhook_id, first.webhook_id);
        assert_eq!(store.webhook_count().await.unwrap(), 1);
        let id = first.webhook_id;
        store
            .call(Access::Durable, move |c| {
                c.execute("UPDATE items SET webhook_id = NULL", [])?;
                c.execute("DELETE FROM webhooks WHERE id = ?1", [id])
            })
            .await
            .unwrap();
        // (SQLite may give the new row the deleted one's id: the body is what counts.)
        let third = store.intake(b"{1}".to_vec(), None, vec![]).await.unwrap();
        assert_eq!(store.webhook_count().await.unwrap(), 1);
        let body: Vec<u8> = store
            .call(Access::Read, move |c| {
                c.query_row(
                    "SELECT body FROM webhooks WHERE id = ?1",
                    [third.webhook_id],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(body, b"{1}");
        // The memory is bounded: past the latest RECENT_BODIES, a body is stored anew.
        for n in 0..RECENT_BODIES {
            store
                .intake(format!("{{{n}x}}").into_bytes(), None, vec![])
                .await
                .unwrap();
        }
        let before = store.webhook_count().await.unwrap();
        store.intake(b"{1}".to_vec(), None, vec![]).await.unwrap();
        assert_eq!(store.webhook_count().await.unwrap(), before + 1);
    }

    /// Outside systemd the umask used to leave the database readable by everyone.
    #[tokio::test]
    async fn the_database_and_its_spool_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let store = Store::open(&path).unwrap();
        store
            .intake(b"{}".to_vec(), None, vec![event(1)])
            .await
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state.db-wal")), 0o600);
        assert_eq!(mode(&spool_dir(&path)), 0o700);
        drop(store);
        // A database an earlier version left world-readable is tightened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    /// A webhook is fsynced before it is acknowledged; a delivery outcome is committed
    /// (another connection sees it, so a killed process keeps it) without an fsync.
    #[tokio::test]
    async fn webhooks_are_fsynced_and_delivery_outcomes_only_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        let stats = store.stats();
        store
            .intake(b"{}".to_vec(), None, vec![event(1)])
            .await
            .unwrap();
        assert_eq!(stats.write_commits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.relaxed_commits.load(Ordering::Relaxed), 0);

        let (items, _) = store
            .due_heads(Direction::Inbound, now_ms(), 10, Vec::new())
            .await
            .unwrap();
        store.complete(items[0].id, None).await.unwrap();
        assert_eq!(stats.write_commits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.relaxed_commits.load(Ordering::Relaxed), 1);
        let other = Connection::open(&path).unwrap();
        let state: String = other
            .query_row(
                "SELECT state FROM items WHERE id = ?1",
                [items[0].id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(state, "done");

        // The next durable commit is a full one again.
        store
            .intake(b"{}".to_vec(), None, vec![event(2)])
            .await
            .unwrap();
        assert_eq!(stats.write_commits.load(Ordering::Relaxed), 2);
        let sync: i64 = store
            .call(Access::Read, |c| {
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))
            })
            .await
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    /// Old delivered and skipped items go with their history and webhook bodies; pending
    /// and failed items, unreadable bodies and anything recent stay.
    #[tokio::test]
    async fn prune_deletes_old_history_and_keeps_work_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        let mut ids = Vec::new();
        for n in 0..6 {
            store
                .intake(format!("body {n}").into_bytes(), None, vec![event(n)])
                .await
                .unwrap();
            ids.push(n as i64 + 1);
        }
        store
            .intake(b"not json".to_vec(), Some("unreadable".into()), Vec::new())
            .await
            .unwrap();
        let (done_old, skipped_old, pending_old, failed_old, done_new, pending_new) =
            (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
        for id in [done_old, done_new] {
            store.complete(id, None).await.unwrap();
        }
        store
            .fail(failed_old, "Motion said 400".into())
            .await
            .unwrap();
        let side = Connection::open(&path).unwrap();
        side.execute(
            "UPDATE items SET state = 'skipped' WHERE id = ?1",
            [skipped_old],
        )
        .unwrap();
        // Make the first four (and every webhook body but the last two) a year old.
        let old = now_ms() - 365 * 86_400_000;
        for id in [done_old, skipped_old, pending_old, failed_old] {
            side.execute(
                "UPDATE items SET created_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, old],
            )
            .unwrap();
        }
        side.execute(
            "UPDATE webhooks SET received_at = ?1 WHERE id <= 4 OR parse_error IS NOT NULL",
            [old],
        )
        .unwrap();
        // Old sent-message ids: one of a delivered item, one of an item still pending
        // (a reply part already sent, needed if it is retried).
        for (id, mid) in [(done_old, "m.done"), (pending_old, "m.pending")] {
            store.record_sent("1".into(), mid.into(), id).await.unwrap();
        }
        side.execute("UPDATE sent_messages SET sent_at = ?1", [old])
            .unwrap();

        let cutoff = now_ms() - 30 * 86_400_000;
        let mut total = Pruned::default();
        loop {
            // One row per step: the steps must add up.
            let step = store.prune(cutoff, 1).await.unwrap();
            if step.total() == 0 {
                break;
            }
            total += step;
        }
        assert_eq!(
            (total.items, total.webhooks, total.other),
            (2, 2, 1),
            "{total:?}"
        );
        let sent: String = side
            .query_row(
                "SELECT group_concat(message_id) FROM sent_messages",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sent, "m.pending");
        let left: Vec<(i64, String)> = side
            .prepare("SELECT id, state FROM items ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            left,
            vec![
                (pending_old, "pending".into()),
                (failed_old, "failed".into()),
                (done_new, "done".into()),
                (pending_new, "pending".into()),
            ]
        );
        let bodies: Vec<i64> = side
            .prepare("SELECT id FROM webhooks ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            bodies,
            vec![3, 4, 5, 6, 7],
            "kept: referenced, recent, unreadable"
        );
        let orphan_attempts: i64 = side
            .query_row(
                "SELECT COUNT(*) FROM attempts WHERE item_id NOT IN (SELECT id FROM items)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphan_attempts, 0);
    }

    /// Under writes that never pause, the WAL still starts over: it holds about one
    /// checkpoint interval of frames, not every frame since the store was opened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let seq = Arc::new(AtomicU64::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (store, seq) = (store.clone(), seq.clone());
            writers.spawn(async move {
                while store.stats().checkpoints.load(Ordering::Relaxed) < 15 {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    store
                        .intake(b"{}".to_vec(), None, vec![event(n)])
                        .await
                        .unwrap();
                }
            });
        }
        while writers.join_next().await.is_some() {}
        // The WAL header's checkpoint sequence number counts the times it started over.
        let wal = std::fs::read(dir.path().join("state.db-wal")).unwrap();
        let restarts = u32::from_be_bytes(wal[12..16].try_into().unwrap());
        assert!(
            restarts >= 10,
            "the WAL started over {restarts} times in 15 checkpoint passes"
        );
    }
}
