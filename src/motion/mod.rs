//! XCALLY Motion's Openchannel API, as far as this daemon uses it.
//!
//! Inbound: each customer message becomes one `POST` of a [`Notify`] body to the
//! account's Receive URL; files are uploaded first (`POST /api/attachments?apikey=…`,
//! multipart `file`) and referenced by `AttachmentId`. Public documentation is thin, so
//! the shapes come from XCALLY's own open-source connectors (DESIGN §3); anything 2xx is
//! success, 5xx / 408 / 429 / network errors are retried, other 4xx are permanent.

mod notifier;
pub mod reply;

use std::fmt::Display;

use serde::{Deserialize, Serialize};

use crate::config::{MotionConfig, Secret, redact_url};
use crate::http_client;

/// The body of a notify call (the field names are Motion's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// The customer's id on the channel: the PSID on Messenger.
    pub from: String,
    /// The Contact field `from` is matched against.
    #[serde(rename = "mapKey")]
    pub map_key: String,
    pub body: String,
    #[serde(rename = "firstName", skip_serializing_if = "Option::is_none", default)]
    pub first_name: Option<String>,
    #[serde(rename = "lastName", skip_serializing_if = "Option::is_none", default)]
    pub last_name: Option<String>,
    /// Conversation key: set for wall posts so each post is its own interaction.
    #[serde(rename = "threadId", skip_serializing_if = "Option::is_none", default)]
    pub thread_id: Option<String>,
    #[serde(
        rename = "externalUrl",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub external_url: Option<String>,
    /// A JSON number, as Motion's own connectors send it.
    #[serde(
        rename = "AttachmentId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub attachment_id: Option<AttachmentId>,
}

/// A Motion attachment: an integer id (Motion's database row). Parsed once where it
/// comes in (a Reply URL body, an upload's answer), so that it can only ever be one
/// number in a URL — never `../../api/users?x=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AttachmentId(pub u64);

impl AttachmentId {
    /// From a JSON number or a string of digits; `None` for anything else.
    pub fn from_json(value: &serde_json::Value) -> Option<AttachmentId> {
        match value {
            serde_json::Value::Number(n) => n.as_u64().map(AttachmentId),
            serde_json::Value::String(s)
                if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse().ok().map(AttachmentId)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for AttachmentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        AttachmentId::from_json(&value)
            .ok_or_else(|| serde::de::Error::custom("a Motion attachment id is an integer"))
    }
}

/// Why Motion's API key could not be confirmed ([`MotionClient::check_api_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Motion refused the key (401/403).
    WrongKey(String),
    /// Nothing of Motion's API at the address taken from the Receive URL (404).
    WrongUrl(String),
    /// No answer, or a server error.
    Unreachable(String),
}

/// A failed Motion call, with whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MotionError {
    #[error("{0} (will retry)")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
    /// A file over the size we may pass on, `limit` bytes (permanent).
    #[error("{reason}")]
    TooLarge { reason: String, limit: u64 },
}

impl MotionError {
    pub fn is_transient(&self) -> bool {
        matches!(self, MotionError::Transient(_))
    }
}

/// Whether an HTTP status from Motion is success, worth retrying, or final.
pub fn classify_status(status: u16) -> Result<(), bool> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(true),
        _ => Err(false),
    }
}

/// Motion's base URL (scheme, host, port and any path prefix) from a Receive URL such
/// as `https://motion/api/openchannel/accounts/7/notify?token=…`.
pub fn base_url(receive_url: &str) -> Option<url::Url> {
    let url = url::Url::parse(receive_url).ok()?;
    let path = url.path();
    let prefix = match path.find("/api/") {
        Some(i) => &path[..i],
        None => "",
    };
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path(prefix);
    base.path_segments_mut().ok()?.pop_if_empty();
    Some(base)
}

/// `base` and these path segments, each one segment whatever it holds.
fn endpoint(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A file to hand to Motion.
#[derive(Debug, Clone)]
pub struct Upload {
    pub file_name: String,
    pub content_type: String,
    pub bytes: bytes::Bytes,
}

/// "the notify at <Receive URL>", its query's values masked (they may hold a key).
struct NotifyAt<'a>(&'a str);

impl Display for NotifyAt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the notify at {}", redact_url(self.0))
    }
}

/// A Receive URL as parsed once, with its address for the notify's own client when
/// that client may send there.
#[derive(Clone)]
struct Target {
    url: url::Url,
    direct: Option<http::Uri>,
}

pub struct MotionClient {
    http: reqwest::Client,
    /// Receive URLs as parsed once: parsing one took about as long as the rest of
    /// a notify's own work (some 8,000 instructions, its host through IDNA).
    targets: std::sync::Mutex<std::collections::HashMap<String, Target>>,
    /// The notify's own client, beside `http` for the rest.
    notifier: notifier::Notifier,
    /// Records exchanges while `fb-openchannel capture` runs (the daemon's clients).
    capture: http_client::Tap,
    api_key: Secret,
    map_key: String,
}

impl MotionClient {
    pub fn new(config: &MotionConfig, capture: http_client::Tap) -> Result<Self, String> {
        let http = http_client::build(
            config.timeout,
            config.ca_file.as_ref().map(|p| p.get_ref().as_path()),
        )?;
        let notifier = notifier::Notifier::new(
            config.timeout,
            config.ca_file.as_ref().map(|p| p.get_ref().as_path()),
        )?;
        Ok(Self {
            http,
            notifier,
            targets: std::sync::Mutex::default(),
            capture,
            api_key: config.api_key.get_ref().clone(),
            map_key: config.map_key.clone(),
        })
    }

    pub fn map_key(&self) -> &str {
        &self.map_key
    }

    /// Sends a request to Motion. A network error or a non-2xx answer becomes a
    /// [`MotionError`] naming `what` was attempted (never with a secret in it), transient
    /// or permanent per [`classify_status`].
    /// The answer's body text is returned (and captured, when a capture runs).
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &(dyn Display + Sync),
    ) -> Result<String, MotionError> {
        let (response, captured) = self.send(request, what).await?;
        let status = response.status().as_u16();
        // Kept only for a capture: the body is read below, which takes the response.
        let headers = captured.is_some().then(|| response.headers().clone());
        // A 2xx is taken whatever its body; a body past the bound is not read further.
        let text = http_client::text_within(response, http_client::MOTION_ANSWER)
            .await
            .unwrap_or_else(|e| format!("({e})"));
        if let (Some(capture), Some(request), Some(headers)) = (&self.capture, captured, headers) {
            capture.answer("motion", request, status, &headers, text.as_bytes());
        }
        self.classified(status, text, what)
    }

    /// Sends a request; with the request as captured, when a capture runs.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &(dyn Display + Sync),
    ) -> Result<(reqwest::Response, Option<serde_json::Value>), MotionError> {
        let request = request
            .build()
            .map_err(|e| MotionError::Permanent(format!("{what}: {}", http_client::describe(e))))?;
        let captured = self.capture.as_ref().and_then(|c| c.request(&request));
        let response =
            self.http.execute(request).await.map_err(|e| {
                MotionError::Transient(format!("{what}: {}", http_client::describe(e)))
            })?;
        Ok((response, captured))
    }

    /// A body streamed by the caller (an attachment's bytes): its status and headers
    /// are captured, not its bytes.
    async fn call_stream(
        &self,
        request: reqwest::RequestBuilder,
        what: &(dyn Display + Sync),
    ) -> Result<reqwest::Response, MotionError> {
        let (response, captured) = self.send(request, what).await?;
        let status = response.status().as_u16();
        if let (Some(capture), Some(request)) = (&self.capture, captured) {
            let note = b"(file bytes: not captured)";
            capture.answer("motion", request, status, response.headers(), note);
        }
        if classify_status(status).is_ok() {
            return Ok(response);
        }
        let text = http_client::text_within(response, http_client::MOTION_ANSWER)
            .await
            .unwrap_or_else(|e| format!("({e})"));
        self.classified(status, text, what)
            .map(|_| unreachable!("not a 2xx"))
    }

    /// The body of a 2xx answer, else the error it means.
    fn classified(
        &self,
        status: u16,
        text: String,
        what: &(dyn Display + Sync),
    ) -> Result<String, MotionError> {
        match classify_status(status) {
            Ok(()) => Ok(text),
            Err(transient) => {
                let mut message = format!(
                    "Motion answered {status} to {what}: {}",
                    crate::http_client::snippet(&text)
                );
                if matches!(status, 401 | 403) {
                    message.push_str(
                        " — Motion refused the call: copy the Openchannel account's Receive URL whole into receive_url, with any ?apikey= or token it carries (and check motion.api_key for attachments)",
                    );
                }
                Err(if transient {
                    MotionError::Transient(message)
                } else {
                    MotionError::Permanent(message)
                })
            }
        }
    }

    /// Motion's base URL from a Receive URL, or a permanent error saying why not.
    fn base(receive_url: &str) -> Result<url::Url, MotionError> {
        base_url(receive_url).ok_or_else(|| {
            MotionError::Permanent(format!(
                "cannot derive Motion's address from {}",
                redact_url(receive_url)
            ))
        })
    }

    /// POSTs one notify to the Receive URL (kept whole, query string included).
    pub async fn notify(&self, receive_url: &str, notify: &Notify) -> Result<(), MotionError> {
        // Written out only when an error names it: a notify goes out at every message.
        let what = NotifyAt(receive_url);
        let target = self.target(receive_url);
        let recording = self.capture.as_ref().is_some_and(|c| c.recording());
        if let Some(Target {
            direct: Some(uri), ..
        }) = &target
            && !recording
        {
            let body = serde_json::to_vec(notify)
                .map_err(|e| MotionError::Permanent(format!("{what}: {e}")))?;
            let (status, text) = self
                .notifier
                .post_json(uri.clone(), body)
                .await
                .map_err(|e| MotionError::Transient(format!("{what}: {e}")))?;
            return self.classified(status, text, &what).map(drop);
        }
        let request = match target {
            Some(target) => self.http.post(target.url),
            // Not a URL: reqwest says why, as for any request.
            None => self.http.post(receive_url),
        };
        self.call(request.json(notify), &what).await.map(drop)
    }

    /// A Receive URL, parsed; `None` when it is not a URL. The URLs kept are the
    /// accounts' (a handful); past 64 they are parsed anew (the config changed often).
    fn target(&self, receive_url: &str) -> Option<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = targets.get(receive_url) {
            return Some(target.clone());
        }
        let url = url::Url::parse(receive_url).ok()?;
        let target = Target {
            direct: self.notifier.direct(&url),
            url,
        };
        if targets.len() >= 64 {
            targets.clear();
        }
        targets.insert(receive_url.to_owned(), target.clone());
        Some(target)
    }

    /// Uploads a file to Motion and returns its attachment id.
    pub async fn upload_attachment(
        &self,
        receive_url: &str,
        upload: Upload,
    ) -> Result<AttachmentId, MotionError> {
        let url = endpoint(&Self::base(receive_url)?, &["api", "attachments"]);
        let part = reqwest::multipart::Part::stream(upload.bytes)
            .file_name(upload.file_name)
            .mime_str(&upload.content_type)
            .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
        let what = format!("the attachment upload at {url}");
        let request = self
            .http
            .post(url)
            .query(&[("apikey", self.api_key.expose())])
            .multipart(reqwest::multipart::Form::new().part("file", part));
        let text = self.call(request, &what).await?;
        #[derive(Deserialize)]
        struct Created {
            id: serde_json::Value,
        }
        let created: Created = serde_json::from_str(&text).map_err(|_| {
            MotionError::Transient(format!(
                "Motion's attachment upload answer has no id: {}",
                crate::http_client::snippet(&text)
            ))
        })?;
        AttachmentId::from_json(&created.id).ok_or_else(|| {
            MotionError::Transient(format!(
                "Motion's attachment upload answer has no integer id: {}",
                crate::http_client::snippet(&text)
            ))
        })
    }

    /// GETs a URL (the Receive URL, for `doctor`): the HTTP status, or why none came.
    /// A GET creates nothing in Motion; any answer shows Motion is there.
    pub async fn probe(&self, url: &str) -> Result<u16, String> {
        self.http
            .get(url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(http_client::describe)
    }

    /// Whether Motion accepts the API key, with a call that costs Motion nothing: one
    /// attachment id at most (`GET /api/attachments?limit=1&fields=id&apikey=…`), not a
    /// listing of every attachment.
    pub async fn check_api_key(&self, receive_url: &str) -> Result<(), KeyCheck> {
        let url = endpoint(
            &Self::base(receive_url).map_err(|e| KeyCheck::WrongUrl(e.to_string()))?,
            &["api", "attachments"],
        );
        let shown = url.to_string();
        let response = self
            .http
            .get(url)
            .query(&[
                ("limit", "1"),
                ("fields", "id"),
                ("apikey", self.api_key.expose()),
            ])
            .send()
            .await
            .map_err(|e| KeyCheck::Unreachable(format!("{shown}: {}", http_client::describe(e))))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            401 | 403 => Err(KeyCheck::WrongKey(format!(
                "Motion answered {} at {shown}",
                response.status().as_u16()
            ))),
            404 => Err(KeyCheck::WrongUrl(format!(
                "Motion answered 404 at {shown}: there is no Motion API there"
            ))),
            s => Err(KeyCheck::Unreachable(format!(
                "Motion answered {s} at {shown}"
            ))),
        }
    }

    /// Fetches an agent's attachment: its metadata (name, MIME `type`) then its bytes.
    /// Files over `max_bytes` are refused for good.
    pub async fn fetch_attachment(
        &self,
        receive_url: &str,
        id: AttachmentId,
        max_bytes: usize,
        budget: &crate::budget::FileBudget,
    ) -> Result<AgentFile, MotionError> {
        let base = Self::base(receive_url)?;
        let key = [("apikey", self.api_key.expose())];
        let number = id.to_string();
        let meta_url = endpoint(&base, &["api", "attachments", &number]);
        let download_url = endpoint(&base, &["api", "attachments", &number, "download"]);
        let text = self
            .call(
                self.http.get(meta_url).query(&key),
                &format!("the metadata of attachment {id}"),
            )
            .await?;
        let meta: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            MotionError::Transient(format!(
                "Motion's attachment {id} metadata is not JSON: {}",
                crate::http_client::snippet(&text)
            ))
        })?;
        // Motion's attachment records name a file in more than one field; the agent's
        // body may be any of them.
        let names: Vec<String> = [
            "name",
            "basename",
            "originalname",
            "originalName",
            "fileName",
            "filename",
        ]
        .iter()
        .filter_map(|k| meta.get(*k).and_then(|v| v.as_str()))
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
        let name = names.first().cloned().unwrap_or_else(|| "file".into());
        let declared_type = meta.get("type").and_then(|v| v.as_str()).map(str::to_owned);
        let too_large = || MotionError::TooLarge {
            reason: format!("{name} is larger than {} MB", max_bytes / (1024 * 1024)),
            limit: max_bytes as u64,
        };
        let size = meta.get("size").and_then(|v| v.as_u64());
        if size.is_some_and(|n| n > max_bytes as u64) {
            return Err(too_large());
        }
        // Room for the file before a byte of it is read: the size Motion gives, else the
        // largest a file may be (checked against what comes, below).
        let room = budget
            .hold(size.map_or(max_bytes, |n| usize::try_from(n).unwrap_or(max_bytes)))
            .await;
        let declared = size.and_then(|n| usize::try_from(n).ok());

        let what = format!("the download of attachment {id}");
        let mut response = self
            .call_stream(self.http.get(download_url).query(&key), &what)
            .await?;
        let header_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The declared size at once: growing by doubling held the old and the new buffer
        // at every step, up to twice the file at the last one.
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| MotionError::Transient(format!("{what}: {}", http_client::describe(e))))?
        {
            if bytes.len() + chunk.len() > max_bytes {
                return Err(too_large());
            }
            if declared.is_some_and(|n| bytes.len() + chunk.len() > n) {
                return Err(MotionError::Transient(format!(
                    "{what}: more bytes than the {} Motion's metadata gives",
                    declared.unwrap_or(0)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(AgentFile {
            name,
            names,
            content_type: declared_type
                .or(header_type)
                .unwrap_or_else(|| "application/octet-stream".into()),
            bytes: bytes.into(),
            room: Some(room),
        })
    }
}

/// A file an agent attached in Motion.
#[derive(Debug, Clone)]
pub struct AgentFile {
    pub name: String,
    /// Every name Motion gave the file (`name`, `basename`, `originalname`…).
    pub names: Vec<String>,
    pub content_type: String,
    pub bytes: bytes::Bytes,
    /// The room its bytes hold in the file budget, while it lives.
    pub room: Option<crate::budget::Held>,
}

impl AgentFile {
    /// Whether an agent's text is only this file's name, under any of its names (Motion
    /// puts the name in the body of a message that carries a file): then there is no
    /// text to send.
    pub fn is_named(&self, text: &str) -> bool {
        let text = text.trim();
        text == self.name.trim() || self.names.iter().any(|n| n == text)
    }
}

impl From<AgentFile> for crate::files::Download {
    /// An agent's file, as the Graph calls take it.
    fn from(f: AgentFile) -> Self {
        Self {
            file_name: f.name,
            content_type: f.content_type,
            bytes: f.bytes,
            room: f.room,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(classify_status(200), Ok(()));
        assert_eq!(classify_status(204), Ok(()));
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(classify_status(s), Err(true), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(classify_status(s), Err(false), "{s}");
        }
    }

    #[test]
    fn base_url_keeps_prefix_and_drops_query() {
        let base =
            base_url("https://m.example:8443/api/openchannel/accounts/7/notify?token=x").unwrap();
        assert_eq!(
            endpoint(&base, &["api", "attachments", "42"]).as_str(),
            "https://m.example:8443/api/attachments/42"
        );
        let base = base_url("http://127.0.0.1/motion/api/openchannel/accounts/7/notify").unwrap();
        assert_eq!(
            endpoint(&base, &["api", "attachments"]).as_str(),
            "http://127.0.0.1/motion/api/attachments"
        );
        // Whatever a segment holds, it stays one segment.
        assert_eq!(
            endpoint(&base, &["api", "../../users?x="]).as_str(),
            "http://127.0.0.1/motion/api/..%2F..%2Fusers%3Fx="
        );
    }

    #[test]
    fn attachment_ids_are_integers() {
        use serde_json::json;
        assert_eq!(AttachmentId::from_json(&json!(42)), Some(AttachmentId(42)));
        assert_eq!(
            AttachmentId::from_json(&json!("42")),
            Some(AttachmentId(42))
        );
        for bad in [
            json!("../../api/users?x="),
            json!("42/download"),
            json!(-1),
            json!(1.5),
            json!(""),
            json!(null),
            json!("99999999999999999999999"),
        ] {
            assert_eq!(AttachmentId::from_json(&bad), None, "{bad}");
        }
    }

    #[test]
    fn notify_field_names_are_motions() {
        let n = Notify {
            from: "1".into(),
            map_key: "facebook".into(),
            body: "hi".into(),
            first_name: Some("A".into()),
            last_name: None,
            thread_id: None,
            external_url: None,
            attachment_id: Some(AttachmentId(9)),
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"from":"1","mapKey":"facebook","body":"hi","firstName":"A","AttachmentId":9}"#
        );
    }
}
