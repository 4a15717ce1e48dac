//! `fb-openchannel doctor`: one line per check, ✓ or ✗ with the fix.
//!
//! Talks to the real Graph API and Motion named in the config (or the simulated ones in
//! tests), to this host's own listeners, and to the state database. Changes nothing.
//! Exit status 0 only when every check passes.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::output::{Style, age};
use crate::config::{Config, InstagramConfig, InstagramLogin, PageConfig, redact_url};
use crate::facebook::graph::{Disposition, GraphClient};
use crate::motion::{KeyCheck, MotionClient};
use crate::relay::subscription;
use crate::store::queue;

/// A certificate expiring sooner than this is a problem to fix now.
const EXPIRY_WARNING_DAYS: i64 = 14;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// "daemon" or "page <id>".
    pub scope: String,
    pub name: &'static str,
    pub ok: bool,
    /// What was found, and for a failure what to do.
    pub detail: String,
}

pub fn main(path: &std::path::Path, json: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            let checks: Vec<Check> = errors
                .0
                .iter()
                .map(|e| Check {
                    scope: "daemon".into(),
                    name: "config",
                    ok: false,
                    detail: e.to_string(),
                })
                .collect();
            print_checks(&checks, json);
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let checks = runtime.block_on(run(&config, path));
    print_checks(&checks, json);
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_checks(checks: &[Check], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(checks).expect("checks serialise")
        );
        return;
    }
    let style = Style::detect();
    let mut scope = "";
    for c in checks {
        if c.scope != scope {
            scope = &c.scope;
            println!("{scope}");
        }
        let mark = if c.ok {
            style.good("✓")
        } else {
            style.bad("✗")
        };
        println!("  {mark} {:<13} {}", c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("{}", style.good("all checks passed"));
    } else {
        println!("{}", style.bad(&format!("{failed} check(s) failed")));
    }
}

async fn run(config: &Config, path: &std::path::Path) -> Vec<Check> {
    let mut checks = vec![Check {
        scope: "daemon".into(),
        name: "config",
        ok: true,
        detail: format!(
            "{} is valid ({} page(s), {} Instagram account(s))",
            path.display(),
            config.pages.len(),
            config.instagram.len()
        ),
    }];
    let daemon = |name, ok, detail: String| Check {
        scope: "daemon".into(),
        name,
        ok,
        detail,
    };

    if config.public.tls {
        checks.push(certificate(config));
    }
    if let Some(auth) = config.client_auth() {
        checks.push(match crate::server::tls::check_client_auth(&auth) {
            Ok(cas) => daemon(
                "client certificates",
                true,
                match auth.mode {
                    crate::server::tls::ClientCertMode::Require => format!(
                        "webhooks only with a client certificate from {} ({cas} CA certificate(s)) named {} (public.client_cert = \"require\"; /oauth/callback and /files/ need none)",
                        auth.ca.display(),
                        auth.name
                    ),
                    crate::server::tls::ClientCertMode::Report => format!(
                        "every webhook taken; whether it came with a certificate from {} ({cas} CA certificate(s)) named {} is counted (public.client_cert = \"report\")",
                        auth.ca.display(),
                        auth.name
                    ),
                },
            ),
            Err(e) => daemon(
                "client certificates",
                false,
                format!("{e}: the daemon cannot start like this; put Meta's CA there (see the README, \"Only Meta may knock\")"),
            ),
        });
    }
    checks.push(match public_listener(config).await {
        Ok(d) => daemon("listener", true, d),
        Err(d) => daemon("listener", false, d),
    });
    if let Some(auth) = config.client_auth()
        && let Some(check) = client_certs_seen(config, auth.mode).await
    {
        checks.push(check);
    }
    let local_up = match local_listener(config).await {
        Ok(d) => {
            checks.push(daemon("local", true, d));
            true
        }
        Err(d) => {
            checks.push(daemon("local", false, d));
            false
        }
    };
    if local_up {
        checks.push(match readiness(config).await {
            Ok(d) => daemon("ready", true, d),
            Err(d) => daemon("ready", false, d),
        });
    }
    checks.push(store(config));
    if let Some(until) = crate::capture::running_until(&config.storage.path) {
        let (files, bytes) = crate::capture::files(&config.storage.path);
        checks.push(daemon(
            "capture",
            true,
            format!(
                "a capture runs for {} more: {files} file(s), {} KiB in {} (end it with `fb-openchannel capture --off`)",
                age(until - crate::time::now_ms()),
                bytes / 1024,
                crate::capture::dir(&config.storage.path).display()
            ),
        ));
    }

    let motion = MotionClient::new(&config.motion, None);
    let graph = GraphClient::new(
        config.facebook.graph_url.get_ref(),
        &config.facebook.graph_version,
        Duration::from_secs(15),
        config.media_hosts(),
        None,
    );
    let (motion, graph) = match (motion, graph) {
        (Ok(m), Ok(g)) => (m, g),
        (Err(e), _) | (_, Err(e)) => {
            checks.push(daemon(
                "clients",
                false,
                format!("cannot build HTTP clients: {e}"),
            ));
            return checks;
        }
    };
    if let Some(first) = config.pages.first() {
        checks.push(match motion.check_api_key(first.receive_url.get_ref()).await {
            Ok(()) => daemon("motion api key", true, "Motion accepts motion.api_key".into()),
            Err(KeyCheck::WrongKey(e)) => daemon(
                "motion api key",
                false,
                format!("{e}: Motion refused motion.api_key; copy a valid user API key from Motion (Staff → Users)"),
            ),
            Err(KeyCheck::WrongUrl(e)) => daemon(
                "motion api key",
                false,
                format!("{e}: wrong URL, not a wrong key — Motion's address comes from receive_url: copy the Receive URL whole from the Openchannel account's Settings"),
            ),
            Err(KeyCheck::Unreachable(e)) => daemon("motion api key", false, format!("{e}: is Motion running and reachable from here?")),
        });
    }
    for page in &config.pages {
        checks.extend(page_checks(page, config, &graph, &motion).await);
    }
    let instagram_graph = GraphClient::new(
        config.facebook.instagram_graph_url.get_ref(),
        &config.facebook.graph_version,
        Duration::from_secs(15),
        config.media_hosts(),
        None,
    );
    for account in &config.instagram {
        checks.extend(instagram_checks(account, config, &graph, &motion).await);
        if let (InstagramLogin::Instagram { token }, Ok(instagram_graph)) =
            (config.instagram_login(account), &instagram_graph)
        {
            checks.extend(instagram_login_checks(account, config, token, instagram_graph).await);
        }
    }
    checks
}

/// An Instagram Login account: its newest token (the daemon's refreshed one, else the
/// config's) belongs to this account, and how long it has left.
async fn instagram_login_checks(
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
                    super::output::timestamp(t.attempted_at.unwrap_or(now)),
                    t.expires_at.map(|at| format!("; the token expires {}", super::output::timestamp(at))).unwrap_or_default(),
                ),
            ),
            (Some(at), None) if (at - now) / 86_400_000 < EXPIRY_WARNING_DAYS => check(
                "token expiry",
                false,
                format!("the token expires {} ({} day(s)) and has not been refreshed: is the daemon running?", super::output::timestamp(at), (at - now).max(0) / 86_400_000),
            ),
            (Some(at), None) => check(
                "token expiry",
                true,
                format!(
                    "expires {} ({} days); refreshed {}, next refresh after {}",
                    super::output::timestamp(at),
                    (at - now) / 86_400_000,
                    super::output::timestamp(t.obtained_at),
                    super::output::timestamp(t.obtained_at + REFRESH_AFTER_MS)
                ),
            ),
            (None, None) => check(
                "token expiry",
                true,
                format!(
                    "not known yet (the config's token, first used {}): the daemon refreshes it after {} and then knows",
                    super::output::timestamp(t.obtained_at),
                    super::output::timestamp(t.obtained_at + MIN_AGE_MS)
                ),
            ),
        },
    });
    checks
}

/// An Instagram account: the linked Page's token sees it as the Page's linked account
/// (Instagram API with Facebook Login), and its Receive URL answers.
async fn instagram_checks(
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

fn certificate(config: &Config) -> Check {
    let check = |ok, detail| Check {
        scope: "daemon".into(),
        name: "certificate",
        ok,
        detail,
    };
    if config.public.acme.is_some() {
        return acme_certificate(config, check);
    }
    let cert = config.public.tls_cert.get_ref();
    let loaded = match crate::server::tls::load(cert, config.public.tls_key.get_ref()) {
        Ok(l) => l.facts,
        Err(e) => {
            return check(
                false,
                format!(
                    "{e}: put a valid PEM chain and its key in public.tls_cert / public.tls_key"
                ),
            );
        }
    };
    let now = crate::time::now_ms() / 1000;
    let days_left = (loaded.not_after - now) / 86_400;
    if loaded.not_after <= now {
        return check(
            false,
            format!(
                "{} has expired: renew it (e.g. certbot renew)",
                cert.display()
            ),
        );
    }
    if days_left < EXPIRY_WARNING_DAYS {
        return check(
            false,
            format!(
                "{} expires in {days_left} day(s) (under {EXPIRY_WARNING_DAYS}): renew it now (e.g. certbot renew); the daemon picks up the new files by itself",
                cert.display()
            ),
        );
    }
    match names_problem(config, &loaded, &cert.display().to_string()) {
        Some(problem) => check(false, problem),
        None => check(
            true,
            format!(
                "valid for {days_left} more days, matches its key, covers {}{}",
                loaded.names.join(", "),
                if config.public.name.is_none() {
                    " (set public.name to have its host checked)"
                } else {
                    ""
                }
            ),
        ),
    }
}

/// The certificate the daemon gets by itself (`public.acme`): served from its state
/// directory, renewed on time, and what its last order said.
fn acme_certificate(config: &Config, check: impl Fn(bool, String) -> Check) -> Check {
    use crate::acme;
    let file = acme::certificate_file(&config.storage.path);
    let status = acme::read_status(&config.storage.path).unwrap_or_default();
    let last = match (&status.last_attempt, &status.last_error) {
        (None, _) => "no order tried yet".to_owned(),
        (Some(at), None) => format!("last order {} succeeded", acme::when(*at)),
        (Some(at), Some(e)) => format!(
            "last order {} FAILED ({} in a row): {e}",
            acme::when(*at),
            status.failures
        ),
    };
    let next = status
        .next_attempt
        .map(|t| format!("; next order {}", acme::when(t)))
        .unwrap_or_default();
    let loaded = match crate::server::tls::load(&file, &file) {
        Ok(l) => l.facts,
        Err(_) if !file.exists() => {
            return check(
                false,
                format!(
                    "no certificate from ACME yet ({last}{next}): the daemon orders it when it starts; is it running, and do the names resolve to this host with port 443 reaching public.listen ({})?",
                    config.public.listen
                ),
            );
        }
        Err(e) => {
            return check(
                false,
                format!("{e}: the daemon orders a new one when it starts ({last}{next})"),
            );
        }
    };
    let now = crate::time::now_ms() / 1000;
    let renew_at = acme::renew_at(loaded.not_before, loaded.not_after);
    let days_left = (loaded.not_after - now) / 86_400;
    if loaded.not_after <= now {
        return check(
            false,
            format!("the ACME certificate has EXPIRED ({last}{next})"),
        );
    }
    if now >= renew_at && status.last_error.is_some() {
        return check(
            false,
            format!(
                "the ACME certificate is due for renewal since {} and the renewal fails; it expires {} ({last}{next})",
                acme::when(renew_at),
                acme::when(loaded.not_after)
            ),
        );
    }
    if let Some(problem) = names_problem(config, &loaded, "the ACME certificate") {
        return check(
            false,
            format!("{problem} (the daemon orders one for public.acme.domains when it starts)"),
        );
    }
    let port = config.public.listen.port();
    let port_note = if port == 443 {
        String::new()
    } else {
        format!(
            " (public.listen is on port {port}: the CA checks the names on port 443, so 443 must be forwarded to it)"
        )
    };
    check(
        true,
        format!(
            "from ACME ({}), valid for {days_left} more days, covers {}, renewed from {}; {last}{next}{port_note}",
            status.directory,
            loaded.names.join(", "),
            acme::when(renew_at)
        ),
    )
}

/// Whether the certificate misses `public.name` (or, with ACME, a configured domain).
fn names_problem(
    config: &Config,
    loaded: &crate::server::tls::Facts,
    what: &str,
) -> Option<String> {
    let mut wanted: Vec<&str> = config.public.name.iter().map(String::as_str).collect();
    if let Some(acme) = &config.public.acme {
        wanted.extend(acme.get_ref().domains.iter().map(String::as_str));
    }
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|name| !covers(&loaded.names, name))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "{what} does not cover {}; it covers {}: get a certificate for the Callback URL's host",
        missing.join(", "),
        loaded.names.join(", ")
    ))
}

/// Whether a certificate's names cover `host` (one-label wildcards included).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => n == host,
        }
    })
}

/// `path` on one of our listeners as reached from this host (a wildcard address is
/// reached on loopback).
pub(super) fn listener_url(addr: std::net::SocketAddr, tls: bool, path: &str) -> url::Url {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let mut url = url::Url::parse(if tls {
        "https://localhost"
    } else {
        "http://localhost"
    })
    .expect("a fixed URL");
    let _ = url.set_ip_host(ip);
    let _ = url.set_port(Some(addr.port()));
    url.set_path(path);
    url
}

/// GETs `path` on the local listener (5 s): its URL, and the answer.
async fn local_get(
    config: &Config,
    path: &str,
) -> (url::Url, Result<reqwest::Response, reqwest::Error>) {
    let url = listener_url(config.local.listen, false, path);
    let answer = reqwest::Client::new()
        .get(url.clone())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    (url, answer)
}

async fn public_listener(config: &Config) -> Result<String, String> {
    crate::http_client::install_crypto_provider();
    // Our own listener on loopback: its certificate names the public host, not this
    // address; the certificate check above is the one that matters.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let challenge = format!("doctor-{}", crate::time::now_ms());
    let url = listener_url(config.public.listen, config.public.tls, "/webhook");
    let response = client
        .get(url.clone())
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", config.facebook.verify_token.get_ref().expose()),
            ("hub.challenge", challenge.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            format!(
                "nothing answers at {url} ({}): is the daemon running? systemctl status fb-openchannel",
                crate::http_client::describe(e)
            )
        })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status == 200 && body == challenge {
        Ok(format!(
            "{url} answers Facebook's handshake with this config's verify token"
        ))
    } else {
        Err(format!(
            "{url} answered {status} to the handshake: the running daemon has another verify_token (reload it) or it is not fb-openchannel"
        ))
    }
}

async fn local_listener(config: &Config) -> Result<String, String> {
    let (url, answer) = local_get(config, "/healthz").await;
    let response = answer.map_err(|e| {
        format!(
            "nothing answers at {url} ({}): is the daemon running?",
            crate::http_client::describe(e)
        )
    })?;
    match response.status().as_u16() {
        200 => Ok(format!("{url} answers (Motion's Reply URL is served here)")),
        s => Err(format!(
            "{url} answered {s}: another program holds local.listen?"
        )),
    }
}

/// What the running daemon counted of client certificates on /webhook since it
/// started (`fb_openchannel_webhook_client_certs_total`), and what to do about it:
/// `report` until Meta's deliveries are seen to come with Meta's certificate, then
/// `require`. `None` when the daemon does not answer.
async fn client_certs_seen(
    config: &Config,
    mode: crate::server::tls::ClientCertMode,
) -> Option<Check> {
    use crate::server::tls::ClientCertMode;
    let (_, answer) = local_get(config, "/metrics").await;
    let text = answer.ok()?.text().await.ok()?;
    let count = |label: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("fb_openchannel_webhook_client_certs_total{")
                    && l.contains(&format!("result=\"{label}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let (meta, none, other) = (count("meta"), count("none"), count("other"));
    let all = meta + none + other;
    let seen = format!(
        "the last {all} webhooks since the daemon started: {meta} with Meta's certificate, {none} without one, {other} with another"
    );
    let (ok, detail) = match (mode, all) {
        (_, 0) => (true, format!("{seen} (none yet: nothing to judge by)")),
        (ClientCertMode::Report, _) if meta == all => (
            true,
            format!(
                "{seen}: Meta sends its certificate with your webhooks; set public.client_cert = \"require\" to take only those"
            ),
        ),
        (ClientCertMode::Report, _) => (
            true,
            format!(
                "{seen}: keep public.client_cert = \"report\" — requiring it would refuse these"
            ),
        ),
        (ClientCertMode::Require, _) if meta == all => (true, seen),
        (ClientCertMode::Require, _) => (
            false,
            format!(
                "{seen}: those were refused (403); if they were Meta's, set public.client_cert = \"report\" at once — Meta disables a subscription whose deliveries keep failing"
            ),
        ),
    };
    Some(Check {
        scope: "daemon".into(),
        name: "client certificates seen",
        ok,
        detail,
    })
}

/// What the running daemon knows that no file shows: its `/readyz` (Facebook
/// throttling a feature, routing, a full disk, tokens refused…).
async fn readiness(config: &Config) -> Result<String, String> {
    let (url, answer) = local_get(config, "/readyz").await;
    let response = answer.map_err(|e| format!("{url}: {}", crate::http_client::describe(e)))?;
    let ok = response.status().is_success();
    let text = response.text().await.unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if ok {
        Ok(if lines.is_empty() {
            "the running daemon is ready (/readyz)".into()
        } else {
            format!("the running daemon is ready; {}", lines.join("; "))
        })
    } else {
        Err(format!("the running daemon reports: {}", lines.join("; ")))
    }
}

fn store(config: &Config) -> Check {
    let check = |ok, detail| Check {
        scope: "daemon".into(),
        name: "store",
        ok,
        detail,
    };
    match queue::with_storage(&config.storage, |conn| store_check(config, conn)) {
        Ok(c) => c,
        Err(e) => check(false, e),
    }
}

fn store_check(config: &Config, conn: &crate::store::sql::Sql<'_>) -> Check {
    let check = |ok, detail| Check {
        scope: "daemon".into(),
        name: "store",
        ok,
        detail,
    };
    let place = crate::store::place(&config.storage);
    let stats = match queue::stats(conn) {
        Ok(s) => s,
        Err(e) => {
            return check(false, format!("cannot read {place}: {e}"));
        }
    };
    let pending: i64 = stats.iter().map(|s| s.pending).sum();
    let failed: i64 = stats.iter().map(|s| s.failed).sum();
    let oldest = stats.iter().filter_map(|s| s.oldest_pending_ms).max();
    let mut detail = format!("{place} readable: {pending} pending");
    if let Some(ms) = oldest {
        detail.push_str(&format!(" (oldest {})", age(ms)));
    }
    detail.push_str(&format!(", {failed} failed"));
    if failed > 0 {
        detail.push_str(": see `fb-openchannel queue list --failed`, then retry or drop them");
        if let Ok(Some((page, direction, why))) = queue::latest_failure(conn) {
            let way = if direction == "in" {
                "to Motion"
            } else {
                "to Facebook"
            };
            detail.push_str(&format!(". The latest, page {page} {way}: {why}"));
        }
    }
    if config.storage.is_postgres()
        && let Ok(status) = crate::store::pg_status(conn, place.clone())
    {
        let nodes: Vec<String> = status
            .nodes
            .iter()
            .map(|(node, n)| format!("{node} ({n})"))
            .collect();
        detail.push_str(&format!(
            "; schema version {}; conversations being delivered, by node: {}",
            status.schema,
            if nodes.is_empty() {
                "none".to_owned()
            } else {
                nodes.join(", ")
            }
        ));
    }
    check(failed == 0, detail)
}

/// Makes the checks of one scope (`page <id>`, `instagram <id>`).
fn checker(scope: String) -> impl Fn(&'static str, bool, String) -> Check {
    move |name, ok, detail| Check {
        scope: scope.clone(),
        name,
        ok,
        detail,
    }
}

async fn page_checks(
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
        checks.extend(subscription_checks(page, config, graph, &check).await);
        if let Some(c) = routing_check(page, config, graph, &check).await {
            checks.push(c);
        }
    }
    checks.push(receive_url_check(motion, page.receive_url.get_ref(), &check).await);
    checks
}

/// Whether Motion answers at an account's Receive URL (a GET, which creates nothing).
async fn receive_url_check(
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
async fn subscription_checks(
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
async fn routing_check(
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
fn describe_app(app: &crate::facebook::graph::InstalledApp) -> String {
    if app.name.is_empty() {
        format!("app {}", app.id)
    } else {
        format!("{} ({})", app.name, app.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_cover_hosts() {
        let names = vec!["fb.example.com".to_string(), "*.shop.example".to_string()];
        assert!(covers(&names, "fb.example.com"));
        assert!(covers(&names, "FB.example.com."));
        assert!(covers(&names, "a.shop.example"));
        assert!(!covers(&names, "shop.example"));
        assert!(!covers(&names, "a.b.shop.example"));
        assert!(!covers(&names, "example.com"));
    }
}
