//! The durable queue: one SQLite database in WAL mode.
//!
//! All access goes through one dedicated OS thread that owns the connection, so the async
//! runtime never waits on disk. Callers send it closures; the thread takes every request
//! that is waiting, runs them in **one transaction** per kind (what is acknowledged to a
//! peer, reads, delivery outcomes) and commits once. A second thread fsyncs the WAL for
//! the acknowledged kind — one fsync for every batch committed meanwhile (group commit) —
//! and only then answers those callers. A webhook is therefore acknowledged only after
//! its bytes are on disk, and fifty concurrent webhooks cost a handful of fsyncs, not
//! fifty. Each write runs inside its own savepoint, so one failing request does not undo
//! its neighbours. The reads of a batch run in a read transaction of their own: they
//! never see writes that may yet be rolled back, and they are answered even when the
//! writes cannot commit (a full disk).
//!
//! Tables: `webhooks` (raw bodies as received), `items` (one row per event or reply, the
//! queue), `profiles` (cached customer names), `instagram_tokens` (Instagram Login tokens
//! the daemon refreshed).
//!
//! Files: [`engine`] (the writer thread, batching, checkpoints), [`items`] (the queue),
//! [`memory`] (conversation memory), [`tokens`], [`retention`], [`schema`] (migrations) and
//! [`queue`] (the operator's view, from another process). No SQL runs outside this
//! folder.

pub mod acme_rows;
mod checkpoints;
mod claims;
mod engine;
mod heads;
mod items;
mod memory;
pub mod node_configs;
mod pg;
mod pg_schema;
#[cfg(test)]
mod plans;
pub mod queue;
mod retention;
mod schema;
mod shared_pauses;
pub mod sql;
mod stats;
pub mod tokens;
pub mod transfer;
pub mod wakes;
mod walwrites;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use crate::model::Direction;
pub use acme_rows::{AcmeRow, OrderHeld};
pub use claims::CLAIM_LEASE;
use claims::Claims;
use engine::Request;
pub use engine::{Access, beside, spool_dir};
use items::RecentBodies;
pub(crate) use items::record_attempt;
pub use items::{Enqueued, IntakeOutcome, Item, NewItem, NewState, QueueStat, Write};
pub use memory::Profile;
pub use pg::{
    PgStatus, Shared, off_runtime, place, prepare_postgres, settings as pg_settings,
    status as pg_status, target as pg_target,
};
/// One row of the queue, as operators (`queue list`) and tests see it.
pub use queue::Row as ItemSummary;
pub use retention::Pruned;
pub use shared_pauses::SharedPause;
pub use sql::DbError;
pub use stats::StoreStats;
pub use tokens::StoredToken;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error: {0}")]
    Db(#[from] DbError),
    #[error("state database could not commit ({0}); nothing of this batch was stored")]
    Commit(String),
    #[error("state database is closed")]
    Closed,
    #[error("cannot open the state database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// The queue in PostgreSQL cannot be used; the reason names the server.
    #[error("{0} (storage.url)")]
    Shared(String),
}

/// The version of the database's schema (SQLite's `user_version`, PostgreSQL's
/// `fb_openchannel_schema`).
pub fn schema_version(conn: &sql::Sql<'_>) -> Result<i64, DbError> {
    let query = if conn.is_postgres() {
        "SELECT COALESCE(MAX(version), 0) FROM fb_openchannel_schema"
    } else {
        "SELECT user_version FROM pragma_user_version"
    };
    conn.one(query, &[], |r| r.get(0))
}

pub use crate::time::{duration_ms, now_ms, until};

/// Handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<Request>,
    stats: Arc<StoreStats>,
    path: Arc<PathBuf>,
    recent_bodies: Arc<RecentBodies>,
    claims: Arc<Claims>,
    /// Set when the queue is shared by several daemons (PostgreSQL): who this node is,
    /// and the leases it holds in the database.
    shared: Option<Arc<Shared>>,
    /// What wakes the dispatchers, here and on the other nodes.
    wakes: Arc<wakes::Wakes>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

#[cfg(test)]
mod tests;
