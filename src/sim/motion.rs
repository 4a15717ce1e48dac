//! A simulated XCALLY Motion: records notify calls and attachment uploads, serves
//! attachments back, and can be told to fail, hang or go down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request};
use tokio::sync::watch;

use super::http::{Handler, SimResponse, SimServer, json, respond};
use crate::motion::Notify;

/// How the simulated Motion answers API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like a healthy Motion.
    Accept,
    /// Every call gets this HTTP status (e.g. 500, 503, 400).
    Status(u16),
    /// Calls never get an answer (until the mode changes).
    Hang,
    /// 200 with a body that is not JSON.
    Garbage,
    /// The connection is cut without an answer.
    Reset,
    /// Every call is answered after this many milliseconds (then normally).
    Slow(u64),
    /// Notifies are taken, and answered 200 with a body of this many bytes (a proxy's
    /// page, a broken plugin): what the daemon reads of an answer is bounded.
    Bloated(usize),
}

/// The bytes a bloated answer is cut from (shared, never copied).
fn bloat(len: usize) -> Bytes {
    static BLOAT: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let all = BLOAT.get_or_init(|| Bytes::from(vec![b' '; 64 * 1024 * 1024]));
    all.slice(..len.min(all.len()))
}

#[derive(Debug, Clone)]
pub struct RecordedNotify {
    /// When the simulated Motion received it.
    pub received_at: std::time::Instant,
    /// The Openchannel account id from the URL.
    pub account: String,
    /// The query string of the call (e.g. `token=…`).
    pub query: String,
    pub notify: Notify,
}

#[derive(Debug, Clone)]
pub struct StoredFile {
    pub name: String,
    pub content_type: String,
    pub bytes: Bytes,
}

struct State {
    api_key: String,
    mode: Mutex<Mode>,
    /// Notifies from this customer hang until the mode changes.
    hang_for: Mutex<Option<String>>,
    /// Account → the `token` its notify URL must carry, as a Motion that checks it.
    tokens: Mutex<HashMap<String, String>>,
    /// Attachment id → the `basename` its metadata also gives.
    basenames: Mutex<HashMap<u64, String>>,
    /// Notifies from this customer wait (then are taken normally) until released.
    hold_for: watch::Sender<Option<String>>,
    /// Calls to fail with a status before accepting again: `(count, status)`.
    fail_next: Mutex<(usize, u16)>,
    notifies: Mutex<Vec<RecordedNotify>>,
    uploads: Mutex<Vec<StoredFile>>,
    files: Mutex<HashMap<u64, StoredFile>>,
    next_id: AtomicU64,
    /// Number of notifies recorded, for waiting without sleeping.
    count: watch::Sender<usize>,
    /// Changes whenever the mode does, to release hanging calls.
    mode_changed: watch::Sender<u64>,
    requests: AtomicU64,
}

impl State {
    /// Records a notify and counts it. The count is set while the record is still
    /// locked: set after, a handler that pushed first could set it last, back below the
    /// record's length, and a wait for the last notify would never end.
    fn record(&self, notify: RecordedNotify) {
        let mut list = self.notifies.lock().unwrap();
        list.push(notify);
        self.count.send_replace(list.len());
    }
}

pub struct SimMotion {
    pub server: Arc<SimServer>,
    state: Arc<State>,
}

impl SimMotion {
    pub async fn start(api_key: &str) -> std::io::Result<SimMotion> {
        Self::start_with(api_key, None).await
    }

    /// Motion behind TLS (`https` Receive URLs), with the certificate of `tls`.
    pub async fn start_tls(
        api_key: &str,
        tls: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<SimMotion> {
        Self::start_with(api_key, Some(tls)).await
    }

    async fn start_with(
        api_key: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<SimMotion> {
        let state = Arc::new(State {
            api_key: api_key.to_owned(),
            mode: Mutex::new(Mode::Accept),
            hang_for: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            basenames: Mutex::new(HashMap::new()),
            hold_for: watch::channel(None).0,
            fail_next: Mutex::new((0, 0)),
            notifies: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
            files: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(100),
            count: watch::channel(0).0,
            mode_changed: watch::channel(0).0,
            requests: AtomicU64::new(0),
        });
        let handler_state = state.clone();
        let handler: Handler = Arc::new(move |req| {
            let state = handler_state.clone();
            Box::pin(async move { handle(&state, req).await })
        });
        let server = SimServer::start(handler, tls).await?;
        Ok(SimMotion { server, state })
    }

    /// The Receive URL of Openchannel account `account`.
    pub fn receive_url(&self, account: u32) -> String {
        format!(
            "{}/api/openchannel/accounts/{account}/notify",
            self.server.url()
        )
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
        self.state.mode_changed.send_modify(|n| *n += 1);
    }

    /// Notifies from `psid` hang (others are answered) until the mode changes.
    pub fn hang_for(&self, psid: Option<&str>) {
        *self.state.hang_for.lock().unwrap() = psid.map(str::to_owned);
        self.state.mode_changed.send_modify(|n| *n += 1);
    }

    /// Notifies from `psid` wait until [`SimMotion::release`], then are taken like any
    /// other: Motion slow to answer a call that it does carry out.
    pub fn hold(&self, psid: &str) {
        self.state.hold_for.send_replace(Some(psid.to_owned()));
    }

    /// Lets held notifies through.
    pub fn release(&self) {
        self.state.hold_for.send_replace(None);
    }

    /// Notifies of `account` need `?token=<token>`; without it Motion answers 401.
    pub fn require_token(&self, account: u32, token: &str) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(account.to_string(), token.into());
    }

    /// Like [`SimMotion::add_file`], the metadata also giving `basename` (the name as
    /// the agent attached it).
    pub fn add_file_with_basename(
        &self,
        name: &str,
        basename: &str,
        content_type: &str,
        bytes: impl Into<Bytes>,
    ) -> u64 {
        let id = self.add_file(name, content_type, bytes);
        self.state
            .basenames
            .lock()
            .unwrap()
            .insert(id, basename.into());
        id
    }

    /// The next `count` API calls are answered `status`, then calls are accepted again.
    pub fn fail_next(&self, count: usize, status: u16) {
        *self.state.fail_next.lock().unwrap() = (count, status);
    }

    pub async fn down(&self) {
        self.server.down().await;
    }

    pub async fn up(&self) {
        self.server
            .up()
            .await
            .expect("rebind the simulated Motion's port");
    }

    /// Every notify recorded so far: a copy of the whole record, so not for a loop or
    /// a timed wait (see [`SimMotion::count`], [`SimMotion::wait_for_count`]).
    pub fn notifies(&self) -> Vec<RecordedNotify> {
        self.state.notifies.lock().unwrap().clone()
    }

    /// The recorded notifies from the `from`-th on (a copy of those only).
    pub fn notifies_from(&self, from: usize) -> Vec<RecordedNotify> {
        let list = self.state.notifies.lock().unwrap();
        list.get(from..).unwrap_or_default().to_vec()
    }

    /// How many notifies have been recorded, without copying them.
    pub fn count(&self) -> usize {
        *self.state.count.borrow()
    }

    pub fn uploads(&self) -> Vec<StoredFile> {
        self.state.uploads.lock().unwrap().clone()
    }

    /// API calls received, answered or not.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Puts a file in Motion's attachment store (as if an agent attached it); returns its id.
    pub fn add_file(&self, name: &str, content_type: &str, bytes: impl Into<Bytes>) -> u64 {
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        self.state.files.lock().unwrap().insert(
            id,
            StoredFile {
                name: name.into(),
                content_type: content_type.into(),
                bytes: bytes.into(),
            },
        );
        id
    }

    /// Calls a Reply URL as Motion does when an agent sends a message: returns the
    /// status and JSON answer.
    pub async fn agent_reply(
        &self,
        reply_url: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        Self::post_reply(reply_url, body).await
    }

    /// [`SimMotion::agent_reply`] without a simulated Motion at hand (from a task).
    pub async fn post_reply(
        reply_url: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        crate::http_client::install_crypto_provider();
        let response = reqwest::Client::new()
            .post(reply_url)
            .json(body)
            .send()
            .await
            .map_err(crate::http_client::describe)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }

    /// The number of notifies recorded so far, to wait on.
    pub fn count_watch(&self) -> watch::Receiver<usize> {
        self.state.count.subscribe()
    }

    /// Waits until at least `n` notifies have been recorded, or `timeout` passes.
    pub async fn wait_for_notifies(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedNotify>, String> {
        self.wait_for_count(n, timeout).await?;
        Ok(self.notifies())
    }

    /// Waits until at least `n` notifies have been recorded, or `timeout` passes, and
    /// copies nothing: a timed wait measures the daemon, not a copy of the whole record
    /// (over a million notifies by the benchmark's drain, a good part of a second).
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> Result<(), String> {
        let mut rx = self.state.count.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let list = self.state.notifies.lock().unwrap();
                let last: Vec<&String> =
                    list.iter().rev().take(10).map(|n| &n.notify.body).collect();
                Err(format!(
                    "expected {n} notifies within {timeout:?}, got {}; the last ones: {last:?}",
                    list.len()
                ))
            }
        }
    }
}

/// A Reply URL body shaped like the one Motion sends when an agent answers.
pub fn reply_body(
    message_id: u64,
    psid: &str,
    text: &str,
    attachment_id: Option<u64>,
) -> serde_json::Value {
    serde_json::json!({
        "id": message_id,
        "body": text,
        "read": false,
        "direction": "out",
        "AttachmentId": attachment_id,
        "OpenchannelAccountId": 1,
        "OpenchannelInteractionId": 311,
        "UserId": 2,
        "Contact": {"id": 17, "firstName": "Ada", "lastName": "Lovelace", "facebook": psid},
        "Interaction": {"id": 311, "threadId": null, "closed": false},
        "createdAt": "2026-11-25T10:00:00.000Z",
        "updatedAt": "2026-11-25T10:00:00.000Z"
    })
}

async fn handle(state: &State, req: Request<Bytes>) -> SimResponse {
    state.requests.fetch_add(1, Ordering::Relaxed);
    // Failure modes first, as a broken Motion would answer anything.
    {
        let mut fail = state.fail_next.lock().unwrap();
        if fail.0 > 0 {
            fail.0 -= 1;
            return json(fail.1, serde_json::json!({"message": "simulated failure"}));
        }
    }
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Accept | Mode::Bloated(_) => {}
        Mode::Status(s) => return json(s, serde_json::json!({"message": "simulated failure"})),
        Mode::Garbage => return respond(200, "text/html", "<html>proxy error page</html>"),
        Mode::Reset => return super::http::reset(),
        Mode::Slow(ms) => {
            let mut changed = state.mode_changed.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = changed.changed() => {}
            }
        }
        Mode::Hang => {
            let mut changed = state.mode_changed.subscribe();
            let _ = changed.changed().await;
            return json(503, serde_json::json!({"message": "was hanging"}));
        }
    }

    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let api_key_ok = url::form_urlencoded::parse(query.as_bytes())
        .any(|(k, v)| k == "apikey" && v == state.api_key.as_str());

    match (req.method(), segments.as_slice()) {
        (&Method::POST, ["api", "openchannel", "accounts", account, "notify"]) => {
            let needed = state.tokens.lock().unwrap().get(*account).cloned();
            if let Some(token) = needed
                && !url::form_urlencoded::parse(query.as_bytes())
                    .any(|(k, v)| k == "token" && v == token.as_str())
            {
                return json(401, serde_json::json!({"message": "Unauthorized"}));
            }
            let notify: Notify = match serde_json::from_slice(req.body()) {
                Ok(n) => n,
                Err(e) => {
                    return json(
                        400,
                        serde_json::json!({"message": format!("bad notify body: {e}")}),
                    );
                }
            };
            let hang = state.hang_for.lock().unwrap().as_deref() == Some(notify.from.as_str());
            if hang {
                let mut changed = state.mode_changed.subscribe();
                let _ = changed.changed().await;
                return json(503, serde_json::json!({"message": "was hanging"}));
            }
            let mut held = state.hold_for.subscribe();
            let _ = held
                .wait_for(|h| h.as_deref() != Some(notify.from.as_str()))
                .await;
            if notify.body.is_empty() || notify.from.is_empty() {
                return json(
                    400,
                    serde_json::json!({"message": "from and body are required"}),
                );
            }
            state.record(RecordedNotify {
                received_at: std::time::Instant::now(),
                account: (*account).to_owned(),
                query,
                notify,
            });
            if let Mode::Bloated(bytes) = mode {
                return respond(200, "application/json", bloat(bytes));
            }
            json(200, serde_json::json!({"message": "ok"}))
        }
        (&Method::POST, ["api", "attachments"]) => {
            if !api_key_ok {
                return json(401, serde_json::json!({"message": "Unauthorized"}));
            }
            match read_multipart_file(&req).await {
                Some(file) => {
                    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
                    state.uploads.lock().unwrap().push(file.clone());
                    let name = file.name.clone();
                    state.files.lock().unwrap().insert(id, file);
                    json(201, serde_json::json!({"id": id, "name": name}))
                }
                None => json(
                    400,
                    serde_json::json!({"message": "multipart field 'file' required"}),
                ),
            }
        }
        (&Method::GET, ["api", "attachments"]) => {
            if !api_key_ok {
                return json(401, serde_json::json!({"message": "Unauthorized"}));
            }
            json(200, serde_json::json!([]))
        }
        (&Method::GET, ["api", "attachments", id])
        | (&Method::GET, ["api", "attachments", id, "download"]) => {
            if !api_key_ok {
                return json(401, serde_json::json!({"message": "Unauthorized"}));
            }
            let file = id
                .parse::<u64>()
                .ok()
                .and_then(|id| state.files.lock().unwrap().get(&id).cloned());
            match (file, segments.len()) {
                (None, _) => json(404, serde_json::json!({"message": "Not found"})),
                (Some(f), 3) => {
                    let mut meta = serde_json::json!({"id": id, "name": f.name, "type": f.content_type, "size": f.bytes.len()});
                    if let Some(base) = id
                        .parse::<u64>()
                        .ok()
                        .and_then(|id| state.basenames.lock().unwrap().get(&id).cloned())
                    {
                        meta["basename"] = serde_json::json!(base);
                    }
                    json(200, meta)
                }
                (Some(f), _) => respond(200, &f.content_type, f.bytes),
            }
        }
        _ => json(404, serde_json::json!({"message": "Not found"})),
    }
}

async fn read_multipart_file(req: &Request<Bytes>) -> Option<StoredFile> {
    let content_type = req.headers().get("content-type")?.to_str().ok()?;
    let boundary = multer::parse_boundary(content_type).ok()?;
    let body = req.body().clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("file").to_owned();
            let content_type = field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "application/octet-stream".into());
            let bytes = field.bytes().await.ok()?;
            return Some(StoredFile {
                name,
                content_type,
                bytes,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting and waiting read the number recorded and copy nothing; a wait that is
    /// not met says how many came and which were last.
    #[tokio::test]
    async fn counts_and_waits_without_copying_the_record() {
        crate::http_client::install_crypto_provider();
        let motion = SimMotion::start("key").await.unwrap();
        let client = reqwest::Client::new();
        for body in ["one", "two", "three"] {
            let sent = client
                .post(motion.receive_url(1))
                .json(&serde_json::json!({"from": "42", "mapKey": "facebook", "body": body}))
                .send()
                .await
                .unwrap();
            assert_eq!(sent.status(), 200);
        }
        assert_eq!(motion.count(), 3);
        motion
            .wait_for_count(3, Duration::from_secs(5))
            .await
            .unwrap();
        let later: Vec<String> = motion
            .notifies_from(1)
            .into_iter()
            .map(|n| n.notify.body)
            .collect();
        assert_eq!(later, ["two", "three"]);
        assert!(motion.notifies_from(9).is_empty());

        let error = motion
            .wait_for_count(4, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(
            error.contains("got 3") && error.contains(r#"["three", "two", "one"]"#),
            "{error}"
        );
    }

    /// Notifies recorded at once by several handlers leave the count at the number
    /// recorded: a handler that read the length before another's push must not set the
    /// count back after it, or a wait for the last notify never ends (the benchmark's
    /// drain waited its 600 s with every notify recorded).
    #[tokio::test]
    async fn the_count_never_falls_behind_the_record_under_concurrent_notifies() {
        let motion = SimMotion::start("key").await.unwrap();
        let notify = |from: usize| RecordedNotify {
            received_at: std::time::Instant::now(),
            account: "1".into(),
            query: String::new(),
            notify: serde_json::from_value(
                serde_json::json!({"from": from.to_string(), "mapKey": "facebook", "body": "hi"}),
            )
            .unwrap(),
        };
        for round in 0..20_000 {
            std::thread::scope(|s| {
                for i in 0..2 {
                    let state = &motion.state;
                    s.spawn(move || state.record(notify(round * 2 + i)));
                }
            });
            assert_eq!(
                motion.count(),
                motion.state.notifies.lock().unwrap().len(),
                "round {round}: the count fell behind the record"
            );
        }
    }
}
