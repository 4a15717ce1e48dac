//! Conversations with an item in flight, held in memory beside a SQLite store.

use super::Item;
use crate::model::{ConversationKey, Direction};

/// How long a claim on a conversation lasts when its holder never releases it (a
/// holder that died). Longer than any attempt: Motion's and Graph's timeouts are
/// seconds.
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Conversations with an item in flight, each until its lease ends (ms). With SQLite
/// the store belongs to one process, so they live beside the store thread, and a
/// restart ends them all; a store shared by two hosts keeps them in its database
/// instead, behind the same `claim_heads` and `release`. Each claim has a token: the
/// database row of a lease is removed only with its own token, never a later lease of
/// the same conversation by this node.
#[derive(Default)]
pub(super) struct Claims {
    held: std::sync::Mutex<Held>,
}

/// A claimed conversation.
type ClaimKey = (Direction, String, ConversationKey);

/// The claims, by conversation: until when (ms) each is held, its token and the item
/// handed out; and the same claims by that item, which a claim passes over without
/// reading the conversation of its head (the heads of conversations in flight are read
/// again at every claim, up to `delivery.concurrency` of them).
#[derive(Default)]
struct Held {
    conversations: std::collections::HashMap<ClaimKey, (i64, i64, i64)>,
    items: std::collections::HashSet<(Direction, i64)>,
    /// Conversations this node leaves to the other nodes of a shared queue until a time
    /// (ms): their account is not in its config ([`Claims::hand_over`]).
    handed_over: std::collections::HashMap<ClaimKey, i64>,
}

impl Held {
    fn remove(&mut self, key: &ClaimKey) -> Option<i64> {
        let (_, token, item) = self.conversations.remove(key)?;
        self.items.remove(&(key.0, item));
        Some(token)
    }
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many conversations of `direction` are held (those whose lease ran out are
    /// forgotten).
    pub(super) fn held_count(&self, direction: Direction, now: i64) -> usize {
        let mut held = self.lock();
        let Held {
            conversations,
            items,
            handed_over,
        } = &mut *held;
        conversations.retain(|(d, _, _), (until, _, item)| {
            let live = *until > now;
            if !live {
                items.remove(&(*d, *item));
            }
            live
        });
        handed_over.retain(|_, until| *until > now);
        conversations
            .keys()
            .chain(handed_over.keys())
            .filter(|(d, _, _)| *d == direction)
            .count()
    }

    /// Whether this item was handed out and its conversation is still held: its head
    /// is then passed over as it is, conversation unread. (A conversation held for
    /// another of its items is found by [`Claims::holds`].)
    pub(super) fn holds_item(&self, direction: Direction, item: i64) -> bool {
        self.lock().items.contains(&(direction, item))
    }

    /// Whether a conversation is held.
    pub(super) fn holds(
        &self,
        direction: Direction,
        page_id: &str,
        conversation: &ConversationKey,
        now: i64,
    ) -> bool {
        let held = self.lock();
        let key = (direction, page_id.to_owned(), conversation.clone());
        held.conversations
            .get(&key)
            .is_some_and(|(until, _, _)| *until > now)
            || held.handed_over.get(&key).is_some_and(|until| *until > now)
    }

    /// Leaves a conversation to the other nodes until `until` (ms): this node's claims
    /// pass over it meanwhile, while its lease in the database ends with its claim.
    pub(super) fn hand_over(
        &self,
        direction: Direction,
        page_id: &str,
        conversation: &ConversationKey,
        until: i64,
    ) {
        self.lock()
            .handed_over
            .insert((direction, page_id.to_owned(), conversation.clone()), until);
    }

    /// Claims the item's conversation unless it is held (by another worker that asked
    /// at the same moment: on PostgreSQL, requests run side by side).
    /// Returns the claim's token.
    pub(super) fn try_take(&self, direction: Direction, item: &Item, now: i64) -> Option<i64> {
        let until = now.saturating_add(super::duration_ms(CLAIM_LEASE));
        let mut held = self.lock();
        let key = (direction, item.page_id.clone(), item.conversation.clone());
        if held.handed_over.get(&key).is_some_and(|end| *end > now) {
            return None;
        }
        match held.conversations.get(&key) {
            Some((end, _, _)) if *end > now => None,
            _ => {
                held.remove(&key);
                let token = fastrand::i64(..);
                held.conversations.insert(key, (until, token, item.id));
                held.items.insert((direction, item.id));
                Some(token)
            }
        }
    }

    /// Ends a claim; returns its token.
    pub(super) fn release(
        &self,
        direction: Direction,
        page_id: &str,
        conversation: &ConversationKey,
    ) -> Option<i64> {
        self.lock()
            .remove(&(direction, page_id.to_owned(), conversation.clone()))
    }
}
