//! Retention: old history deleted in small steps (`storage.keep`).

use rusqlite::params;

use super::sql::{DbError, Sql};
use super::{Access, Store, StoreError};

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

impl Store {
    /// Deletes up to `chunk` delivered or skipped items last changed before `cutoff` (ms)
    /// with their attempt history, up to `chunk` webhook bodies received before `cutoff`
    /// that no item refers to any more (bodies that could not be read stay, for replay),
    /// and up to `chunk` each of older sent-message ids, private-reply records and cached
    /// names. Pending and failed items are never touched. Call it again while it deletes
    /// something: small steps leave the store thread to the webhooks in between. On a
    /// queue shared by several daemons one of them prunes at a time; the others' steps
    /// delete nothing.
    pub async fn prune(&self, cutoff: i64, chunk: usize) -> Result<Pruned, StoreError> {
        self.call(Access::Relaxed, move |conn| {
            if !super::pg::one_node_at_a_time(conn, super::pg::Periodic::Retention)? {
                return Ok(Pruned::default());
            }
            let chunk = chunk as i64;
            let item_bound = first_id_since(conn, "items", "created_at", cutoff)?;
            let items = conn.exec(
                "DELETE FROM items WHERE id IN (
                    SELECT id FROM items
                     WHERE id < ?2 AND state IN ('done', 'skipped') AND updated_at < ?1
                     ORDER BY id LIMIT ?3)",
                params![cutoff, item_bound, chunk],
            )?;
            let webhook_bound = first_id_since(conn, "webhooks", "received_at", cutoff)?;
            let webhooks = conn.exec(
                "DELETE FROM webhooks WHERE id IN (
                    SELECT w.id FROM webhooks w
                     WHERE w.id < ?1 AND w.parse_error IS NULL
                       AND NOT EXISTS (SELECT 1 FROM items i WHERE i.webhook_id = w.id)
                     ORDER BY w.id LIMIT ?2)",
                params![webhook_bound, chunk],
            )?;
            let mut other = 0;
            for sql in [
                // A reply still pending (give_up_after may exceed keep) needs the ids
                // of its parts already sent, or a retry would send them again.
                "DELETE FROM sent_messages WHERE rowid IN
                    (SELECT rowid FROM sent_messages WHERE sent_at < ?1
                        AND NOT EXISTS (SELECT 1 FROM items
                             WHERE items.id = sent_messages.item_id AND items.state = 'pending')
                      LIMIT ?2)",
                "DELETE FROM private_replies WHERE rowid IN
                    (SELECT rowid FROM private_replies WHERE sent_at < ?1 LIMIT ?2)",
                "DELETE FROM profiles WHERE rowid IN
                    (SELECT rowid FROM profiles WHERE fetched_at < ?1 LIMIT ?2)",
            ] {
                other += conn.exec(sql, params![cutoff, chunk])?;
            }
            // The step that finds nothing more to delete ends a pass: the counts kept by
            // server processes that are gone are folded then, once an hour, not at each
            // of the pass's thousands of steps.
            if conn.is_postgres() && items + webhooks + other == 0 {
                conn.exec(super::items::FOLD_GONE_BACKENDS, params![])?;
            }
            Ok(Pruned {
                items,
                webhooks,
                other,
            })
        })
        .await
    }
}

/// The first id of `table` stored at or after `since` (ms), or one past the last id.
/// Ids grow with time, so a scan for older rows can stop there instead of reading the
/// whole table.
fn first_id_since(
    conn: &Sql<'_>,
    table: &'static str,
    stored_at: &'static str,
    since: i64,
) -> Result<i64, DbError> {
    conn.one(
        &format!(
            "SELECT COALESCE(
                (SELECT id FROM {table} WHERE {stored_at} >= ?1 ORDER BY id LIMIT 1),
                (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}))"
        ),
        params![since],
        |r| r.get(0),
    )
}
