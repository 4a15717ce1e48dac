//! `fb-openchannel doctor`: one line per check, ✓ or ✗ with the fix.
//!
//! Talks to the real Graph API and Motion named in the config (or the simulated ones in
//! tests), to this host's own listeners, and to the state database. Changes nothing.
//! Exit status 0 only when every check passes.

mod accounts;
mod certificate;
mod listeners;

use accounts::*;
use certificate::*;
pub(super) use listeners::listener_url;
use listeners::*;

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
    checks.extend(reconcile_seen(config).await);
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
    checks.extend(nodes(config));
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

/// On a shared queue: whether every living node runs what this config file says (each
/// daemon writes the digests of the parts that must be alike every 10 s).
fn nodes(config: &Config) -> Option<Check> {
    if !config.storage.is_postgres() {
        return None;
    }
    let check = |ok, detail| {
        Some(Check {
            scope: "daemon".into(),
            name: "nodes",
            ok,
            detail,
        })
    };
    let since = crate::time::now_ms() - 30_000;
    let rows = match queue::with_storage(&config.storage, |conn| {
        crate::store::node_configs::rows(conn, since)
    }) {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return check(false, format!("cannot read what the nodes run: {e}")),
        Err(e) => return check(false, format!("cannot read what the nodes run: {e}")),
    };
    if rows.is_empty() {
        return check(
            true,
            "no daemon of the shared queue said what it runs in the last 30 s".into(),
        );
    }
    let mine = crate::config::digest(config);
    let mut same = Vec::new();
    let mut other = Vec::new();
    for row in rows {
        let theirs = serde_json::from_str(&row.digest).unwrap_or_default();
        let differs = crate::config::differences(&mine, &theirs);
        if differs.is_empty() {
            same.push(row.node);
        } else {
            other.push(format!(
                "node {} runs another config than this file: {}",
                row.node,
                differs.join("; ")
            ));
        }
    }
    if other.is_empty() {
        return check(
            true,
            format!("every node runs this config file: {}", same.join(", ")),
        );
    }
    check(
        false,
        format!("{}; {}", other.join(". "), crate::relay::nodes::SAME_CONFIG),
    )
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
