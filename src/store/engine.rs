//! The store's engine: one OS thread owns the connection and runs every request in
//! batches, one transaction and one commit per kind of request in a batch; a second
//! thread fsyncs the WAL before what is acknowledged is answered, and a third copies the
//! WAL back into the database file. What each request is promised is its [`Access`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::sql::{DbError, Sql};
use super::stats::{StoreStats, add_us};
use super::{Store, StoreError, schema};

/// The longest a request waits for PostgreSQL: within the few seconds Facebook gives a
/// webhook, and a monitoring probe of `/readyz`.
const PG_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// Most requests folded into one transaction. Large enough to absorb a burst, small
/// enough that one commit never holds callers for long.
const MAX_BATCH: usize = 512;

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
    /// They wait for no fsync, which at one connection was half the store thread's time
    /// (one fsync for the webhook, one for its delivery).
    Relaxed,
}

/// Runs a request (or, given `None`, skips it because its transaction could not start).
pub(super) type Job = Box<dyn FnOnce(Option<&Sql<'_>>) -> Finish + Send>;
/// Called after the batch's commit with its outcome, to answer the caller.
pub(super) type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

pub(super) struct Request {
    pub(super) access: Access,
    pub(super) job: Job,
    /// When it was handed to the store.
    pub(super) sent: std::time::Instant,
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
        // The writer's WAL writes go out one call per commit (see `walwrites`).
        let conn = if super::walwrites::register() {
            Connection::open_with_flags_and_vfs(
                path,
                rusqlite::OpenFlags::default(),
                super::walwrites::NAME,
            )
        } else {
            Connection::open(path)
        }
        .map_err(|e| open_err(e.to_string()))?;
        schema::prepare(&conn).map_err(|e| open_err(e.to_string()))?;
        // Every statement of the store stays prepared (rusqlite keeps 16 by default)...
        conn.set_prepared_statement_cache_capacity(64);
        // ... and stays as it was prepared. Without this SQLite compiles a statement again
        // whenever a value bound to it might change its plan (a `LIMIT ?`, an ORDER BY
        // beside a bound column): 19 % of the store thread went to parsing the referral
        // lookup, at every message. Our plans are chosen for the indexes, not the values.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(|e| open_err(e.to_string()))?;

        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(StoreStats::default());
        let thread_stats = stats.clone();
        // The WAL's name as SQLite has it: beside the database, symbolic links resolved.
        let mut wal = conn
            .path()
            .map_or_else(|| path.as_os_str().to_owned(), std::ffi::OsString::from);
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run_store_thread(conn, rx, &thread_stats, wal))
            .map_err(|e| open_err(e.to_string()))?;
        // Checkpoints run beside the writer, not inside one of its commits: SQLite's
        // automatic checkpoint would hold up every request of that batch.
        let checkpointer = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        let alive = Arc::downgrade(&stats);
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || super::checkpoints::run_checkpoints(checkpointer, alive))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store {
            tx,
            stats,
            path: Arc::new(path.to_owned()),
            recent_bodies: Arc::default(),
            claims: Arc::default(),
            shared: None,
            wakes: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Whether the store thread answers a read (systemd's watchdog asks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(Access::Read, |c| c.one("SELECT 1", &[], |_| Ok(())))
            .await
    }

    /// Runs `f` on the store thread inside the current batch's transaction and returns
    /// its result once the batch is committed (see [`Access`] for what that promises).
    pub(super) async fn call<R, F>(&self, access: Access, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<R, DbError> + Send + 'static,
    {
        let (answer, wait) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = conn.map(|conn| run_request(conn, access != Access::Read, f));
            Box::new(move |commit: Result<(), String>| {
                let outcome = match (result, commit) {
                    (Some(Ok(r)), Ok(())) => Ok(r),
                    (Some(Err(e)), _) => Err(StoreError::Db(e)),
                    (_, Err(e)) => Err(StoreError::Commit(e)),
                    (None, Ok(())) => Err(StoreError::Closed),
                };
                let _ = answer.send(outcome);
            })
        });
        let sent = std::time::Instant::now();
        if !self.send(Request { access, job, sent }) {
            return Err(StoreError::Closed);
        }
        let Some(shared) = &self.shared else {
            return wait.await.map_err(|_| StoreError::Closed)?;
        };
        // A server that hangs (stopped, or behind a partition that drops packets) would
        // hold every webhook, Reply URL call and /readyz for as long as it does (25 and
        // 60 s were seen, and /readyz then said "ready"): answer within Facebook's wait,
        // 503 meanwhile. What the request did, if it does run later, is found again by
        // its dedup key when Facebook sends it again.
        match tokio::time::timeout(PG_ANSWER, wait).await {
            Ok(answer) => answer.map_err(|_| StoreError::Closed)?,
            Err(_) => {
                let reason = format!(
                    "PostgreSQL at {} did not answer within {} s (the server hangs, or packets to it are dropped)",
                    shared.server,
                    PG_ANSWER.as_secs()
                );
                if access != Access::Read {
                    self.stats.note_write(&Err(reason.clone()));
                }
                Err(StoreError::Shared(reason))
            }
        }
    }

    /// Runs `f` like [`Store::call`] without waiting for it: what it does is not needed
    /// by the caller, and a failure is harmless (a lease that runs out by itself).
    pub(super) fn call_detached<F>(&self, access: Access, f: F)
    where
        F: FnOnce(&Sql<'_>) -> Result<(), DbError> + Send + 'static,
    {
        let job: Job = Box::new(move |conn| {
            if let Some(conn) = conn {
                let _ = run_request(conn, access != Access::Read, f);
            }
            Box::new(|_| {})
        });
        let sent = std::time::Instant::now();
        self.send(Request { access, job, sent });
    }

    /// A handle that does not keep the store open.
    pub(super) fn downgrade(&self) -> WeakStore {
        WeakStore {
            tx: self.tx.downgrade(),
            stats: self.stats.clone(),
            path: self.path.clone(),
            recent_bodies: self.recent_bodies.clone(),
            claims: self.claims.clone(),
            shared: self.shared.clone(),
            wakes: self.wakes.clone(),
        }
    }

    /// Hands a request to the store's thread(s); false when the store is closed.
    pub(super) fn send(&self, request: Request) -> bool {
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(request).is_err() {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// A [`Store`] that does not keep its threads running: for the store's own helpers.
pub(super) struct WeakStore {
    tx: mpsc::WeakUnboundedSender<Request>,
    stats: Arc<StoreStats>,
    path: Arc<PathBuf>,
    recent_bodies: Arc<super::RecentBodies>,
    claims: Arc<super::Claims>,
    shared: Option<Arc<super::Shared>>,
    wakes: Arc<super::wakes::Wakes>,
}

impl WeakStore {
    pub(super) fn upgrade(&self) -> Option<Store> {
        Some(Store {
            tx: self.tx.upgrade()?,
            stats: self.stats.clone(),
            path: self.path.clone(),
            recent_bodies: self.recent_bodies.clone(),
            claims: self.claims.clone(),
            shared: self.shared.clone(),
            wakes: self.wakes.clone(),
        })
    }
}

/// The state directory of a store kept elsewhere (PostgreSQL): the folder of
/// `storage.path`, with its private spool.
pub(super) fn make_state_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let spool = spool_dir(path);
    match std::fs::DirBuilder::new().mode(0o700).create(&spool) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", spool.display())),
    }
}

/// Where webhook bodies not verified yet are spooled: `spool/` beside the database.
pub fn spool_dir(store_path: &Path) -> PathBuf {
    beside(store_path, "spool")
}

/// `name` in the state directory: the folder of the database.
pub fn beside(store_path: &Path, name: &str) -> PathBuf {
    store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(name)
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

/// Runs one SQL statement without arguments, prepared once per connection: the store
/// thread runs these thousands of times a second.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs a request. On SQLite a write runs inside its own savepoint, so that a failing
/// one is undone alone and the rest of the batch goes on; a read changes nothing and
/// needs none. On PostgreSQL every request is a transaction of its own: a failing one
/// is rolled back whole.
fn run_request<R>(
    sql: &Sql<'_>,
    write: bool,
    f: impl FnOnce(&Sql<'_>) -> Result<R, DbError>,
) -> Result<R, DbError> {
    let conn = match sql {
        Sql::Lite(conn) => *conn,
        Sql::Pg(conn) => {
            let result = f(sql);
            if result.is_err() {
                conn.borrow_mut().failed = true;
            }
            return result;
        }
    };
    if !write {
        return f(sql);
    }
    run_cached(conn, "SAVEPOINT request")?;
    match f(sql) {
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
    stats: &Arc<StoreStats>,
    wal: PathBuf,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    // Commits write the WAL and go on; the fsync that makes a durable batch safe to
    // acknowledge runs on the sync thread, beside the next batches (see [`run_wal_syncs`]).
    // Should NORMAL not take, FULL stays: every commit syncs, slower and as safe.
    let _ = run_cached(&conn, "PRAGMA synchronous = NORMAL");
    let (to_sync, synced) = std::sync::mpsc::channel::<Committed>();
    let sync_stats = stats.clone();
    let syncer = std::thread::Builder::new()
        .name("store-sync".into())
        .spawn(move || run_wal_syncs(&wal, &synced, &sync_stats));
    if let Err(e) = &syncer {
        tracing::error!(
            "cannot start the store's sync thread ({e}); webhooks are fsynced by the store thread itself"
        );
        let _ = run_cached(&conn, "PRAGMA synchronous = FULL");
    }
    // Without the sync thread, only a commit that syncs itself makes an acknowledgement
    // safe: should FULL not have taken either, nothing durable is taken (each webhook is
    // answered 503 and Facebook sends it again), rather than acknowledged unsynced.
    let unsynced = (syncer.is_err() && !commits_sync(&conn)).then(|| {
        let reason = "the state database cannot sync its commits (no sync thread, and synchronous = FULL did not take); nothing is acknowledged until the daemon is restarted".to_owned();
        tracing::error!("{reason}");
        // Kept by /readyz: no fsync ever clears it.
        stats.note_sync(&Err(reason.clone()));
        reason
    });
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        stats
            .waiting
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        // Webhooks and Reply URL calls first, in a transaction of their own: their fsync
        // runs on the sync thread while the rest of the batch does.
        let (durable, rest): (Vec<Request>, Vec<Request>) =
            batch.drain(..).partition(|r| r.access == Access::Durable);
        let (reads, relaxed): (Vec<Request>, Vec<Request>) =
            rest.into_iter().partition(|r| r.access == Access::Read);
        if let Some(reason) = &unsynced {
            for request in durable {
                (request.job)(None)(Err(reason.clone()));
            }
        } else if !durable.is_empty() {
            stats.durable.taken(durable.iter().map(|r| r.sent));
            write(
                &conn,
                durable,
                stats,
                syncer.as_ref().ok().map(|_| &to_sync),
            );
        }
        // Reads in a transaction of their own: they see only committed data, and they
        // are answered even when the writes cannot commit (a full disk) — the queue,
        // /readyz and /metrics keep working.
        if !reads.is_empty() {
            let begin = run_cached(&conn, "BEGIN").map_err(|e| e.to_string());
            let sql = Sql::Lite(&conn);
            let run = begin.is_ok().then_some(&sql);
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
        if !relaxed.is_empty() {
            write(&conn, relaxed, stats, None);
        }
        super::checkpoints::checkpoint_tail(&conn, stats);
    }
}

/// Runs write requests in one transaction and answers them: at once when they are
/// relaxed, or when it failed; else through the sync thread, once the WAL is on disk
/// (by the commit itself when there is no sync thread: `synchronous = FULL`).
fn write(
    conn: &Connection,
    requests: Vec<Request>,
    stats: &StoreStats,
    sync: Option<&std::sync::mpsc::Sender<Committed>>,
) {
    let started = std::time::Instant::now();
    let durable = requests.iter().any(|r| r.access == Access::Durable);
    let writes = requests.len() as u64;
    let begin = run_cached(conn, "BEGIN IMMEDIATE").map_err(|e| e.to_string());
    let sql = Sql::Lite(conn);
    let run = begin.is_ok().then_some(&sql);
    let finishers: Vec<Finish> = requests.into_iter().map(|r| (r.job)(run)).collect();
    let outcome = begin.and_then(|()| {
        run_cached(conn, "COMMIT").map_err(|e| {
            let _ = run_cached(conn, "ROLLBACK");
            e.to_string()
        })
    });
    if outcome.is_ok() {
        if durable {
            add_us(&stats.durable.commit_us, started.elapsed(), finishers.len());
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
    match sync {
        // Answered once a sync that began after this commit is done.
        Some(sync) if durable && outcome.is_ok() => {
            let committed = Committed {
                at: std::time::Instant::now(),
                finishers,
            };
            if let Err(unsent) = sync.send(committed) {
                for finish in unsent.0.finishers {
                    finish(Err("the store's sync thread stopped".into()));
                }
            }
        }
        _ => {
            for finish in finishers {
                finish(outcome.clone());
            }
        }
    }
}

/// A durable batch, committed and waiting for an fsync of the WAL.
struct Committed {
    at: std::time::Instant,
    finishers: Vec<Finish>,
}

/// Whether a commit on this connection fsyncs the WAL itself (`synchronous` FULL or
/// EXTRA).
fn commits_sync(conn: &Connection) -> bool {
    conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))
        .is_ok_and(|level| level >= 2)
}

/// Syncs the WAL for the durable batches the store thread committed, and answers them.
///
/// The store thread commits at `synchronous = NORMAL`: SQLite writes a commit's frames
/// into the WAL and syncs only at checkpoints and when the WAL starts over. A batch is
/// answered here, after an fsync of the WAL that began once its commit had returned: its
/// frames are then on disk as surely as at `synchronous = FULL`. Meanwhile the store thread
/// runs the next batches instead of waiting for the disk (at 16 connections it spent
/// a fifth of its time in fsync, and every webhook waited behind that). Every batch that
/// came in during one fsync shares the next.
///
/// Its results are seen by the store's own reads (claims, the queue) before they are on
/// disk: an event can go to Motion before its webhook is acknowledged. A power cut in
/// that window loses the event and Facebook, never told 200, sends it again: Motion
/// may see it twice after a power cut, never lose it. A killed process loses nothing:
/// the frames are in the kernel's page cache.
fn run_wal_syncs(wal: &Path, batches: &std::sync::mpsc::Receiver<Committed>, stats: &StoreStats) {
    let mut file: Option<std::fs::File> = None;
    let mut waiting: Vec<Finish> = Vec::new();
    while let Ok(first) = batches.recv() {
        let started = std::time::Instant::now();
        for batch in std::iter::once(first).chain(batches.try_iter()) {
            let n = batch.finishers.len();
            add_us(
                &stats.durable.sync_wait_us,
                started.saturating_duration_since(batch.at),
                n,
            );
            waiting.extend(batch.finishers);
        }
        let outcome = sync_wal(wal, &mut file);
        stats.note_sync(&outcome);
        match &outcome {
            Ok(()) => {
                add_us(&stats.durable.sync_us, started.elapsed(), waiting.len());
                stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Opened again at the next sync.
                file = None;
                if crate::logging::STORE_FAILED.admit() {
                    tracing::error!(error = %e, "state database could not be synced to disk ({e}); the webhooks waiting for it were answered 503, so Facebook sends them again. Check the disk and the kernel log (dmesg)");
                }
            }
        }
        for finish in waiting.drain(..) {
            finish(outcome.clone());
        }
    }
}

/// An fsync of the WAL. The first one also syncs the directory, so that a WAL created
/// since the daemon started is found after a power cut.
fn sync_wal(wal: &Path, file: &mut Option<std::fs::File>) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot sync {}: {e}", wal.display());
    if file.is_none() {
        // Read-only: it is SQLite's file, only synced from here. Kept open, never
        // closed while the store runs.
        let opened = std::fs::File::open(wal).map_err(cannot)?;
        if let Some(dir) = wal.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(cannot)?;
        }
        *file = Some(opened);
    }
    file.as_ref()
        .map_or(Ok(()), |f| f.sync_data())
        .map_err(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk that takes writes and fails every fsync: the commits in between do not
    /// make the store look healthy (`/readyz` stayed not ready, not flapping); the
    /// first fsync that works does.
    #[test]
    fn a_failing_fsync_is_cleared_by_an_fsync_not_by_a_commit() {
        let stats = StoreStats::default();
        stats.note_sync(&Err("cannot sync state.db-wal: EIO".into()));
        let (since, why) = stats.write_failure().expect("the failing fsync");
        assert!(why.contains("EIO"), "{why}");
        stats.note_write(&Ok(()));
        assert_eq!(stats.write_failure(), Some((since, why.clone())));
        stats.note_sync(&Err("cannot sync state.db-wal: EIO again".into()));
        assert_eq!(
            stats.write_failure().map(|(s, _)| s),
            Some(since),
            "failing since the first one"
        );
        stats.note_sync(&Ok(()));
        assert_eq!(stats.write_failure(), None);
    }

    /// Both failing: the older is what `/readyz` reports, and each clears alone.
    #[test]
    fn the_older_failure_is_reported_and_each_step_clears_its_own() {
        let stats = StoreStats::default();
        stats.note_write(&Err("disk full".into()));
        stats.note_sync(&Err("EIO".into()));
        assert_eq!(stats.write_failure().unwrap().1, "disk full");
        stats.note_write(&Ok(()));
        assert_eq!(stats.write_failure().unwrap().1, "EIO");
        stats.note_sync(&Ok(()));
        assert_eq!(stats.write_failure(), None);
    }

    /// What decides whether webhooks may be acknowledged without the sync thread.
    #[test]
    fn only_a_commit_at_full_or_extra_syncs_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        for (level, syncs) in [
            ("OFF", false),
            ("NORMAL", false),
            ("FULL", true),
            ("EXTRA", true),
        ] {
            conn.pragma_update(None, "synchronous", level).unwrap();
            assert_eq!(commits_sync(&conn), syncs, "{level}");
        }
    }
}
