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

mod connect;
#[cfg(test)]
pub(super) mod tests;
mod workers;

pub use connect::*;
use workers::*;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::params;
use tokio::sync::mpsc;

use super::engine::{Finish, Request};
use super::heads::{HeadRow, Heads, head, head_columns};
use super::sql::{DbError, PgConn, Sql};
use super::{Access, Item, Store, StoreError, StoreStats, duration_ms, now_ms, pg_schema};
use crate::config::StorageConfig;
use crate::model::{ConversationKey, Direction};

/// Connections (and threads) per daemon for its requests, which wait for a free one. The
/// server's `max_connections` must leave room for this many per node and one more (the
/// wake-ups between nodes, [`super::wakes`]), plus the `queue` commands.
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
    /// How to reach the server, for the wake-ups between nodes.
    pub(in crate::store) target: Target,
    /// This node's name in `node_configs`: the host and an id kept in the state folder,
    /// so that a restarted daemon replaces its own row (its old config is not another
    /// node's).
    pub(in crate::store) config_node: String,
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
    /// The time against which other nodes' leases are judged: `now`, or the beginning of
    /// time during the grace after a reconnection (every lease still counts).
    fn foreign_leases_end_before(&self, now: i64) -> i64 {
        let grace_end = self
            .reconnected_at
            .load(Ordering::Relaxed)
            .saturating_add(duration_ms(self.lease));
        if now < grace_end { i64::MIN } else { now }
    }

    /// Due heads not leased to another node, locked against a node asking at the same
    /// moment (`SKIP LOCKED`: it gets the others). A conversation another node holds is
    /// looked at again at the dispatcher's next look (within a second): asking when the
    /// first of their leases ends read every lease row of the direction at every claim,
    /// and the index entries of every lease ended since the last VACUUM (a lease is a row
    /// written and deleted per item: 9,720 entries a claim in the benchmark's short
    /// run).
    pub(super) fn heads(
        &self,
        conn: &Sql<'_>,
        direction: Direction,
        now: i64,
        want: i64,
    ) -> Result<Heads, DbError> {
        // Read off heads_due in its order (as on SQLite), each head asked of the leases by
        // a function the planner cannot see into (see the schema's migration): written
        // here as NOT EXISTS, it read every lease index entry of the direction at every
        // claim, those of leases ended since the last VACUUM included.
        let rows = conn.all(
            concat!(
                "SELECT ",
                head_columns!(),
                " FROM heads h JOIN items i ON i.id = h.item_id
                  WHERE h.direction = ?1
                    AND NOT fb_leased_elsewhere(h.direction, h.page_id, h.conversation, ?2, ?3)
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
            |r| head(r).map(|(item, due)| (HeadRow::Item(Box::new(item)), due)),
        )?;
        Ok(rows)
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
    /// lease runs out by itself). A conversation `handed_over` to the other nodes (its
    /// account is not in this node's config): they are told once the lease is gone.
    pub(super) fn release(
        &self,
        store: &Store,
        direction: Direction,
        page_id: &str,
        conversation: &ConversationKey,
        token: i64,
        handed_over: bool,
    ) {
        let (page_id, conversation, node) =
            (page_id.to_owned(), conversation.clone(), self.node.clone());
        store.call_detached(Access::Relaxed, move |conn| {
            conn.exec(
                "DELETE FROM claims
                  WHERE direction = ?1 AND page_id = ?2 AND conversation = ?3 AND holder = ?4
                    AND token = ?5",
                params![direction.as_str(), page_id, conversation, node, token],
            )?;
            if handed_over {
                super::wakes::tell_in_transaction(conn, &node)?;
            }
            Ok(())
        });
    }

    /// Removes every lease of this node (see [`Store::end_leases`]).
    pub(super) fn end_leases(&self, conn: &Sql<'_>) -> Result<u64, DbError> {
        let ended = conn.exec("DELETE FROM claims WHERE holder = ?1", params![self.node])?;
        // The other nodes take those conversations at once, not at their next look.
        super::wakes::tell_in_transaction(conn, &self.node)?;
        Ok(ended as u64)
    }
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
        Store::open_postgres_as(storage, Opener::Daemon)
    }

    /// Opens the queue in PostgreSQL for a command an operator runs (`reconcile`),
    /// perhaps as root: the local state folder is only read, never made or written (it
    /// is the daemon's to make; a spool folder root made would be one the daemon cannot
    /// write).
    pub fn open_postgres_for_command(storage: &StorageConfig) -> Result<Store, StoreError> {
        Store::open_postgres_as(storage, Opener::Command)
    }

    fn open_postgres_as(storage: &StorageConfig, opener: Opener) -> Result<Store, StoreError> {
        let open_err = StoreError::Shared;
        let (config, server, first) = prepared(storage)?;
        if opener == Opener::Daemon {
            super::engine::make_state_dir(&storage.path).map_err(|reason| StoreError::Open {
                path: storage.path.clone(),
                reason,
            })?;
        }

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
                target: config,
                config_node: [hostname(), state_id(&storage.path, opener)].join("/"),
            })),
            wakes: Arc::default(),
        };
        start_renewals(&store);
        Ok(store)
    }

    /// The shared queue's settings, when the store is PostgreSQL.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_deref()
    }
}

/// Makes or migrates the queue's schema in PostgreSQL, one node at a time: all that
/// `queue import` needs on a new host, which may run as root (the state folder is the
/// daemon's to make: root making it would leave the daemon a folder it cannot write).
pub fn prepare_postgres(storage: &StorageConfig) -> Result<(), StoreError> {
    prepared(storage).map(drop)
}

/// The server's settings, its place in words, and a connection on a prepared schema.
fn prepared(storage: &StorageConfig) -> Result<(Target, String, PgConn), StoreError> {
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
    Ok((config, server, first))
}

/// The host's name, for a node's name in `claims`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Who opens the store: the daemon makes its state folder; a command only reads it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opener {
    Daemon,
    Command,
}

/// The id of the state folder of `store_path` (`node-id` in it, made once by the daemon:
/// 8 random hex digits); a random one when the file cannot be read or made. Read and
/// written through the state directory's descriptor; a command never writes it.
fn state_id(store_path: &std::path::Path, opener: Opener) -> String {
    let fresh = || format!("{:08x}", fastrand::u32(..));
    let Ok(dir) = crate::statedir::Dir::state(crate::statedir::of_store(store_path)) else {
        return fresh();
    };
    if let Ok(Some(bytes)) = dir.read("node-id", 64) {
        let id = String::from_utf8_lossy(&bytes).trim().to_owned();
        if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return id;
        }
    }
    let id = fresh();
    if opener == Opener::Command {
        return id;
    }
    // Not kept (a read-only folder): this run's rows are its own, under a new name.
    let _ = dir.write("node-id", format!("{id}\n").as_bytes());
    id
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
