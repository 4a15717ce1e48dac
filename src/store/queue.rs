//! The queue as an operator sees it: what the `queue` commands read and change.
//!
//! These run in the CLI process, on their own connection to the same database. WAL lets
//! them read while the daemon writes; their few writes (retry, drop) wait for the
//! daemon's current transaction (busy timeout) and are picked up by its dispatcher
//! within a second.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;

pub use super::items::Row;
use super::items::{ROW_COLUMNS, row};
use super::sql::{DbError, PgConn, Sql};
use super::{now_ms, record_attempt, schema};
use crate::model::{ConversationKey, DedupKey, ItemState};

/// The queue's database, opened by a command beside the daemon.
pub enum Database {
    Lite(Connection),
    Pg(Box<PgConn>),
}

impl Database {
    /// The connection, for the functions of this module.
    pub fn sql(&mut self) -> Sql<'_> {
        match self {
            Database::Lite(c) => Sql::Lite(c),
            Database::Pg(c) => Sql::Pg(std::cell::RefCell::new(c)),
        }
    }
}

/// Opens the configured queue: the SQLite file (which must exist) or the PostgreSQL
/// database.
pub fn open_storage(storage: &crate::config::StorageConfig) -> Result<Database, String> {
    if storage.is_postgres() {
        super::pg::connect_for_tools(storage).map(|c| Database::Pg(Box::new(c)))
    } else {
        open(&storage.path).map(Database::Lite)
    }
}

/// Runs `f` on the configured queue, on a thread of its own: PostgreSQL's client blocks
/// on a runtime of its own, which tokio forbids inside async code (`doctor`).
pub fn with_storage<R: Send>(
    storage: &crate::config::StorageConfig,
    f: impl FnOnce(&Sql<'_>) -> R + Send,
) -> Result<R, String> {
    super::pg::off_runtime(|| open_storage(storage).map(|mut db| f(&db.sql())))
}

/// Opens an existing state database; never creates one (a typo in the path must not
/// look like an empty queue). The commands that call it may run as root in a folder of
/// the daemon's user (DESIGN §4 rule 14): the database must be a regular file, and
/// neither it nor its WAL is opened through a symbolic link (a database of root's, which
/// the schema's upkeep would write into; a FIFO, whose read never ends).
pub fn open(path: &Path) -> Result<Connection, String> {
    if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Err(format!(
            "no state database at {} (storage.path): has the daemon run yet, and is this the right config?",
            path.display()
        ));
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for (file, must_exist) in [
        (path, true),
        (Path::new(&wal), false),
        (Path::new(&shm), false),
    ] {
        match std::fs::symlink_metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {}
            Err(e) => return Err(format!("cannot open {}: {e}", file.display())),
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(format!(
                    "{} is not a regular file (a symbolic link, a FIFO or a device): refused; the daemon makes its database files as plain files, so something else put this one there",
                    file.display()
                ));
            }
            Ok(_) => {}
        }
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    schema::prepare(&conn).map_err(|e| format!("cannot use {}: {e}", path.display()))?;
    Ok(conn)
}

/// The most recent failed item: `(page, direction, why)`.
pub fn latest_failure(conn: &Sql<'_>) -> Result<Option<(String, String, String)>, DbError> {
    conn.opt(
        "SELECT page_id, direction, COALESCE(last_error, '') FROM items INDEXED BY items_failed
          WHERE state = 'failed' ORDER BY id DESC LIMIT 1",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// The page's most recent customer message that came as a standby event, and whether a
/// customer message came through `messaging` after it: `(conversation, at ms, then?)`.
/// (A scan from the newest item back; the standby-only case stops at once.)
pub fn latest_standby(
    conn: &Sql<'_>,
    page_id: &str,
) -> Result<Option<(String, i64, bool)>, DbError> {
    let latest: Option<(i64, String, i64)> = conn.opt(
        "SELECT id, conversation, created_at FROM items
          WHERE direction = 'in' AND page_id = ?1 AND kind = 'standby'
          ORDER BY id DESC LIMIT 1",
        params![page_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((id, conversation, at)) = latest else {
        return Ok(None);
    };
    let messaging_since: bool = conn.one(
        "SELECT EXISTS (SELECT 1 FROM items
          WHERE id > ?1 AND direction = 'in' AND page_id = ?2
            AND kind IN ('message', 'postback', 'edit', 'deleted'))",
        params![id, page_id],
        |r| r.get(0),
    )?;
    Ok(Some((conversation, at, messaging_since)))
}

/// Queue figures of one page in one direction.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stat {
    pub page_id: String,
    pub direction: String,
    pub pending: i64,
    /// Pending items that have failed at least once and wait for their next attempt.
    pub retrying: i64,
    pub failed: i64,
    pub done: i64,
    /// Age of the oldest pending item, ms.
    pub oldest_pending_ms: Option<i64>,
}

/// Per page and direction, as the schema keeps them: the items pending, failed and done
/// (summed over the count's rows: PostgreSQL keeps one per server process), and of the
/// pending ones, how many wait for another attempt and when the first of them was stored.
/// Read off the counts and the pending items alone (`items_waiting`, its condition word
/// for word), not the whole history: on a box that keeps months of it, `queue stats` and
/// `doctor` read every item kept, payloads included.
pub(super) const KEPT_PAGES: &str = "SELECT c.page_id, c.direction,
       CAST(SUM(CASE WHEN c.state = 'pending' THEN c.items ELSE 0 END) AS BIGINT),
       (SELECT COUNT(*) FROM items i INDEXED BY items_waiting
         WHERE i.state = 'pending' AND i.direction = c.direction AND i.page_id = c.page_id
           AND i.attempts > 0),
       CAST(SUM(CASE WHEN c.state = 'failed' THEN c.items ELSE 0 END) AS BIGINT),
       CAST(SUM(CASE WHEN c.state = 'done' THEN c.items ELSE 0 END) AS BIGINT),
       (SELECT i.created_at FROM items i INDEXED BY items_waiting
         WHERE i.state = 'pending' AND i.direction = c.direction AND i.page_id = c.page_id
         ORDER BY i.id LIMIT 1)
  FROM item_counts c
 GROUP BY c.page_id, c.direction HAVING SUM(c.items) > 0
 ORDER BY c.page_id, c.direction";

pub fn stats(conn: &Sql<'_>) -> Result<Vec<Stat>, DbError> {
    stats_at(conn, now_ms())
}

/// The same figures counted from every item: for a PostgreSQL queue whose schema this
/// release's daemon has not upgraded yet (the tools do not upgrade a shared schema; the
/// first daemon started does), as `doctor` run between installing a release and
/// restarting the daemon finds it.
pub(super) const COUNTED_PAGES: &str = "SELECT page_id, direction,
        COUNT(*) FILTER (WHERE state = 'pending'),
        COUNT(*) FILTER (WHERE state = 'pending' AND attempts > 0),
        COUNT(*) FILTER (WHERE state = 'failed'), COUNT(*) FILTER (WHERE state = 'done'),
        MIN(CASE WHEN state = 'pending' THEN created_at END)
   FROM items GROUP BY page_id, direction ORDER BY page_id, direction";

/// [`stats`], with the ages counted to `now` (ms).
pub(super) fn stats_at(conn: &Sql<'_>, now: i64) -> Result<Vec<Stat>, DbError> {
    let kept = !conn.is_postgres()
        || conn.one(
            "SELECT to_regclass('item_counts') IS NOT NULL",
            params![],
            |r| r.get::<bool>(0),
        )?;
    stats_by(conn, if kept { KEPT_PAGES } else { COUNTED_PAGES }, now)
}

/// The figures `sql` reads ([`KEPT_PAGES`] or [`COUNTED_PAGES`]), ages counted to `now`.
pub(super) fn stats_by(conn: &Sql<'_>, sql: &str, now: i64) -> Result<Vec<Stat>, DbError> {
    conn.all(sql, params![], |r| {
        let oldest: Option<i64> = r.get(6)?;
        Ok(Stat {
            page_id: r.get(0)?,
            direction: r.get(1)?,
            pending: r.get(2)?,
            retrying: r.get(3)?,
            failed: r.get(4)?,
            done: r.get(5)?,
            oldest_pending_ms: oldest.map(|t| (now - t).max(0)),
        })
    })
}

/// What `queue list` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub failed_only: bool,
    pub page_id: Option<String>,
    /// Only items stored at or after this time (ms).
    pub since_ms: Option<i64>,
    pub limit: Option<usize>,
}

/// Items, newest first. Without `failed_only`, skipped and done items are left out: the
/// list is about work, not history.
pub fn list(conn: &Sql<'_>, filter: &Filter) -> Result<Vec<Row>, DbError> {
    // `= 'failed'` lets SQLite use the partial index of failed items.
    let states = if filter.failed_only {
        "= 'failed'"
    } else {
        "IN ('pending', 'failed')"
    };
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM items
          WHERE state {states} AND (CAST(?1 AS TEXT) IS NULL OR page_id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR created_at >= ?2)
          ORDER BY id DESC LIMIT ?3"
    );
    let limit = filter.limit.map_or(i64::MAX, |l| l as i64);
    conn.all(&sql, params![filter.page_id, filter.since_ms, limit], row)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    pub at: i64,
    pub outcome: String,
    pub error: Option<String>,
}

/// Everything about one item, for `queue show`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detail {
    #[serde(flatten)]
    pub row: Row,
    pub dedup_key: DedupKey,
    pub event_ts: i64,
    pub next_attempt_at: i64,
    /// Steps (notify calls, messages) of the item already done.
    pub steps_done: i64,
    pub payload: String,
    pub result: Option<String>,
    pub attempt_history: Vec<Attempt>,
    /// The conversation's latest read and delivery receipts (receipts are recorded, not
    /// sent to Motion): did the customer see it?
    pub receipts: Receipts,
}

/// A conversation's latest receipts, as the customer's app reported them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Receipts {
    /// Everything sent before this time (ms) was read; for Instagram, the time of the
    /// receipt (it names a message, not a time).
    pub read_up_to: Option<i64>,
    /// Everything sent before this time (ms) reached the customer's device.
    pub delivered_up_to: Option<i64>,
}

/// The latest read and delivery receipts of a conversation.
pub fn receipts(
    conn: &Sql<'_>,
    page_id: &str,
    conversation: &ConversationKey,
) -> Result<Receipts, DbError> {
    let latest = |kinds: &str, field: &str| -> Result<Option<i64>, DbError> {
        let found: Option<(String, i64)> = conn.opt(
            &format!(
                "SELECT payload, event_ts FROM items
                      WHERE page_id = ?1 AND conversation = ?2 AND direction = 'in'
                        AND kind IN ({kinds})
                      ORDER BY event_ts DESC, id DESC LIMIT 1"
            ),
            params![page_id, conversation],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(found.map(|(payload, at)| {
            serde_json::from_str::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| v[field]["watermark"].as_i64())
                .unwrap_or(at)
        }))
    };
    Ok(Receipts {
        read_up_to: latest("'read', 'ig_read'", "read")?,
        delivered_up_to: latest("'delivery', 'ig_delivery'", "delivery")?,
    })
}

pub fn show(conn: &Sql<'_>, id: i64) -> Result<Option<Detail>, DbError> {
    let found = conn.opt(
        &format!("SELECT {ROW_COLUMNS}, dedup_key, event_ts, next_attempt_at, payload, result, steps_done FROM items WHERE id = ?1"),
        params![id],
        |r| Ok((row(r)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?, r.get(16)?)),
    )?;
    let Some((row, dedup_key, event_ts, next_attempt_at, payload, result, steps_done)) = found
    else {
        return Ok(None);
    };
    let attempt_history = conn.all(
        "SELECT at, outcome, error FROM attempts WHERE item_id = ?1 ORDER BY at, rowid",
        params![id],
        |r| {
            Ok(Attempt {
                at: r.get(0)?,
                outcome: r.get(1)?,
                error: r.get(2)?,
            })
        },
    )?;
    // An item delivered at its first attempt has no attempt row: its own row is it.
    let mut attempt_history = attempt_history;
    if row.state == ItemState::Done && !attempt_history.iter().any(|a| a.outcome == "delivered") {
        attempt_history.push(Attempt {
            at: row.updated_at,
            outcome: "delivered".to_owned(),
            error: None,
        });
    }
    let receipts = receipts(conn, &row.page_id, &row.conversation)?;
    Ok(Some(Detail {
        receipts,
        row,
        dedup_key,
        event_ts,
        next_attempt_at,
        steps_done,
        payload,
        result,
        attempt_history,
    }))
}

/// Puts failed (or pending) items back in the queue for an attempt now. Returns the ids
/// changed; items that are done or skipped are left alone.
pub fn retry(conn: &Sql<'_>, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    transaction(conn, |tx| {
        let mut changed = Vec::new();
        for &id in ids {
            let n = tx.exec(
                "UPDATE items SET state = 'pending', next_attempt_at = 0, first_failure_at = NULL,
                    updated_at = ?2
              WHERE id = ?1 AND state IN ('failed', 'pending')",
                params![id, now_ms()],
            )?;
            if n > 0 {
                record_attempt(tx, id, super::now_ms(), "retried-by-operator", None)?;
                changed.push(id);
            }
        }
        // The daemons look at once, not at their next look (on a shared queue).
        if !changed.is_empty() {
            super::wakes::tell_in_transaction(tx, "operator")?;
        }
        Ok(changed)
    })
}

/// Runs `f` in one transaction: all of it or nothing.
pub(super) fn transaction<R>(
    conn: &Sql<'_>,
    f: impl FnOnce(&Sql<'_>) -> Result<R, DbError>,
) -> Result<R, DbError> {
    conn.batch("BEGIN")?;
    match f(conn) {
        Ok(r) => {
            conn.batch("COMMIT")?;
            Ok(r)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Ids of failed items, oldest first, optionally only those stored since `since_ms`.
pub fn failed_ids(conn: &Sql<'_>, since_ms: Option<i64>) -> Result<Vec<i64>, DbError> {
    conn.all(
        "SELECT id FROM items WHERE state = 'failed' AND (CAST(?1 AS BIGINT) IS NULL OR created_at >= ?1) ORDER BY id",
        params![since_ms],
        |r| r.get(0),
    )
}

/// Removes items (and their history) for good. Returns the ids removed.
pub fn drop_items(conn: &Sql<'_>, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    transaction(conn, |tx| {
        let mut removed = Vec::new();
        for &id in ids {
            tx.exec("DELETE FROM attempts WHERE item_id = ?1", params![id])?;
            if tx.exec("DELETE FROM items WHERE id = ?1", params![id])? > 0 {
                removed.push(id);
            }
        }
        Ok(removed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, ItemState};
    use crate::store::{NewItem, NewState, Store};

    /// A pending Messenger message `key` from `customer` on page 1.
    fn message(key: &str, customer: &str) -> NewItem {
        NewItem {
            direction: Direction::Inbound,
            page_id: "1".into(),
            conversation: crate::model::ConversationKey::customer(customer),
            dedup_key: crate::model::DedupKey::message(key),
            kind: crate::model::ItemKind::Messaging(crate::model::MessagingKind::Message),
            event_ts: 1,
            payload: "{}".into(),
            state: NewState::Pending,
        }
    }

    /// A store at `path` with two pending messages, items 1 and 2, the second retried
    /// once (due again at once).
    async fn two_messages_the_second_retried(path: &Path) -> Store {
        let store = Store::open(path).unwrap();
        store
            .intake(
                b"{}".to_vec(),
                None,
                vec![message("a", "2"), message("b", "3")],
            )
            .await
            .unwrap();
        store
            .retry_later(2, 0, "Motion answered 503".into())
            .await
            .unwrap();
        store
    }

    /// The commonest outcome, a delivery at the first attempt, writes no attempt row:
    /// the item's own row tells it, and `queue show` reads it from there. A delivery
    /// after earlier attempts is on record with them.
    #[tokio::test]
    async fn a_first_attempt_delivery_is_told_by_its_item_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = two_messages_the_second_retried(&path).await;
        store.complete(1, None).await.unwrap();
        store.complete(2, None).await.unwrap();

        let conn = open(&path).unwrap();
        let rows = |id: i64| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM attempts WHERE item_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!((rows(1), rows(2)), (0, 2));
        let conn = Sql::Lite(&conn);
        let history = |id: i64| -> Vec<(String, bool)> {
            let detail = show(&conn, id).unwrap().unwrap();
            detail
                .attempt_history
                .iter()
                .map(|a| (a.outcome.clone(), a.at == detail.row.updated_at))
                .collect()
        };
        assert_eq!(history(1), [("delivered".to_owned(), true)]);
        let outcomes: Vec<String> = history(2).into_iter().map(|(o, _)| o).collect();
        assert_eq!(outcomes, ["retry", "delivered"]);
    }

    /// A delivery the claim knows to be the first attempt does not look for earlier
    /// attempt rows: only the item's own `UPDATE` runs (on PostgreSQL, a round trip less
    /// while its row locks are held). One after a retry still ends its story.
    #[tokio::test]
    async fn a_delivery_at_the_first_attempt_runs_one_statement() {
        use crate::store::Write;
        use crate::store::sql::watch;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = two_messages_the_second_retried(&path).await;
        let (items, _) = store
            .claim_heads(Direction::Inbound, now_ms(), 4)
            .await
            .unwrap();
        let attempts: Vec<(i64, i64)> = items.iter().map(|i| (i.id, i.attempts)).collect();
        assert_eq!(attempts, [(1, 0), (2, 1)]);

        let side = open(&path).unwrap();
        let database = side.path().unwrap().to_owned();
        let mut ran = Vec::new();
        for item in &items {
            watch::start(&database);
            store
                .apply(vec![Write::Delivered {
                    item: item.id,
                    result: None,
                    at: now_ms(),
                    earlier_attempts: item.attempts > 0,
                }])
                .await
                .unwrap();
            let mut seen: Vec<String> = watch::stop(&database)
                .into_keys()
                .filter(|sql| sql.contains("items") || sql.contains("attempts"))
                .map(|sql| sql.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .collect();
            seen.sort();
            ran.push(seen);
        }
        assert_eq!(
            ran,
            [
                vec!["UPDATE items SET"],
                vec!["INSERT INTO attempts", "UPDATE items SET"]
            ]
        );
        let outcomes: Vec<String> = side
            .prepare("SELECT outcome FROM attempts WHERE item_id = 2 ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(outcomes, ["retry", "delivered"]);
    }

    #[tokio::test]
    async fn retry_and_drop_change_only_what_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        let new = |key: &str| message(key, "2");
        store
            .intake(b"{}".to_vec(), None, vec![new("a"), new("b"), new("c")])
            .await
            .unwrap();
        store.fail(1, "Motion answered 400".into()).await.unwrap();
        store.complete(2, None).await.unwrap();

        let conn = open(&path).unwrap();
        let conn = Sql::Lite(&conn);
        let s = stats(&conn).unwrap();
        assert_eq!((s[0].pending, s[0].failed, s[0].done), (1, 1, 1));
        assert_eq!(
            list(
                &conn,
                &Filter {
                    failed_only: true,
                    ..Filter::default()
                }
            )
            .unwrap()
            .len(),
            1
        );
        assert_eq!(
            retry(&conn, &[1, 2]).unwrap(),
            vec![1],
            "a done item is not sent again"
        );
        let detail = show(&conn, 1).unwrap().unwrap();
        assert_eq!(detail.row.state, ItemState::Pending);
        let outcomes: Vec<_> = detail
            .attempt_history
            .iter()
            .map(|a| a.outcome.as_str())
            .collect();
        assert_eq!(outcomes, ["failed", "retried-by-operator"]);
        assert_eq!(drop_items(&conn, &[3, 99]).unwrap(), vec![3]);
        assert!(show(&conn, 3).unwrap().is_none());
        assert!(
            open(&dir.path().join("missing.db"))
                .unwrap_err()
                .contains("no state database")
        );
    }
}
