//! The Facebook-facing routes: `GET /webhook` (verification handshake),
//! `POST /webhook` (signed events), `GET /files/<token>/<name>` (an agent's file
//! Meta fetches for an Instagram Login send) and, only while `setup` waits for it,
//! `GET /oauth/callback` (see [`super::login_callback`]). Everything else is 404 or 405.
//!
//! A POST is answered 200 only after its bytes and events are committed to the store
//! (DESIGN §4 rule 1). Refusals (DESIGN §4 rule 8) change nothing: 403 bad signature,
//! 413 too large, 408 too slow, 503 when the store cannot write (Facebook retries).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Method, Request};
use subtle::ConstantTimeEq;
use tracing::{error, warn};

use crate::facebook::signature;
use crate::logging;
use crate::relay::{Shared, intake};
use crate::server::body::{self, BodyError};
use crate::server::tls::{ClientCert, ClientCertMode};
use crate::server::{HttpResponse, text};

/// Answers one request on the public listener.
pub async fn handle(
    shared: Arc<Shared>,
    guesses: Arc<Mutex<GuessLimit>>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> HttpResponse {
    let started = std::time::Instant::now();
    if let Some(rest) = req.uri().path().strip_prefix("/files/") {
        let response = offered_file(&shared, req.method(), rest);
        shared.metrics.request("public", "file", started.elapsed());
        return response;
    }
    if req.uri().path() == "/oauth/callback" && req.method() == Method::GET {
        let store_path = shared.store.path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let now = crate::time::now_ms() / 1000;
        let (status, body) = tokio::task::spawn_blocking(move || {
            crate::server::login_callback::answer(&store_path, &query, now)
        })
        .await
        .unwrap_or((503, "try again\n"));
        if status == 200 {
            tracing::info!(%remote, "setup: the Facebook login came back; handed to fb-openchannel setup");
        }
        shared.metrics.request("public", "oauth", started.elapsed());
        return text(status, body);
    }
    if crate::server::app_callbacks::is_callback(req.uri().path()) {
        let metrics = shared.clone();
        let response = crate::server::app_callbacks::handle(shared, req).await;
        metrics
            .metrics
            .request("public", "app_callback", started.elapsed());
        return response;
    }
    if req.uri().path() != "/webhook" {
        shared.metrics.request("public", "other", started.elapsed());
        return text(404, "not found\n");
    }
    // Meta's client certificate, with `public.client_ca`: asked at every handshake,
    // required (or only counted, `report`) here, on deliveries (POST /webhook) alone —
    // the verification GET stores nothing and echoes a challenge only to the verify
    // token, and Meta's own may come without one.
    let cert = req
        .extensions()
        .get::<ClientCert>()
        .cloned()
        .unwrap_or(ClientCert::NotAsked);
    if cert != ClientCert::NotAsked && req.method() == Method::POST {
        shared.metrics.client_cert(cert.label());
        let live = shared.live();
        let mode = live
            .config
            .client_auth()
            .map(|a| a.mode)
            .unwrap_or_default();
        if mode == ClientCertMode::Require && cert != ClientCert::Meta {
            shared.metrics.webhook("client_cert");
            if logging::WEBHOOK_REFUSED.admit() {
                let why = match &cert {
                    ClientCert::Other(reason) => {
                        format!("a client certificate that is not Meta's ({reason})")
                    }
                    _ => "no client certificate".to_owned(),
                };
                warn!(%remote, reason = "client_cert", "webhook refused with 403: {why}; public.client_cert = \"require\" takes only Meta's (public.client_ca, public.client_name). If Meta's own deliveries are refused, set public.client_cert = \"report\" and see fb-openchannel doctor");
            }
            shared
                .metrics
                .request("public", "webhook", started.elapsed());
            return text(403, "client certificate required\n");
        }
    }
    let method = req.method().clone();
    let response = match method {
        Method::GET => handshake(&shared, &guesses, &req, remote),
        Method::POST => {
            let (response, result) = receive(&shared, req, remote).await;
            shared.metrics.webhook(result);
            response
        }
        _ => {
            let mut r = text(405, "method not allowed: use GET or POST\n");
            r.headers_mut()
                .insert("allow", "GET, POST".parse().expect("static header"));
            r
        }
    };
    let route = if method == Method::GET {
        "handshake"
    } else {
        "webhook"
    };
    shared.metrics.request("public", route, started.elapsed());
    response
}

/// `GET /files/<token>/<name>`: an agent's file offered to Meta (see
/// [`crate::relay::public_files`]); 404 for anything else, a token that ended included.
fn offered_file(shared: &Shared, method: &Method, rest: &str) -> HttpResponse {
    let token = rest.split('/').next().unwrap_or_default();
    let offered = match method {
        &Method::GET | &Method::HEAD => shared.public_files.get(token),
        _ => None,
    };
    match offered {
        Some(file) => hyper::Response::builder()
            .status(200)
            .header("content-type", file.content_type.as_str())
            .header("cache-control", "no-store")
            .header("x-content-type-options", "nosniff")
            .body(http_body_util::Full::new(file.bytes))
            .unwrap_or_else(|_| text(500, "cannot serve this file\n")),
        None => text(404, "not found\n"),
    }
}

/// `GET /webhook?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` → C when T matches.
fn handshake(
    shared: &Shared,
    guesses: &Mutex<GuessLimit>,
    req: &Request<Incoming>,
    remote: SocketAddr,
) -> HttpResponse {
    if !guesses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .open(Instant::now())
    {
        shared.metrics.handshake("throttled");
        if logging::HANDSHAKE_REFUSED.admit() {
            warn!(%remote, "webhook verification handshake answered 429 without looking at it: too many wrong verify tokens lately (someone may be guessing it); a correct one is accepted again within {}s", GUESS_EVERY.as_secs());
        }
        let mut r = text(
            429,
            "too many failed verification attempts; try again in a minute\n",
        );
        r.headers_mut()
            .insert("retry-after", "6".parse().expect("static header"));
        return r;
    }
    let live = shared.live();
    let query = req.uri().query().unwrap_or("");
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    let expected = live
        .config
        .facebook
        .verify_token
        .get_ref()
        .expose()
        .as_bytes();
    let token_ok = token
        .as_deref()
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected)));
    match (mode.as_deref(), token_ok, challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            shared.metrics.handshake("accepted");
            tracing::info!(%remote, "webhook verification handshake accepted");
            text(200, challenge)
        }
        _ => {
            shared.metrics.handshake("refused");
            guesses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(Instant::now());
            if logging::HANDSHAKE_REFUSED.admit() {
                warn!(
                    %remote,
                    "webhook verification refused: hub.mode must be \"subscribe\" and hub.verify_token must equal facebook.verify_token in the config"
                );
            }
            text(403, "verification failed\n")
        }
    }
}

/// How many wrong verify tokens are looked at: a burst of [`GUESS_BURST`], then one
/// every [`GUESS_EVERY`]. Beyond that a handshake is answered 429 without comparing its
/// token, so guessing the token gets nowhere fast. Facebook itself sends a handshake
/// only when an admin saves the Callback URL.
#[derive(Debug)]
pub struct GuessLimit {
    tokens: f64,
    at: Option<Instant>,
}

const GUESS_BURST: f64 = 10.0;
const GUESS_EVERY: Duration = Duration::from_secs(6);

impl Default for GuessLimit {
    fn default() -> Self {
        GuessLimit {
            tokens: GUESS_BURST,
            at: None,
        }
    }
}

impl GuessLimit {
    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let earned = now.duration_since(at).as_secs_f64() / GUESS_EVERY.as_secs_f64();
            self.tokens = (self.tokens + earned).min(GUESS_BURST);
        }
        self.at = Some(now);
    }

    /// Whether a handshake may be looked at now.
    pub fn open(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Counts one wrong guess.
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// Answers a webhook POST; also says how it ended, for `fb_openchannel_webhooks_total`:
/// stored, bad_signature, too_large, timeout, bad_body, busy, store_error.
async fn receive(
    shared: &Shared,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> (HttpResponse, &'static str) {
    let live = shared.live();
    let public = &live.config.public;
    let max = public.max_body_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        if logging::WEBHOOK_REFUSED.admit() {
            warn!(%remote, reason = "too_large", "webhook refused with 413: body of {} bytes is over the {max}-byte limit (public.max_body_bytes); nothing stored", declared.unwrap_or(0));
        }
        return (text(413, "payload too large\n"), "too_large");
    }
    let signature_header = req
        .headers()
        .get(signature::HEADER)
        .map(|v| v.as_bytes().to_vec());
    // While a capture runs, the request as it came (kept only if it is Facebook's).
    let captured = shared.capture.on().then(|| {
        serde_json::json!({
            "method": req.method().as_str(),
            "url": crate::config::redact_url(&req.uri().to_string()),
            "headers": crate::capture::headers_json(req.headers()),
            "remote": remote.to_string(),
        })
    });
    let facebook = &live.config.facebook;
    let secrets = (
        facebook.app_secret.get_ref().expose().as_bytes(),
        facebook
            .instagram_app_secret
            .as_ref()
            .map(|s| s.get_ref().expose().as_bytes()),
    );
    let deadline = tokio::time::Instant::now() + public.request_timeout;
    let answering = super::Answering::of(&req);
    let client_cert = req
        .extensions()
        .get::<ClientCert>()
        .filter(|c| **c != ClientCert::NotAsked)
        .cloned();
    let read = body::read_signed(
        &shared.bodies,
        req.into_body(),
        max,
        deadline,
        secrets,
        signature_header.as_deref(),
    )
    .await;
    // The room it holds while parsed lives until this request is answered.
    let (body, _room, signed_by) = match read {
        Ok(verified) => (verified.bytes, verified.room, verified.signed_by),
        Err(e) => {
            let (status, answer, result, reason) = match &e {
                BodyError::Signature(s) => {
                    (403, "invalid signature\n", "bad_signature", s.reason())
                }
                BodyError::TooLarge(_) => (413, "payload too large\n", "too_large", "too_large"),
                BodyError::Timeout => (408, "request timeout\n", "timeout", "timeout"),
                BodyError::Broken(_) => (400, "bad request body\n", "bad_body", "bad_body"),
                BodyError::Busy | BodyError::Spool(_) | BodyError::NoRoom => (
                    503,
                    "too many large requests at once; try again\n",
                    "busy",
                    "busy",
                ),
            };
            if logging::WEBHOOK_REFUSED.admit() {
                warn!(%remote, reason, "webhook refused with {status}: {e}; nothing stored");
            }
            let mut response = text(status, answer);
            if status == 503 {
                response
                    .headers_mut()
                    .insert("retry-after", "5".parse().expect("static header"));
            }
            return (response, result);
        }
    };

    // Verified and whole: while it is stored, no newcomer closes the connection.
    let _answering = answering.as_ref().map(super::Answering::start);
    if let Some(mut request) = captured {
        request["body"] = crate::capture::body_json(&body);
        // Which secret signed it: Instagram Login webhooks may come signed with the
        // Instagram app's (`capture --check` says which); and which client certificate
        // came with it.
        request["signed_by"] = signed_by.as_str().into();
        if let Some(cert) = &client_cert {
            request["client_cert"] = cert.label().into();
        }
        shared
            .capture
            .record("webhook", serde_json::json!({ "request": request }));
    }
    match intake::accept_webhook(shared, body).await {
        Ok(_) => (text(200, "EVENT_RECEIVED"), "stored"),
        Err(e) => {
            if logging::STORE_REFUSED.admit() {
                error!(%remote, "webhook NOT stored, answered 503 so Facebook sends it again: {e}");
            }
            (
                text(503, "temporarily unable to store the event\n"),
                "store_error",
            )
        }
    }
}
