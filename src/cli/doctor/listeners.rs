//! This host's listeners as reached from here, and what the running daemon reports
//! (`/readyz`, its client-certificate counts).

use super::*;

/// `path` on one of our listeners as reached from this host (a wildcard address is
/// reached on loopback).
pub(crate) fn listener_url(addr: std::net::SocketAddr, tls: bool, path: &str) -> url::Url {
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
pub(super) async fn local_get(
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

pub(super) async fn public_listener(config: &Config) -> Result<String, String> {
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

pub(super) async fn local_listener(config: &Config) -> Result<String, String> {
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
pub(super) async fn client_certs_seen(
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
pub(super) async fn readiness(config: &Config) -> Result<String, String> {
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

/// The running daemon's last comparison of each account's inbox with the queue
/// (`fb_openchannel_reconcile_*`): "last reconcile 12 min ago: 0 missing in 48
/// conversations". A run that found missing messages is a warning (Meta dropped
/// webhooks: the subscription is worth a look), not a failure: they were recovered.
pub(super) async fn reconcile_seen(config: &Config) -> Vec<Check> {
    if config.reconcile.every.is_zero() {
        return Vec::new();
    }
    let (_, answer) = local_get(config, "/metrics").await;
    let Some(text) = async { answer.ok()?.text().await.ok() }.await else {
        return Vec::new();
    };
    let value = |metric: &str, account: &str| -> Option<f64> {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains(&format!("page_id=\"{account}\""))
            })
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let now = crate::time::now_ms() as f64 / 1000.0;
    let accounts = config
        .pages
        .iter()
        .map(|p| (format!("page {}", p.id.get_ref()), p.id.get_ref().clone()))
        .chain(config.instagram.iter().map(|a| {
            (
                format!("instagram {}", a.id.get_ref()),
                a.id.get_ref().clone(),
            )
        }));
    let mut checks = Vec::new();
    for (scope, account) in accounts {
        let Some(last) = value(
            "fb_openchannel_reconcile_last_run_timestamp_seconds",
            &account,
        ) else {
            checks.push(Check {
                scope,
                name: "reconcile",
                ok: true,
                detail: "no comparison with the inbox yet since the daemon started (the first runs at start; see the journal if it failed)".into(),
            });
            continue;
        };
        let missing = value("fb_openchannel_reconcile_missing_messages", &account).unwrap_or(0.0);
        let conversations =
            value("fb_openchannel_reconcile_conversations", &account).unwrap_or(0.0);
        let minutes = ((now - last) / 60.0).max(0.0).round() as u64;
        let stale = now - last > 3.0 * config.reconcile.every.as_secs_f64() + 600.0;
        let mut detail = format!(
            "last reconcile {minutes} min ago: {missing} missing in {conversations} conversations"
        );
        if missing > 0.0 {
            detail.push_str(
                " (recovered and delivered; Meta did not send their webhooks: check the subscription and the journal's \"reconcile:\" lines)",
            );
        }
        if stale {
            detail.push_str(&format!(
                "; no run since — runs every {}: see the journal's \"reconcile:\" lines",
                humantime::format_duration(config.reconcile.every)
            ));
        }
        checks.push(Check {
            scope,
            name: "reconcile",
            ok: !stale,
            detail,
        });
    }
    checks
}
