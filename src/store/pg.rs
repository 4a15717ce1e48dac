//! The queue on PostgreSQL, shared by several daemons (`[storage] backend = "postgres"`).
//!
//! The same operations as on SQLite (the text of [`super::sql`]), run by a few worker
//! threads, each with its own connection; every request is one transaction, committed
//! before its caller hears back. A webhook's transaction commits with the server's
//! `synchronous_commit` (what it promises for a failover is the server's setting); a
//! delivery outcome ([`Access::Relaxed`]) commits with `synchronous_commit = off`: it
//! survives this daemon's crash at once and the server's within its WAL writer's delay,
//! and one lost makes its item go out again, never lost. Concurrent commits share the
//! server's WAL flushes.
//!
//! Several daemons share one queue: a conversation being delivered is leased to one node
//! in the `claims` table ([`Shared`]); the node renews its leases while it lives, and
//! when it dies they run out after `storage.lease` and another node takes the
//! conversation over. Periodic work takes an advisory lock so that one node does it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::params;
use tokio::sync::mpsc;

use super::engine::{Finish, Request};
use super::items::{Heads, head, head_columns};
use super::sql::{DbError, PgConn, Sql};
use super::{Access, Item, Store, StoreError, StoreStats, duration_ms, now_ms, pg_schema};
use crate::config::StorageConfig;
use crate::model::{ConversationKey, Direction};

/// Connections (and threads) per daemon. Requests wait for a free one; the server's
/// `max_connections` must leave room for this many per node, plus the `queue` commands.
pub const WORKERS: usize = 8;

/// A worker whose connection is gone tries again at most this often: a server that is
/// down costs each request an error at once, not a connection attempt.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The work done by one node at a time, each under its own advisory lock.
#[derive(Debug, Clone, Copy)]
pub enum Periodic {
    Retention = 1,
}

/// Whether this node may do `work` now: always alone on SQLite; on PostgreSQL when no
/// other node's transaction holds its lock (held until this transaction ends).
pub fn one_node_at_a_time(conn: &Sql<'_>, work: Periodic) -> Result<bool, DbError> {
    if !conn.is_postgres() {
        return Ok(true);
    }
    let key = 0x6662_6f63_0100_i64 + work as i64;
    conn.one("SELECT pg_try_advisory_xact_lock(?1)", params![key], |r| {
        r.get(0)
    })
}

/// Who this node is on a shared queue, and its leases.
pub struct Shared {
    /// This daemon's name in the `claims` table: host, process and a random part.
    pub node: String,
    lease: Duration,
    /// Where the server is, without credentials: for log lines and `doctor`.
    pub server: String,
    /// When (ms) this node last connected after the server was unreachable, or started:
    /// for one lease from then, other nodes' leases that ran out meanwhile are still
    /// theirs (a living node renews them within a third of a lease, and writes the
    /// outcomes it kept in memory), so a restart of the server makes nothing go twice.
    reconnected_at: Arc<AtomicI64>,
}

impl Shared {
    /// The time against which other nodes' leases are judged: `now`, or the beginning of
    /// time during the grace after a reconnection (every lease still counts).
    fn foreign_leases_end_before(&self, now: i64) -> i64 {
        let grace_end = self
            .reconnected_at
            .load(Ordering::Relaxed)
            .saturating_add(duration_ms(self.lease));
        if now < grace_end { i64::MIN } else { now }
    }
}

/// What `doctor` says about the PostgreSQL queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgStatus {
    pub server: String,
    pub schema: i64,
    /// Nodes holding leases now, with how many each.
    pub nodes: Vec<(String, i64)>,
}

impl Shared {
    /// Due heads not leased to another node, locked against a node asking at the same
    /// moment (`SKIP LOCKED`: it gets the others), and when the earliest lease of another
    /// node runs out (look again then: that node may have died).
    pub(super) fn heads(
        &self,
        conn: &Sql<'_>,
        direction: Direction,
        now: i64,
        want: i64,
    ) -> Result<Heads, DbError> {
        // Read off heads_due in its order (as on SQLite), each head checked against the
        // leases by their primary key.
        let rows = conn.all(
            concat!(
                "SELECT ",
                head_columns!(),
                " FROM heads h JOIN items i ON i.id = h.item_id
                  WHERE h.direction = ?1
                    AND NOT EXISTS (SELECT 1 FROM claims c
                          WHERE c.direction = h.direction AND c.page_id = h.page_id
                            AND c.conversation = h.conversation AND c.until > ?2
                            AND c.holder <> ?3)
                  ORDER BY h.next_attempt_at, h.event_ts, h.item_id
                  LIMIT ?4
                  FOR UPDATE OF h SKIP LOCKED"
            ),
            params![
                direction.as_str(),
                self.foreign_leases_end_before(now),
                self.node,
                want
            ],
            head,
        )?;
        let foreign = conn.one(
            "SELECT MIN(until) FROM claims WHERE direction = ?1 AND holder <> ?2 AND until > ?3",
            params![direction.as_str(), self.node, now],
            |r| r.get(0),
        )?;
        Ok((rows, foreign))
    }

    /// Leases the item's conversation to this node; false when another node holds it.
    pub(super) fn lease(
        &self,
        conn: &Sql<'_>,
        direction: Direction,
        item: &Item,
        now: i64,
        token: i64,
    ) -> Result<bool, DbError> {
        let until = now.saturating_add(duration_ms(self.lease));
        let taken = conn.exec(
            "INSERT INTO claims (direction, page_id, conversation, holder, until, token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?7)
             ON CONFLICT (direction, page_id, conversation)
             DO UPDATE SET holder = excluded.holder, until = excluded.until,
                           token = excluded.token
             WHERE claims.until <= ?6 OR claims.holder = ?4",
            params![
                direction.as_str(),
                item.page_id,
                item.conversation,
                self.node,
                until,
                self.foreign_leases_end_before(now),
                token
            ],
        )?;
        Ok(taken == 1)
    }

    /// Ends this node's lease on a conversation (not waited for: if it is lost, the
    /// lease runs out by itself).
    pub(super) fn release(
        &self,
        store: &Store,
        direction: Direction,
        page_id: &str,
        conversation: &ConversationKey,
        token: i64,
    ) {
        let (page_id, conversation, node) =
            (page_id.to_owned(), conversation.clone(), self.node.clone());
        store.call_detached(Access::Relaxed, move |conn| {
            conn.exec(
                "DELETE FROM claims
                  WHERE direction = ?1 AND page_id = ?2 AND conversation = ?3 AND holder = ?4
                    AND token = ?5",
                params![direction.as_str(), page_id, conversation, node, token],
            )
            .map(drop)
        });
    }
}

/// The server's connection settings (see [`StorageConfig::postgres`]).
pub fn settings(storage: &StorageConfig) -> Result<postgres::Config, String> {
    storage.postgres()
}

/// Where the queue is, for messages: the SQLite file, or `PostgreSQL at host:port/db`.
pub fn place(storage: &StorageConfig) -> String {
    if !storage.is_postgres() {
        return storage.path.display().to_string();
    }
    settings(storage)
        .map(|c| format!("PostgreSQL at {}", describe(&c)))
        .unwrap_or_else(|_| "PostgreSQL (storage.url)".into())
}

/// Where the server is, for people: `host:port/database`, never the password.
pub fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Runs `f` on a thread of its own and waits for it. PostgreSQL's client blocks on a
/// runtime of its own, which tokio forbids on a thread that runs async tasks (`doctor`,
/// the tests, the daemon's start): everything outside the store's workers goes through
/// here. A panic in `f` is an error.
pub fn off_runtime<R: Send, E: From<String> + Send>(
    f: impl FnOnce() -> Result<R, E> + Send,
) -> Result<R, E> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(E::from("PostgreSQL's client panicked".to_owned())))
    })
}

fn connect(target: &Target) -> Result<PgConn, String> {
    off_runtime(|| connect_here(target))
}

fn connect_here(target: &Target) -> Result<PgConn, String> {
    let connected = match &target.tls {
        Some(tls) => target.config.connect(tls.clone()),
        None => target.config.connect(postgres::NoTls),
    };
    let database = target.config.get_dbname().unwrap_or("postgres");
    connected
        .map(|client| PgConn::new(client, database))
        .map_err(|e| {
            let mut text = match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            };
            // The TLS error is the source's source: say it.
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })
}

/// How to reach the server: its settings, and TLS when `sslmode=require`.
#[derive(Clone)]
pub struct Target {
    pub config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The server's settings and, with `sslmode=require` in `storage.url`, TLS with the
/// server's certificate verified against `storage.ca_file` (else the system's roots).
/// `sslmode=prefer` (the default) and `disable` connect without TLS: a certificate this
/// daemon cannot verify must not pass for one it did.
pub fn target(storage: &StorageConfig) -> Result<Target, String> {
    let config = settings(storage)?;
    let tls = match config.get_ssl_mode() {
        postgres::config::SslMode::Require => Some(client_tls(storage.ca_file.as_deref())?),
        _ => None,
    };
    Ok(Target { config, tls })
}

fn client_tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?;
    let config = match ca_file {
        Some(file) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read storage.ca_file {}: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("storage.ca_file {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("storage.ca_file {}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "storage.ca_file {} holds no certificate",
                    file.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| format!("the system's certificate roots: {e}"))?
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A connection for a command beside the daemon (`queue`, `doctor`): the schema must
/// be there already (the daemon makes it).
pub fn connect_for_tools(storage: &StorageConfig) -> Result<PgConn, String> {
    let target = target(storage)?;
    let server = describe(&target.config);
    let mut conn = connect(&target)
        .map_err(|e| format!("cannot connect to PostgreSQL at {server} (storage.url): {e}"))?;
    let version = off_runtime(|| pg_schema::version(&mut conn.client).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read the queue's schema at {server}: {e}"))?;
    if version == 0 {
        return Err(format!(
            "no queue in PostgreSQL at {server} yet: has the daemon run with this storage.url?"
        ));
    }
    Ok(conn)
}

/// Which leases each node holds now, for `doctor`.
pub fn status(conn: &Sql<'_>, server: String) -> Result<PgStatus, DbError> {
    let schema = super::schema_version(conn)?;
    let nodes = conn.all(
        "SELECT holder, COUNT(*) FROM claims WHERE until > ?1 GROUP BY holder ORDER BY holder",
        params![now_ms()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(PgStatus {
        server,
        schema,
        nodes,
    })
}

impl Store {
    /// Opens the queue in PostgreSQL (making or migrating its schema, one node at a
    /// time) and starts the workers. `path` is the local state database's path: the
    /// local state directory (spool, ACME files) is its folder, as with SQLite.
    pub fn open_postgres(storage: &StorageConfig) -> Result<Store, StoreError> {
        let open_err = StoreError::Shared;
        let config = target(storage).map_err(open_err)?;
        let server = describe(&config.config);
        let mut first = connect(&config)
            .map_err(|e| open_err(format!("cannot connect to PostgreSQL at {server}: {e}")))?;
        off_runtime(|| pg_schema::prepare(&mut first.client).map_err(|e| e.to_string())).map_err(
            |e| {
                open_err(format!(
                    "cannot prepare the queue in PostgreSQL at {server}: {e}"
                ))
            },
        )?;
        super::engine::make_state_dir(&storage.path).map_err(|reason| StoreError::Open {
            path: storage.path.clone(),
            reason,
        })?;

        let (tx, rx) = mpsc::unbounded_channel::<Request>();
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(StoreStats::default());
        let mut first = Some(first);
        let lost = Arc::new(AtomicU64::new(0));
        let announced = Arc::new(AtomicBool::new(false));
        let reconnected_at = Arc::new(AtomicI64::new(now_ms()));
        for n in 0..WORKERS {
            let outage = Outage {
                lost: lost.clone(),
                announced: announced.clone(),
                reconnected_at: reconnected_at.clone(),
            };
            let (conn, config, rx, stats) =
                (first.take(), config.clone(), rx.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("store-pg-{n}"))
                .spawn(move || run_worker(conn, &config, &rx, &stats, &outage))
                .map_err(|e| open_err(e.to_string()))?;
        }
        let node = format!(
            "{}/{}/{:08x}",
            hostname(),
            std::process::id(),
            fastrand::u32(..)
        );
        let store = Store {
            tx,
            stats,
            path: Arc::new(storage.path.clone()),
            recent_bodies: Arc::default(),
            claims: Arc::default(),
            shared: Some(Arc::new(Shared {
                node,
                lease: storage.lease,
                server,
                reconnected_at,
            })),
        };
        start_renewals(&store);
        Ok(store)
    }

    /// The shared queue's settings, when the store is PostgreSQL.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_deref()
    }
}

/// The host's name, for a node's name in `claims`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Renews this node's leases every third of their length until the store is dropped.
fn start_renewals(store: &Store) {
    let Some(shared) = store.shared.clone() else {
        return;
    };
    let weak = store.downgrade();
    std::thread::Builder::new()
        .name("store-pg-leases".into())
        .spawn(move || {
            loop {
                std::thread::sleep(shared.lease / 3);
                let Some(store) = weak.upgrade() else { return };
                let node = shared.node.clone();
                let lease = duration_ms(shared.lease);
                store.call_detached(Access::Relaxed, move |conn| {
                    conn.exec(
                        "UPDATE claims SET until = ?1 WHERE holder = ?2",
                        params![now_ms().saturating_add(lease), node],
                    )
                    .map(drop)
                });
            }
        })
        .ok();
}

/// What the workers of one store share about losing the server.
struct Outage {
    /// Connections found broken by any worker: a server that restarted broke them all,
    /// so each worker connects again before its next request instead of failing it.
    lost: Arc<AtomicU64>,
    /// The loss is in the log: one line when it goes, one when it is back.
    announced: Arc<AtomicBool>,
    /// See [`Shared::reconnected_at`].
    reconnected_at: Arc<AtomicI64>,
}

/// One worker: takes requests one at a time and runs each in a transaction on its own
/// connection.
fn run_worker(
    mut conn: Option<PgConn>,
    config: &Target,
    rx: &Mutex<mpsc::UnboundedReceiver<Request>>,
    stats: &StoreStats,
    outage: &Outage,
) {
    let Outage {
        lost,
        announced,
        reconnected_at,
    } = outage;
    let server = describe(&config.config);
    let mut connected_at = lost.load(Ordering::Relaxed);
    let mut last_attempt: Option<Instant> = None;
    // Why the connection is gone, while it is.
    let mut down: Option<String> = None;
    loop {
        let request = {
            let mut rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.blocking_recv() {
                Some(r) => r,
                None => return,
            }
        };
        stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let access = request.access;
        let write = access != Access::Read;
        if conn.as_ref().is_none_or(|c| c.client.is_closed())
            || lost.load(Ordering::Relaxed) != connected_at
        {
            conn = None;
            connected_at = lost.load(Ordering::Relaxed);
            if last_attempt.is_none_or(|t| t.elapsed() >= RECONNECT_EVERY) {
                last_attempt = Some(Instant::now());
                match connect(config) {
                    Ok(c) => {
                        if down.take().is_some() {
                            reconnected_at.store(now_ms(), Ordering::Relaxed);
                        }
                        if announced.swap(false, Ordering::Relaxed) {
                            tracing::info!(
                                server = %server,
                                "connected to PostgreSQL again at {server}: the queue works again"
                            );
                        }
                        conn = Some(c);
                    }
                    Err(e) => down = Some(e),
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            let reason = format!(
                "PostgreSQL at {server} cannot be reached: {}",
                down.as_deref().unwrap_or("connection lost")
            );
            let finish = (request.job)(None);
            let outcome = Err(reason);
            if write {
                stats.note_write(&outcome);
            }
            finish(outcome);
            continue;
        };
        let (finish, outcome) = run_one(c, request);
        let outcome = outcome.map_err(|e| format!("PostgreSQL at {server}: {e}"));
        if write {
            stats.note_write(&outcome);
            if outcome.is_ok() {
                let counter = if access == Access::Durable {
                    &stats.write_commits
                } else {
                    &stats.relaxed_commits
                };
                counter.fetch_add(1, Ordering::Relaxed);
                stats.write_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = &outcome
            && c.client.is_closed()
        {
            if !announced.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    server = %server,
                    error = %e,
                    "lost the connection to PostgreSQL ({e}): webhooks are answered 503 (Facebook sends them again) and deliveries wait until it is back; the daemon connects again by itself"
                );
            }
            down = Some(e.clone());
            lost.fetch_add(1, Ordering::Relaxed);
        }
        finish(outcome);
    }
}

/// Runs one request in a transaction of its own.
fn run_one(c: &mut PgConn, request: Request) -> (Finish, Result<(), String>) {
    let text = |e: postgres::Error| DbError::Postgres(e).to_string();
    let begin = match request.access {
        Access::Read => "BEGIN READ ONLY",
        Access::Durable => "BEGIN",
        Access::Relaxed => "BEGIN; SET LOCAL synchronous_commit = off",
    };
    c.failed = false;
    if let Err(e) = c.client.batch_execute(begin) {
        return ((request.job)(None), Err(text(e)));
    }
    let finish = (request.job)(Some(&Sql::Pg(RefCell::new(&mut *c))));
    let end = if c.failed { "ROLLBACK" } else { "COMMIT" };
    let outcome = c.client.batch_execute(end).map_err(text);
    (finish, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConversationKey, DedupKey, ItemKind, MessagingKind};
    use crate::sim::postgres::{PrivatePostgres, SKIPPED};
    use crate::store::{NewItem, NewState};

    /// A private server with one database, or `None` (and the reason printed) when
    /// PostgreSQL is not installed.
    fn server(db: &str) -> Option<(PrivatePostgres, StorageConfig)> {
        let Some(pg) = PrivatePostgres::start().unwrap() else {
            eprintln!("{SKIPPED}");
            return None;
        };
        pg.create_database(db).unwrap();
        let storage = StorageConfig {
            backend: crate::config::Backend::Postgres,
            url: Some(crate::config::Secret::new(pg.url(db))),
            path: pg.dir().join("state/state.db"),
            ..StorageConfig::default()
        };
        Some((pg, storage))
    }

    fn message(customer: u64, n: u64, ts: i64) -> NewItem {
        NewItem {
            direction: Direction::Inbound,
            page_id: "1".into(),
            conversation: ConversationKey::customer(&customer.to_string()),
            dedup_key: DedupKey::message(&format!("{customer}.{n}")),
            kind: ItemKind::Messaging(MessagingKind::Message),
            event_ts: ts,
            payload: format!("{{\"n\":{n}}}"),
            state: NewState::Pending,
        }
    }

    /// Two daemons on one queue: a conversation is leased to one node at a time; the
    /// other is told when to look again; a dead node's leases pass to the living one when
    /// they run out; redeliveries are recognised whichever node stored the first copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_share_one_queue_and_never_hold_one_conversation() {
        let Some((_pg, storage)) = server("nodes") else {
            return;
        };
        let a = Store::open_postgres(&storage).unwrap();
        let b = Store::open_postgres(&storage).unwrap();
        assert_ne!(a.shared().unwrap().node, b.shared().unwrap().node);

        let first = a
            .intake(
                b"{1}".to_vec(),
                None,
                vec![message(1, 1, 10), message(2, 1, 10)],
            )
            .await
            .unwrap();
        assert_eq!((first.new, first.duplicates), (2, 0));
        // Facebook redelivers the same event to the other node.
        let again = b
            .intake(b"{1}".to_vec(), None, vec![message(1, 1, 10)])
            .await
            .unwrap();
        assert_eq!((again.new, again.duplicates), (0, 1));
        // An earlier message of customer 1, stored by the other node, becomes the head.
        b.intake(b"{0}".to_vec(), None, vec![message(1, 0, 5)])
            .await
            .unwrap();

        let now = now_ms();
        let (got_a, _) = a.claim_heads(Direction::Inbound, now, 10).await.unwrap();
        let keys: Vec<&str> = got_a.iter().map(|i| i.dedup_key.as_str()).collect();
        assert_eq!(keys, ["mid:1.0", "mid:2.1"], "the heads, oldest first");
        let (got_b, next) = b.claim_heads(Direction::Inbound, now, 10).await.unwrap();
        assert!(
            got_b.is_empty(),
            "both conversations are leased to A: {got_b:?}"
        );
        let lease_end = next.expect("B is told when A's leases end");
        assert!(lease_end > now && lease_end <= now + duration_ms(storage.lease));

        // A delivers customer 2's message and releases; B then gets nothing new there
        // (no more items), and customer 1 is still A's.
        a.complete(got_a[1].id, None).await.unwrap();
        a.release(
            Direction::Inbound,
            &got_a[1].page_id,
            &got_a[1].conversation,
        );
        // A's release is not waited for; A's next claim is (one worker at a time per
        // request, but the release was handed over first).
        let (mine, _) = a.claim_heads(Direction::Inbound, now, 10).await.unwrap();
        assert!(mine.is_empty(), "A holds customer 1 in memory: {mine:?}");

        // A dies holding customer 1: after its lease, B takes the conversation over.
        drop(a);
        let later = lease_end + 1;
        let (taken, _) = b.claim_heads(Direction::Inbound, later, 10).await.unwrap();
        let keys: Vec<&str> = taken.iter().map(|i| i.dedup_key.as_str()).collect();
        assert_eq!(keys, ["mid:1.0"]);
        b.complete(taken[0].id, None).await.unwrap();
        b.release(
            Direction::Inbound,
            &taken[0].page_id,
            &taken[0].conversation,
        );
        let (next_item, _) = b.claim_heads(Direction::Inbound, later, 10).await.unwrap();
        let keys: Vec<&str> = next_item.iter().map(|i| i.dedup_key.as_str()).collect();
        assert_eq!(keys, ["mid:1.1"], "then the conversation's next message");
    }

    /// Every operation of the store, run as one script on SQLite and on PostgreSQL:
    /// both give the same answers (the operator's view, the conversation memory, the
    /// tokens, retention, retry and drop, export).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_answers_the_same_on_both_backends() {
        let Some((_pg, storage)) = server("same") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let lite_path = dir.path().join("state.db");
        let path = lite_path.clone();
        let on_sqlite = script(Store::open(&lite_path).unwrap(), move || {
            crate::store::queue::Database::Lite(crate::store::queue::open(&path).unwrap())
        })
        .await;
        let shared = storage.clone();
        let on_postgres = script(Store::open_postgres(&storage).unwrap(), move || {
            crate::store::queue::open_storage(&shared).unwrap()
        })
        .await;
        assert_eq!(on_sqlite.len(), on_postgres.len());
        for (lite, pg) in on_sqlite.iter().zip(&on_postgres) {
            assert_eq!(lite, pg);
        }
    }

    /// The script: each step's answer, as text.
    async fn script(
        store: Store,
        database: impl Fn() -> crate::store::queue::Database + Send + Sync + 'static,
    ) -> Vec<String> {
        use crate::store::queue;
        let mut out = Vec::new();
        let mut note = |what: &str, v: String| out.push(format!("{what}: {v}"));
        let wall = |n: u64, kind: crate::model::FeedKind| NewItem {
            direction: Direction::Inbound,
            page_id: "1".into(),
            conversation: ConversationKey::post("1_9"),
            dedup_key: DedupKey::message(&format!("wall.{n}")),
            kind: ItemKind::Feed(kind),
            event_ts: 50 + n as i64,
            payload: format!("{{\"wall\":{n}}}"),
            state: NewState::Pending,
        };
        let first = store
            .intake(
                b"{a}".to_vec(),
                None,
                vec![
                    message(1, 1, 10),
                    message(1, 2, 20),
                    message(2, 1, 15),
                    wall(1, crate::model::FeedKind::Post),
                    wall(2, crate::model::FeedKind::Comment),
                ],
            )
            .await
            .unwrap();
        note(
            "intake",
            format!("{} {} {}", first.new, first.duplicates, first.pending),
        );
        let again = store
            .intake(b"{b}".to_vec(), None, vec![message(1, 1, 10)])
            .await
            .unwrap();
        note("again", format!("{} {}", again.new, again.duplicates));
        store
            .intake(b"not json".to_vec(), Some("unreadable".into()), vec![])
            .await
            .unwrap();
        note(
            "failed webhooks",
            format!("{:?}", store.failed_webhooks().await.unwrap().len()),
        );
        note("webhooks", store.webhook_count().await.unwrap().to_string());
        let (heads, _) = store
            .claim_heads(Direction::Inbound, 1_000, 10)
            .await
            .unwrap();
        let keys: Vec<String> = heads
            .iter()
            .map(|i| i.dedup_key.as_str().to_owned())
            .collect();
        note("heads", format!("{keys:?}"));
        let (a, b) = (heads[0].id, heads[1].id);
        store.complete(a, Some("{\"ok\":1}".into())).await.unwrap();
        store
            .retry_later(b, 5_000, "Motion said 503".into())
            .await
            .unwrap();
        store.record_progress(b, 1).await.unwrap();
        store
            .record_sent("1".into(), "m.sent".into(), a)
            .await
            .unwrap();
        store
            .record_private_reply("1".into(), "1_9".into(), a)
            .await
            .unwrap();
        for i in &heads {
            store.release(Direction::Inbound, &i.page_id, &i.conversation);
        }
        note(
            "is our send",
            format!(
                "{:?}",
                store
                    .is_our_send("1".into(), "m.sent".into())
                    .await
                    .unwrap()
            ),
        );
        note(
            "sent ids",
            format!("{:?}", store.sent_ids_of(a).await.unwrap()),
        );
        note(
            "private reply",
            format!(
                "{:?}",
                store
                    .private_reply_owner("1".into(), "1_9".into())
                    .await
                    .unwrap()
                    .is_some()
            ),
        );
        note(
            "thread",
            format!(
                "{:?}",
                store
                    .wall_thread("1".into(), ConversationKey::post("1_9"))
                    .await
                    .unwrap()
            ),
        );
        note(
            "has thread",
            format!(
                "{:?}",
                store
                    .has_thread("1".into(), ConversationKey::post("1_9"))
                    .await
                    .unwrap()
            ),
        );
        note(
            "activity",
            format!(
                "{:?}",
                store
                    .last_customer_activity("1".into(), ConversationKey::customer("1"))
                    .await
                    .unwrap()
            ),
        );
        note(
            "payload",
            format!(
                "{:?}",
                store
                    .payload_by_key("1".into(), DedupKey::message("2.1"))
                    .await
                    .unwrap()
            ),
        );
        let reply = NewItem {
            direction: Direction::Outbound,
            page_id: "1".into(),
            conversation: ConversationKey::customer("1"),
            dedup_key: DedupKey::motion_message("77"),
            kind: ItemKind::Reply,
            event_ts: 30,
            payload: "{}".into(),
            state: NewState::Pending,
        };
        let e1 = store.enqueue(reply.clone()).await.unwrap();
        let e2 = store.enqueue(reply).await.unwrap();
        note("enqueue", format!("{} {} {:?}", e1.new, e2.new, e2.state));
        let profile = crate::store::Profile {
            first_name: "Ada".into(),
            last_name: "L".into(),
            source: crate::model::NameSource::Graph,
            fetched_at: 5,
        };
        store
            .put_profile("1".into(), "1".into(), profile)
            .await
            .unwrap();
        note(
            "profile",
            format!("{:?}", store.profile("1".into(), "1".into()).await.unwrap()),
        );
        let seed = crate::config::Secret::new("IGAA-seed");
        let token = store
            .instagram_token("17".into(), seed.clone())
            .await
            .unwrap();
        store
            .put_refreshed_token(
                "17".into(),
                seed.clone(),
                crate::config::Secret::new("IGAA-new"),
                9,
            )
            .await
            .unwrap();
        store
            .refresh_failed("17".into(), "nope".into())
            .await
            .unwrap();
        let now = store.instagram_token("17".into(), seed).await.unwrap();
        note(
            "tokens",
            format!(
                "{} {} {:?} {:?}",
                token.is_seed,
                now.token.expose(),
                now.expires_at,
                now.last_error
            ),
        );
        store.fail(heads[2].id, "refused".into()).await.unwrap();
        note(
            "by state",
            format!("{:?}", store.count_by_state().await.unwrap()),
        );
        note(
            "queue stats",
            format!(
                "{:?}",
                store
                    .queue_stats()
                    .await
                    .unwrap()
                    .iter()
                    .map(|q| (q.page_id.clone(), q.direction.clone(), q.pending))
                    .collect::<Vec<_>>()
            ),
        );
        // The operator's view, from another connection.
        let operator = tokio::task::spawn_blocking(move || {
            let mut db = database();
            let c = db.sql();
            let stats: Vec<_> = queue::stats(&c)
                .unwrap()
                .into_iter()
                .map(|s| {
                    (
                        s.page_id,
                        s.direction,
                        s.pending,
                        s.retrying,
                        s.failed,
                        s.done,
                    )
                })
                .collect();
            let failed = queue::failed_ids(&c, None).unwrap();
            let listed: Vec<String> = queue::list(&c, &queue::Filter::default())
                .unwrap()
                .into_iter()
                .map(|r| format!("{} {}", r.kind, r.state))
                .collect();
            let latest = queue::latest_failure(&c).unwrap();
            let retried = queue::retry(&c, &failed).unwrap().len();
            let shown = queue::show(&c, failed[0]).unwrap().unwrap();
            let history: Vec<String> = shown
                .attempt_history
                .iter()
                .map(|a| a.outcome.clone())
                .collect();
            let dropped = queue::drop_items(&c, &failed).unwrap().len();
            let mut export = Vec::new();
            let counts = crate::store::transfer::export(&c, &mut export, 0).unwrap();
            format!("{stats:?} {listed:?} {latest:?} {retried} {history:?} {dropped} {counts:?}")
        })
        .await
        .unwrap();
        note("operator", operator);
        let pruned = store.prune(i64::MAX, 100).await.unwrap();
        note("pruned", format!("{pruned:?}"));
        note(
            "after",
            format!("{:?}", store.count_by_state().await.unwrap()),
        );
        out
    }

    /// `sslmode=require`: TLS, the server's certificate verified against
    /// `storage.ca_file`; a certificate that does not chain to it is refused, and said.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sslmode_require_speaks_tls_and_verifies_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::sim::tls::generate(dir.path()).unwrap();
        let Some(pg) = PrivatePostgres::start_with_tls(&certs.cert_path, &certs.key_path).unwrap()
        else {
            eprintln!("{SKIPPED}");
            return;
        };
        pg.create_database("tls").unwrap();
        let mut storage = StorageConfig {
            backend: crate::config::Backend::Postgres,
            url: Some(crate::config::Secret::new(format!(
                "{}?sslmode=require",
                pg.url("tls")
            ))),
            path: dir.path().join("state/state.db"),
            ca_file: Some(certs.ca_path.clone()),
            ..StorageConfig::default()
        };
        let store = Store::open_postgres(&storage).unwrap();
        store
            .intake(b"{1}".to_vec(), None, vec![message(1, 1, 1)])
            .await
            .unwrap();
        let tls: bool = store
            .call(Access::Read, |c| {
                c.one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert!(tls, "the connection is TLS");
        drop(store);

        // Another CA: the server is not the one it claims to be.
        let other_dir = dir.path().join("other");
        std::fs::create_dir(&other_dir).unwrap();
        let other = crate::sim::tls::generate(&other_dir).unwrap();
        storage.ca_file = Some(other.ca_path.clone());
        let e = Store::open_postgres(&storage).err().unwrap().to_string();
        assert!(e.contains("certificate"), "{e}");
        println!("{e}");
    }

    /// Two nodes draining one queue at full speed: every item is delivered once, and
    /// each conversation's items in their order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_draining_together_deliver_each_item_once_in_order() {
        let Some((_pg, storage)) = server("drain") else {
            return;
        };
        let nodes = [
            Store::open_postgres(&storage).unwrap(),
            Store::open_postgres(&storage).unwrap(),
        ];
        // 8 conversations of 25 messages, stored half by each node, in a shuffled order.
        let mut items: Vec<NewItem> = (0..8)
            .flat_map(|c| (0..25).map(move |n| message(c, n, 1000 + n as i64)))
            .collect();
        fastrand::shuffle(&mut items);
        for (i, chunk) in items.chunks(10).enumerate() {
            nodes[i % 2]
                .intake(format!("{{{i}}}").into_bytes(), None, chunk.to_vec())
                .await
                .unwrap();
        }
        let delivered = Arc::new(Mutex::new(Vec::<(String, i64, usize)>::new()));
        let mut workers = tokio::task::JoinSet::new();
        for (n, node) in nodes.iter().enumerate() {
            for _ in 0..3 {
                let (node, delivered) = (node.clone(), delivered.clone());
                workers.spawn(async move {
                    let mut idle = 0;
                    while idle < 50 {
                        let (got, _) = node
                            .claim_heads(Direction::Inbound, now_ms(), 2)
                            .await
                            .unwrap();
                        if got.is_empty() {
                            idle += 1;
                            tokio::task::yield_now().await;
                            continue;
                        }
                        idle = 0;
                        for item in got {
                            delivered.lock().unwrap().push((
                                item.conversation.as_str().to_owned(),
                                item.event_ts,
                                n,
                            ));
                            node.complete(item.id, None).await.unwrap();
                            node.release(Direction::Inbound, &item.page_id, &item.conversation);
                        }
                    }
                });
            }
        }
        while workers.join_next().await.is_some() {}
        let delivered = delivered.lock().unwrap().clone();
        assert_eq!(delivered.len(), 200, "each item once");
        for c in 0..8 {
            let key = format!("psid:{c}");
            let order: Vec<i64> = delivered
                .iter()
                .filter(|(k, _, _)| *k == key)
                .map(|(_, ts, _)| *ts)
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "conversation {key} in order");
            assert_eq!(order.len(), 25);
        }
        let by_a = delivered.iter().filter(|d| d.2 == 0).count();
        assert!(by_a > 0 && by_a < 200, "both nodes delivered ({by_a} by A)");
    }

    /// A server that restarts: requests meanwhile fail at once with the reason, and the
    /// store works again by itself once it is back; what was committed is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_restart_fails_requests_meanwhile_and_the_store_recovers() {
        let Some((pg, storage)) = server("restart") else {
            return;
        };
        let store = Store::open_postgres(&storage).unwrap();
        store
            .intake(b"{1}".to_vec(), None, vec![message(1, 1, 1)])
            .await
            .unwrap();
        pg.crash().unwrap();
        let e = store
            .intake(b"{2}".to_vec(), None, vec![message(1, 2, 2)])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("PostgreSQL at 127.0.0.1:"), "{e}");
        assert!(store.stats().write_failure().is_some(), "/readyz sees it");
        pg.start_server().unwrap();
        let mut recovered = None;
        for _ in 0..100 {
            match store
                .intake(b"{2}".to_vec(), None, vec![message(1, 2, 2)])
                .await
            {
                Ok(o) => {
                    recovered = Some(o);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert_eq!(recovered.expect("recovers by itself").new, 1);
        assert!(store.stats().write_failure().is_none());
        let states = store.count_by_state().await.unwrap();
        assert_eq!(states, vec![("pending".to_owned(), 2)]);
    }
}
