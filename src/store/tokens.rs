//! Instagram Login tokens: the newest token of each account, as the daemon refreshed it.
//!
//! The config holds the token the operator pasted (the *seed*); Meta's long-lived tokens
//! last 60 days and are refreshed into new ones, which only the daemon knows. They are
//! kept here, beside the queue (the database file is the daemon's alone, 0600). A row
//! belongs to the seed it descends from (by SHA-256): when the operator pastes another
//! token into the config, that one wins and the row starts over from it.

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::sql::{DbError, Sql};
use super::{Access, Store, StoreError, now_ms};
use crate::config::Secret;

/// One account's token as stored.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub account: String,
    pub token: Secret,
    /// When the daemon first held this token (ms). For the config's own token that is
    /// when the daemon first saw it: its real age is not known.
    pub obtained_at: i64,
    /// When Meta said it expires (ms); `None` until the first refresh tells.
    pub expires_at: Option<i64>,
    /// The last refresh attempt, and what went wrong with it (`None` after a success).
    pub attempted_at: Option<i64>,
    pub last_error: Option<String>,
    /// Whether this is still the config's own token (never refreshed).
    pub is_seed: bool,
}

/// The SHA-256 of a config token, hex: what a stored row descends from.
fn seed_of(token: &Secret) -> String {
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

/// The account's stored token, when it descends from `seed` (the config's token).
pub fn read(conn: &Sql<'_>, account: &str, seed: &Secret) -> Result<Option<StoredToken>, DbError> {
    let seed_hash = seed_of(seed);
    conn.opt(
        "SELECT token, obtained_at, expires_at, attempted_at, last_error, seed FROM instagram_tokens
          WHERE account = ?1",
        params![account],
        |r| {
        let token: String = r.get(0)?;
        let stored_seed: String = r.get(5)?;
        Ok((stored_seed == seed_hash).then(|| StoredToken {
            account: account.to_owned(),
            is_seed: token == seed.expose(),
            token: Secret::new(token),
            obtained_at: r.get(1).unwrap_or(0),
            expires_at: r.get(2).unwrap_or(None),
            attempted_at: r.get(3).unwrap_or(None),
            last_error: r.get(4).unwrap_or(None),
        }))
    },
    )
    .map(Option::flatten)
}

impl Store {
    /// The account's current token: the newest one stored for this config token, or
    /// the config token itself, stored now (the first time, or after the operator
    /// pasted a new one).
    pub async fn instagram_token(
        &self,
        account: String,
        seed: Secret,
    ) -> Result<StoredToken, StoreError> {
        self.call(Access::Durable, move |conn| {
            if let Some(stored) = read(conn, &account, &seed)? {
                return Ok(stored);
            }
            conn.exec(
                "INSERT INTO instagram_tokens (account, token, seed, obtained_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account) DO UPDATE SET token = excluded.token,
                   seed = excluded.seed, obtained_at = excluded.obtained_at,
                   expires_at = NULL, attempted_at = NULL, last_error = NULL",
                params![account, seed.expose(), seed_of(&seed), now_ms()],
            )?;
            Ok(read(conn, &account, &seed)?.expect("just stored"))
        })
        .await
    }

    /// Keeps a refreshed token (on disk before it is used: the old one may stop working
    /// once Meta gave the new one out). Ignored when the config's token changed since.
    pub async fn put_refreshed_token(
        &self,
        account: String,
        seed: Secret,
        token: Secret,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.call(Access::Durable, move |conn| {
            let now = now_ms();
            conn.exec(
                "UPDATE instagram_tokens SET token = ?3, obtained_at = ?4, expires_at = ?5,
                   attempted_at = ?4, last_error = NULL
                 WHERE account = ?1 AND seed = ?2",
                params![account, seed_of(&seed), token.expose(), now, expires_at],
            )
            .map(drop)
        })
        .await
    }

    /// Notes a refresh that failed, for `doctor` and the next attempt's timing.
    pub async fn refresh_failed(&self, account: String, error: String) -> Result<(), StoreError> {
        self.call(Access::Relaxed, move |conn| {
            conn.exec(
                "UPDATE instagram_tokens SET attempted_at = ?2, last_error = ?3 WHERE account = ?1",
                params![account, now_ms(), error],
            )
            .map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refreshed_token_is_kept_until_the_operator_pastes_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let pasted = Secret::new("IGAA-pasted");
        let first = store
            .instagram_token("1784".into(), pasted.clone())
            .await
            .unwrap();
        assert_eq!(first.token.expose(), "IGAA-pasted");
        assert!(first.is_seed && first.expires_at.is_none());

        store
            .put_refreshed_token(
                "1784".into(),
                pasted.clone(),
                Secret::new("IGAA-new"),
                now_ms() + 1000,
            )
            .await
            .unwrap();
        let now = store
            .instagram_token("1784".into(), pasted.clone())
            .await
            .unwrap();
        assert_eq!(now.token.expose(), "IGAA-new");
        assert!(!now.is_seed && now.expires_at.is_some());

        // Another token in the config starts over from it; a late refresh of the old
        // one does not overwrite it.
        let other = Secret::new("IGAA-other");
        let fresh = store
            .instagram_token("1784".into(), other.clone())
            .await
            .unwrap();
        assert_eq!(fresh.token.expose(), "IGAA-other");
        store
            .put_refreshed_token("1784".into(), pasted, Secret::new("IGAA-late"), 0)
            .await
            .unwrap();
        let kept = store.instagram_token("1784".into(), other).await.unwrap();
        assert_eq!(kept.token.expose(), "IGAA-other");
    }
}
