//! A simulated Facebook: a Graph API server (profiles, attachment files) and a webhook
//! sender that signs payloads with the App Secret as Facebook does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::{Method, Request};
use serde_json::{Value, json};

use super::http::{Handler, SimResponse, SimServer, json as json_response, respond};
use crate::facebook::signature;

/// Another app installed on a Page: `(id, name, webhook fields)`.
type OtherApp = (String, String, Vec<String>);

/// The app id of the daemon in the simulated Facebook: its Page tokens belong to it.
pub const SIM_APP_ID: &str = "1517776481860111";
/// That app's name.
pub const SIM_APP_NAME: &str = "fb-openchannel test app";

/// A request the simulated Graph received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Bytes,
}

/// A message the simulated Send API accepted.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub page_id: String,
    pub recipient: Value,
    pub messaging_type: String,
    pub tag: Option<String>,
    pub text: Option<String>,
    pub metadata: Option<String>,
    /// `(type, file name, content type, bytes)` of a multipart `filedata` upload.
    pub attachment: Option<(String, String, String, Bytes)>,
    pub message_id: String,
    /// When the simulated Graph received it.
    pub received_at: std::time::Instant,
}

/// A comment the simulated Graph accepted.
#[derive(Debug, Clone)]
pub struct SentComment {
    /// The post or comment commented on.
    pub object_id: String,
    pub message: Option<String>,
    /// `(file name, content type, bytes)` of a multipart `source` photo.
    pub photo: Option<(String, String, Bytes)>,
    pub id: String,
    /// When the simulated Graph received it.
    pub received_at: std::time::Instant,
}

/// A scripted Send API failure.
#[derive(Debug, Clone)]
pub struct SendFailure {
    pub status: u16,
    pub body: Value,
    /// e.g. `x-business-use-case-usage`.
    pub headers: Vec<(String, String)>,
}

impl SendFailure {
    /// A Graph error body with `code` (and `subcode`).
    pub fn graph(status: u16, code: i64, subcode: Option<i64>, message: &str) -> SendFailure {
        let mut error = json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "SIMtrace"});
        if let Some(s) = subcode {
            error["error_subcode"] = json!(s);
        }
        SendFailure {
            status,
            body: json!({ "error": error }),
            headers: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    /// Page access token → page id.
    tokens: Mutex<HashMap<String, String>>,
    /// PSID → (first name, last name).
    profiles: Mutex<HashMap<String, (String, String)>>,
    /// Page id → the Instagram professional account linked to it.
    linked_instagram: Mutex<HashMap<String, String>>,
    /// Pages of a business portfolio (listed only with `business_management`).
    business_pages: Mutex<std::collections::HashSet<String>>,
    /// The app's webhooks by object: (callback URL, fields), once verified.
    app_webhooks: Mutex<HashMap<String, (String, String)>>,
    /// Instagram customers (IGSID → display name, username).
    instagram_profiles: Mutex<HashMap<String, (Option<String>, String)>>,
    /// Answer profile lookups with Facebook's "missing permission" error.
    refuse_profiles: Mutex<bool>,
    /// Refuse first and last names, but give `name` (a Page without access to them).
    names_only: Mutex<bool>,
    files: Mutex<HashMap<String, (String, Bytes)>>,
    /// CDN names answered with a redirect to this location.
    redirects: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<GraphRequest>>,
    counter: AtomicU64,
    sent: Mutex<Vec<SentMessage>>,
    sent_count: tokio::sync::watch::Sender<usize>,
    send_failures: Mutex<std::collections::VecDeque<SendFailure>>,
    comments: Mutex<Vec<SentComment>>,
    /// Page id → webhook fields this app (the daemon's, [`SIM_APP_ID`]) is subscribed to.
    subscriptions: Mutex<HashMap<String, Vec<String>>>,
    /// Page id → other apps installed on it: `(id, name, fields)`, e.g. XCALLY's.
    other_apps: Mutex<HashMap<String, Vec<OtherApp>>>,
    /// Page id → the app that owns its customers' threads (default: ours).
    thread_owners: Mutex<HashMap<String, String>>,
    /// Answer a subscribe call with `{"success": "true"}`, as Meta's samples show.
    success_as_text: Mutex<bool>,
    /// Subscribe calls received, by page.
    subscribe_calls: Mutex<Vec<String>>,
    /// Objects that no longer exist: comments on them fail like on Facebook.
    deleted: Mutex<Vec<String>>,
    /// While true, Send API calls wait (then are carried out normally).
    hold_sends: tokio::sync::watch::Sender<bool>,
    /// Instagram Login accounts (this server plays graph.instagram.com for them).
    instagram_logins: Mutex<Vec<String>>,
    /// Token refreshes answered: `(old token, new token)`.
    refreshes: Mutex<Vec<(String, String)>>,
    /// Instagram media id → its permalink.
    media: Mutex<HashMap<String, String>>,
    /// Mentions Graph can tell about: comment or media id → what `mentioned_comment` /
    /// `mentioned_media` answer.
    mentions: Mutex<HashMap<String, Value>>,
    /// How attachments given by URL are fetched (as Meta's servers do): trusting the
    /// test CA once [`SimGraph::trust`] was called.
    url_client: Mutex<Option<reqwest::Client>>,
    /// Facebook users (Facebook Login): user access token → what they manage.
    users: Mutex<HashMap<String, SimUser>>,
    /// Our app's secret, for the calls that authenticate the app itself.
    app_secret: Mutex<Option<String>>,
    /// Who the login dialog logs in (their user token).
    login_as: Mutex<Option<String>>,
    /// Login codes given: code → (user token, redirect_uri, used).
    codes: Mutex<HashMap<String, (String, String, bool)>>,
    /// Every login code has expired (the admin took too long).
    codes_expired: Mutex<bool>,
}

/// A Facebook user as Facebook Login knows them.
#[derive(Debug, Clone)]
struct SimUser {
    /// The Pages they manage (with the `MESSAGING` task).
    pages: Vec<String>,
    /// Permissions granted to our app.
    scopes: Vec<String>,
    /// Exchanged for a long-lived token (Page tokens from it do not expire).
    long_lived: bool,
}

pub struct SimGraph {
    pub server: Arc<SimServer>,
    state: Arc<State>,
}

impl SimGraph {
    pub async fn start() -> std::io::Result<SimGraph> {
        let state = Arc::new(State::default());
        let handler_state = state.clone();
        let handler: Handler = Arc::new(move |req| {
            let state = handler_state.clone();
            Box::pin(async move { handle(&state, req).await })
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

    /// A Page whose `token` works, subscribed to every field this daemon needs.
    pub fn add_page(&self, page_id: &str, token: &str) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), page_id.into());
        // A Page set up by the current release: every field it subscribes to.
        let all = [
            "messages",
            "messaging_postbacks",
            "message_edits",
            "message_reactions",
            "message_echoes",
            "standby",
            "messaging_referrals",
            "message_reads",
            "messaging_optins",
            "messaging_handovers",
            "messaging_policy_enforcement",
            "feed",
        ];
        self.set_subscribed(page_id, &all);
    }

    /// Our app is subscribed to the Page with exactly these fields (an install of an
    /// earlier release, say).
    pub fn set_subscribed(&self, page_id: &str, fields: &[&str]) {
        self.state.subscriptions.lock().unwrap().insert(
            page_id.into(),
            fields.iter().map(|f| f.to_string()).collect(),
        );
    }

    /// An Instagram professional account with Instagram Login whose long-lived `token`
    /// works here (this server then plays graph.instagram.com), subscribed to its
    /// webhook fields.
    pub fn add_instagram_login(&self, account_id: &str, token: &str) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), account_id.into());
        self.state
            .instagram_logins
            .lock()
            .unwrap()
            .push(account_id.into());
        let fields = ["messages", "comments", "messaging_postbacks"];
        self.state.subscriptions.lock().unwrap().insert(
            account_id.into(),
            fields.iter().map(|f| f.to_string()).collect(),
        );
    }

    /// Attachments given by URL are fetched trusting this CA (the bench's own), as
    /// Meta's servers fetch them from the daemon's public listener.
    pub fn trust(&self, ca_pem: &str) {
        crate::http_client::install_crypto_provider();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        *self.state.url_client.lock().unwrap() = Some(client);
    }

    /// A mention Graph tells about: `id` is the comment's (a mention in a comment) or
    /// the media's (in a caption); `answer` what `mentioned_comment` / `mentioned_media`
    /// give for it.
    pub fn add_mention(&self, id: &str, answer: Value) {
        self.state
            .mentions
            .lock()
            .unwrap()
            .insert(id.into(), answer);
    }

    /// An Instagram media item Graph knows, with its public link.
    pub fn add_instagram_media(&self, media_id: &str, permalink: &str) {
        self.state
            .media
            .lock()
            .unwrap()
            .insert(media_id.into(), permalink.into());
    }

    /// Token refreshes answered so far: `(old token, new token)`.
    pub fn refreshes(&self) -> Vec<(String, String)> {
        self.state.refreshes.lock().unwrap().clone()
    }

    /// The token stops working, as when it expires or the password changes.
    pub fn expire_token(&self, token: &str) {
        self.state.tokens.lock().unwrap().remove(token);
    }

    /// Facebook drops the app's subscription to the Page.
    pub fn unsubscribe(&self, page_id: &str) {
        self.state
            .subscriptions
            .lock()
            .unwrap()
            .insert(page_id.into(), Vec::new());
    }

    /// Another app installed on the Page with these webhook fields (a leftover Motion
    /// Cloud app, a CRM…).
    pub fn install_other_app(&self, page_id: &str, app_id: &str, name: &str, fields: &[&str]) {
        self.state
            .other_apps
            .lock()
            .unwrap()
            .entry(page_id.into())
            .or_default()
            .push((
                app_id.into(),
                name.into(),
                fields.iter().map(|f| f.to_string()).collect(),
            ));
    }

    /// Conversations of the Page are routed to this app (Handover protocol's thread
    /// owner): `thread_owner` names it.
    pub fn route_conversations_to(&self, page_id: &str, app_id: &str) {
        self.state
            .thread_owners
            .lock()
            .unwrap()
            .insert(page_id.into(), app_id.into());
    }

    /// Answer subscribe calls with the string `"true"` instead of the boolean.
    pub fn answer_success_as_text(&self, text: bool) {
        *self.state.success_as_text.lock().unwrap() = text;
    }

    /// The fields the app is subscribed to for a page.
    pub fn subscribed(&self, page_id: &str) -> Vec<String> {
        self.state
            .subscriptions
            .lock()
            .unwrap()
            .get(page_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Pages a subscribe call was made for, in order.
    pub fn subscribe_calls(&self) -> Vec<String> {
        self.state.subscribe_calls.lock().unwrap().clone()
    }

    pub fn add_profile(&self, psid: &str, first: &str, last: &str) {
        self.state
            .profiles
            .lock()
            .unwrap()
            .insert(psid.into(), (first.into(), last.into()));
    }

    /// Our app's secret: `debug_token` and the token exchange check it.
    pub fn set_app_secret(&self, secret: &str) {
        *self.state.app_secret.lock().unwrap() = Some(secret.into());
    }

    /// A Facebook user with a short-lived user `token` (as the Graph API Explorer gives)
    /// who manages `pages` and granted our app `scopes`.
    pub fn add_user(&self, token: &str, pages: &[&str], scopes: &[&str]) {
        self.state.users.lock().unwrap().insert(
            token.into(),
            SimUser {
                pages: pages.iter().map(|p| p.to_string()).collect(),
                scopes: scopes.iter().map(|p| p.to_string()).collect(),
                long_lived: false,
            },
        );
    }

    /// The app's webhook for `object` (`page`) as registered and verified: its callback
    /// URL and fields.
    pub fn app_webhook(&self, object: &str) -> Option<(String, String)> {
        self.state.app_webhooks.lock().unwrap().get(object).cloned()
    }

    /// `page` belongs to a business portfolio: `/me/accounts` lists it only to a user who
    /// granted `business_management` (Graph v17 and later).
    pub fn put_in_business_portfolio(&self, page: &str) {
        self.state
            .business_pages
            .lock()
            .unwrap()
            .insert(page.to_owned());
    }

    /// The login dialog logs in this user (one added with [`SimGraph::add_user`]).
    pub fn log_in_as(&self, user_token: &str) {
        *self.state.login_as.lock().unwrap() = Some(user_token.into());
    }

    /// Every login code given so far and from now on has expired.
    pub fn expire_login_codes(&self) {
        *self.state.codes_expired.lock().unwrap() = true;
    }

    /// The Page token `/me/accounts` gives a user for `page`: a long-lived user's does not
    /// expire and is named so (tests check which one the daemon keeps).
    pub fn page_token_for_user(long_lived: bool, page: &str) -> String {
        if long_lived {
            format!("EAAG-never-expires-{page}")
        } else {
            format!("EAAG-one-hour-{page}")
        }
    }

    /// Links an Instagram professional account to the Page (Meta Business Suite →
    /// Settings → Instagram accounts).
    pub fn link_instagram(&self, page_id: &str, instagram_id: &str) {
        self.state
            .linked_instagram
            .lock()
            .unwrap()
            .insert(page_id.into(), instagram_id.into());
    }

    /// An Instagram customer the User Profile API knows (`name` may be unset).
    pub fn add_instagram_profile(&self, igsid: &str, name: Option<&str>, username: &str) {
        self.state
            .instagram_profiles
            .lock()
            .unwrap()
            .insert(igsid.into(), (name.map(str::to_owned), username.into()));
    }

    /// Facebook refuses first and last names but gives `name`.
    pub fn give_names_only(&self, only: bool) {
        *self.state.names_only.lock().unwrap() = only;
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

    /// A CDN URL that answers with a redirect to `location` (as a hostile or broken
    /// host might).
    pub fn add_redirect(&self, name: &str, location: &str) -> String {
        self.state
            .redirects
            .lock()
            .unwrap()
            .insert(name.into(), location.into());
        format!("{}/cdn/{name}", self.url())
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Messages the Send API accepted, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Send API calls received, accepted or not.
    pub fn send_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with("/messages"))
            .count()
    }

    /// While `hold` is true, Send API calls wait, then are carried out: Facebook slow to
    /// answer a message it does send.
    pub fn hold_sends(&self, hold: bool) {
        self.state.hold_sends.send_replace(hold);
    }

    /// The next Send API calls fail like this, in order; then calls succeed again.
    pub fn fail_sends(&self, failures: Vec<SendFailure>) {
        self.state.send_failures.lock().unwrap().extend(failures);
    }

    /// Waits until at least `n` messages were accepted, or `timeout` passes.
    pub async fn wait_for_sent(
        &self,
        n: usize,
        timeout: std::time::Duration,
    ) -> Result<Vec<SentMessage>, String> {
        let mut rx = self.state.sent_count.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await {
            Ok(_) => Ok(self.sent()),
            Err(_) => Err(format!(
                "expected {n} sent messages within {timeout:?}, got {:?}",
                self.sent()
            )),
        }
    }

    /// Comments the Page posted through the simulated Graph, in order.
    pub fn comments(&self) -> Vec<SentComment> {
        self.state.comments.lock().unwrap().clone()
    }

    /// Makes `object_id` (a post or comment) gone: commenting on it fails.
    pub fn delete_object(&self, object_id: &str) {
        self.state.deleted.lock().unwrap().push(object_id.into());
    }

    /// The echo webhook Facebook sends after the Page sent `message`.
    pub fn echo_of(&self, message: &SentMessage, timestamp_ms: i64) -> String {
        let psid = message
            .recipient
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        json!({
            "object": "page",
            "entry": [{
                "id": message.page_id,
                "time": timestamp_ms,
                "messaging": [{
                    "sender": {"id": message.page_id},
                    "recipient": {"id": psid},
                    "timestamp": timestamp_ms,
                    "message": {
                        "mid": message.message_id,
                        "is_echo": true,
                        "app_id": SIM_APP_ID.parse::<u64>().expect("digits"),
                        "metadata": message.metadata,
                        "text": message.text,
                    }
                }]
            }]
        })
        .to_string()
    }
}

fn graph_error(status: u16, code: i64, subcode: Option<i64>, message: &str) -> SimResponse {
    let mut error = json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "SIMtrace"});
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    json_response(status, json!({ "error": error }))
}

/// Facebook Login's calls: the token exchange and `debug_token` (which authenticate the
/// app by its id and secret) and a user's `/me/accounts`. `None`: not one of them.
fn facebook_login(
    state: &State,
    method: &Method,
    segments: &[&str],
    query: &str,
    bearer: Option<&str>,
) -> Option<SimResponse> {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let secret = state.app_secret.lock().unwrap().clone();
    // The app's own id and secret, as the OAuth calls carry them.
    let app_refused = || {
        if param("client_id").as_deref() != Some(SIM_APP_ID) {
            Some(graph_error(
                400,
                101,
                None,
                "Error validating application. Invalid application ID.",
            ))
        } else if secret.is_none() || param("client_secret") != secret {
            Some(graph_error(400, 1, None, "Error validating client secret."))
        } else {
            None
        }
    };
    // The app's own token (`{app-id}|{app-secret}`) as the bearer.
    let app_token_refused = || {
        let app_token = format!("{SIM_APP_ID}|{}", secret.clone().unwrap_or_default());
        (bearer != Some(app_token.as_str()))
            .then(|| graph_error(400, 190, None, "Invalid OAuth access token signature."))
    };
    let bad_token = || {
        graph_error(
            400,
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        )
    };
    match (method, segments) {
        // The login dialog, the user already logged in and agreeing: back to the app.
        (&Method::GET, [_version, "dialog", "oauth"]) => {
            if param("client_id").as_deref() != Some(SIM_APP_ID) {
                return Some(respond(400, "text/plain", "Invalid App ID"));
            }
            let (Some(redirect), Some(state_param)) = (param("redirect_uri"), param("state"))
            else {
                return Some(respond(
                    400,
                    "text/plain",
                    "redirect_uri and state are needed",
                ));
            };
            let Ok(mut back) = url::Url::parse(&redirect) else {
                return Some(respond(400, "text/plain", "URL blocked"));
            };
            let user = state.login_as.lock().unwrap().clone()?;
            let mut codes = state.codes.lock().unwrap();
            let code = format!("AQD-login-code-{}", codes.len() + 1);
            codes.insert(code.clone(), (user, redirect, false));
            back.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state_param);
            let mut r = respond(302, "text/plain", "");
            r.headers_mut()
                .insert("location", back.as_str().parse().expect("a valid location"));
            Some(r)
        }
        (&Method::GET, [_version, "oauth", "access_token"]) if param("code").is_some() => {
            if let Some(refused) = app_refused() {
                return Some(refused);
            }
            let code = param("code").unwrap_or_default();
            let mut codes = state.codes.lock().unwrap();
            let Some((user, redirect, used)) = codes.get_mut(&code) else {
                return Some(graph_error(
                    400,
                    100,
                    Some(36008),
                    "Invalid verification code format.",
                ));
            };
            if *state.codes_expired.lock().unwrap() {
                return Some(graph_error(
                    400,
                    100,
                    Some(36007),
                    "This authorization code has expired.",
                ));
            }
            if *used {
                return Some(graph_error(
                    400,
                    100,
                    Some(36009),
                    "This authorization code has been used.",
                ));
            }
            if param("redirect_uri").as_ref() != Some(redirect) {
                return Some(graph_error(
                    400,
                    100,
                    Some(36008),
                    "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
                ));
            }
            *used = true;
            Some(json_response(
                200,
                json!({"access_token": user.clone(), "token_type": "bearer", "expires_in": 5_183_944}),
            ))
        }
        (&Method::GET, [_version, "oauth", "access_token"]) => {
            if let Some(refused) = app_refused() {
                return Some(refused);
            }
            if param("grant_type").as_deref() != Some("fb_exchange_token") {
                return Some(graph_error(400, 100, None, "Unsupported grant_type"));
            }
            let old = param("fb_exchange_token").unwrap_or_default();
            let mut users = state.users.lock().unwrap();
            let Some(user) = users.get(&old).cloned() else {
                return Some(bad_token());
            };
            let new = format!("EAAL-long-lived-{}", users.len() + 1);
            users.insert(
                new.clone(),
                SimUser {
                    long_lived: true,
                    ..user
                },
            );
            Some(json_response(
                200,
                json!({"access_token": new, "token_type": "bearer", "expires_in": 5_183_944}),
            ))
        }
        // The app asking about itself, with its own token.
        (&Method::GET, [_version, app]) if *app == SIM_APP_ID => {
            if let Some(refused) = app_token_refused() {
                return Some(refused);
            }
            Some(json_response(
                200,
                json!({"id": SIM_APP_ID, "name": SIM_APP_NAME}),
            ))
        }
        (&Method::GET, [_version, "debug_token"]) => {
            if let Some(refused) = app_token_refused() {
                return Some(refused);
            }
            let input = param("input_token").unwrap_or_default();
            let data = match state.users.lock().unwrap().get(&input) {
                Some(user) => json!({
                    "app_id": SIM_APP_ID, "type": "USER", "application": SIM_APP_NAME,
                    "data_access_expires_at": 1_800_000_000, "expires_at": if user.long_lived { 1_790_000_000 } else { 1_780_000_000 },
                    "is_valid": true, "scopes": user.scopes, "user_id": "10000000000001",
                }),
                None => json!({
                    "error": {"code": 190, "message": "Invalid OAuth access token."},
                    "is_valid": false, "scopes": [],
                }),
            };
            Some(json_response(200, json!({ "data": data })))
        }
        (&Method::GET, [_version, "me", "accounts"]) => {
            let user = state.users.lock().unwrap().get(bearer?).cloned()?;
            let linked = state.linked_instagram.lock().unwrap().clone();
            // Since Graph v17, Pages of a business portfolio only with business_management.
            let business = state.business_pages.lock().unwrap().clone();
            let sees_business = user.scopes.iter().any(|s| s == "business_management");
            let mut data = Vec::new();
            for page in user
                .pages
                .iter()
                .filter(|p| sees_business || !business.contains(*p))
            {
                let token = SimGraph::page_token_for_user(user.long_lived, page);
                state
                    .tokens
                    .lock()
                    .unwrap()
                    .insert(token.clone(), page.clone());
                let mut entry = json!({
                    "access_token": token,
                    "category": "Software company",
                    "name": format!("Simulated Page {page}"),
                    "id": page,
                    "tasks": ["ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MESSAGING", "MODERATE", "MANAGE"],
                });
                if let Some(ig) = linked.get(page) {
                    entry["instagram_business_account"] =
                        json!({"id": ig, "username": format!("sim.{ig}")});
                }
                data.push(entry);
            }
            Some(json_response(
                200,
                json!({"data": data, "paging": {"cursors": {"before": "QVFIU", "after": "QVFIU"}}}),
            ))
        }
        _ => None,
    }
}

async fn handle(state: &State, req: Request<Bytes>) -> SimResponse {
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
        if let Some(location) = state.redirects.lock().unwrap().get(*name) {
            let mut r = respond(302, "text/plain", "moved");
            r.headers_mut()
                .insert("location", location.parse().expect("a valid location"));
            return r;
        }
        return match state.files.lock().unwrap().get(*name) {
            Some((content_type, bytes)) => respond(200, content_type, bytes.clone()),
            None => respond(404, "text/plain", "not found"),
        };
    }

    // The app's webhook (`POST /{app-id}/subscriptions`, as the app): Meta first checks
    // the callback with the verification handshake, and registers it only when the
    // challenge comes back.
    if let (&Method::POST, [_version, app, "subscriptions"]) = (req.method(), segments.as_slice())
        && *app == SIM_APP_ID
    {
        let secret = state.app_secret.lock().unwrap().clone().unwrap_or_default();
        if authorization.as_deref() != Some(format!("Bearer {SIM_APP_ID}|{secret}").as_str()) {
            return graph_error(400, 190, None, "Invalid OAuth access token signature.");
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(req.body())
            .into_owned()
            .collect();
        let (Some(object), Some(callback), Some(verify)) = (
            form.get("object"),
            form.get("callback_url"),
            form.get("verify_token"),
        ) else {
            return graph_error(
                400,
                100,
                None,
                "(#100) object, callback_url and verify_token are required",
            );
        };
        let client = state.url_client.lock().unwrap().clone().unwrap_or_default();
        let challenge = format!("{}", 1_000_000 + state.counter.load(Ordering::Relaxed));
        let check = client
            .get(callback.as_str())
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.challenge", challenge.as_str()),
                ("hub.verify_token", verify.as_str()),
            ])
            .send()
            .await;
        let echoed = match check {
            Ok(r) => r.text().await.unwrap_or_default() == challenge,
            Err(_) => false,
        };
        if !echoed {
            return graph_error(
                400,
                2200,
                None,
                "(#2200) callback verification failed: Callback verification failed with the following errors: HTTP Status Code = 403; HTTP Message = Forbidden",
            );
        }
        state.app_webhooks.lock().unwrap().insert(
            object.clone(),
            (
                callback.clone(),
                form.get("fields").cloned().unwrap_or_default(),
            ),
        );
        return json_response(200, json!({"success": true}));
    }

    // graph.instagram.com's token refresh: unversioned, the token in the query.
    if let (&Method::GET, ["refresh_access_token"]) = (req.method(), segments.as_slice()) {
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if param("grant_type").as_deref() != Some("ig_refresh_token") {
            return graph_error(400, 100, None, "(#100) grant_type must be ig_refresh_token");
        }
        let old = param("access_token").unwrap_or_default();
        let Some(account) = state.tokens.lock().unwrap().get(&old).cloned() else {
            return graph_error(
                400,
                190,
                None,
                "Error validating access token: Session has expired.",
            );
        };
        let mut refreshes = state.refreshes.lock().unwrap();
        let new = format!("IGAA-refreshed-{}-{}", account, refreshes.len() + 1);
        refreshes.push((old, new.clone()));
        state.tokens.lock().unwrap().insert(new.clone(), account);
        return json_response(
            200,
            json!({"access_token": new, "token_type": "bearer", "expires_in": 5_184_000}),
        );
    }

    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    if let Some(answer) = facebook_login(state, req.method(), &segments, &query, token) {
        return answer;
    }
    let page = token.and_then(|t| state.tokens.lock().unwrap().get(t).cloned());
    if page.is_none() {
        return graph_error(
            400,
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        );
    }

    let page = page.expect("checked above");
    let instagram_login = state.instagram_logins.lock().unwrap().contains(&page);
    match (req.method(), segments.as_slice()) {
        // An Instagram Login token: `user_id` is the professional account's id (the one
        // webhooks carry), `id` an app-scoped one.
        (&Method::GET, [_version, "me"]) if instagram_login => json_response(
            200,
            json!({"id": "27000000000000001", "user_id": page, "username": "sim.account"}),
        ),
        (&Method::GET, [_version, "me"]) => json_response(
            200,
            json!({"id": page, "name": format!("Simulated Page {page}")}),
        ),
        (&Method::GET, [_version, "app"]) => {
            json_response(200, json!({"id": SIM_APP_ID, "name": SIM_APP_NAME}))
        }
        (&Method::GET, [_version, target, "thread_owner"]) if *target == page => {
            let owner = state
                .thread_owners
                .lock()
                .unwrap()
                .get(&page)
                .cloned()
                .unwrap_or_else(|| SIM_APP_ID.to_owned());
            json_response(200, json!({"data": [{"thread_owner": {"app_id": owner}}]}))
        }
        (&Method::GET, [_version, target, "subscribed_apps"]) if *target == page => {
            // Every app installed on the Page, as Graph lists them.
            let mut data: Vec<Value> = state
                .other_apps
                .lock()
                .unwrap()
                .get(&page)
                .into_iter()
                .flatten()
                .map(|(id, name, fields)| {
                    json!({"category": "Business", "link": "https://example.invalid/", "name": name, "id": id, "subscribed_fields": fields})
                })
                .collect();
            let fields = state
                .subscriptions
                .lock()
                .unwrap()
                .get(&page)
                .cloned()
                .unwrap_or_default();
            if !fields.is_empty() {
                data.push(json!({"category": "Business", "link": "https://example.invalid/", "name": SIM_APP_NAME, "id": SIM_APP_ID, "subscribed_fields": fields}));
            }
            json_response(200, json!({ "data": data }))
        }
        (&Method::POST, [_version, target, "subscribed_apps"]) if *target == page => {
            let fields: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "subscribed_fields")
                .map(|(_, v)| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            if fields.is_empty() {
                return graph_error(400, 100, None, "(#100) subscribed_fields is required");
            }
            state.subscribe_calls.lock().unwrap().push(page.clone());
            state
                .subscriptions
                .lock()
                .unwrap()
                .insert(page.clone(), fields);
            if *state.success_as_text.lock().unwrap() {
                json_response(200, json!({"success": "true"}))
            } else {
                json_response(200, json!({"success": true}))
            }
        }
        (&Method::POST, [_version, target, "messages"]) => {
            if *target != "me" && *target != page {
                return graph_error(
                    400,
                    100,
                    None,
                    "(#100) The page id does not match the token",
                );
            }
            let mut held = state.hold_sends.subscribe();
            let _ = held.wait_for(|hold| !*hold).await;
            if let Some(f) = state.send_failures.lock().unwrap().pop_front() {
                let mut response = json_response(f.status, f.body);
                for (k, v) in f.headers {
                    response.headers_mut().insert(
                        hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                return response;
            }
            let fetcher = state.url_client.lock().unwrap().clone();
            match read_send(&req, &page, fetcher.as_ref()).await {
                // Instagram takes at most 1,000 bytes of text (Messenger 2,000 characters).
                Ok(message)
                    if message.text.as_ref().is_some_and(|t| t.len() > 1000)
                        && message.recipient["id"].as_str().is_some_and(|id| {
                            state.instagram_profiles.lock().unwrap().contains_key(id)
                        }) =>
                {
                    graph_error(
                        400,
                        100,
                        None,
                        "(#100) Length of param message[text] must be less than or equal to 1000",
                    )
                }
                Ok(mut message) => {
                    let mut sent = state.sent.lock().unwrap();
                    message.message_id = format!("m_sim_{}", sent.len() + 1);
                    let recipient_id = message.recipient.get("id").cloned().unwrap_or(json!(null));
                    let id = message.message_id.clone();
                    sent.push(message);
                    let n = sent.len();
                    drop(sent);
                    state.sent_count.send_replace(n);
                    json_response(200, json!({"recipient_id": recipient_id, "message_id": id}))
                }
                Err(why) => graph_error(400, 100, None, &why),
            }
        }
        // An answer to an Instagram comment, recorded like a comment on the comment.
        (&Method::POST, [_version, comment, "replies"]) => {
            let message = serde_json::from_slice::<Value>(req.body())
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
            let Some(message) = message.filter(|m| !m.is_empty()) else {
                return graph_error(400, 100, None, "(#100) message is required");
            };
            let mut comments = state.comments.lock().unwrap();
            let id = format!("{}", 18_000_000_000_000_000u64 + comments.len() as u64 + 1);
            comments.push(SentComment {
                object_id: (*comment).to_owned(),
                message: Some(message),
                photo: None,
                id: id.clone(),
                received_at: std::time::Instant::now(),
            });
            json_response(200, json!({ "id": id }))
        }
        (&Method::POST, [_version, object, "comments"]) => {
            if state.deleted.lock().unwrap().iter().any(|d| d == object) {
                return graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported post request. Object with ID does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                );
            }
            if let Some(f) = state.send_failures.lock().unwrap().pop_front() {
                return json_response(f.status, f.body);
            }
            match read_comment(&req).await {
                Ok((message, photo)) => {
                    let mut comments = state.comments.lock().unwrap();
                    let id = format!(
                        "{}_{}",
                        object.rsplit('_').next().unwrap_or(object),
                        900 + comments.len() + 1
                    );
                    comments.push(SentComment {
                        object_id: (*object).to_owned(),
                        message,
                        photo,
                        id: id.clone(),
                        received_at: std::time::Instant::now(),
                    });
                    json_response(200, json!({ "id": id }))
                }
                Err(why) => graph_error(400, 100, None, &why),
            }
        }
        (&Method::GET, [_version, node]) if query == "fields=instagram_business_account" => {
            if *node != page {
                return graph_error(
                    400,
                    100,
                    None,
                    "(#100) The page id does not match the token",
                );
            }
            let mut answer = json!({ "id": node });
            if let Some(ig) = state.linked_instagram.lock().unwrap().get(*node) {
                answer["instagram_business_account"] = json!({ "id": ig });
            }
            json_response(200, answer)
        }
        (&Method::GET, [_version, _account]) if query.starts_with("fields=mentioned_") => {
            let fields: String = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "fields")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            // mentioned_comment.comment_id(ID){…} or mentioned_media.media_id(ID){…}
            let (edge, rest) = fields.split_once('.').unwrap_or_default();
            // As Graph: a field the edge does not have fails the whole call (Mentioned
            // Media documents caption, comments, comments_count, id, like_count,
            // media_type, media_url, owner, timestamp and username — no permalink).
            if edge == "mentioned_media" {
                const DOCUMENTED: &[&str] = &[
                    "caption",
                    "comments",
                    "comments_count",
                    "id",
                    "like_count",
                    "media_type",
                    "media_url",
                    "owner",
                    "timestamp",
                    "username",
                ];
                let asked = rest
                    .split_once('{')
                    .map(|(_, f)| f.trim_end_matches('}'))
                    .unwrap_or_default();
                if let Some(bad) = asked.split(',').find(|f| !DOCUMENTED.contains(&f.trim())) {
                    return graph_error(
                        400,
                        100,
                        None,
                        &format!(
                            "(#100) Tried accessing nonexisting field ({bad}) on node type (ShadowIGMedia)"
                        ),
                    );
                }
            }
            let id = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(id, _)| id)
                .unwrap_or_default();
            match state.mentions.lock().unwrap().get(id) {
                Some(answer) => json_response(200, json!({ edge: answer, "id": page })),
                None => graph_error(
                    400,
                    100,
                    None,
                    "(#100) Comments are disabled for this media or it is not available",
                ),
            }
        }
        (&Method::POST, [_version, _account, "mentions"]) => {
            let v: Value = serde_json::from_slice(req.body()).unwrap_or_default();
            let (Some(media), Some(message)) = (v["media_id"].as_str(), v["message"].as_str())
            else {
                return graph_error(400, 100, None, "(#100) media_id and message are required");
            };
            let target = v["comment_id"].as_str().unwrap_or(media).to_owned();
            let mut comments = state.comments.lock().unwrap();
            let id = format!("{}", 18_100_000_000_000_000u64 + comments.len() as u64 + 1);
            comments.push(SentComment {
                object_id: target,
                message: Some(message.to_owned()),
                photo: None,
                id: id.clone(),
                received_at: std::time::Instant::now(),
            });
            json_response(200, json!({ "id": id }))
        }
        (&Method::GET, [_version, media]) if query == "fields=permalink" => {
            match state.media.lock().unwrap().get(*media) {
                Some(link) => json_response(200, json!({"permalink": link, "id": media})),
                None => graph_error(400, 100, Some(33), "Unsupported get request."),
            }
        }
        (&Method::GET, [_version, psid]) => {
            if *state.refuse_profiles.lock().unwrap() {
                return graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported get request. Object does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                );
            }
            // An Instagram customer answers the fields Instagram's User Profile API has;
            // Messenger's first_name / last_name do not exist on them.
            if let Some((name, username)) = state.instagram_profiles.lock().unwrap().get(*psid) {
                let asked: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "fields")
                    .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                if let Some(other) = asked
                    .iter()
                    .find(|f| !["name", "username"].contains(&f.as_str()))
                {
                    return graph_error(
                        400,
                        100,
                        None,
                        &format!(
                            "(#100) Tried accessing nonexisting field ({other}) on node type (InstagramUser)"
                        ),
                    );
                }
                let mut answer = json!({"username": username, "id": psid});
                if let Some(name) = name {
                    answer["name"] = name.as_str().into();
                }
                return json_response(200, answer);
            }
            let names_only = *state.names_only.lock().unwrap();
            match state.profiles.lock().unwrap().get(*psid) {
                Some((first, last)) if names_only && query == "fields=name" => {
                    json_response(200, json!({"name": format!("{first} {last}"), "id": psid}))
                }
                Some(_) if names_only => graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported get request. Object does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                ),
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

/// A file sent in a multipart form: its name, content type and bytes.
type FormFile = (String, String, Bytes);

/// The request's multipart form, if it is one: its text fields, and the file sent as
/// `file_field`.
async fn read_form(
    req: &Request<Bytes>,
    file_field: &str,
) -> Result<Option<(HashMap<String, String>, Option<FormFile>)>, String> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return Ok(None);
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let body = req.body().clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let (mut fields, mut file) = (HashMap::new(), None);
    while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or("").to_owned();
        if name == file_field {
            let file_name = field.file_name().unwrap_or("").to_owned();
            let ct = field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_default();
            file = Some((
                file_name,
                ct,
                field.bytes().await.map_err(|e| e.to_string())?,
            ));
        } else {
            fields.insert(name, field.text().await.map_err(|e| e.to_string())?);
        }
    }
    Ok(Some((fields, file)))
}

/// Reads a comment call: JSON `{message}` or multipart `message` + `source` photo.
async fn read_comment(req: &Request<Bytes>) -> Result<(Option<String>, Option<FormFile>), String> {
    if let Some((mut fields, photo)) = read_form(req, "source").await? {
        if photo.is_none() {
            return Err("(#100) source must be a photo".into());
        }
        return Ok((fields.remove("message"), photo));
    }
    let v: Value =
        serde_json::from_slice(req.body()).map_err(|e| format!("(#100) body is not JSON: {e}"))?;
    match v.get("message").and_then(|m| m.as_str()) {
        Some(m) if !m.is_empty() => Ok((Some(m.to_owned()), None)),
        _ => Err("(#100) message is required".into()),
    }
}

/// A feed change webhook (wall post or comment) as Facebook sends it.
pub fn feed_change(page_id: &str, time_s: i64, value: Value) -> String {
    json!({
        "object": "page",
        "entry": [{"id": page_id, "time": time_s, "changes": [{"field": "feed", "value": value}]}]
    })
    .to_string()
}

/// Reads a Send API call, JSON or multipart, the way Graph validates it.
async fn read_send(
    req: &Request<Bytes>,
    page: &str,
    fetcher: Option<&reqwest::Client>,
) -> Result<SentMessage, String> {
    let mut fields: HashMap<String, Value> = HashMap::new();
    let mut attachment = None;
    if let Some((form, file)) = read_form(req, "filedata").await? {
        for (name, text) in form {
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            fields.insert(name, value);
        }
        let kind = fields
            .get("message")
            .and_then(|m| m.pointer("/attachment/type"))
            .and_then(|t| t.as_str())
            .ok_or("(#100) message.attachment.type is required with filedata")?
            .to_owned();
        let (file_name, ct, bytes) = file.ok_or("(#100) filedata is required")?;
        attachment = Some((kind, file_name, ct, bytes));
    } else {
        let v: Value = serde_json::from_slice(req.body())
            .map_err(|e| format!("(#100) body is not JSON: {e}"))?;
        for (k, val) in v.as_object().ok_or("(#100) body must be an object")? {
            fields.insert(k.clone(), val.clone());
        }
    }
    let recipient = fields
        .get("recipient")
        .cloned()
        .ok_or("(#100) recipient is required")?;
    let messaging_type = fields
        .get("messaging_type")
        .and_then(|v| v.as_str())
        .ok_or("(#100) messaging_type is required")?
        .to_owned();
    let tag = fields
        .get("tag")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    if messaging_type == "MESSAGE_TAG" && tag.is_none() {
        return Err("(#100) tag is required for MESSAGE_TAG".into());
    }
    let message = fields.get("message").cloned().unwrap_or_default();
    let text = message
        .get("text")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    if let Some(t) = &text
        && t.chars().count() > 2000
    {
        return Err(
            "(#100) Length of param message[text] must be less than or equal to 2000".into(),
        );
    }
    // An attachment given by URL: fetched now, as Meta does, or the send fails.
    if let (None, Some(url), Some(kind)) = (
        &attachment,
        message
            .pointer("/attachment/payload/url")
            .and_then(|u| u.as_str()),
        message.pointer("/attachment/type").and_then(|t| t.as_str()),
    ) {
        let failed = || "(#100) Upload attachment failure.".to_owned();
        let response = match fetcher {
            Some(client) => client.get(url).send().await.map_err(|_| failed())?,
            None => reqwest::get(url).await.map_err(|_| failed())?,
        };
        if !response.status().is_success() {
            return Err(failed());
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let bytes = response.bytes().await.map_err(|_| failed())?;
        attachment = Some((kind.to_owned(), name, content_type, bytes));
    }
    if text.is_none() && attachment.is_none() {
        return Err("(#100) message must have text or an attachment".into());
    }
    Ok(SentMessage {
        page_id: page.to_owned(),
        recipient,
        messaging_type,
        tag,
        text,
        metadata: message
            .get("metadata")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        attachment,
        message_id: String::new(),
        received_at: std::time::Instant::now(),
    })
}

/// Posts webhooks to the daemon as Facebook does: signed with the App Secret.
#[derive(Clone)]
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
    messenger_message(
        page_id,
        psid,
        timestamp_ms,
        json!({"mid": mid, "text": text}),
    )
}

/// An Instagram direct message webhook (`object` "instagram") from customer `igsid` to
/// the professional account `account`.
pub fn instagram_text(
    account: &str,
    igsid: &str,
    mid: &str,
    timestamp_ms: i64,
    text: &str,
) -> String {
    customer_message(
        "instagram",
        account,
        igsid,
        timestamp_ms,
        json!({"mid": mid, "text": text}),
    )
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
    messenger_message(
        page_id,
        psid,
        timestamp_ms,
        json!({"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}),
    )
}

/// A webhook of one customer's `message` to the Page, as Facebook wraps it.
fn messenger_message(page_id: &str, psid: &str, timestamp_ms: i64, message: Value) -> String {
    customer_message("page", page_id, psid, timestamp_ms, message)
}

/// A webhook of one customer's `message` to an account of `object` ("page",
/// "instagram").
fn customer_message(
    object: &str,
    page_id: &str,
    psid: &str,
    timestamp_ms: i64,
    message: Value,
) -> String {
    json!({
        "object": object,
        "entry": [{
            "id": page_id,
            "time": timestamp_ms,
            "messaging": [{
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "timestamp": timestamp_ms,
                "message": message
            }]
        }]
    })
    .to_string()
}
