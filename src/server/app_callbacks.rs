//! The App Dashboard's callbacks on the public listener (Facebook Login → Settings), which
//! App Review asks for:
//!
//! - `POST /facebook/deauthorize`: a user removed the app. Page tokens they gave stop
//!   working, so every account's token is checked at once ([`crate::relay::token_health`]):
//!   a dead one is named by `/readyz` (503), `doctor` and one journal line.
//! - `POST /facebook/data-deletion`: a user asks for their data to be deleted. The daemon
//!   keeps nothing keyed to a Facebook Login user but a setup's hand-off (the login code
//!   on its way to `fb-openchannel setup`), which is removed; the answer is Meta's
//!   `{"url": …, "confirmation_code": …}`, and `GET /facebook/data-deletion/<code>` shows
//!   what was deleted and when (no personal data).
//!
//! Both take Meta's `signed_request` form field ([`crate::facebook::signed_request`]); a
//! bad, stale or malformed one is 400 with a short reason, changes nothing, and is logged
//! within the refused-request budget.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::json;
use tracing::{info, warn};

use crate::facebook::signed_request::{self, MAX_SIGNED_REQUEST_BYTES};
use crate::logging;
use crate::relay::Shared;
use crate::server::{HttpResponse, text};

/// The form bodies taken (a signed request and its field name, with room to spare).
const MAX_FORM_BYTES: usize = 2 * MAX_SIGNED_REQUEST_BYTES;
/// Where deletion confirmations are kept, beside the state database.
const DELETIONS: &str = "data-deletion";

pub const DEAUTHORIZE_PATH: &str = "/facebook/deauthorize";
pub const DATA_DELETION_PATH: &str = "/facebook/data-deletion";

/// Whether `path` is one of these callbacks' (the listener routes it here).
pub fn is_callback(path: &str) -> bool {
    path == DEAUTHORIZE_PATH
        || path == DATA_DELETION_PATH
        || path.starts_with("/facebook/data-deletion/")
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_owned();
    if let Some(code) = path.strip_prefix("/facebook/data-deletion/") {
        if req.method() != Method::GET {
            return text(405, "method not allowed: use GET\n");
        }
        return status_page(&shared, code).await;
    }
    if req.method() != Method::POST {
        return text(405, "method not allowed: use POST\n");
    }
    let timeout = shared.live().config.public.request_timeout;
    let body = match tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => return text(413, "body too large\n"),
        Err(_) => return text(408, "body did not arrive in time\n"),
    };
    let field = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "signed_request")
        .map(|(_, v)| v.into_owned());
    let secret = shared.live().config.facebook.app_secret.get_ref().clone();
    let now = crate::time::now_ms() / 1000;
    let request = match signed_request::verify(field.as_deref(), secret.expose().as_bytes(), now) {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.webhook("signed_request");
            if logging::WEBHOOK_REFUSED.admit() {
                warn!(path = %path, "App Dashboard callback refused with 400: {e}; only Meta, signing with the app secret, can send these");
            }
            return text(400, format!("{e}\n"));
        }
    };
    if path == DEAUTHORIZE_PATH {
        warn!(
            user = %request.user_id,
            "Meta: a Facebook user removed the app (deauthorize); the Page tokens they gave stop working — checking every account's token now"
        );
        let shared = shared.clone();
        tokio::spawn(async move {
            crate::relay::token_health::check_all(&shared, "the app was removed by a user").await;
        });
        return text(200, "ok\n");
    }
    data_deletion(&shared).await
}

/// Deletes what is kept of a Facebook Login user (a setup's hand-off), records the
/// confirmation, and answers Meta's JSON.
async fn data_deletion(shared: &Shared) -> HttpResponse {
    let code = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let store_path = shared.store.path().to_owned();
    let now = crate::time::now_ms();
    let record_code = code.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<bool, String> {
        let handoff_removed = crate::server::login_callback::handoff(&store_path)
            .ok()
            .map(|dir| dir.remove(crate::server::login_callback::CALLBACK).is_ok())
            .unwrap_or(false);
        let what = if handoff_removed {
            "a setup's login hand-off (the login code on its way to fb-openchannel setup) was deleted"
        } else {
            "nothing was kept about this person: fb-openchannel keeps no data about Facebook Login users beyond a setup in progress"
        };
        let record = json!({"requested_at": crate::time::timestamp(now), "deleted": what});
        let dir = crate::statedir::Dir::state(crate::statedir::of_store(&store_path))
            .and_then(|d| d.private_subdir(DELETIONS))
            .map_err(|e| e.to_string())?;
        dir.write(&record_code, record.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(handoff_removed)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match written {
        Ok(removed) => {
            info!(
                confirmation = %code,
                "Meta: a data deletion request, confirmation {code}: {}",
                if removed { "a setup's login hand-off was deleted" } else { "nothing was kept about the person" }
            );
            let url = status_url(shared, &code);
            let body = json!({"url": url, "confirmation_code": code}).to_string();
            hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap_or_else(|_| text(500, "cannot answer\n"))
        }
        Err(e) => {
            warn!("Meta: a data deletion request could not be recorded ({e}); Meta asks again");
            text(503, "try again\n")
        }
    }
}

/// `https://<public>/facebook/data-deletion/<code>`.
fn status_url(shared: &Shared, code: &str) -> String {
    let live = shared.live();
    let mut url = live
        .config
        .public_base()
        .unwrap_or_else(|| url::Url::parse("https://localhost/").expect("a valid URL"));
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["facebook", "data-deletion", code]);
    }
    url.to_string()
}

async fn status_page(shared: &Shared, code: &str) -> HttpResponse {
    if code.len() != 32 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return text(404, "not found\n");
    }
    let store_path = shared.store.path().to_owned();
    let code = code.to_ascii_lowercase();
    let found = tokio::task::spawn_blocking(move || {
        let dir = crate::statedir::Dir::state(crate::statedir::of_store(&store_path))
            .ok()?
            .existing_subdir(DELETIONS)
            .ok()??;
        let bytes = dir.read(&code, 4096).ok()??;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(record) => text(
            200,
            format!(
                "Data deletion request received {} (UTC).\nDone: {}.\n",
                record["requested_at"].as_str().unwrap_or("?"),
                record["deleted"].as_str().unwrap_or("?")
            ),
        ),
        None => text(404, "not found\n"),
    }
}
