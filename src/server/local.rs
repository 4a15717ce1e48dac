//! The loopback routes: Motion's Reply URL (`POST /reply/{page_id}?token=…`) and the
//! health endpoints (`GET /healthz`, `GET /readyz`, `GET /readyz/node`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::logging;
use crate::relay::{Shared, reply};
use crate::server::{HttpResponse, text};

/// Largest Reply URL body accepted (an agent's text is far smaller; files go by id).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

fn json(status: u16, value: serde_json::Value) -> HttpResponse {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let route: &'static str = match req.uri().path().trim_matches('/').split('/').next() {
        Some("reply") => "reply",
        Some("healthz") => "healthz",
        Some("readyz") => "readyz",
        Some("metrics") => "metrics",
        _ => "other",
    };
    let response = route_local(&shared, req, remote).await;
    shared.metrics.request("local", route, started.elapsed());
    response
}

async fn route_local(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> HttpResponse {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segments.as_slice(), req.method()) {
        (["healthz"], &Method::GET) => text(200, "ok\n"),
        (["readyz"], &Method::GET) => readyz(shared).await,
        (["readyz", "node"], &Method::GET) => node_ready(shared).await,
        (["metrics"], &Method::GET) => match shared.metrics_text().await {
            Ok(body) => Response::builder()
                .status(200)
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(body)))
                .expect("static response parts are valid"),
            Err(e) => text(503, format!("metrics unavailable: {e}\n")),
        },
        (["reply", page_id], &Method::POST) => {
            let page_id = (*page_id).to_owned();
            reply_route(shared, req, &page_id, remote).await
        }
        (["healthz"] | ["readyz"] | ["readyz", "node"] | ["metrics"] | ["reply", _], _) => {
            text(405, "method not allowed\n")
        }
        _ => text(404, "not found\n"),
    }
}

/// Whether the call's `token` query parameter is `expected` (compared in constant time).
fn token_matches(req: &Request<Incoming>, expected: &crate::config::Secret) -> bool {
    let token = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    token
        .as_deref()
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.expose().as_bytes())))
}

fn wrong_token(remote: SocketAddr, page_id: &str) -> HttpResponse {
    if logging::REPLY_REFUSED.admit() {
        warn!(%remote, page_id, "Reply URL call with a wrong or missing token: answered 401 (the token in Motion's Reply URL must equal this account's reply_token)");
    }
    json(
        401,
        serde_json::json!({"message": "Not sent: wrong or missing token in the Reply URL."}),
    )
}

async fn reply_route(
    shared: &Shared,
    req: Request<Incoming>,
    page_id: &str,
    remote: SocketAddr,
) -> HttpResponse {
    let live = shared.live();
    let Some(account) = live.account(page_id) else {
        // Known to another node of the shared queue (so a page id of ours, not the
        // caller's text): this node's config lacks it.
        if shared.config_drift.elsewhere_id(page_id) {
            if logging::REPLY_REFUSED.admit() {
                warn!(%remote, page_id, "Reply URL call for page {page_id}, which another node of the shared queue has but this node's config lacks: answered 404; {}", crate::relay::nodes::SAME_CONFIG);
            }
            return json(
                404,
                serde_json::json!({"message": format!("Not sent: page {page_id} is configured on another node of fb-openchannel but not on this one; an administrator must copy the config to every node. Send it again then.")}),
            );
        }
        if logging::REPLY_REFUSED.admit() {
            warn!(%remote, "Reply URL call for an account that is not configured: answered 404 (check the Reply URL in the Openchannel account)");
        }
        return json(
            404,
            serde_json::json!({"message": format!("Not sent: page {page_id} is not configured in fb-openchannel.")}),
        );
    };
    if !token_matches(&req, account.reply_token()) {
        return wrong_token(remote, page_id);
    }
    // While a capture runs, Motion's call as it came (the token masked).
    let captured = shared.capture.on().then(|| {
        serde_json::json!({
            "method": req.method().as_str(),
            "url": crate::config::redact_url(&req.uri().to_string()),
            "headers": crate::capture::headers_json(req.headers()),
        })
    });
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        json(
            413,
            serde_json::json!({"message": "Not sent: the reply is larger than 1 MiB."}),
        )
    };
    if declared.is_some_and(|n| n > MAX_REPLY_BYTES as u64) {
        return too_large();
    }
    let timeout = live.config.public.request_timeout;
    let answering = super::Answering::of(&req);
    let body = match tokio::time::timeout(
        timeout,
        Limited::new(req.into_body(), MAX_REPLY_BYTES).collect(),
    )
    .await
    {
        Err(_) => {
            return json(
                408,
                serde_json::json!({"message": "Not sent: the request body did not arrive in time."}),
            );
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large();
        }
        Ok(Err(e)) => {
            return json(
                400,
                serde_json::json!({"message": format!("Not sent: the body could not be read: {e}")}),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    // The whole call is in: while it waits for Graph, no newcomer closes it.
    let _answering = answering.as_ref().map(super::Answering::start);
    let (status, answer) = reply::accept_reply(shared, account, &body).await;
    if let Some(mut request) = captured {
        request["body"] = crate::capture::body_json(&body);
        shared.capture.record(
            "reply",
            serde_json::json!({
                "request": request,
                "response": {"status": status, "body": answer.clone()},
            }),
        );
    }
    json(status, answer)
}

/// How `/readyz` names an account: `page <id>`, or `instagram <id>`.
fn account_name(shared: &Shared, id: &str) -> String {
    match shared.live().account(id) {
        Some(crate::relay::Account::Instagram(_)) => format!("instagram {id}"),
        _ => format!("page {id}"),
    }
}

/// What keeps this node itself from taking webhooks and Reply URL calls, with the queue
/// as read for the check: a store that does not answer or cannot write, deliveries paused
/// for it, a certificate Facebook cannot connect with. The rest of `/readyz` (tokens,
/// throttles, a backlog Motion does not take) holds for every node of a shared queue
/// alike, so a floating IP must not move for it (`GET /readyz/node`).
async fn node_problems(shared: &Shared) -> (Vec<String>, Vec<crate::store::QueueStat>) {
    let mut problems = Vec::new();
    let queue = match shared.store.queue_stats().await {
        Ok(queue) => queue,
        Err(e) => {
            problems.push(format!("store: {e}"));
            Vec::new()
        }
    };
    let now = crate::time::now_ms();
    if let Some((since, why)) = shared.store.stats().write_failure() {
        problems.push(format!(
            "store: the state database cannot write since {} ago ({why}): webhooks and replies are answered 503 (Facebook sends them again); free disk space on {}",
            ago(now, since),
            shared.store.path().display()
        ));
    }
    if let Some(t) = shared.ledger.trouble() {
        problems.push(format!(
            "delivery: paused for {}: {} outcome(s) of deliveries already made are kept in memory until the state database takes them ({}); next try in {}",
            ago(now, t.since_ms),
            t.kept,
            t.reason,
            humantime::format_duration(Duration::from_secs(crate::time::until(t.next_try_ms, now).as_secs()))
        ));
    }
    if let Some(problem) = shared
        .certificate
        .get()
        .and_then(|served| served.unusable(now / 1000))
    {
        problems.push(problem);
    }
    (problems, queue)
}

/// How long ago `since` was at `now` (both Unix milliseconds), in words.
fn ago(now: i64, since: i64) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(
        crate::time::until(now, since).as_secs(),
    ))
}

/// `GET /readyz/node`: 200 while this node can take webhooks and Reply URL calls, for
/// a floating IP's check (keepalived) or a load balancer; 503 with the reasons.
async fn node_ready(shared: &Shared) -> HttpResponse {
    let (problems, _) = node_problems(shared).await;
    if problems.is_empty() {
        text(200, "ready\n")
    } else {
        text(503, format!("not ready\n{}\n", problems.join("\n")))
    }
}

/// 200 when the node is ready (`node_problems`), every page can send and no pending item
/// is older than `local.ready_max_pending_age`; 503 with the reasons otherwise.
async fn readyz(shared: &Shared) -> HttpResponse {
    let (mut problems, queue) = node_problems(shared).await;
    let max_age = shared.live().config.local.ready_max_pending_age;
    let now = crate::time::now_ms();
    for q in queue {
        let age = crate::time::until(now, q.oldest_created_at);
        if age > max_age {
            problems.push(format!(
                "{}: {} {} item(s) pending, the oldest for {} (over local.ready_max_pending_age = {}); {} is not taking them",
                account_name(shared, &q.page_id),
                q.pending,
                if q.direction == "in" { "inbound" } else { "outbound" },
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(max_age),
                if q.direction == "in" { "Motion" } else { "Facebook" },
            ));
        }
    }
    // One that ends soon (the node's check left it out; an unusable one is named there).
    if let Some(served) = shared.certificate.get()
        && served.unusable(now / 1000).is_none()
    {
        problems.extend(served.problem(now / 1000));
    }
    let ago = |since: i64| ago(now, since);
    for (page, elsewhere) in shared.routing.all_elsewhere() {
        problems.push(format!(
            "page {page}: conversation routing belongs to another app — {} customer message(s) came only as standby events, the last {} ago: {}",
            elsewhere.standby_messages,
            ago(elsewhere.last_standby_ms),
            crate::relay::routing::FIX
        ));
    }
    for (page, feature, pause) in shared.pauses.all() {
        if pause.until > now {
            problems.push(format!(
                "{}: Facebook throttles {} ({}) since {} ago; replies wait and go out by themselves, next try in {}",
                account_name(shared, &page),
                feature.words(),
                pause.reason,
                ago(pause.since),
                humantime::format_duration(Duration::from_secs(crate::time::until(pause.until, now).as_secs()))
            ));
        }
    }
    for (page, problem) in shared.health.problems() {
        problems.push(format!("{}: {problem}", account_name(shared, &page)));
    }
    let unreadable = shared.metrics.unreadable.get();
    let mut note = if unreadable > 0 {
        format!(
            "note: {unreadable} signed webhook item(s) could not be read since the start; each is kept as failed (fb-openchannel queue list --failed) while its neighbours were delivered\n"
        )
    } else {
        String::new()
    };
    for (page, until) in shared.health.slowed(now) {
        note.push_str(&format!(
            "warning: {}: Facebook rate-limits the page's calls; replies wait and go out by themselves, next try in {}\n",
            account_name(shared, &page),
            humantime::format_duration(Duration::from_secs(crate::time::until(until, now).as_secs()))
        ));
    }
    for (node, differs) in shared.config_drift.all() {
        note.push_str(&format!(
            "warning: node {node} of the shared queue runs another config than this node: {}; {}\n",
            differs.join("; "),
            crate::relay::nodes::SAME_CONFIG
        ));
    }
    for (account, warning) in shared.token_health.warnings() {
        note.push_str(&format!(
            "warning: {}: {warning}\n",
            account_name(shared, &account)
        ));
    }
    if problems.is_empty() {
        text(200, format!("ready\n{note}"))
    } else {
        text(503, format!("not ready\n{}\n{note}", problems.join("\n")))
    }
}
