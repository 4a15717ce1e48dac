//! The checks of each account: a Page's token, subscription and routing, an Instagram
//! account's link or its own login token, and the Receive URL in Motion.

use super::*;

/// An Instagram Login account: its newest token (the daemon's refreshed one, else the
/// config's) belongs to this account, and how long it has left.
pub(super) async fn instagram_login_checks(
    account: &InstagramConfig,
    config: &Config,
    seed: &crate::config::Secret,
    graph: &GraphClient,
) -> Vec<Check> {
    use crate::relay::instagram_login::{MIN_AGE_MS, REFRESH_AFTER_MS};
    let id = account.id.get_ref();
    let check = checker(format!("instagram {id}"));
    let stored = queue::with_storage(&config.storage, |c| {
        crate::store::tokens::read(c, id, seed).ok().flatten()
    })
    .ok()
    .flatten();
    let token = stored.as_ref().map_or(seed, |s| &s.token);
    let mut checks = vec![match graph.instagram_me(token).await {
        Ok((user_id, username)) if &user_id == id => check(
            "token",
            true,
            format!(
                "the access token is @{username}'s (Instagram Login, {})",
                config.facebook.instagram_graph_url.get_ref()
            ),
        ),
        Ok((user_id, username)) => check(
            "token",
            false,
            format!(
                "the access token is for Instagram account {user_id} (@{username}), not {id}: fix `id` or `access_token` in this [[instagram]]"
            ),
        ),
        Err(e) if e.disposition == Disposition::TokenInvalid => check(
            "token",
            false,
            format!(
                "the access token is invalid or expired ({e}): generate a new one (App Dashboard → Instagram → API setup with Instagram login → Generate token), put it in `access_token` and reload"
            ),
        ),
        Err(e) => check(
            "token",
            false,
            format!("cannot ask Instagram about the token: {e}"),
        ),
    }];
    let now = crate::time::now_ms();
    checks.push(match stored {
        None => check(
            "token expiry",
            true,
            "not known yet: the daemon stores the token when it starts with it, refreshes it 24 h later (Meta's minimum age) and then weekly".into(),
        ),
        Some(t) => match (t.expires_at, t.last_error) {
            (_, Some(error)) => check(
                "token expiry",
                false,
                format!(
                    "the last refresh failed ({error}) at {}{}: the daemon tries again hourly; if it keeps failing, generate a new token and put it in `access_token`",
                    crate::cli::output::timestamp(t.attempted_at.unwrap_or(now)),
                    t.expires_at.map(|at| format!("; the token expires {}", crate::cli::output::timestamp(at))).unwrap_or_default(),
                ),
            ),
            (Some(at), None) if (at - now) / 86_400_000 < EXPIRY_WARNING_DAYS => check(
                "token expiry",
                false,
                format!("the token expires {} ({} day(s)) and has not been refreshed: is the daemon running?", crate::cli::output::timestamp(at), (at - now).max(0) / 86_400_000),
            ),
            (Some(at), None) => check(
                "token expiry",
                true,
                format!(
                    "expires {} ({} days); refreshed {}, next refresh after {}",
                    crate::cli::output::timestamp(at),
                    (at - now) / 86_400_000,
                    crate::cli::output::timestamp(t.obtained_at),
                    crate::cli::output::timestamp(t.obtained_at + REFRESH_AFTER_MS)
                ),
            ),
            (None, None) => check(
                "token expiry",
                true,
                format!(
                    "not known yet (the config's token, first used {}): the daemon refreshes it after {} and then knows",
                    crate::cli::output::timestamp(t.obtained_at),
                    crate::cli::output::timestamp(t.obtained_at + MIN_AGE_MS)
                ),
            ),
        },
    });
    checks
}

/// An Instagram account: the linked Page's token sees it as the Page's linked account
/// (Instagram API with Facebook Login), and its Receive URL answers.
pub(super) async fn instagram_checks(
    account: &InstagramConfig,
    config: &Config,
    graph: &GraphClient,
    motion: &MotionClient,
) -> Vec<Check> {
    let id = account.id.get_ref();
    let check = checker(format!("instagram {id}"));
    let mut checks = Vec::new();
    if let InstagramLogin::Facebook { page } = config.instagram_login(account) {
        let page_id = page.id.get_ref();
        let linked = graph
            .linked_instagram(page.access_token.get_ref(), &page.page_id())
            .await;
        checks.push(match linked {
            Ok(Some(linked)) if &linked == id => check(
                "linked page",
                true,
                format!("page {page_id} is linked to this account; its token is used for names and answers"),
            ),
            Ok(Some(linked)) => check(
                "linked page",
                false,
                format!("page {page_id} is linked to Instagram account {linked}, not {id}: fix `id` or `page` in this [[instagram]]"),
            ),
            Ok(None) => check(
                "linked page",
                false,
                format!("page {page_id} has no linked Instagram professional account: link it in Meta Business Suite → Settings → Instagram accounts"),
            ),
            Err(e) if e.disposition == Disposition::TokenInvalid => check(
                "linked page",
                false,
                format!("page {page_id}'s access token is invalid or expired ({e}): create a new one (with instagram_manage_messages) and put it in that [[page]]"),
            ),
            Err(e) => check(
                "linked page",
                false,
                format!("cannot ask Graph about page {page_id}: {e}"),
            ),
        });
    }
    checks.push(receive_url_check(motion, account.receive_url.get_ref(), &check).await);
    checks
}

/// Makes the checks of one scope (`page <id>`, `instagram <id>`).
pub(super) fn checker(scope: String) -> impl Fn(&'static str, bool, String) -> Check {
    move |name, ok, detail| Check {
        scope: scope.clone(),
        name,
        ok,
        detail,
    }
}

pub(super) async fn page_checks(
    page: &PageConfig,
    config: &Config,
    graph: &GraphClient,
    motion: &MotionClient,
) -> Vec<Check> {
    let id = page.id.get_ref();
    let check = checker(format!("page {id}"));
    let mut checks = Vec::new();
    let token = page.access_token.get_ref();
    let token_ok = match graph.me(token).await {
        Ok((owner, name)) if &owner == id => {
            checks.push(check(
                "token",
                true,
                format!("the Page access token is valid and belongs to {id} ({name})"),
            ));
            true
        }
        Ok((owner, name)) => {
            checks.push(check(
                "token",
                false,
                format!("the access_token belongs to page {owner} ({name}), not {id}: put this page's own token in its [[page]]"),
            ));
            false
        }
        Err(e) if e.disposition == Disposition::TokenInvalid => {
            checks.push(check(
                "token",
                false,
                format!("the Page access token is invalid or expired ({e}): create a new one and put it in access_token"),
            ));
            false
        }
        Err(e) => {
            checks.push(check(
                "token",
                false,
                format!("cannot check the token: {e}"),
            ));
            false
        }
    };
    if token_ok {
        if let Some(c) = token_health_check(page, config, graph, &check).await {
            checks.push(c);
        }
        checks.extend(subscription_checks(page, config, graph, &check).await);
        if let Some(c) = routing_check(page, config, graph, &check).await {
            checks.push(c);
        }
    }
    checks.push(receive_url_check(motion, page.receive_url.get_ref(), &check).await);
    checks
}

/// What `debug_token` says of the Page token: its permissions and when it and its data
/// access end — a warning 7 days ahead, a failure once it does not work.
async fn token_health_check(
    page: &PageConfig,
    config: &Config,
    graph: &GraphClient,
    check: &impl Fn(&'static str, bool, String) -> Check,
) -> Option<Check> {
    use crate::relay::token_health::{Verdict, judge, page_needs};
    let app = crate::relay::subscription::our_app(graph, config, page)
        .await
        .ok()?;
    let facts = match graph
        .debug_token(
            &app.id,
            config.facebook.app_secret.get_ref(),
            page.access_token.get_ref(),
        )
        .await
    {
        Ok(facts) => facts,
        Err(e) => {
            return Some(check(
                "token health",
                true,
                format!("debug_token could not be asked ({e}): expiry and permissions unchecked"),
            ));
        }
    };
    let now = crate::time::now_ms() / 1000;
    let ends = |at: Option<i64>| at.map_or("never".to_owned(), crate::time::when);
    let summary = format!(
        "expires {}, data access until {}",
        ends(facts.expires_at),
        ends(facts.data_access_expires_at)
    );
    Some(match judge(&facts, &page_needs(config, page), now) {
        Verdict::Fine => check(
            "token health",
            true,
            format!("every permission the daemon uses is granted; {summary}"),
        ),
        Verdict::Warning(why) => check("token health", true, format!("warning: {why} ({summary})")),
        Verdict::Dead(why) => check("token health", false, why),
    })
}

/// Whether Motion answers at an account's Receive URL (a GET, which creates nothing).
pub(super) async fn receive_url_check(
    motion: &MotionClient,
    receive_url: &str,
    check: &impl Fn(&'static str, bool, String) -> Check,
) -> Check {
    match motion.probe(receive_url).await {
        Ok(status @ (401 | 403)) => check(
            "receive url",
            false,
            format!(
                "Motion refused a GET at {} with {status}: copy the Openchannel account's Receive URL whole into receive_url, with any ?apikey= or token it carries",
                redact_url(receive_url)
            ),
        ),
        Ok(status) if status < 500 => check(
            "receive url",
            true,
            format!(
                "Motion answers at {} (HTTP {status} to a GET, which creates nothing)",
                redact_url(receive_url)
            ),
        ),
        Ok(status) => check(
            "receive url",
            false,
            format!(
                "Motion answered {status} at {}: is Motion healthy?",
                redact_url(receive_url)
            ),
        ),
        Err(e) => check(
            "receive url",
            false,
            format!(
                "{} does not answer ({e}): is Motion running, and is receive_url right?",
                redact_url(receive_url)
            ),
        ),
    }
}

/// Our app (configured, or found from the token), our app's subscription — its own
/// entry, not the fields of every app installed on the Page — and the other apps.
pub(super) async fn subscription_checks(
    page: &PageConfig,
    config: &Config,
    graph: &GraphClient,
    check: &impl Fn(&'static str, bool, String) -> Check,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let app = match subscription::our_app(graph, config, page).await {
        Ok(app) => app,
        Err(e) => {
            checks.push(check(
                "app",
                false,
                format!("cannot tell which app the token belongs to ({e}): set facebook.app_id (App Dashboard → App ID)"),
            ));
            return checks;
        }
    };
    match &app.found_from_token {
        Some(name) => checks.push(check(
            "app",
            true,
            format!(
                "facebook.app_id is not set; the Page token belongs to app {} ({name}), whose subscription is checked. Set app_id = \"{}\" in [facebook] to say so yourself",
                app.id, app.id
            ),
        )),
        None => {
            // A token issued for another app cannot subscribe ours.
            match graph.token_app(page.access_token.get_ref()).await {
                Ok((id, name)) if id != app.id => checks.push(check(
                    "app",
                    false,
                    format!("the Page token was issued for app {id} ({name}), not facebook.app_id {}: make the token with fb-openchannel's app", app.id),
                )),
                _ => checks.push(check("app", true, format!("app {} (facebook.app_id)", app.id))),
            }
        }
    }
    let installed = match graph
        .installed_apps(page.access_token.get_ref(), &page.page_id())
        .await
    {
        Ok(apps) => subscription::Installed::split(apps, &app.id),
        Err(e) => {
            checks.push(check(
                "subscription",
                false,
                format!("cannot read the subscription: {e}"),
            ));
            return checks;
        }
    };
    let required = subscription::required_fields(page);
    let gone = subscription::missing(&required, installed.our_fields());
    checks.push(if installed.ours.is_none() {
        check(
            "subscription",
            false,
            format!(
                "app {} is not subscribed to this Page{}: run `fb-openchannel subscribe`",
                app.id,
                if installed.others.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (other apps are: {})",
                        installed
                            .others
                            .iter()
                            .map(describe_app)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        )
    } else if gone.is_empty() {
        check(
            "subscription",
            true,
            format!("app {} is subscribed to {}", app.id, required.join(", ")),
        )
    } else {
        check(
            "subscription",
            false,
            format!(
                "app {} is not subscribed to {} — without {} Meta sends nothing of: {}. Run `fb-openchannel subscribe`",
                app.id,
                gone.join(", "),
                if gone.len() == 1 { "it" } else { "them" },
                gone.iter()
                    .map(|f| format!("{f} ({})", subscription::what_needs(f)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    });
    let competitors = installed.competitors();
    checks.push(if !competitors.is_empty() {
        check(
            "other apps",
            false,
            format!(
                "{} also receive{} this Page's Messenger messages and compete for its conversations (a leftover Motion Cloud app?). Remove {}: Meta Business Suite → Settings → Business integrations (or the Page's Settings → Business integrations) → Remove; or, if it must stay, make fb-openchannel's app the one conversations are routed to (Page settings → Advanced messaging)",
                competitors.iter().map(|a| describe_app(a)).collect::<Vec<_>>().join(", "),
                if competitors.len() == 1 { "s" } else { "" },
                if competitors.len() == 1 { "it" } else { "them" }
            ),
        )
    } else if installed.others.is_empty() {
        check("other apps", true, "no other app is installed on this Page".into())
    } else {
        check(
            "other apps",
            true,
            format!(
                "also installed, without Messenger messages: {}",
                installed.others.iter().map(describe_app).collect::<Vec<_>>().join(", ")
            ),
        )
    });
    checks
}

/// Whether the Page's conversations are routed to our app: the last customer message
/// that came only as a standby event (from the store) and, for it, the thread's owner
/// as Graph says (`thread_owner`).
pub(super) async fn routing_check(
    page: &PageConfig,
    config: &Config,
    graph: &GraphClient,
    check: &impl Fn(&'static str, bool, String) -> Check,
) -> Option<Check> {
    let latest = queue::with_storage(&config.storage, |c| {
        queue::latest_standby(c, page.id.get_ref()).ok()
    })
    .ok()
    .flatten()?;
    let Some((conversation, at, messaging_since)) = latest else {
        return Some(check(
            "routing",
            true,
            "no customer message came as a standby event: conversations are routed to this app"
                .into(),
        ));
    };
    if messaging_since {
        return Some(check(
            "routing",
            true,
            format!(
                "customer messages come through messaging (one came as standby {} ago, before)",
                age(at)
            ),
        ));
    }
    let owner = match conversation
        .strip_prefix("psid:")
        .and_then(|p| crate::ids::UserId::parse(p).ok())
    {
        Some(psid) => {
            let token = page.access_token.get_ref();
            match graph.thread_owner(token, &page.page_id(), &psid).await {
                Ok(app) => {
                    let name = graph
                        .installed_apps(token, &page.page_id())
                        .await
                        .ok()
                        .and_then(|apps| apps.into_iter().find(|a| a.id == app))
                        .map(|a| format!("{} ({app})", a.name))
                        .unwrap_or(format!("app {app}"));
                    format!(" Meta names the owner of that conversation: {name}.")
                }
                Err(e) => format!(" (Graph did not say who owns the conversation: {e})"),
            }
        }
        None => String::new(),
    };
    Some(check(
        "routing",
        false,
        format!(
            "the last customer message ({} ago) came only as a standby event.{owner} {}",
            age(at),
            crate::relay::routing::FIX
        ),
    ))
}

/// "XCALLY Motion (1234567890)".
pub(super) fn describe_app(app: &crate::facebook::graph::InstalledApp) -> String {
    if app.name.is_empty() {
        format!("app {}", app.id)
    } else {
        format!("{} ({})", app.name, app.id)
    }
}
