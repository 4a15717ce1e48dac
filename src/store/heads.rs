//! The dispatcher's side of the queue: the due head of each conversation, claimed
//! for delivery (never two of one conversation at once) and released.

use std::sync::Arc;

use rusqlite::params;

use super::items::Item;
use super::sql::{DbError, Row as SqlRow};
use super::{Access, Store, StoreError};
use crate::model::{ConversationKey, Direction};

/// The columns of a head, as [`head`] reads them.
macro_rules! head_columns {
    () => {
        "i.id, i.page_id, i.conversation, i.dedup_key, i.kind, i.event_ts, i.payload, i.attempts, i.steps_done, i.first_failure_at, h.next_attempt_at, i.turn"
    };
}
pub(super) use head_columns;

/// The due heads of one direction, earliest first, read off `heads_due` in its own order
/// (no sort: a claim costs the rows it returns, whatever the backlog). The index holds
/// the table's key beside its own columns, so the conversations come from it alone: the
/// heads of conversations in flight, which a claim passes over (up to
/// `delivery.concurrency` of them at every claim), cost an index entry each, not their
/// item's row. The direction is part of the text, not a parameter: with one statement
/// for both, SQLite re-planned it at every call.
macro_rules! claim_sql {
    ($direction:literal) => {
        concat!(
            "SELECT h.item_id, h.page_id, h.conversation, h.next_attempt_at
               FROM heads h INDEXED BY heads_due
              WHERE h.direction = '",
            $direction,
            "' ORDER BY h.next_attempt_at, h.event_ts, h.item_id LIMIT ?1"
        )
    };
}
const CLAIM_INBOUND: &str = claim_sql!("in");
const CLAIM_OUTBOUND: &str = claim_sql!("out");

/// The item of a head being handed out, by its id: the columns of [`head`].
const CLAIMED_ITEM: &str = "SELECT i.id, i.page_id, i.conversation, i.dedup_key, i.kind,
        i.event_ts, i.payload, i.attempts, i.steps_done, i.first_failure_at,
        i.next_attempt_at, i.turn
   FROM items i WHERE i.id = ?1";

/// A due head as a claim reads it: the item itself (PostgreSQL reads it with its head),
/// or only its id and conversation (SQLite reads the item of those it hands out). The
/// item is boxed: a claim reads a row per conversation in flight, and rows the size of an
/// item made the growing of their vector a quarter of a claim's time.
pub(super) enum HeadRow {
    Item(Box<Item>),
    Key {
        item_id: i64,
        page_id: String,
        conversation: ConversationKey,
    },
    /// The head of a conversation whose item is in flight (SQLite): passed over.
    InFlight,
}

impl HeadRow {
    fn conversation(&self) -> Option<(&str, &ConversationKey)> {
        match self {
            HeadRow::Item(item) => Some((&item.page_id, &item.conversation)),
            HeadRow::Key {
                page_id,
                conversation,
                ..
            } => Some((page_id, conversation)),
            HeadRow::InFlight => None,
        }
    }
}

/// Heads as the queries give them, with when each is due.
pub(super) type Heads = Vec<(HeadRow, i64)>;

/// A head: the item, and when it is due.
pub(super) fn head(r: &SqlRow<'_>) -> Result<(Item, i64), DbError> {
    Ok((
        Item {
            id: r.get(0)?,
            page_id: r.get(1)?,
            conversation: r.get(2)?,
            dedup_key: r.get(3)?,
            kind: r.get(4)?,
            event_ts: r.get(5)?,
            payload: r.get(6)?,
            attempts: r.get(7)?,
            steps_done: r.get(8)?,
            first_failure_at: r.get(9)?,
            after_referral: r.get::<Option<i64>>(11)? == Some(1),
        },
        r.get(10)?,
    ))
}

impl Store {
    /// Claims the next deliverable item of each conversation that has one due (its head:
    /// the oldest pending item by Facebook time, then arrival), at most `limit`, leaving
    /// out conversations claimed already (they have an item in flight) — and says when
    /// the next unclaimed head becomes due, if one is waiting for a retry. Each claim is
    /// a lease on its conversation until [`Store::release`] (or [`CLAIM_LEASE`] passes):
    /// no two workers ever hold one conversation.
    pub async fn claim_heads(
        &self,
        direction: Direction,
        now: i64,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<i64>), StoreError> {
        let claims = self.claims.clone();
        let shared = self.shared.clone();
        // On a shared queue a claim is written to the database (a lease the other nodes
        // see); alone, it lives in this process and the query only reads.
        let access = if shared.is_some() {
            Access::Relaxed
        } else {
            Access::Read
        };
        // What this request claimed, to give back if its transaction does not commit.
        // Once the caller has stopped waiting (a PostgreSQL that hangs answers after the
        // caller's time is up), the request takes nothing more: a conversation claimed
        // then would have been held, undelivered, for the whole claim lease.
        let taken = Arc::new(std::sync::Mutex::new((false, Vec::new())));
        let record = taken.clone();
        let outcome = self
            .call(access, move |conn| {
                // Enough rows to fill `limit` after skipping the claimed ones, plus one more
                // to learn when the next retry is due.
                let want = (limit + claims.held_count(direction, now) + 1) as i64;
                let rows = match &shared {
                    None => {
                        let sql = match direction {
                            Direction::Inbound => CLAIM_INBOUND,
                            Direction::Outbound => CLAIM_OUTBOUND,
                        };
                        let key = |r: &SqlRow<'_>| {
                            let item_id = r.get(0)?;
                            let row = if claims.holds_item(direction, item_id) {
                                HeadRow::InFlight
                            } else {
                                HeadRow::Key {
                                    item_id,
                                    page_id: r.get(1)?,
                                    conversation: r.get(2)?,
                                }
                            };
                            Ok((row, r.get(3)?))
                        };
                        conn.all(sql, params![want], key)?
                    }
                    Some(shared) => shared.heads(conn, direction, now, want)?,
                };
                let mut items = Vec::new();
                let mut next_due = None;
                for (row, next_attempt_at) in rows {
                    let Some((page_id, conversation)) = row.conversation() else {
                        continue;
                    };
                    if claims.holds(direction, page_id, conversation, now) {
                        continue;
                    }
                    if next_attempt_at > now {
                        next_due = Some(next_attempt_at);
                        break;
                    }
                    if items.len() == limit {
                        break;
                    }
                    let item = match row {
                        HeadRow::Item(item) => *item,
                        // Read in the same transaction as its head, so it is there; were
                        // it not, that head is passed over (as a join would), never a
                        // claim that fails at every call.
                        HeadRow::Key { item_id, .. } => {
                            match conn.opt(CLAIMED_ITEM, params![item_id], head)? {
                                Some((item, _)) => item,
                                None => continue,
                            }
                        }
                        HeadRow::InFlight => continue,
                    };
                    let token = {
                        let mut record = record.lock().unwrap_or_else(|e| e.into_inner());
                        let (gone, keys) = &mut *record;
                        if *gone {
                            break;
                        }
                        let Some(token) = claims.try_take(direction, &item, now) else {
                            continue;
                        };
                        keys.push((item.page_id.clone(), item.conversation.clone()));
                        token
                    };
                    if let Some(shared) = &shared
                        && !shared.lease(conn, direction, &item, now, token)?
                    {
                        claims.release(direction, &item.page_id, &item.conversation);
                        continue;
                    }
                    items.push(item);
                }
                Ok((items, next_due))
            })
            .await;
        if outcome.is_err() {
            let mut taken = taken.lock().unwrap_or_else(|e| e.into_inner());
            taken.0 = true;
            for (page_id, conversation) in taken.1.drain(..) {
                self.claims.release(direction, &page_id, &conversation);
            }
        }
        outcome
    }

    /// Ends every lease this node holds on a shared queue (none on SQLite), once its
    /// deliveries have ended at a clean stop: another node, or this one started again,
    /// takes those conversations at once instead of after `storage.lease`. Returns how
    /// many there were: those of deliveries cut at the stop, and of releases still on
    /// their way.
    pub async fn end_leases(&self) -> Result<u64, StoreError> {
        let Some(shared) = self.shared.clone() else {
            return Ok(0);
        };
        self.call(Access::Durable, move |conn| shared.end_leases(conn))
            .await
    }

    /// Leaves the conversation of a claimed item to the other nodes of a shared queue for
    /// `hold` (its account is not in this node's config): this node's claims pass over it
    /// meanwhile, and its lease ends with the claim ([`Store::release`]), which tells the
    /// other nodes so that one of them takes it at once.
    pub fn hand_over(&self, direction: Direction, item: &Item, hold: std::time::Duration) {
        let until = super::now_ms().saturating_add(super::duration_ms(hold));
        self.claims
            .hand_over(direction, &item.page_id, &item.conversation, until);
    }

    /// Ends the claim on a conversation: its next item may go out.
    pub fn release(&self, direction: Direction, page_id: &str, conversation: &ConversationKey) {
        let token = self.claims.release(direction, page_id, conversation);
        if let (Some(shared), Some(token)) = (&self.shared, token) {
            let handed_over = self
                .claims
                .holds(direction, page_id, conversation, super::now_ms());
            shared.release(self, direction, page_id, conversation, token, handed_over);
        }
    }
}
