//! A simulated Facebook: a Graph API server (profiles, attachment files) and a webhook
//! sender that signs payloads with the App Secret as Facebook does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::{Method, Request};
use serde_json::json;

use super::http::{Handler, SimResponse, SimServer, json as json_response, respond};
use crate::facebook::signature;

/// A request the simulated Graph received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Bytes,
}

struct State {
    /// Page access token → page id.
    tokens: Mutex<HashMap<String, String>>,
    /// PSID → (first name, last name).
    profiles: Mutex<HashMap<String, (String, String)>>,
    /// Answer profile lookups with Facebook's "missing permission" error.
    refuse_profiles: Mutex<bool>,
    files: Mutex<HashMap<String, (String, Bytes)>>,
    requests: Mutex<Vec<GraphRequest>>,
    counter: AtomicU64,
}

pub struct SimGraph {
    pub server: Arc<SimServer>,
    state: Arc<State>,
}

impl SimGraph {
    pub async fn start() -> std::io::Result<SimGraph> {
        let state = Arc::new(State {
            tokens: Mutex::new(HashMap::new()),
            profiles: Mutex::new(HashMap::new()),
            refuse_profiles: Mutex::new(false),
            files: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
        });
        let handler_state = state.clone();
        let handler: Handler = Arc::new(move |req| {
            let state = handler_state.clone();
            Box::pin(async move { handle(&state, req) })
        });
        Ok(SimGraph {
            server: SimServer::start(handler, None).await?,
            state,
        })
    }

    /// The `graph_url` to configure.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn add_page(&self, page_id: &str, token: &str) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), page_id.into());
    }

    pub fn add_profile(&self, psid: &str, first: &str, last: &str) {
        self.state
            .profiles
            .lock()
            .unwrap()
            .insert(psid.into(), (first.into(), last.into()));
    }

    pub fn refuse_profiles(&self, refuse: bool) {
        *self.state.refuse_profiles.lock().unwrap() = refuse;
    }

    /// Hosts a file as Facebook's CDN would; returns its URL.
    pub fn add_file(&self, name: &str, content_type: &str, bytes: impl Into<Bytes>) -> String {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(name.into(), (content_type.into(), bytes.into()));
        format!("{}/cdn/{name}?_nc_sig=abc", self.url())
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.requests.lock().unwrap().clone()
    }
}

fn graph_error(status: u16, code: i64, subcode: Option<i64>, message: &str) -> SimResponse {
    let mut error = json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "SIMtrace"});
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    json_response(status, json!({ "error": error }))
}

fn handle(state: &State, req: Request<Bytes>) -> SimResponse {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.requests.lock().unwrap().push(GraphRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: authorization.clone(),
        body: req.body().clone(),
    });
    state.counter.fetch_add(1, Ordering::Relaxed);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    if let (&Method::GET, ["cdn", name]) = (req.method(), segments.as_slice()) {
        return match state.files.lock().unwrap().get(*name) {
            Some((content_type, bytes)) => respond(200, content_type, bytes.clone()),
            None => respond(404, "text/plain", "not found"),
        };
    }

    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    let page = token.and_then(|t| state.tokens.lock().unwrap().get(t).cloned());
    if page.is_none() {
        return graph_error(
            400,
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        );
    }

    match (req.method(), segments.as_slice()) {
        (&Method::GET, [_version, psid]) => {
            if *state.refuse_profiles.lock().unwrap() {
                return graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported get request. Object does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                );
            }
            match state.profiles.lock().unwrap().get(*psid) {
                Some((first, last)) => json_response(
                    200,
                    json!({"first_name": first, "last_name": last, "id": psid}),
                ),
                None => graph_error(400, 100, Some(33), "Unsupported get request."),
            }
        }
        _ => graph_error(400, 100, None, "Unknown path components"),
    }
}

/// Posts webhooks to the daemon as Facebook does: signed with the App Secret.
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    app_secret: String,
}

impl WebhookSender {
    /// `url` is the daemon's `…/webhook`; `ca_pem` the CA its certificate chains to.
    pub fn new(url: &str, app_secret: &str, ca_pem: Option<&str>) -> WebhookSender {
        crate::http_client::install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM");
            builder = builder.tls_certs_only([ca]);
        }
        WebhookSender {
            client: builder.build().expect("client"),
            url: url.into(),
            app_secret: app_secret.into(),
        }
    }

    /// POSTs `body` signed with the App Secret; returns the status and body of the answer.
    pub async fn send(&self, body: &[u8]) -> Result<(u16, String), reqwest::Error> {
        let signature = signature::sign(self.app_secret.as_bytes(), body);
        self.send_with_signature(body, Some(&signature)).await
    }

    /// POSTs `body` with the given signature header (or none).
    pub async fn send_with_signature(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(u16, String), reqwest::Error> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(sig) = signature {
            request = request.header(signature::HEADER, sig);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A Messenger text message webhook, as Facebook sends it.
pub fn messenger_text(
    page_id: &str,
    psid: &str,
    mid: &str,
    timestamp_ms: i64,
    text: &str,
) -> String {
    json!({
        "object": "page",
        "entry": [{
            "id": page_id,
            "time": timestamp_ms,
            "messaging": [{
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "timestamp": timestamp_ms,
                "message": {"mid": mid, "text": text}
            }]
        }]
    })
    .to_string()
}

/// A Messenger message carrying one attachment of `kind` at `url`.
pub fn messenger_attachment(
    page_id: &str,
    psid: &str,
    mid: &str,
    timestamp_ms: i64,
    kind: &str,
    url: &str,
) -> String {
    json!({
        "object": "page",
        "entry": [{
            "id": page_id,
            "time": timestamp_ms,
            "messaging": [{
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "timestamp": timestamp_ms,
                "message": {"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}
            }]
        }]
    })
    .to_string()
}
