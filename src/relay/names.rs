//! Customers' names as Motion shows them: from memory, else the store, else Graph, else a
//! stable readable stand-in ("Facebook user 1432").
//!
//! Graph refuses names account-wide when the app lacks Business Asset User Profile Access
//! (App Review) or the token a permission. Every new customer then cost two doomed calls
//! (first and last names, then `name`), each counted against the Page's Graph rate limit,
//! and one journal line. So once [`REFUSALS_TO_PAUSE`] new customers of one account in a
//! row are refused, that account's lookups pause for [`PAUSE_MS`]: one line says so, new
//! customers get their stand-in at once, and one lookup after each pause asks again.

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::{info, warn};

use crate::facebook::graph::{Disposition, GraphError, GraphProfile};
use crate::logging;
use crate::model::{ConversationKey, NameSource};
use crate::relay::{Account, Customer, Live, Shared};
use crate::store::{Profile, now_ms};

/// How long a name Graph gave us is trusted.
const PROFILE_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// How long a refused lookup is remembered before asking Graph again.
const FALLBACK_TTL_MS: i64 = 24 * 3600 * 1000;
/// New customers of one account refused in a row before its lookups pause. A single
/// refusal says little (the customer may have deleted their account); ten in a row with no
/// name in between is the account.
const REFUSALS_TO_PAUSE: u32 = 10;
/// How long an account's lookups pause; one is tried after each pause. Short: a refusal
/// may also be a run of customers with no profile to give (guests of the website chat
/// plugin), and a customer who writes first meanwhile keeps the stand-in name in Motion.
/// One doomed call a minute costs nothing.
const PAUSE_MS: i64 = 60 * 1000;
/// Most customer names kept in memory; past this the cache starts over (the store keeps
/// them all, so this only costs a store read per customer).
const PROFILE_CACHE_MAX: usize = 50_000;
/// Most characters of a name passed to Motion (a contact's first or last name).
const NAME_CHARS: usize = 100;

/// Names in memory, in front of the store's `profiles` table (one store round trip less
/// per delivered message), and each account's run of refusals.
#[derive(Default)]
pub struct Names {
    cache: Mutex<HashMap<(String, String), Profile>>,
    refusals: Mutex<HashMap<String, Refusals>>,
}

/// One account's refused lookups since Graph last gave a name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Refusals {
    in_a_row: u32,
    /// Until when (ms) lookups are not asked; `Some` from the pause's start until Graph
    /// gives a name again.
    paused_until: Option<i64>,
}

/// What a refusal changed.
#[derive(Debug, PartialEq, Eq)]
enum AfterRefusal {
    /// Lookups go on.
    Asking,
    /// This refusal paused the account's lookups (the line to write).
    Paused,
    /// Already paused: the lookup after a pause was refused too.
    StillPaused,
}

impl Refusals {
    /// Whether a lookup may be asked now. The first one after a pause is the try: the
    /// pause is renewed at once, so that the other deliveries meanwhile wait for its
    /// answer instead of all asking together.
    fn may_ask(&mut self, now: i64) -> bool {
        match self.paused_until {
            Some(until) if now < until => false,
            Some(_) => {
                self.paused_until = Some(now.saturating_add(PAUSE_MS));
                true
            }
            None => true,
        }
    }

    fn refused(&mut self, now: i64) -> AfterRefusal {
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.paused_until.is_some() {
            return AfterRefusal::StillPaused;
        }
        if self.in_a_row < REFUSALS_TO_PAUSE {
            return AfterRefusal::Asking;
        }
        self.paused_until = Some(now.saturating_add(PAUSE_MS));
        AfterRefusal::Paused
    }

    /// Graph answered: lookups go on as before. Returns whether they had paused.
    fn answered(&mut self) -> bool {
        let was_paused = self.paused_until.is_some();
        *self = Refusals::default();
        was_paused
    }
}

impl Names {
    fn cached(&self, key: &(String, String)) -> Option<Profile> {
        self.cache.lock().unwrap().get(key).cloned()
    }

    fn remember(&self, key: (String, String), profile: &Profile) {
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= PROFILE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, profile.clone());
    }

    /// Until when (ms) the account's lookups pause, if they do and none may be asked now.
    fn paused(&self, account: &str, now: i64) -> Option<i64> {
        let mut refusals = self.refusals.lock().unwrap();
        let state = refusals.entry(account.to_owned()).or_default();
        (!state.may_ask(now))
            .then_some(state.paused_until)
            .flatten()
    }

    fn refused(&self, account: &str, now: i64) -> AfterRefusal {
        let mut refusals = self.refusals.lock().unwrap();
        refusals.entry(account.to_owned()).or_default().refused(now)
    }

    fn answered(&self, account: &str) -> bool {
        self.refusals
            .lock()
            .unwrap()
            .get_mut(account)
            .is_some_and(Refusals::answered)
    }
}

/// The customer's name: cached, else asked of Graph, else a stable readable fallback.
pub async fn customer_name(
    shared: &Shared,
    live: &Live,
    account: Account<'_>,
    customer: &Customer,
) -> Profile {
    let now = now_ms();
    let id = match customer {
        Customer::Facebook(id) => id,
        Customer::Simulated(_) => {
            return Profile {
                first_name: "Simulated".into(),
                last_name: "Customer".into(),
                source: NameSource::Simulated,
                fetched_at: now,
            };
        }
    };
    let fresh = |p: &Profile| {
        let ttl = if p.source == NameSource::Graph {
            PROFILE_TTL_MS
        } else {
            FALLBACK_TTL_MS
        };
        now - p.fetched_at < ttl
    };
    let names = &shared.names;
    let account_id = account.id();
    let key = (account_id.to_owned(), id.to_string());
    if let Some(p) = names.cached(&key).filter(|p| fresh(p)) {
        return p;
    }
    if let Ok(Some(cached)) = shared
        .store
        .profile(account_id.to_owned(), id.to_string())
        .await
        && fresh(&cached)
    {
        names.remember(key, &cached);
        return cached;
    }
    let (network, refused) = match account {
        Account::Page(_) => (
            "Facebook",
            "the app may lack the Business Asset User Profile Access feature (App Review), or the Page Advanced Access to pages_messaging",
        ),
        Account::Instagram(_) => (
            "Instagram",
            "the linked Page's token may lack instagram_manage_messages, or the customer blocked the account",
        ),
    };
    if let Some(until) = names.paused(account_id, now) {
        // Not asked, so not stored: kept in memory until the pause ends, when this
        // customer's name is asked at their next message.
        let mut profile = fallback_profile(network, id.as_str(), now);
        profile.fetched_at = until.saturating_sub(FALLBACK_TTL_MS);
        names.remember(key, &profile);
        return profile;
    }
    // The names Graph gives, `None` when it gives none.
    let (lookup, conversation) = match account {
        Account::Page(page) => (
            messenger_names(live, page.access_token.get_ref(), id).await,
            ConversationKey::customer(id.as_str()),
        ),
        Account::Instagram(account) => (
            match crate::relay::instagram_login::calls(shared, live, account).await {
                Ok(calls) => calls
                    .graph
                    .instagram_profile(&calls.token, id)
                    .await
                    .map(instagram_names),
                Err(e) => Err(GraphError::network(e.to_string())),
            },
            ConversationKey::instagram_customer(id.as_str()),
        ),
    };
    shared.metrics.graph_call(
        account_id,
        "profile",
        if lookup.is_ok() { "ok" } else { "error" },
    );
    let keep = |profile: Profile| async move {
        let _ = shared
            .store
            .put_profile(key.0.clone(), key.1.clone(), profile.clone())
            .await;
        names.remember(key, &profile);
        profile
    };
    match lookup {
        Err(e) if e.disposition == Disposition::Retry || e.disposition == Disposition::SlowDown => {
            // Passing trouble: use the fallback now, ask again at the customer's next
            // message (while Graph is down that is every message, so the line is bounded).
            let profile = fallback_profile(network, id.as_str(), now);
            if logging::NAME_LOOKUP_FAILED.admit() {
                warn!(page_id = %account_id, conversation = %conversation, "customer name lookup failed ({e}); using {:?} for now", full_name(&profile));
            }
            profile
        }
        Err(e) => {
            let profile = fallback_profile(network, id.as_str(), now);
            match names.refused(account_id, now) {
                AfterRefusal::Asking => {
                    info!(page_id = %account_id, conversation = %conversation, "{network} refused the customer name lookup ({e}); using {:?} ({refused})", full_name(&profile));
                }
                AfterRefusal::Paused => {
                    names_paused(shared, account_id, true);
                    warn!(page_id = %account_id, "{network} refused the names of {REFUSALS_TO_PAUSE} new customers in a row (the last: {e}); {refused}. New customers show as {:?} and the like; their names are not asked for {} s at a time, one being asked after each pause until {network} gives one", full_name(&profile), PAUSE_MS / 1000);
                }
                AfterRefusal::StillPaused => {}
            }
            keep(profile).await
        }
        Ok(names_given) => {
            if names.answered(account_id) {
                names_paused(shared, account_id, false);
                info!(page_id = %account_id, "{network} gives customer names again; new customers' names are looked up as before");
            }
            let profile = match names_given {
                Some((first_name, last_name)) => Profile {
                    first_name,
                    last_name,
                    source: NameSource::Graph,
                    fetched_at: now,
                },
                None => fallback_profile(network, id.as_str(), now),
            };
            keep(profile).await
        }
    }
}

fn names_paused(shared: &Shared, account_id: &str, paused: bool) {
    let labels = crate::metrics::PageLabels {
        page_id: account_id.to_owned(),
    };
    shared
        .metrics
        .customer_names_paused
        .get_or_create(&labels)
        .set(i64::from(paused));
}

/// A customer's name as Motion gets it: on one line (control characters, line breaks
/// included, become spaces), trimmed, at most [`NAME_CHARS`] characters. Names come from
/// Graph and from webhooks and have no bound of their own (a 200,000-character Instagram
/// name with a newline reached Motion whole).
pub fn name_for_motion(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .take(NAME_CHARS)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// A Messenger customer's first and last names; when Facebook refuses them (no access to
/// them for this Page) but gives `name`, that split at its first space.
async fn messenger_names(
    live: &Live,
    token: &crate::config::Secret,
    id: &crate::ids::UserId,
) -> Result<Option<(String, String)>, GraphError> {
    match live.graph.profile(token, id).await {
        Ok(p) if p.first_name.is_some() || p.last_name.is_some() => Ok(Some((
            p.first_name.unwrap_or_default(),
            p.last_name.unwrap_or_default(),
        ))),
        Ok(p) => Ok(p.name.as_deref().and_then(split_name)),
        Err(e)
            if matches!(
                e.disposition,
                Disposition::MissingPermission | Disposition::Permanent
            ) =>
        {
            match live.graph.profile_name(token, id).await {
                Ok(p) => match p.name.as_deref().and_then(split_name) {
                    Some(names) => Ok(Some(names)),
                    None => Err(e),
                },
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// `"Ada King Lovelace"` → `("Ada", "King Lovelace")`; a single word is the first name.
fn split_name(name: &str) -> Option<(String, String)> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some(match name.split_once(char::is_whitespace) {
        Some((first, last)) => (first.to_owned(), last.trim().to_owned()),
        None => (name.to_owned(), String::new()),
    })
}

/// An Instagram customer's name for Motion's first and last name: their display name cut
/// at its first space, else their `@username`.
fn instagram_names(p: GraphProfile) -> Option<(String, String)> {
    match (p.name.as_deref().and_then(split_name), p.username) {
        (Some(names), _) => Some(names),
        (None, Some(username)) if !username.is_empty() => {
            Some((format!("@{username}"), String::new()))
        }
        _ => None,
    }
}

/// "Facebook user 1432" (or "Instagram user 1432"): stable for a customer, readable,
/// and never a real name.
pub fn fallback_profile(network: &str, psid: &str, now: i64) -> Profile {
    let tail: String = psid
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Profile {
        first_name: network.into(),
        last_name: format!("user {tail}"),
        source: NameSource::Fallback,
        fetched_at: now,
    }
}

fn full_name(p: &Profile) -> String {
    format!("{} {}", p.first_name, p.last_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_refusals_in_a_row_pause_the_lookups_and_one_is_tried_after_each_pause() {
        let mut r = Refusals::default();
        for _ in 1..REFUSALS_TO_PAUSE {
            assert!(r.may_ask(0));
            assert_eq!(r.refused(0), AfterRefusal::Asking);
        }
        assert!(r.may_ask(0));
        assert_eq!(r.refused(5), AfterRefusal::Paused);
        assert!(!r.may_ask(5));
        assert!(!r.may_ask(5 + PAUSE_MS - 1));
        // The pause is over: one lookup is tried, the others wait for its answer.
        let end = 5 + PAUSE_MS;
        assert!(r.may_ask(end));
        assert!(!r.may_ask(end));
        assert_eq!(r.refused(end + 1), AfterRefusal::StillPaused, "no new line");
        assert!(!r.may_ask(end + PAUSE_MS - 1));
        assert!(r.may_ask(end + PAUSE_MS));
        assert!(r.answered(), "the pause ends with a name: said once");
        assert_eq!(r, Refusals::default());
        assert!(r.may_ask(end + PAUSE_MS));
        assert_eq!(r.refused(end + PAUSE_MS), AfterRefusal::Asking);
    }

    #[test]
    fn a_name_given_in_between_starts_the_count_again() {
        let mut r = Refusals::default();
        for _ in 1..REFUSALS_TO_PAUSE {
            assert_eq!(r.refused(0), AfterRefusal::Asking);
        }
        assert!(!r.answered(), "not paused: nothing to say");
        for _ in 1..REFUSALS_TO_PAUSE {
            assert_eq!(r.refused(0), AfterRefusal::Asking);
        }
        assert!(r.may_ask(0));
    }

    #[test]
    fn accounts_pause_apart() {
        let names = Names::default();
        for _ in 0..REFUSALS_TO_PAUSE {
            assert_eq!(names.paused("page-a", 0), None);
            names.refused("page-a", 0);
        }
        assert_eq!(names.paused("page-a", 1), Some(PAUSE_MS));
        assert_eq!(names.paused("page-b", 1), None);
    }
}
