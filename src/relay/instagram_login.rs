//! Which host, token and sender an Instagram account's calls use, and the upkeep of
//! Instagram Login tokens.
//!
//! - **Instagram API with Facebook Login** (`page = …`): graph.facebook.com, the linked
//!   Page's token, `POST /{page}/messages`.
//! - **Instagram API with Instagram Login** (`access_token = …`): graph.instagram.com,
//!   the account's own token, `POST /{ig-account}/messages`. Its long-lived tokens last
//!   60 days and may be refreshed once at least 24 hours old (Meta: Instagram Platform →
//!   Refresh Access Token). The daemon refreshes each one a week after it got it (the
//!   config's own token as soon as it has held it 24 hours: its real age is unknown),
//!   keeps the newest in the state database (on disk before it is used) and uses it at
//!   once, without a restart. A week between refreshes leaves some fifty days of hourly
//!   retries and `doctor` warnings before a token that cannot be refreshed expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::{InstagramConfig, InstagramLogin, Secret};
use crate::facebook::graph::{Disposition, GraphClient};
use crate::ids::{InstagramId, PageId, Sender};
use crate::relay::{Live, Shared};
use crate::store::{StoreError, StoredToken, now_ms};

const HOUR_MS: i64 = 3600 * 1000;
/// Meta refuses to refresh a token younger than this.
pub const MIN_AGE_MS: i64 = 24 * HOUR_MS;
/// How old a token the daemon got from a refresh may grow before it is refreshed.
pub const REFRESH_AFTER_MS: i64 = 7 * 24 * HOUR_MS;
/// How often the upkeep looks at every token (a reload looks at once too).
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Who sends an Instagram account's direct messages.
#[derive(Debug, Clone)]
pub enum From {
    /// The linked Page (Facebook Login).
    Page(PageId),
    /// The account itself (Instagram Login).
    Account(InstagramId),
}

impl Sender for From {
    fn as_segment(&self) -> &str {
        match self {
            From::Page(id) => id.as_str(),
            From::Account(id) => id.as_str(),
        }
    }
}

/// What an Instagram account's Graph calls need.
pub struct Calls<'a> {
    pub graph: &'a GraphClient,
    pub token: Secret,
    pub from: From,
}

/// The newest token of each Instagram Login account, in front of the store: the config
/// token it descends from, and the token.
#[derive(Default)]
pub struct Tokens {
    current: Mutex<HashMap<String, (Secret, Secret)>>,
    /// Poked by a reload: look at the tokens now.
    pub wake: Notify,
}

impl Tokens {
    fn cached(&self, account: &str, seed: &Secret) -> Option<Secret> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .get(account)
            .filter(|(s, _)| s == seed)
            .map(|(_, token)| token.clone())
    }

    fn keep(&self, account: &str, seed: &Secret, token: Secret) {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_owned(), (seed.clone(), token));
    }
}

/// The host, token and sender of `account`'s calls.
pub async fn calls<'a>(
    shared: &Shared,
    live: &'a Live,
    account: &InstagramConfig,
) -> Result<Calls<'a>, StoreError> {
    Ok(match live.config.instagram_login(account) {
        InstagramLogin::Facebook { page } => Calls {
            graph: &live.graph,
            token: page.access_token.get_ref().clone(),
            from: From::Page(page.page_id()),
        },
        InstagramLogin::Instagram { token: seed } => {
            let id = account.id.get_ref();
            let token = match shared.instagram_tokens.cached(id, seed) {
                Some(token) => token,
                None => {
                    let stored = shared
                        .store
                        .instagram_token(id.clone(), seed.clone())
                        .await?;
                    shared.instagram_tokens.keep(id, seed, stored.token.clone());
                    stored.token
                }
            };
            Calls {
                graph: &live.instagram_graph,
                token,
                from: From::Account(
                    InstagramId::parse(id).expect("checked when the config is loaded"),
                ),
            }
        }
    })
}

/// Whether a token should be refreshed now.
pub fn due(token: &StoredToken, now: i64) -> bool {
    let age = now.saturating_sub(token.obtained_at);
    age >= MIN_AGE_MS && (token.expires_at.is_none() || age >= REFRESH_AFTER_MS)
}

/// Refreshes the Instagram Login tokens that are due: at start, after each reload and
/// every hour, until `shutdown` turns true.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let live = shared.live();
        for account in &live.config.instagram {
            if let InstagramLogin::Instagram { token: seed } = live.config.instagram_login(account)
            {
                upkeep(&shared, &live, account.id.get_ref(), seed).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shared.instagram_tokens.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn upkeep(shared: &Shared, live: &Live, id: &str, seed: &Secret) {
    let stored = match shared
        .store
        .instagram_token(id.to_owned(), seed.clone())
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            error!(instagram_id = %id, "cannot read the token of Instagram account {id}: {e}");
            return;
        }
    };
    shared
        .metrics
        .instagram_token_expiry(id, stored.expires_at.map(|ms| ms / 1000));
    shared.instagram_tokens.keep(id, seed, stored.token.clone());
    if !due(&stored, now_ms()) {
        return;
    }
    match live
        .instagram_graph
        .refresh_instagram_token(&stored.token)
        .await
    {
        Ok((token, lifetime)) => {
            let expires_at = now_ms().saturating_add(crate::time::duration_ms(lifetime));
            // On disk before use: after a crash the daemon must not be left holding
            // only a token Meta may have retired.
            if let Err(e) = shared
                .store
                .put_refreshed_token(id.to_owned(), seed.clone(), token.clone(), expires_at)
                .await
            {
                error!(instagram_id = %id, "Instagram account {id}: the token was refreshed but cannot be stored ({e}); the previous one stays in use and the refresh is tried again in an hour");
                return;
            }
            shared.instagram_tokens.keep(id, seed, token);
            shared
                .metrics
                .instagram_token_expiry(id, Some(expires_at / 1000));
            info!(
                instagram_id = %id,
                "Instagram account {id}: access token refreshed, valid until {} (kept in the state database; the config's token stays as it is)",
                crate::time::timestamp(expires_at)
            );
        }
        Err(e) => {
            let _ = shared
                .store
                .refresh_failed(id.to_owned(), e.message.clone())
                .await;
            let expiry = match stored.expires_at {
                Some(at) => format!("it expires {}", crate::time::timestamp(at)),
                None => "its expiry is not known (at most 60 days after it was made)".to_owned(),
            };
            if matches!(
                e.disposition,
                Disposition::Retry | Disposition::RetryBriefly | Disposition::SlowDown
            ) {
                warn!(instagram_id = %id, "Instagram account {id}: the access token could not be refreshed ({e}); trying again in an hour — {expiry}");
            } else {
                error!(instagram_id = %id, "Instagram account {id}: the access token cannot be refreshed ({e}); {expiry}. Generate a new token (App Dashboard → Instagram → API setup with Instagram login → Generate token), put it in `access_token` of [[instagram]] {id} and reload");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(obtained_at: i64, expires_at: Option<i64>) -> StoredToken {
        StoredToken {
            account: "1".into(),
            token: Secret::new("t"),
            obtained_at,
            expires_at,
            attempted_at: None,
            last_error: None,
            is_seed: expires_at.is_none(),
        }
    }

    #[test]
    fn a_token_is_refreshed_when_meta_allows_and_a_week_after_the_last_time() {
        let now = 100 * 24 * HOUR_MS;
        // The config's token: as soon as the daemon has held it 24 hours.
        assert!(!due(&token(now - MIN_AGE_MS + 1, None), now));
        assert!(due(&token(now - MIN_AGE_MS, None), now));
        // A refreshed one: a week later, not before.
        let expiry = Some(now + 50 * 24 * HOUR_MS);
        assert!(!due(&token(now - 2 * MIN_AGE_MS, expiry), now));
        assert!(due(&token(now - REFRESH_AFTER_MS, expiry), now));
    }
}
