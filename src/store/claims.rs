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
    held: std::sync::Mutex<std::collections::HashMap<ClaimKey, Held>>,
}

/// A claimed conversation.
type ClaimKey = (Direction, String, ConversationKey);
/// Until when (ms) it is held, and the claim's token.
type Held = (i64, i64);

impl Claims {
    /// How many conversations of `direction` are held (those whose lease ran out are
    /// forgotten).
    pub(super) fn held_count(&self, direction: Direction, now: i64) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, (until, _)| *until > now);
        held.keys().filter(|(d, _, _)| *d == direction).count()
    }

    /// Whether a conversation is held.
    pub(super) fn holds(
        &self,
        direction: Direction,
        page_id: &str,
        conversation: &ConversationKey,
        now: i64,
    ) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (direction, page_id.to_owned(), conversation.clone());
        held.get(&key).is_some_and(|(until, _)| *until > now)
    }

    /// Claims the item's conversation unless it is held (by another worker that asked
    /// at the same moment: on PostgreSQL, requests run side by side).
    /// Returns the claim's token.
    pub(super) fn try_take(&self, direction: Direction, item: &Item, now: i64) -> Option<i64> {
        let until = now.saturating_add(super::duration_ms(CLAIM_LEASE));
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (direction, item.page_id.clone(), item.conversation.clone());
        match held.get(&key) {
            Some((end, _)) if *end > now => None,
            _ => {
                let token = fastrand::i64(..);
                held.insert(key, (until, token));
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
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(direction, page_id.to_owned(), conversation.clone()))
            .map(|(_, token)| token)
    }
}
