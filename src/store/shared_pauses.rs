//! Facebook's throttling of a Page's feature, and the pace of the Page's comments, shared
//! by the nodes of a queue in PostgreSQL (tables `pauses` and `comment_pace`). Either
//! node may send a Page's comments and messages (each Motion node answers through its
//! own daemon): a pause one node met holds for the other too, and the comments of a Page
//! keep one pace between them, not one each. On SQLite (one host) they stay in memory.

use rusqlite::params;

use super::{Access, Store, StoreError};

/// One feature of one Page that Facebook throttles (`feature` as `Feature::as_str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPause {
    pub page_id: String,
    pub feature: String,
    /// When it began and until when no call is made (ms); `until` in the past once a
    /// call went through again.
    pub since: i64,
    pub until: i64,
    pub length_ms: i64,
    pub reason: String,
}

impl Store {
    /// Tells the other nodes of a pause.
    pub async fn put_pause(&self, pause: SharedPause) -> Result<(), StoreError> {
        self.call(Access::Relaxed, move |conn| {
            conn.exec(
                "INSERT INTO pauses (page_id, feature, since, until, length_ms, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (page_id, feature) DO UPDATE SET since = excluded.since,
                   until = excluded.until, length_ms = excluded.length_ms,
                   reason = excluded.reason",
                params![
                    pause.page_id,
                    pause.feature,
                    pause.since,
                    pause.until,
                    pause.length_ms,
                    pause.reason
                ],
            )
            .map(drop)
        })
        .await
    }

    /// Tells the other nodes that a call of the feature went through at `now`.
    pub async fn end_pause(
        &self,
        page_id: &str,
        feature: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (page_id, feature) = (page_id.to_owned(), feature.to_owned());
        self.call(Access::Relaxed, move |conn| {
            conn.exec(
                "UPDATE pauses SET until = ?3 WHERE page_id = ?1 AND feature = ?2 AND until > ?3",
                params![page_id, feature, now],
            )
            .map(drop)
        })
        .await
    }

    /// Every pause the nodes met (a row per Page and feature at most).
    pub async fn pauses(&self) -> Result<Vec<SharedPause>, StoreError> {
        self.call(Access::Read, |conn| {
            conn.all(
                "SELECT page_id, feature, since, until, length_ms, reason FROM pauses",
                params![],
                |r| {
                    Ok(SharedPause {
                        page_id: r.get(0)?,
                        feature: r.get(1)?,
                        since: r.get(2)?,
                        until: r.get(3)?,
                        length_ms: r.get(4)?,
                        reason: r.get(5)?,
                    })
                },
            )
        })
        .await
    }

    /// Reserves the time (ms) the Page's next comment may go out, whichever node sends
    /// it: `interval_ms` after the one before, or `now` after a quiet spell.
    pub async fn comment_slot(
        &self,
        page_id: &str,
        interval_ms: i64,
        now: i64,
    ) -> Result<i64, StoreError> {
        let page_id = page_id.to_owned();
        self.call(Access::Durable, move |conn| {
            conn.one(
                "INSERT INTO comment_pace (page_id, next)
                 VALUES (?1, CAST(?2 AS BIGINT) + CAST(?3 AS BIGINT))
                 ON CONFLICT (page_id) DO UPDATE
                   SET next = GREATEST(comment_pace.next, CAST(?2 AS BIGINT)) + CAST(?3 AS BIGINT)
                 RETURNING next - CAST(?3 AS BIGINT)",
                params![page_id, now, interval_ms],
                |r| r.get(0),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes on one server: a pause one writes the other reads, ended by a call that
    /// went through; one pace of comments between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_share_pauses_and_one_pace_of_comments() {
        let Some((_pg, storage)) = super::super::pg::tests::server("pauses") else {
            return;
        };
        let a = Store::open_postgres(&storage).unwrap();
        let b = Store::open_postgres(&storage).unwrap();
        let pause = SharedPause {
            page_id: "1".into(),
            feature: "comments".into(),
            since: 1_000,
            until: 61_000,
            length_ms: 60_000,
            reason: "(#368) blocked".into(),
        };
        a.put_pause(pause.clone()).await.unwrap();
        assert_eq!(b.pauses().await.unwrap(), std::slice::from_ref(&pause));
        b.end_pause("1", "comments", 5_000).await.unwrap();
        let ended = SharedPause {
            until: 5_000,
            ..pause.clone()
        };
        assert_eq!(a.pauses().await.unwrap(), std::slice::from_ref(&ended));
        // Ended already: a later end changes nothing.
        a.end_pause("1", "comments", 9_000).await.unwrap();
        assert_eq!(b.pauses().await.unwrap(), [ended]);

        // 3 s between comments, whichever node sends them.
        assert_eq!(a.comment_slot("1", 3_000, 10_000).await.unwrap(), 10_000);
        assert_eq!(b.comment_slot("1", 3_000, 10_000).await.unwrap(), 13_000);
        assert_eq!(a.comment_slot("1", 3_000, 11_000).await.unwrap(), 16_000);
        assert_eq!(
            b.comment_slot("2", 3_000, 11_000).await.unwrap(),
            11_000,
            "per page"
        );
        assert_eq!(
            b.comment_slot("1", 3_000, 60_000).await.unwrap(),
            60_000,
            "no debt after a quiet spell"
        );
    }
}
