//! The ACME side that the nodes of a shared queue (PostgreSQL) hold in common, in the
//! `acme` table: the CA account (`account`), the newest certificate (`certificate`,
//! the private key and the chain, `until` its notAfter), the TLS-ALPN-01 proofs of an
//! order in progress (`challenge:<name>`, the digest in hex, `until` when it is stale) —
//! any node may be the one the CA reaches — and which node orders (`order`: `holder`,
//! `until`, the last failure in `body`). Times are Unix ms. The rows are as
//! secret as the queue's Instagram tokens: the database is the daemons' alone.

use rusqlite::params;

use super::sql::{DbError, Sql};
use super::{Access, Store, StoreError, now_ms};

/// One row of the `acme` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeRow {
    pub body: String,
    pub holder: Option<String>,
    pub until: i64,
}

/// Who orders now, when it is not this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHeld {
    pub holder: String,
    /// Until when (ms) it holds the order: its order's end at the latest, or after a
    /// failed order the time of its next try.
    pub until: i64,
    /// Its last order's failure, if the last one failed.
    pub last_error: Option<String>,
}

const CHALLENGE: &str = "challenge:";

/// The `acme` row `name`, if any.
pub fn row(conn: &Sql<'_>, name: &str) -> Result<Option<AcmeRow>, DbError> {
    conn.opt(
        "SELECT body, holder, until FROM acme WHERE name = ?1",
        params![name],
        |r| {
            Ok(AcmeRow {
                body: r.get(0)?,
                holder: r.get(1)?,
                until: r.get(2)?,
            })
        },
    )
}

impl Store {
    /// This node's name on the shared queue; `None` on SQLite (one host: the ACME state
    /// stays in files).
    pub fn acme_node(&self) -> Option<String> {
        self.shared().map(|s| s.node.clone())
    }

    /// The `acme` row `name`, if any.
    pub async fn acme_row(&self, name: &str) -> Result<Option<AcmeRow>, StoreError> {
        let name = name.to_owned();
        self.call(Access::Read, move |conn| row(conn, &name)).await
    }

    /// Writes the `acme` row `name` as this node's, on the server before it returns.
    pub async fn put_acme_row(
        &self,
        name: &str,
        body: String,
        until: i64,
    ) -> Result<(), StoreError> {
        let (name, node) = (name.to_owned(), self.acme_node());
        self.call(Access::Durable, move |conn| {
            conn.exec(
                "INSERT INTO acme (name, body, holder, until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body,
                   holder = excluded.holder, until = excluded.until",
                params![name, body, node, until],
            )
            .map(drop)
        })
        .await
    }

    /// The proof digest (hex) for `name` while an order is checked, from whichever node
    /// orders.
    pub async fn acme_challenge(&self, name: &str) -> Result<Option<String>, StoreError> {
        let key = format!("{CHALLENGE}{}", name.to_ascii_lowercase());
        Ok(self
            .acme_row(&key)
            .await?
            .filter(|row| row.until > now_ms())
            .map(|row| row.body))
    }

    /// Shows every node the proof for `name` (hex digest) for the next `for_ms`.
    pub async fn put_acme_challenge(
        &self,
        name: &str,
        digest_hex: String,
        for_ms: i64,
    ) -> Result<(), StoreError> {
        let key = format!("{CHALLENGE}{}", name.to_ascii_lowercase());
        self.put_acme_row(&key, digest_hex, now_ms() + for_ms).await
    }

    /// Removes this node's proofs (its order is over).
    pub async fn end_acme_challenges(&self) -> Result<(), StoreError> {
        let node = self.acme_node();
        self.call(Access::Durable, move |conn| {
            conn.exec(
                "DELETE FROM acme WHERE name LIKE 'challenge:%' AND holder = ?1",
                params![node],
            )
            .map(drop)
        })
        .await
    }

    /// Takes the order for this node until `until` (ms) unless another node holds it;
    /// a node holds it while it orders, and after a failed order until its next try, so
    /// that the nodes do not add up their tries against the CA's limits.
    pub async fn take_acme_order(&self, until: i64) -> Result<Option<OrderHeld>, StoreError> {
        let node = self.acme_node();
        self.call(Access::Durable, move |conn| {
            conn.exec(
                "INSERT INTO acme (name, body, holder, until) VALUES ('order', '', ?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                   until = excluded.until
                  WHERE acme.until <= ?3 OR acme.holder = excluded.holder",
                params![node, until, now_ms()],
            )?;
            let (holder, until, body) = conn.one(
                "SELECT holder, until, body FROM acme WHERE name = 'order'",
                params![],
                |r| {
                    Ok((
                        r.get::<Option<String>>(0)?,
                        r.get::<i64>(1)?,
                        r.get::<String>(2)?,
                    ))
                },
            )?;
            Ok((holder != node).then(|| OrderHeld {
                holder: holder.unwrap_or_default(),
                until,
                last_error: (!body.is_empty()).then_some(body),
            }))
        })
        .await
    }

    /// Ends this node's order: held on until `until` (ms; the next try after a
    /// failure, or now), with the failure for the other nodes to tell.
    pub async fn end_acme_order(
        &self,
        until: i64,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let node = self.acme_node();
        self.call(Access::Durable, move |conn| {
            conn.exec(
                "UPDATE acme SET until = ?2, body = ?3 WHERE name = 'order' AND holder = ?1",
                params![node, until, error.unwrap_or_default()],
            )
            .map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One node orders at a time; after a failed order it holds the order until its
    /// next try, telling the others why; then another node may take it. A proof is
    /// found on every node, until it is stale or its order is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_node_orders_at_a_time_and_every_node_finds_its_proofs() {
        let Some((pg, storage)) = super::super::pg::tests::server("acme") else {
            return;
        };
        let a = Store::open_postgres(&storage).unwrap();
        let b = Store::open_postgres(&storage).unwrap();
        let (node_a, node_b) = (a.acme_node().unwrap(), b.acme_node().unwrap());
        assert!(
            Store::open(&pg.dir().join("lite.db"))
                .unwrap()
                .acme_node()
                .is_none()
        );

        let later = now_ms() + 60_000;
        assert_eq!(a.take_acme_order(later).await.unwrap(), None);
        assert_eq!(
            a.take_acme_order(later).await.unwrap(),
            None,
            "its own again"
        );
        let held = b.take_acme_order(later).await.unwrap().unwrap();
        assert_eq!(
            (held.holder.as_str(), held.last_error),
            (node_a.as_str(), None)
        );

        a.put_acme_challenge("FB.example.com", "ab".repeat(32), 60_000)
            .await
            .unwrap();
        b.put_acme_challenge("stale.example.com", "cd".repeat(32), -1)
            .await
            .unwrap();
        assert_eq!(
            b.acme_challenge("fb.example.com").await.unwrap(),
            Some("ab".repeat(32))
        );
        assert_eq!(b.acme_challenge("stale.example.com").await.unwrap(), None);
        assert_eq!(b.acme_challenge("other.example.com").await.unwrap(), None);

        // The order failed: A holds it until its next try, and says why.
        let next = now_ms() + 60_000;
        a.end_acme_order(next, Some("the CA refused".into()))
            .await
            .unwrap();
        a.end_acme_challenges().await.unwrap();
        assert_eq!(b.acme_challenge("fb.example.com").await.unwrap(), None);
        let held = b.take_acme_order(later).await.unwrap().unwrap();
        assert_eq!(held.until, next);
        assert_eq!(held.last_error.as_deref(), Some("the CA refused"));
        // B's own proof is B's to remove.
        let stale = b.acme_row("challenge:stale.example.com").await.unwrap();
        assert_eq!(stale.unwrap().holder.as_deref(), Some(node_b.as_str()));

        // A's order is over (held until now): B may take it.
        a.end_acme_order(now_ms(), None).await.unwrap();
        assert_eq!(b.take_acme_order(later).await.unwrap(), None);
        let held = a.take_acme_order(later).await.unwrap().unwrap();
        assert_eq!(held.holder, node_b);
    }
}
