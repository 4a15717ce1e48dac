//! Token health before it fails: every account's token is checked with `debug_token` at
//! start, after a reload, once a day, and at once when Meta says a user removed the app.
//!
//! A token Meta calls invalid or expired, or one without `pages_messaging`, is a problem
//! of its account (`/readyz` 503 naming it, `doctor`, one journal line); one that ends —
//! itself or its data access — within 7 days, or lacks a permission a feature needs, is a
//! warning (`/readyz` stays 200 and says it). Both expiries are metrics. A check that
//! could not be made (Graph down) changes nothing: a token is judged only by Meta's answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::Shared;
use crate::config::{Config, InstagramLogin};
use crate::facebook::login::TokenFacts;
use crate::metrics::PageLabels;

/// How often every token is checked.
pub const EVERY: Duration = Duration::from_secs(24 * 3600);
/// How far ahead an end is warned of.
pub const WARN_AHEAD_S: i64 = 7 * 24 * 3600;

/// The latest verdict on each account's token.
#[derive(Debug, Default)]
pub struct TokenHealth {
    verdicts: Mutex<BTreeMap<String, Verdict>>,
    /// Poked by a reload: the tokens are checked again at once.
    pub wake: tokio::sync::Notify,
}

/// What the latest check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Works, but an admin should act soon.
    Warning(String),
    /// Does not work: nothing the account sends goes out.
    Dead(String),
}

impl TokenHealth {
    fn set(&self, account: &str, verdict: Verdict) -> Option<Verdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_owned(), verdict)
    }

    /// Accounts whose token warrants a warning, and why.
    pub fn warnings(&self) -> Vec<(String, String)> {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(a, v)| match v {
                Verdict::Warning(why) => Some((a.clone(), why.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The permissions a Page token needs, each with what stops working without it.
pub fn page_needs(
    config: &Config,
    page: &crate::config::PageConfig,
) -> Vec<(&'static str, &'static str, bool)> {
    let mut needs = vec![
        (
            "pages_messaging",
            "no answer reaches a customer on Messenger",
            true,
        ),
        (
            "pages_manage_metadata",
            "the webhook subscription cannot be checked or renewed",
            false,
        ),
        (
            "pages_read_engagement",
            "reconciliation cannot read the inbox, and wall posts cannot be read",
            false,
        ),
    ];
    if page.wall_posts {
        needs.push(("pages_manage_engagement", "answers on the wall fail", false));
    }
    if config.instagram.iter().any(|a| {
        a.page
            .as_ref()
            .is_some_and(|p| p.get_ref() == page.id.get_ref())
    }) {
        needs.push((
            "instagram_manage_messages",
            "no answer reaches a customer on Instagram",
            false,
        ));
    }
    needs
}

/// Judges one token by Meta's answer, at `now_s`.
pub fn judge(facts: &TokenFacts, needs: &[(&str, &str, bool)], now_s: i64) -> Verdict {
    if !facts.valid {
        return Verdict::Dead(format!(
            "Meta says its token is no longer valid ({}): run `fb-openchannel setup` for it",
            facts.error.as_deref().unwrap_or("no reason given")
        ));
    }
    if let Some(at) = facts.expires_at
        && at <= now_s
    {
        return Verdict::Dead("its token expired: run `fb-openchannel setup` for it".into());
    }
    if let Some(at) = facts.data_access_expires_at
        && at <= now_s
    {
        return Verdict::Dead("the app's data access through its token ended: run `fb-openchannel setup` for it to renew it".into());
    }
    let missing: Vec<&(&str, &str, bool)> = needs
        .iter()
        .filter(|(scope, _, _)| !facts.scopes.iter().any(|s| s == scope))
        .collect();
    if let Some((scope, what, _)) = missing.iter().find(|(_, _, vital)| *vital) {
        return Verdict::Dead(format!(
            "its token lacks {scope}: {what}; grant it and run `fb-openchannel setup`"
        ));
    }
    let mut warnings: Vec<String> = missing
        .iter()
        .map(|(scope, what, _)| format!("its token lacks {scope} ({what})"))
        .collect();
    for (at, what) in [
        (facts.expires_at, "its token expires"),
        (
            facts.data_access_expires_at,
            "the app's data access through its token ends",
        ),
    ] {
        if let Some(at) = at
            && at - now_s <= WARN_AHEAD_S
        {
            let days = (at - now_s) as f64 / 86_400.0;
            warnings.push(format!(
                "{what} in {days:.1} days ({}): run `fb-openchannel setup` for it before then",
                crate::time::when(at)
            ));
        }
    }
    if warnings.is_empty() {
        Verdict::Fine
    } else {
        Verdict::Warning(warnings.join("; "))
    }
}

/// Checks every Page token (and the Instagram accounts' that use one), now. `why` says
/// in the journal what prompted it.
pub async fn check_all(shared: &Shared, why: &str) {
    let live = shared.live();
    let config = &live.config;
    let secret = config.facebook.app_secret.get_ref();
    let now_s = crate::time::now_ms() / 1000;
    // Our app's id: the config's, else the one a working Page token was issued for.
    let mut app_id = config
        .facebook
        .app_id
        .as_ref()
        .map(|id| id.get_ref().clone());
    for page in &config.pages {
        let id = page.id.get_ref();
        let app = match &app_id {
            Some(app) => app.clone(),
            None => match crate::relay::subscription::our_app(&live.graph, config, page).await {
                Ok(app) => {
                    app_id = Some(app.id.clone());
                    app.id
                }
                // The token itself is refused: that is the verdict.
                Err(e) if e.disposition == crate::facebook::graph::Disposition::TokenInvalid => {
                    let facts = TokenFacts {
                        app_id: String::new(),
                        valid: false,
                        kind: String::new(),
                        scopes: Vec::new(),
                        error: Some(e.message.chars().take(300).collect()),
                        expires_at: None,
                        data_access_expires_at: None,
                    };
                    apply(shared, config, page, &judge(&facts, &[], now_s), why);
                    continue;
                }
                Err(e) => {
                    info!(page_id = %id, "token check of page {id} not made ({why}): {e}");
                    continue;
                }
            },
        };
        let facts = match live
            .graph
            .debug_token(&app, secret, page.access_token.get_ref())
            .await
        {
            Ok(facts) => facts,
            Err(e) => {
                info!(page_id = %id, "token check of page {id} not made ({why}): {e}");
                continue;
            }
        };
        let labels = PageLabels {
            page_id: id.clone(),
        };
        shared
            .metrics
            .token_expiry
            .get_or_create(&labels)
            .set(facts.expires_at.unwrap_or(0) as f64);
        shared
            .metrics
            .token_data_access_expiry
            .get_or_create(&labels)
            .set(facts.data_access_expires_at.unwrap_or(0) as f64);
        let verdict = judge(&facts, &page_needs(config, page), now_s);
        apply(shared, config, page, &verdict, why);
    }
}

/// Puts a Page token's verdict in force, for the Page and the Instagram accounts that
/// use its token: a problem `/readyz` names, a warning it mentions, or neither.
fn apply(
    shared: &Shared,
    config: &Config,
    page: &crate::config::PageConfig,
    verdict: &Verdict,
    why: &str,
) {
    let id = page.id.get_ref();
    let accounts: Vec<String> = std::iter::once(id.clone())
        .chain(
            config
                .instagram
                .iter()
                .filter(|a| matches!(config.instagram_login(a), InstagramLogin::Facebook { page: p } if p.id.get_ref() == id))
                .map(|a| a.id.get_ref().clone()),
        )
        .collect();
    for account in accounts {
        let before = shared.token_health.set(&account, verdict.clone());
        match verdict {
            Verdict::Dead(reason) => {
                shared.health.problem(&account, reason.clone());
                if before.as_ref() != Some(verdict) || why == DAILY {
                    warn!(page_id = %account, "account {account}: {reason} (checked: {why})");
                }
            }
            Verdict::Warning(reason) => {
                if matches!(before, Some(Verdict::Dead(_))) {
                    shared.health.sent(&account);
                }
                if before.as_ref() != Some(verdict) || why == DAILY {
                    warn!(page_id = %account, "account {account}: {reason}");
                }
            }
            Verdict::Fine => {
                if matches!(before, Some(Verdict::Dead(_))) {
                    shared.health.sent(&account);
                    info!(page_id = %account, "account {account}: its token works again");
                }
            }
        }
    }
}

const DAILY: &str = "the daily check";

/// Checks every token at start, after each reload, then daily, until `shutdown` turns
/// true.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut why = "at start";
    loop {
        tokio::select! {
            _ = check_all(&shared, why) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => why = DAILY,
            _ = shared.token_health.wake.notified() => why = "after a reload",
            _ = shutdown.changed() => return,
        }
    }
}
