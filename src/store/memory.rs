//! Conversation memory: what the daemon must remember about conversations beyond the
//! queue — the ids of messages it sent (to know its own echoes), wall threads, private
//! replies, customers' last activity (the reply window) and cached names.

use rusqlite::params;

use super::{Access, Store, StoreError, Write, now_ms};
use crate::model::{ConversationKey, DedupKey, ItemKind};

/// A cached customer name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub first_name: String,
    pub last_name: String,
    pub source: crate::model::NameSource,
    pub fetched_at: i64,
}

impl Store {
    /// Which of `keys` the account's inbound items already hold (delivered, pending,
    /// skipped or failed): one index look-up per key.
    pub async fn known_inbound(
        &self,
        page_id: String,
        keys: Vec<DedupKey>,
    ) -> Result<std::collections::HashSet<DedupKey>, StoreError> {
        self.call(Access::Read, move |conn| {
            let mut known = std::collections::HashSet::new();
            for key in keys {
                let found: i64 = conn.one(
                    "SELECT COUNT(*) FROM items
                      WHERE direction = 'in' AND page_id = ?1 AND dedup_key = ?2",
                    params![page_id, key.as_str()],
                    |r| r.get(0),
                )?;
                if found > 0 {
                    known.insert(key);
                }
            }
            Ok(known)
        })
        .await
    }

    /// When the newest webhook body was stored (ms): about when the daemon last ran. A
    /// queue imported from another host (`queue import`: a move, a restored backup)
    /// holds no webhook bodies: then when its newest item was stored there.
    pub async fn last_webhook_at(&self) -> Result<Option<i64>, StoreError> {
        self.call(Access::Read, |conn| {
            let newest = |sql: &str| {
                conn.all(sql, params![], |r| r.get::<i64>(0))
                    .map(|rows| rows.into_iter().next())
            };
            match newest(
                "SELECT received_at FROM webhooks WHERE id = (SELECT MAX(id) FROM webhooks)",
            )? {
                Some(at) => Ok(Some(at)),
                None => {
                    newest("SELECT created_at FROM items WHERE id = (SELECT MAX(id) FROM items)")
                }
            }
        })
        .await
    }

    /// Remembers the Graph message id of one of our sends.
    pub async fn record_sent(
        &self,
        page_id: String,
        message_id: String,
        item_id: i64,
    ) -> Result<(), StoreError> {
        self.apply(vec![Write::Sent {
            page_id,
            message_id,
            item: item_id,
            at: now_ms(),
        }])
        .await
    }

    /// The posts and comments of a comment thread — a wall post (`post:<id>`) or an
    /// Instagram media item (`igmedia:<id>`) — newest first: `(kind, payload, event_ts)`.
    pub async fn wall_thread(
        &self,
        page_id: String,
        conversation: ConversationKey,
    ) -> Result<Vec<(ItemKind, String, i64)>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.all(
                "SELECT kind, payload, event_ts FROM items
                  WHERE (kind = 'wall_post' OR kind = 'wall_comment' OR kind = 'ig_comment'
                         OR kind = 'ig_mention') AND direction = 'in'
                    AND page_id = ?1 AND conversation = ?2
                  ORDER BY event_ts DESC, id DESC",
                params![page_id, conversation],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .await
    }

    /// Whether a comment thread (`post:<id>`, `igmedia:<id>`) of this account was ever
    /// received.
    pub async fn has_thread(
        &self,
        page_id: String,
        conversation: ConversationKey,
    ) -> Result<bool, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.one(
                "SELECT EXISTS (SELECT 1 FROM items
                  WHERE (kind = 'wall_post' OR kind = 'wall_comment' OR kind = 'ig_comment'
                         OR kind = 'ig_mention') AND direction = 'in'
                    AND page_id = ?1 AND conversation = ?2)",
                params![page_id, conversation],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The item that sent the private reply to `object_id`, if one did.
    pub async fn private_reply_owner(
        &self,
        page_id: String,
        object_id: String,
    ) -> Result<Option<i64>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.opt(
                "SELECT item_id FROM private_replies WHERE page_id = ?1 AND object_id = ?2",
                params![page_id, object_id],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Records that `item_id` sent the private reply to `object_id`.
    pub async fn record_private_reply(
        &self,
        page_id: String,
        object_id: String,
        item_id: i64,
    ) -> Result<(), StoreError> {
        self.apply(vec![Write::PrivateReply {
            page_id,
            object_id,
            item: item_id,
            at: now_ms(),
        }])
        .await
    }

    /// The Graph message ids earlier attempts of `item` got, in the order they were sent.
    pub async fn sent_ids_of(&self, item: i64) -> Result<Vec<String>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.all(
                "SELECT message_id FROM sent_messages WHERE item_id = ?1 ORDER BY sent_at, rowid",
                params![item],
                |r| r.get::<String>(0),
            )
        })
        .await
    }

    /// The referral that brought the customer to the message at `before_ts`: the latest
    /// one since their previous message (ads, m.me links, the chat plugin).
    pub async fn referral_before(
        &self,
        page_id: String,
        conversation: ConversationKey,
        before_ts: i64,
    ) -> Result<Option<String>, StoreError> {
        self.call(Access::Read, move |conn| {
            // Both walk `items_turns` back from the message: the previous message (turn
            // 1), then the referrals (turn 2) between it and this one — never the rest of
            // the history, and nothing at all in a conversation that never had a referral.
            conn.opt(
                "SELECT payload FROM items INDEXED BY items_turns
                  WHERE page_id = ?1 AND conversation = ?2 AND turn = 2 AND event_ts <= ?3
                    AND event_ts > COALESCE((SELECT event_ts FROM items INDEXED BY items_turns
                          WHERE page_id = ?1 AND conversation = ?2 AND turn = 1
                            AND event_ts < ?3
                          ORDER BY event_ts DESC LIMIT 1), -1)
                  ORDER BY event_ts DESC, id DESC LIMIT 1",
                params![page_id, conversation, before_ts],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The payload of the reply item that sent `message_id` (an agent's answer), if we
    /// sent it.
    pub async fn sent_payload(
        &self,
        page_id: String,
        message_id: String,
    ) -> Result<Option<String>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.opt(
                "SELECT items.payload FROM sent_messages JOIN items ON items.id = sent_messages.item_id
                  WHERE sent_messages.page_id = ?1 AND sent_messages.message_id = ?2",
                params![page_id, message_id],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Whether `message_id` is one we sent for `page_id`.
    pub async fn is_our_send(
        &self,
        page_id: String,
        message_id: String,
    ) -> Result<bool, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.one(
                "SELECT COUNT(*) FROM sent_messages WHERE page_id = ?1 AND message_id = ?2",
                params![page_id, message_id],
                |r| r.get::<i64>(0),
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Facebook time (ms) of the customer's latest own action in a conversation: what
    /// opens Messenger's reply window. `None` when we never saw the customer.
    pub async fn last_customer_activity(
        &self,
        page_id: String,
        conversation: ConversationKey,
    ) -> Result<Option<i64>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.opt(
                "SELECT last_ts FROM customer_activity WHERE page_id = ?1 AND conversation = ?2",
                params![page_id, conversation],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The payload of a stored inbound event by its dedup key (e.g. `mid:…`).
    pub async fn payload_by_key(
        &self,
        page_id: String,
        dedup_key: DedupKey,
    ) -> Result<Option<String>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.opt(
                "SELECT payload FROM items WHERE direction = 'in' AND page_id = ?1 AND dedup_key = ?2",
                params![page_id, dedup_key],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn profile(
        &self,
        page_id: String,
        psid: String,
    ) -> Result<Option<Profile>, StoreError> {
        self.call(Access::Read, move |conn| {
            conn.opt(
                "SELECT first_name, last_name, source, fetched_at FROM profiles
                  WHERE page_id = ?1 AND psid = ?2",
                params![page_id, psid],
                |r| {
                    Ok(Profile {
                        first_name: r.get(0)?,
                        last_name: r.get(1)?,
                        source: r.get(2)?,
                        fetched_at: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    pub async fn put_profile(
        &self,
        page_id: String,
        psid: String,
        profile: Profile,
    ) -> Result<(), StoreError> {
        self.call(Access::Relaxed, move |conn| {
            conn.exec(
                "INSERT INTO profiles (page_id, psid, first_name, last_name, source, fetched_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (page_id, psid) DO UPDATE SET first_name = excluded.first_name,
                   last_name = excluded.last_name, source = excluded.source,
                   fetched_at = excluded.fetched_at",
                params![
                    page_id,
                    psid,
                    profile.first_name,
                    profile.last_name,
                    profile.source,
                    profile.fetched_at
                ],
            )
            .map(drop)
        })
        .await
    }
}
