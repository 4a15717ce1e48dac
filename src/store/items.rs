//! The queue: webhooks and the items taken from them, agent replies, attempts and
//! outcomes, and the operator's figures (the heads, claimed for delivery: `heads`).

use rusqlite::params;
use sha2::Digest;

use super::sql::{DbError, Row as SqlRow, Sql};
use super::{Access, ItemSummary, Store, StoreError, now_ms};
use crate::model::{ConversationKey, DedupKey, Direction, ItemKind, ItemState};

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
    /// A message or button of a conversation that has had a referral (as the item was
    /// claimed): only then may one have come since the customer's previous message.
    pub after_referral: bool,
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
    /// Attempts made so far.
    pub attempts: i64,
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
    /// `earlier_attempts`: whether attempts before this one may be on record, whose
    /// story this delivery ends (false when the claim said this was the first: its
    /// attempt row is then not looked for, a statement less per event).
    Delivered {
        item: i64,
        result: Option<String>,
        at: i64,
        earlier_attempts: bool,
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

fn write_one(conn: &Sql<'_>, write: &Write) -> Result<(), DbError> {
    // The statement, its parameters, and the attempt it records (outcome, error, item, at).
    let (sql, args, attempt): (&str, &[&dyn rusqlite::ToSql], _) = match write {
        Write::Progress {
            item,
            steps_done,
            at,
        } => (
            "UPDATE items SET steps_done = ?2, updated_at = ?3 WHERE id = ?1",
            params![*item, *steps_done, *at],
            None,
        ),
        Write::Sent {
            page_id,
            message_id,
            item,
            at,
        } => (
            "INSERT INTO sent_messages (page_id, message_id, item_id, sent_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![*page_id, *message_id, *item, *at],
            None,
        ),
        Write::PrivateReply {
            page_id,
            object_id,
            item,
            at,
        } => (
            "INSERT INTO private_replies (page_id, object_id, item_id, sent_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![*page_id, *object_id, *item, *at],
            None,
        ),
        Write::Delivered {
            item,
            result,
            at,
            earlier_attempts,
        } => {
            // Delivered at the first attempt, the item's own row says all an attempt row
            // would (when: `updated_at`), and `queue show` reads it from there; the row is
            // written when earlier attempts are on record, to end their story. That is
            // an insert less per event, the commonest case by far, and when the claim
            // said it was the first attempt, the statement that looks for them does not
            // run either. (Not `RETURNING`: SQLite builds a temporary B-tree for it at
            // every run.)
            conn.exec(
                "UPDATE items SET state = 'done', attempts = attempts + 1, result = ?2,
                        updated_at = ?3 WHERE id = ?1",
                params![*item, *result, *at],
            )?;
            if !earlier_attempts {
                return Ok(());
            }
            return conn
                .exec(
                    "INSERT INTO attempts (item_id, at, outcome, error)
                     SELECT id, ?2, 'delivered', NULL FROM items WHERE id = ?1 AND attempts > 1",
                    params![*item, *at],
                )
                .map(drop);
        }
        Write::RetryAt {
            item,
            next_at,
            error,
            at,
        } => (
            "UPDATE items SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3,
                    first_failure_at = COALESCE(first_failure_at, ?4), updated_at = ?4
              WHERE id = ?1",
            params![*item, *next_at, *error, *at],
            Some(("retry", Some(error.as_str()), *item, *at)),
        ),
        Write::Failed { item, reason, at } => (
            "UPDATE items SET state = 'failed', attempts = attempts + 1, last_error = ?2,
                    first_failure_at = COALESCE(first_failure_at, ?3), updated_at = ?3
              WHERE id = ?1",
            params![*item, *reason, *at],
            Some(("failed", Some(reason.as_str()), *item, *at)),
        ),
    };
    conn.exec(sql, args)?;
    match attempt {
        Some((outcome, error, item, at)) => record_attempt(conn, item, at, outcome, error),
        None => Ok(()),
    }
}

/// How many of the latest webhook bodies are found again by their digest.
pub(super) const RECENT_BODIES: usize = 4096;

/// The digests of the latest webhook bodies and their rows, so that a body received
/// again (Facebook's redelivery, a captured body replayed a thousand times) points at
/// the stored copy instead of adding one. In memory, not an index: an index of random
/// digests cost a B-tree leaf per webhook (+78 % WAL written at intake). A body older
/// than the last [`RECENT_BODIES`], or received again after a restart, is stored once
/// more; its items are deduplicated either way. Used by the store thread only.
#[derive(Default)]
pub(super) struct RecentBodies {
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
    fn stored(&self, conn: &Sql<'_>, digest: &[u8; 32]) -> Result<Option<i64>, DbError> {
        let id = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.rows.get(digest).copied()
        };
        let Some(id) = id else { return Ok(None) };
        let found: Option<Vec<u8>> = conn
            .opt(
                "SELECT digest FROM webhooks WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?
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

/// An inbound item's `turn` at intake (the parameters are the insert's; `?12` is
/// [`turn_class`]): 2 for a referral; 1 for a message or button in a conversation that
/// has had a referral, so that `referral_before` can tell whether the customer wrote
/// since it; NULL for every other item, which the turns index then leaves out (most
/// conversations never have a referral, and a leaf of that index written per message was
/// a quarter of the intake's WAL frames). The kind is told in Rust: SQLite evaluates
/// `x IN (three or more constants)` by building a temporary B-tree at every execution.
macro_rules! turn_sql {
    () => {
        "CASE CAST(?12 AS BIGINT) WHEN 2 THEN 2
                  WHEN 1 THEN (SELECT 1 FROM items INDEXED BY items_turns
                                WHERE page_id = ?2 AND conversation = ?3 AND turn = 2 LIMIT 1)
         END"
    };
}

/// What [`turn_sql!`] needs of an item: 2 for a customer's referral, 1 for a customer's
/// message or button, none for everything else.
fn turn_class(item: &NewItem) -> Option<i64> {
    match item.direction {
        Direction::Inbound if item.kind.is_referral() => Some(2),
        Direction::Inbound if item.kind.is_turn() => Some(1),
        _ => None,
    }
}

/// The kinds of a customer's referral, as an SQL list.
macro_rules! referral_kinds {
    () => {
        "('referral', 'ig_referral')"
    };
}
pub(super) use referral_kinds;

/// The kinds of a customer's message or button (their turns), as an SQL list.
macro_rules! message_kinds {
    () => {
        "('message', 'postback', 'ig_message', 'ig_postback')"
    };
}
pub(super) use message_kinds;

/// When a referral is stored, the conversation's pending messages and buttons become
/// turns: one of them (stored first, with a later Facebook time) may be the message the
/// referral brought. Delivered ones are past asking.
const MARK_TURNS: &str = "UPDATE items INDEXED BY items_pending SET turn = 1
      WHERE state = 'pending' AND direction = 'in' AND page_id = ?1 AND conversation = ?2
        AND turn IS NULL
        AND (kind = 'message' OR kind = 'postback' OR kind = 'ig_message'
             OR kind = 'ig_postback')";

/// [`MARK_TURNS`] on PostgreSQL, which has no `INDEXED BY`: a function that reads the
/// conversation's pending items in `items_pending`'s order whatever the planner knows
/// (see the schema's migration).
const MARK_TURNS_PG: &str = "SELECT fb_mark_turns(?1, ?2)";

impl Store {
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
                    let id = conn.insert_id(
                        "INSERT INTO webhooks (received_at, body, parse_error, digest)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![now, body, parse_error, &digest[..]],
                    )?;
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
            let insert = concat!(
                "INSERT INTO items
                   (direction, page_id, conversation, dedup_key, kind, event_ts, payload,
                    webhook_id, state, last_error, created_at, updated_at, turn)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ",
                turn_sql!(),
                ") ON CONFLICT DO NOTHING"
            );
            for item in items {
                let (state, reason) = match &item.state {
                    NewState::Pending => ("pending", None),
                    NewState::Skipped(r) => ("skipped", Some(r.as_str())),
                    NewState::Failed(r) => ("failed", Some(r.as_str())),
                };
                let inserted = conn.exec(
                    insert,
                    params![
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
                        now,
                        turn_class(&item)
                    ],
                )?;
                if inserted == 0 {
                    outcome.duplicates += 1;
                } else {
                    if item.direction == Direction::Inbound && item.kind.is_referral() {
                        let mark = if conn.is_postgres() {
                            MARK_TURNS_PG
                        } else {
                            MARK_TURNS
                        };
                        conn.exec(mark, params![item.page_id, item.conversation])?;
                    }
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
            earlier_attempts: true,
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
            let inserted = conn.exec(
                "INSERT INTO items
                   (direction, page_id, conversation, dedup_key, kind, event_ts, payload,
                    state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)
                 ON CONFLICT DO NOTHING",
                params![
                    item.direction.as_str(),
                    item.page_id,
                    item.conversation,
                    item.dedup_key,
                    item.kind,
                    item.event_ts,
                    item.payload,
                    now
                ],
            )?;
            conn.one(
                "SELECT id, state, last_error, result, attempts FROM items
                  WHERE direction = ?1 AND page_id = ?2 AND dedup_key = ?3",
                params![item.direction.as_str(), item.page_id, item.dedup_key],
                |r| enqueued(r, inserted > 0),
            )
        })
        .await
    }

    /// The state of a stored item (a reply another node may be sending).
    pub async fn stored(&self, id: i64) -> Result<Option<Enqueued>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.opt(
                "SELECT id, state, last_error, result, attempts FROM items WHERE id = ?1",
                params![id],
                |r| enqueued(r, false),
            )
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

    /// Every item, oldest first.
    pub async fn items(&self) -> Result<Vec<ItemSummary>, StoreError> {
        self.call(Access::Read, |conn| {
            let columns = ROW_COLUMNS;
            conn.all(
                &format!("SELECT {columns} FROM items ORDER BY id"),
                params![],
                row,
            )
        })
        .await
    }

    /// Stored webhook bodies that could not be read: `(id, parse_error)`.
    pub async fn failed_webhooks(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.call(Access::Read, |conn| {
            conn.all(
                "SELECT id, parse_error FROM webhooks WHERE parse_error IS NOT NULL ORDER BY id",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    /// Number of stored webhook bodies.
    pub async fn webhook_count(&self) -> Result<i64, StoreError> {
        self.call(Access::Read, |conn| {
            conn.one("SELECT COUNT(*) FROM webhooks", params![], |r| r.get(0))
        })
        .await
    }

    /// Pending items per page and direction, with the creation time of the first of
    /// them stored, ordered by page and direction: read off the counts the schema keeps
    /// and one step down `items_waiting` per page and direction, whatever the backlog.
    /// It runs at every probe of `/readyz` and scrape of `/metrics`, on SQLite on the
    /// store thread between the webhooks' commits.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        let counted: Vec<Option<QueueStat>> = self
            .call(Access::Read, |conn| {
                conn.all(KEPT_QUEUE, params![], |r| {
                    let Some(oldest_created_at) = r.get(3)? else {
                        return Ok(None);
                    };
                    Ok(Some(QueueStat {
                        page_id: r.get(0)?,
                        direction: r.get(1)?,
                        pending: r.get(2)?,
                        oldest_created_at,
                    }))
                })
            })
            .await?;
        // A count that no pending item bears out (the triggers keep none) is left out.
        let mut stats: Vec<QueueStat> = counted.into_iter().flatten().collect();
        stats.sort_by(|a, b| (&a.page_id, &a.direction).cmp(&(&b.page_id, &b.direction)));
        Ok(stats)
    }

    /// Number of items per state, e.g. `[("done", 3), ("pending", 1)]`, read off the
    /// counts the schema keeps: a few rows, whatever the history.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.call(Access::Read, |conn| {
            conn.all(KEPT_COUNTS, params![], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .await
    }
}

/// The items per state as the schema keeps them (states with none left out, as a count
/// leaves them out). On PostgreSQL a count has a row per server process that changed
/// it: they add up.
pub(super) const KEPT_COUNTS: &str = "SELECT state, CAST(SUM(items) AS BIGINT) FROM item_counts
  GROUP BY state HAVING SUM(items) > 0 ORDER BY state";

/// The pending items per page and direction as the schema keeps them, and when the first
/// of them was stored: ids grow as items are stored, so it is the first in
/// `items_waiting` (its condition word for word, so that SQLite's index serves it).
pub(super) const KEPT_QUEUE: &str = "SELECT c.page_id, c.direction, CAST(SUM(c.items) AS BIGINT),
       (SELECT i.created_at FROM items i INDEXED BY items_waiting
         WHERE i.state = 'pending' AND i.direction = c.direction AND i.page_id = c.page_id
         ORDER BY i.id LIMIT 1)
  FROM item_counts c WHERE c.state = 'pending'
 GROUP BY c.direction, c.page_id HAVING SUM(c.items) > 0";

/// PostgreSQL: the rows of the counts kept by server processes that are gone (a host's
/// connection closed), moved into the row of none, so that they stay as many as the
/// connections open. A process that takes a gone one's id meanwhile waits for this on
/// the row, and its change is moved with it.
pub(super) const FOLD_GONE_BACKENDS: &str = "WITH gone AS (
         DELETE FROM item_counts
          WHERE backend <> 0 AND backend NOT IN (SELECT pid FROM pg_stat_activity)
          RETURNING state, direction, page_id, items)
     INSERT INTO item_counts (state, direction, page_id, backend, items)
     SELECT state, direction, page_id, 0, SUM(items) FROM gone
      GROUP BY state, direction, page_id
     ON CONFLICT (state, direction, page_id, backend)
     DO UPDATE SET items = item_counts.items + excluded.items";

fn enqueued(r: &SqlRow<'_>, new: bool) -> Result<Enqueued, DbError> {
    Ok(Enqueued {
        id: r.get(0)?,
        new,
        state: r.get(1)?,
        last_error: r.get(2)?,
        result: r.get(3)?,
        attempts: r.get(4)?,
    })
}

/// Adds a row to an item's attempt history.
pub(crate) fn record_attempt(
    conn: &Sql<'_>,
    item: i64,
    at: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), DbError> {
    conn.exec(
        "INSERT INTO attempts (item_id, at, outcome, error) VALUES (?1, ?2, ?3, ?4)",
        params![item, at, outcome, error],
    )
    .map(drop)
}

/// One item, as `queue list` and the demo show it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub direction: Direction,
    pub page_id: String,
    pub conversation: ConversationKey,
    pub kind: ItemKind,
    pub state: ItemState,
    pub attempts: i64,
    /// Facebook time of the event (or when the reply came), ms: the delivery order.
    pub event_ts: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_error: Option<String>,
}

/// The columns that [`row`] reads, in its order.
pub(super) const ROW_COLUMNS: &str = "id, direction, page_id, conversation, kind, state, attempts, created_at, updated_at, last_error, event_ts";

pub(super) fn row(r: &SqlRow<'_>) -> Result<Row, DbError> {
    Ok(Row {
        id: r.get(0)?,
        direction: r.get(1)?,
        page_id: r.get(2)?,
        conversation: r.get(3)?,
        kind: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        last_error: r.get(9)?,
        event_ts: r.get(10)?,
    })
}
