//! A simulated Facebook: a Graph API server (profiles, attachment files) and a webhook
//! sender that signs payloads with the App Secret as Facebook does.

mod inbox;
mod login;
mod routes;
mod webhooks;

pub use inbox::InboxMessage;
pub use webhooks::*;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::Method;
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
    /// The accounts' inboxes (Conversations API).
    inbox: Mutex<Vec<inbox::Conversation>>,
    /// Scripted Conversations API failures, one per call.
    inbox_failures: Mutex<std::collections::VecDeque<SendFailure>>,
    /// What `debug_token` says of tokens other than a healthy Page token's default.
    token_facts: Mutex<HashMap<String, Value>>,
    /// Tokens Meta no longer accepts (a user removed the app): `debug_token` says so.
    revoked: Mutex<std::collections::HashSet<String>>,
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
            Box::pin(async move { routes::handle(&state, req).await })
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

    /// Whether Meta would send this webhook body: every event of a Page this server knows
    /// must be of a field our app is subscribed to on that Page (Meta sends only those).
    /// `Err` names the first one that would not be sent. Pages it does not know, and
    /// other objects, pass.
    pub fn would_send(&self, body: &str) -> Result<(), String> {
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            return Ok(());
        };
        if v["object"] != "page" {
            return Ok(());
        }
        let subscriptions = self.state.subscriptions.lock().unwrap();
        for entry in v["entry"].as_array().into_iter().flatten() {
            let page = match &entry["id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            let Some(fields) = subscriptions.get(&page) else {
                continue;
            };
            for field in webhook_fields(entry) {
                if !fields.iter().any(|f| f == field) {
                    return Err(format!(
                        "Meta would not send this: page {page} is not subscribed to {field} (subscribed: {fields:?})"
                    ));
                }
            }
        }
        Ok(())
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

    /// Requests received apart from the daemon's token check (`GET /app`,
    /// `GET /debug_token`: at start, after reloads, daily).
    pub fn requests_but_token_checks(&self) -> Vec<GraphRequest> {
        self.requests()
            .into_iter()
            .filter(|r| !(r.path.ends_with("/app") || r.path.ends_with("/debug_token")))
            .collect()
    }

    /// Messages the Send API accepted, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Send API calls received, accepted or not.
    pub fn send_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
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

    /// `debug_token` answers these fields for `token` (over a healthy Page token's:
    /// valid, never expiring, data access for 90 days, every permission).
    pub fn set_token_facts(&self, token: &str, facts: Value) {
        self.state
            .token_facts
            .lock()
            .unwrap()
            .insert(token.into(), facts);
    }

    /// The user who gave `token` removed the app: Graph refuses it from now on.
    pub fn revoke_token(&self, token: &str) {
        self.state.revoked.lock().unwrap().insert(token.into());
        self.state.tokens.lock().unwrap().remove(token);
    }

    /// Meta's `signed_request` for a callback about `user_id`, issued `age_s` ago,
    /// signed with the app secret (or with `secret` when given: a forgery).
    pub fn signed_request(&self, user_id: &str, age_s: i64, secret: Option<&str>) -> String {
        let app_secret = self
            .state
            .app_secret
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        crate::facebook::signed_request::sign(
            secret.unwrap_or(&app_secret).as_bytes(),
            &json!({"algorithm": "HMAC-SHA256", "expires": 0, "issued_at": now - age_s, "user_id": user_id}),
        )
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

/// The key of a `messaging` event and the webhook field Meta sends it under, in the
/// order they are tried (an echo is a `message` too, and is told apart first).
const EVENT_FIELDS: [(&str, &str); 13] = [
    ("message", "messages"),
    ("postback", "messaging_postbacks"),
    ("read", "message_reads"),
    ("delivery", "message_deliveries"),
    ("reaction", "message_reactions"),
    ("referral", "messaging_referrals"),
    ("optin", "messaging_optins"),
    ("policy_enforcement", "messaging_policy_enforcement"),
    ("message_edit", "message_edits"),
    ("pass_thread_control", "messaging_handovers"),
    ("take_thread_control", "messaging_handovers"),
    ("request_thread_control", "messaging_handovers"),
    ("app_roles", "messaging_handovers"),
];

/// The webhook fields of a Page entry's events, as Meta names them.
fn webhook_fields(entry: &Value) -> Vec<&'static str> {
    let mut fields = Vec::new();
    for event in entry["messaging"].as_array().into_iter().flatten() {
        let field = if event["message"]["is_echo"] == true {
            Some("message_echoes")
        } else {
            EVENT_FIELDS
                .iter()
                .find(|(key, _)| event.get(*key).is_some())
                .map(|(_, field)| *field)
        };
        fields.extend(field);
    }
    if entry["standby"].as_array().is_some_and(|s| !s.is_empty()) {
        fields.push("standby");
    }
    for change in entry["changes"].as_array().into_iter().flatten() {
        if change["field"] == "feed" {
            fields.push("feed");
        }
    }
    fields
}

fn graph_error(status: u16, code: i64, subcode: Option<i64>, message: &str) -> SimResponse {
    let mut error = json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "SIMtrace"});
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    json_response(status, json!({ "error": error }))
}
