//! What each node of a shared queue (PostgreSQL) runs, in the `node_configs` table: a row
//! per living node, the digests of the parts of its config that every node must hold
//! alike (`crate::config::digest`, as JSON) and when it last wrote them (Unix ms). Each
//! node writes its row every few seconds and compares the others' with its own;
//! `doctor` compares them with the config file. A node is named by its host and an id
//! kept in its state folder (`node-id`), so a restarted daemon writes the same row. A
//! row not written for an hour (a node stopped) is deleted.

use rusqlite::params;

use super::sql::{DbError, Sql};
use super::{Access, Store, StoreError, now_ms};

/// A node's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node: String,
    /// The digests, as JSON.
    pub digest: String,
    pub seen_at: i64,
}

/// A row not written for this long is gone.
const FORGET_MS: i64 = 3_600_000;

/// The rows written since `since` (ms), by node.
pub fn rows(conn: &Sql<'_>, since: i64) -> Result<Vec<NodeConfig>, DbError> {
    conn.all(
        "SELECT node, digest, seen_at FROM node_configs WHERE seen_at >= ?1 ORDER BY node",
        params![since],
        |r| {
            Ok(NodeConfig {
                node: r.get(0)?,
                digest: r.get(1)?,
                seen_at: r.get(2)?,
            })
        },
    )
}

impl Store {
    /// On a shared queue, writes this node's row and returns the other nodes' rows
    /// written since `since` (ms). Nothing on SQLite.
    pub async fn exchange_configs(
        &self,
        digest: String,
        since: i64,
    ) -> Result<Vec<NodeConfig>, StoreError> {
        let Some(shared) = self.shared.clone() else {
            return Ok(Vec::new());
        };
        self.call(Access::Relaxed, move |conn| {
            let now = now_ms();
            conn.exec(
                "INSERT INTO node_configs (node, digest, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node) DO UPDATE SET digest = excluded.digest,
                   seen_at = excluded.seen_at",
                params![shared.config_node, digest, now],
            )?;
            conn.exec(
                "DELETE FROM node_configs WHERE seen_at < ?1",
                params![now - FORGET_MS],
            )?;
            let mut rows = rows(conn, since)?;
            rows.retain(|r| r.node != shared.config_node);
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each node sees the others' rows and not its own; a stale row is left out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_exchange_what_they_run() {
        let Some((_pg, storage)) = super::super::pg::tests::server("configs") else {
            return;
        };
        let a = Store::open_postgres(&storage).unwrap();
        let mut other = storage.clone();
        other.path = storage.path.with_file_name("b").join("state.db");
        let b = Store::open_postgres(&other).unwrap();
        let start = now_ms();
        assert_eq!(
            a.exchange_configs("{\"x\":\"1\"}".into(), start)
                .await
                .unwrap(),
            []
        );
        let seen = b
            .exchange_configs("{\"x\":\"2\"}".into(), start)
            .await
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].node, a.shared().unwrap().config_node);
        assert_eq!(seen[0].digest, "{\"x\":\"1\"}");
        let seen = a
            .exchange_configs("{\"x\":\"1\"}".into(), start)
            .await
            .unwrap();
        assert_eq!(seen[0].digest, "{\"x\":\"2\"}");
        let later = now_ms() + 1;
        assert_eq!(a.exchange_configs("{}".into(), later).await.unwrap(), []);

        // Node a restarted (the same state folder): its row is replaced, not another
        // node's.
        drop(a);
        let a = Store::open_postgres(&storage).unwrap();
        let seen = a
            .exchange_configs("{\"x\":\"3\"}".into(), start)
            .await
            .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].node, b.shared().unwrap().config_node);
    }
}
