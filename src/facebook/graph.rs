//! The Facebook Graph API calls we make, and what their errors mean.
//!
//! The Page access token always travels in the `Authorization: Bearer` header, never in a
//! URL that could end up in a log. [`classify`] is the one decision about whether a Graph
//! error is worth retrying (DESIGN §2, from
//! <https://developers.facebook.com/docs/graph-api/guides/error-handling> and the
//! Messenger Send API error list).

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use std::sync::Arc;

use url::Url;

use super::ids::{InstagramId, ObjectId, PageId, Sender, UserId};
use super::media::{self, MediaHosts};
use crate::config::Secret;
use crate::http_client;

/// What to do about a failed Graph call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A passing fault (5xx, network, 1200): try again after backoff.
    Retry,
    /// Facebook's "unknown error" / "service temporarily unavailable" (codes 1 and 2):
    /// worth a few tries, for minutes — not for days; then the agent is told.
    RetryBriefly,
    /// Rate limited (4, 17, 32, 613, 800xx): slow this page down, then try again.
    SlowDown,
    /// The Page token is invalid or expired (190): the page is unhealthy until an admin
    /// puts a new token in the config.
    TokenInvalid,
    /// One feature of the Page is throttled, usually for hours (368 "temporarily
    /// blocked from using this feature"; 10/1893063 "Page temporarily restricted from
    /// sending"): pause that feature, not the Page, and try again after.
    FeatureBlocked,
    /// The token lacks a permission (200–299, 230, 1/99): nothing works until an admin
    /// grants it; name the permission.
    MissingPermission,
    /// Trying again cannot help (10, 100, 551, 10900/10903, other 4xx).
    Permanent,
}

/// Classifies a Graph failure from its HTTP status and the error body's `code` /
/// `error_subcode`. Pure, so it is tested against a table of real error bodies.
pub fn classify(status: u16, code: Option<i64>, subcode: Option<i64>) -> Disposition {
    match (code, subcode) {
        (Some(1), Some(99)) => Disposition::MissingPermission,
        (Some(10), Some(1893063)) => Disposition::FeatureBlocked,
        _ => match code {
            Some(1200) => Disposition::Retry,
            Some(1 | 2) => Disposition::RetryBriefly,
            Some(4 | 17 | 32 | 613 | 80000..=80014) => Disposition::SlowDown,
            Some(190 | 102) => Disposition::TokenInvalid,
            Some(368) => Disposition::FeatureBlocked,
            // 200..=299 includes 230 (pages_messaging permission missing).
            Some(200..=299) => Disposition::MissingPermission,
            Some(10 | 100 | 551 | 10900..=10903) => Disposition::Permanent,
            _ => by_status(status),
        },
    }
}

fn by_status(status: u16) -> Disposition {
    match status {
        408 | 500..=599 => Disposition::Retry,
        429 => Disposition::SlowDown,
        _ => Disposition::Permanent,
    }
}

/// A failed Graph call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct GraphError {
    /// HTTP status, 0 when no answer came (network error).
    pub status: u16,
    pub code: Option<i64>,
    pub subcode: Option<i64>,
    pub message: String,
    pub fbtrace_id: Option<String>,
    pub disposition: Disposition,
    /// How long Facebook says to wait before calling again (rate limits).
    pub retry_after: Option<Duration>,
}

impl GraphError {
    pub fn network(message: String) -> Self {
        GraphError {
            status: 0,
            code: None,
            subcode: None,
            message,
            fbtrace_id: None,
            disposition: Disposition::Retry,
            retry_after: None,
        }
    }

    fn describe(&self) -> String {
        let mut text = if self.status == 0 {
            format!("Graph API unreachable: {}", self.message)
        } else {
            format!("Graph API answered {}", self.status)
        };
        if let Some(code) = self.code {
            text.push_str(&format!(" (code {code}"));
            if let Some(sub) = self.subcode {
                text.push_str(&format!(", subcode {sub}"));
            }
            text.push(')');
        }
        if self.status != 0 {
            text.push_str(&format!(": {}", self.message));
        }
        if let Some(hint) = self.hint() {
            text.push_str(&format!(" — {hint}"));
        }
        if let Some(trace) = &self.fbtrace_id {
            text.push_str(&format!(" [fbtrace_id {trace}]"));
        }
        text
    }

    /// What the error usually means, in words for an agent or admin.
    pub fn hint(&self) -> Option<&'static str> {
        match (self.code, self.subcode) {
            (Some(100), Some(33)) => {
                Some("the post or comment no longer exists (deleted?) or the token cannot see it")
            }
            (Some(10900..=10903), _) => Some(
                "this person cannot be answered here (blocked, or the post is closed to replies)",
            ),
            (Some(10), Some(2018278)) => Some("outside Messenger's reply window"),
            (Some(551), _) => Some("this person is not available on Messenger right now"),
            (Some(200..=299), _) => Some(
                "the Page token lacks a permission (pages_messaging for messages, pages_manage_engagement for comments)",
            ),
            (Some(368), _) | (Some(10), Some(1893063)) => Some(
                "Facebook temporarily blocks this Page from this feature (often for hours): it is paused and tried again later",
            ),
            (Some(1), Some(99)) => Some("the Page token lacks a permission for this call"),
            _ => None,
        }
    }

    /// Builds the error from a non-2xx answer.
    pub fn from_response(status: u16, body: &str, usage_header: Option<&str>) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Body,
        }
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            code: Option<i64>,
            #[serde(default)]
            error_subcode: Option<i64>,
            #[serde(default)]
            fbtrace_id: Option<String>,
        }
        let parsed = serde_json::from_str::<Envelope>(body).ok().map(|e| e.error);
        let (code, subcode, message, fbtrace_id) = match parsed {
            Some(b) => (
                b.code,
                b.error_subcode,
                b.message.unwrap_or_else(|| "(no message)".into()),
                b.fbtrace_id,
            ),
            None => (None, None, http_client::snippet(body), None),
        };
        GraphError {
            status,
            code,
            subcode,
            message,
            fbtrace_id,
            disposition: classify(status, code, subcode),
            retry_after: usage_header.and_then(regain_access_after),
        }
    }
}

/// The longest `estimated_time_to_regain_access` (minutes) in an
/// `X-Business-Use-Case-Usage` header, e.g.
/// `{"112":[{"type":"pages","call_count":100,"estimated_time_to_regain_access":5}]}`.
pub fn regain_access_after(header: &str) -> Option<Duration> {
    let value: Value = serde_json::from_str(header).ok()?;
    let minutes = value
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
}

/// Who a Send API message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A customer's page-scoped id.
    Psid(UserId),
    /// A private reply to a comment (once per comment, within 7 days).
    CommentId(ObjectId),
    /// A private reply to a visitor post (once per post, within 7 days).
    PostId(ObjectId),
}

impl Recipient {
    fn to_json(&self) -> Value {
        match self {
            Recipient::Psid(id) => serde_json::json!({ "id": id }),
            Recipient::CommentId(id) => serde_json::json!({ "comment_id": id }),
            Recipient::PostId(id) => serde_json::json!({ "post_id": id }),
        }
    }
}

/// `messaging_type` of a send: inside the 24-hour window, or tagged as a human agent's
/// answer (up to 7 days, only where the Page has that permission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingType {
    Response,
    HumanAgent,
}

impl MessagingType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessagingType::Response => "RESPONSE",
            MessagingType::HumanAgent => "MESSAGE_TAG",
        }
    }
}

/// The envelope of one Send API call.
#[derive(Debug, Clone)]
pub struct Send<'a> {
    pub recipient: Recipient,
    pub messaging_type: MessagingType,
    /// Echoed back by Facebook in the echo of this message: how we recognise our own.
    /// Instagram documents no `metadata`: its sends carry none.
    pub metadata: Option<&'a str>,
}

/// An app installed on a Page, as `GET /{page}/subscribed_apps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledApp {
    pub id: String,
    pub name: String,
    /// The webhook fields it receives for the Page.
    pub fields: Vec<String>,
}

/// A customer's name as Graph gives it: `first_name` and `last_name` for a Messenger
/// customer, a display `name` (may be unset) and `username` for an Instagram one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GraphProfile {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// A link Graph gave for an Instagram media item, when it is one: https, on
/// instagram.com (anything else is not passed on to agents).
pub fn instagram_link(link: &str) -> Option<String> {
    let url = Url::parse(link).ok()?;
    (url.scheme() == "https"
        && url
            .host_str()
            .is_some_and(|h| h == "instagram.com" || h.ends_with(".instagram.com")))
    .then(|| url.into())
}

/// What Graph tells of an @mention of an Instagram account.
#[derive(Debug, Clone, Default)]
pub struct Mentioned {
    /// The comment's text, or the caption.
    pub text: Option<String>,
    /// Who posted the media (caption mentions; Graph names no commenter).
    pub username: Option<String>,
    pub permalink: Option<String>,
}

/// The Send API's attachment types, read from a file's MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentType {
    Image,
    Video,
    Audio,
    File,
}

impl AttachmentType {
    pub fn of_mime(content_type: &str) -> AttachmentType {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.split_once('/').map(|(top, _)| top) {
            Some("image") => AttachmentType::Image,
            Some("video") => AttachmentType::Video,
            Some("audio") => AttachmentType::Audio,
            _ => AttachmentType::File,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentType::Image => "image",
            AttachmentType::Video => "video",
            AttachmentType::Audio => "audio",
            AttachmentType::File => "file",
        }
    }
}

pub use crate::files::Download;

/// Why a download did not work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    #[error("{0} (will retry)")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

pub struct GraphClient {
    pub(super) http: reqwest::Client,
    /// Records exchanges while `fb-openchannel capture` runs (the daemon's clients).
    capture: http_client::Tap,
    /// Fetches customers' files: Facebook's media hosts only (see [`media`]).
    media: reqwest::Client,
    media_hosts: Arc<MediaHosts>,
    /// `{graph_url}/{graph_version}`: every call's URL is this plus path segments.
    base: Url,
    /// `{graph_url}` alone: Instagram's token refresh is not versioned.
    root: Url,
}

/// Largest file we move (the Send API's own limit is 25 MB).
pub const MAX_FILE_BYTES: usize = 25 * 1024 * 1024;

impl GraphClient {
    pub fn new(
        graph_url: &str,
        graph_version: &str,
        timeout: Duration,
        media_hosts: MediaHosts,
        capture: http_client::Tap,
    ) -> Result<Self, String> {
        let root = Url::parse(graph_url).map_err(|e| format!("graph_url: {e}"))?;
        let mut base = root.clone();
        base.path_segments_mut()
            .map_err(|()| "graph_url cannot have a path".to_owned())?
            .pop_if_empty()
            .push(graph_version.trim_matches('/'));
        let media_hosts = Arc::new(media_hosts);
        Ok(Self {
            http: http_client::build(timeout, None)?,
            media: media::client(media_hosts.clone(), timeout)?,
            capture,
            media_hosts,
            base,
            root,
        })
    }

    /// The URL of a Graph call: the base and these path segments, each one segment
    /// whatever it holds (built by segments, never by formatting text).
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("the base was checked to take path segments")
            .extend(segments);
        url
    }

    /// `GET /{psid}?fields=first_name,last_name`. Without Advanced Access Facebook
    /// refuses this; the caller then uses a fallback name.
    pub async fn profile(&self, token: &Secret, psid: &UserId) -> Result<GraphProfile, GraphError> {
        self.fields_of(token, psid, "first_name,last_name").await
    }

    /// `GET /{psid}?fields=name`: asked when Facebook refuses first and last names.
    pub async fn profile_name(
        &self,
        token: &Secret,
        psid: &UserId,
    ) -> Result<GraphProfile, GraphError> {
        self.fields_of(token, psid, "name").await
    }

    /// `GET /{igsid}?fields=name,username`: Instagram's User Profile API, asked with the
    /// linked Page's token. Refused until the customer has written to the account.
    pub async fn instagram_profile(
        &self,
        token: &Secret,
        igsid: &UserId,
    ) -> Result<GraphProfile, GraphError> {
        self.fields_of(token, igsid, "name,username").await
    }

    /// `GET /{node}?fields=…`, read as JSON.
    async fn get_fields(
        &self,
        token: &Secret,
        node: &str,
        fields: &str,
    ) -> Result<Value, GraphError> {
        let request = self
            .http
            .get(self.url(&[node]))
            .query(&[("fields", fields)])
            .bearer_auth(token.expose());
        let text = self.call(request).await?;
        serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))
    }

    /// `GET /{id}?fields=…`, read as `T`.
    async fn fields_of<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        id: &UserId,
        fields: &str,
    ) -> Result<T, GraphError> {
        let request = self
            .http
            .get(self.url(&[id.as_str()]))
            .query(&[("fields", fields)])
            .bearer_auth(token.expose());
        let text = self.call(request).await?;
        serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))
    }

    /// Sends a text with the Send API (`POST /{page_id}/messages`); returns the
    /// `message_id` Facebook gave it.
    pub async fn send_text(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        text: &str,
    ) -> Result<String, GraphError> {
        self.send_message(token, sender, send, serde_json::json!({"text": text}))
            .await
    }

    /// `POST /{sender}/messages` with this `message` as JSON (and the send's metadata).
    async fn send_message(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        mut message: Value,
    ) -> Result<String, GraphError> {
        if let Some(metadata) = send.metadata {
            message["metadata"] = metadata.into();
        }
        let mut body = serde_json::json!({
            "recipient": send.recipient.to_json(),
            "messaging_type": send.messaging_type.as_str(),
            "message": message,
        });
        if let MessagingType::HumanAgent = send.messaging_type {
            body["tag"] = "HUMAN_AGENT".into();
        }
        let request = self
            .http
            .post(self.url(&[sender.as_segment(), "messages"]))
            .bearer_auth(token.expose())
            .json(&body);
        Self::message_id(&self.call(request).await?)
    }

    /// Sends a file with the Send API as multipart `filedata`; returns the `message_id`.
    pub async fn send_file(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        kind: AttachmentType,
        file: Download,
    ) -> Result<String, GraphError> {
        let message = serde_json::json!({
            "attachment": {"type": kind.as_str(), "payload": {"is_reusable": false}},
            "metadata": send.metadata,
        });
        let part = file_part(file)?;
        let mut form = reqwest::multipart::Form::new()
            .text("recipient", send.recipient.to_json().to_string())
            .text("messaging_type", send.messaging_type.as_str())
            .text("message", message.to_string())
            .part("filedata", part);
        if let MessagingType::HumanAgent = send.messaging_type {
            form = form.text("tag", "HUMAN_AGENT");
        }
        let request = self
            .http
            .post(self.url(&[sender.as_segment(), "messages"]))
            .bearer_auth(token.expose())
            .multipart(form);
        Self::message_id(&self.call(request).await?)
    }

    /// Sends a file Meta fetches from `url` (`message.attachment.payload.url`): how
    /// Instagram Login's Send API takes attachments. Returns the `message_id`.
    pub async fn send_file_url(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        kind: AttachmentType,
        url: &Url,
    ) -> Result<String, GraphError> {
        let message = serde_json::json!({
            "attachment": {"type": kind.as_str(), "payload": {"url": url.as_str()}},
        });
        self.send_message(token, sender, send, message).await
    }

    /// Comments on a post or comment (`POST /{object_id}/comments`), with an optional
    /// photo as multipart `source`; returns the new comment's id.
    pub async fn comment(
        &self,
        token: &Secret,
        object_id: &ObjectId,
        message: &str,
        photo: Option<Download>,
    ) -> Result<String, GraphError> {
        let url = self.url(&[object_id.as_str(), "comments"]);
        let request = match photo {
            None => self
                .http
                .post(url)
                .json(&serde_json::json!({ "message": message })),
            Some(file) => {
                let part = file_part(file)?;
                let mut form = reqwest::multipart::Form::new().part("source", part);
                if !message.is_empty() {
                    form = form.text("message", message.to_owned());
                }
                self.http.post(url).multipart(form)
            }
        };
        let text = self.call(request.bearer_auth(token.expose())).await?;
        Self::comment_id(&text)
    }

    /// Answers an Instagram comment in place (`POST /{ig-comment-id}/replies`, with the
    /// linked Page's token; needs instagram_manage_comments); returns the new comment's id.
    pub async fn reply_to_instagram_comment(
        &self,
        token: &Secret,
        comment_id: &ObjectId,
        message: &str,
    ) -> Result<String, GraphError> {
        let request = self
            .http
            .post(self.url(&[comment_id.as_str(), "replies"]))
            .json(&serde_json::json!({ "message": message }))
            .bearer_auth(token.expose());
        Self::comment_id(&self.call(request).await?)
    }

    /// `GET /me?fields=user_id,username` with an Instagram Login token (on
    /// graph.instagram.com): the professional account it belongs to, `(user_id,
    /// username)`. `user_id` is the id its webhooks carry (`id` is app-scoped).
    pub async fn instagram_me(&self, token: &Secret) -> Result<(String, String), GraphError> {
        let v = self.get_fields(token, "me", "user_id,username").await?;
        let id = match &v["user_id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(GraphError::from_response(200, &v.to_string(), None)),
        };
        Ok((id, v["username"].as_str().unwrap_or_default().to_owned()))
    }

    /// `GET /refresh_access_token?grant_type=ig_refresh_token&access_token=…` (on
    /// graph.instagram.com, unversioned): a long-lived Instagram Login token at least 24
    /// hours old becomes a new one valid 60 days; returns it and its lifetime. Never
    /// captured: both the request and the answer carry a token.
    pub async fn refresh_instagram_token(
        &self,
        token: &Secret,
    ) -> Result<(Secret, Duration), GraphError> {
        let mut url = self.root.clone();
        url.path_segments_mut()
            .expect("the base was checked to take path segments")
            .pop_if_empty()
            .push("refresh_access_token");
        let text = self
            .get_secretly(
                url,
                &[
                    ("grant_type", "ig_refresh_token"),
                    ("access_token", token.expose()),
                ],
            )
            .await?;
        #[derive(Deserialize)]
        struct Refreshed {
            access_token: String,
            expires_in: u64,
        }
        match serde_json::from_str::<Refreshed>(&text) {
            Ok(r) if !r.access_token.is_empty() => Ok((
                Secret::new(r.access_token),
                Duration::from_secs(r.expires_in),
            )),
            _ => {
                let mut e = GraphError::from_response(200, "", None);
                e.message =
                    "the token refresh answer has no access_token and expires_in".to_owned();
                e.disposition = Disposition::Retry;
                Err(e)
            }
        }
    }

    /// `GET /{ig-media-id}?fields=permalink`: the media's public page on Instagram, when
    /// Graph gives one that is one (https, on instagram.com).
    pub async fn instagram_permalink(
        &self,
        token: &Secret,
        media: &ObjectId,
    ) -> Result<Option<String>, GraphError> {
        let v = self.get_fields(token, media.as_str(), "permalink").await?;
        Ok(v["permalink"].as_str().and_then(instagram_link))
    }

    /// What an account's @mention says, read from Graph (`GET /{ig-user-id}?fields=
    /// mentioned_comment.comment_id(…){…}` or `mentioned_media.media_id(…){…}`): the
    /// webhook carries ids only.
    pub async fn instagram_mention(
        &self,
        token: &Secret,
        account: &InstagramId,
        media: &ObjectId,
        comment: Option<&ObjectId>,
    ) -> Result<Mentioned, GraphError> {
        // The ids are parsed ids (digits): nothing else can enter the field expression.
        let (edge, fields) = match comment {
            Some(c) => (
                "mentioned_comment",
                format!(
                    "mentioned_comment.comment_id({c}){{text,timestamp,media{{id,permalink}}}}"
                ),
            ),
            None => (
                "mentioned_media",
                // Only the edge's documented fields: one it does not have (permalink)
                // fails the whole call. The media's link is asked of the media itself.
                format!("mentioned_media.media_id({media}){{caption,username,media_type}}"),
            ),
        };
        let v = self.get_fields(token, account.as_str(), &fields).await?;
        let found = &v[edge];
        if !found.is_object() {
            return Err(GraphError::from_response(200, &v.to_string(), None));
        }
        let words = found["text"].as_str().or(found["caption"].as_str());
        let permalink = found["permalink"]
            .as_str()
            .or(found["media"]["permalink"].as_str())
            .and_then(instagram_link);
        Ok(Mentioned {
            text: words.map(str::to_owned),
            username: found["username"].as_str().map(str::to_owned),
            permalink,
        })
    }

    /// Answers an @mention (`POST /{ig-user-id}/mentions`: `media_id`, with `comment_id`
    /// for a mention in a comment, and `message`); returns the new comment's id.
    pub async fn reply_to_instagram_mention(
        &self,
        token: &Secret,
        account: &InstagramId,
        media: &ObjectId,
        comment: Option<&ObjectId>,
        message: &str,
    ) -> Result<String, GraphError> {
        let mut body = serde_json::json!({"media_id": media.as_str(), "message": message});
        if let Some(c) = comment {
            body["comment_id"] = c.as_str().into();
        }
        let request = self
            .http
            .post(self.url(&[account.as_str(), "mentions"]))
            .json(&body)
            .bearer_auth(token.expose());
        Self::comment_id(&self.call(request).await?)
    }

    /// The id of the comment a call created.
    fn comment_id(text: &str) -> Result<String, GraphError> {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
            .ok_or_else(|| {
                let mut e = GraphError::from_response(200, text, None);
                e.message = format!("comment answer has no id: {}", http_client::snippet(text));
                e.disposition = Disposition::Retry;
                e
            })
    }

    /// `GET /me?fields=id,name` with a Page token: which Page the token belongs to.
    pub async fn me(&self, token: &Secret) -> Result<(String, String), GraphError> {
        self.id_and_name(token, "me").await
    }

    /// `GET /{page}?fields=instagram_business_account`: the Instagram professional
    /// account linked to the Page, if any (what an `[[instagram]]` table's `page` must be).
    pub async fn linked_instagram(
        &self,
        token: &Secret,
        page_id: &PageId,
    ) -> Result<Option<String>, GraphError> {
        let v = self
            .get_fields(token, page_id.as_str(), "instagram_business_account")
            .await?;
        Ok(match v.pointer("/instagram_business_account/id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    }

    /// `GET /{node}?fields=id,name`: the node's `(id, name)`.
    async fn id_and_name(
        &self,
        token: &Secret,
        node: &str,
    ) -> Result<(String, String), GraphError> {
        let request = self
            .http
            .get(self.url(&[node]))
            .query(&[("fields", "id,name")])
            .bearer_auth(token.expose());
        let text = self.call(request).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))?;
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(GraphError::from_response(200, &text, None)),
        };
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Ok((id, name))
    }

    /// `GET /{page_id}/subscribed_apps`: **every** app installed on the Page, with the
    /// webhook fields each is subscribed to. A site that left Motion Cloud still has
    /// XCALLY's app here: only the entry of our own app says whether we get webhooks.
    pub async fn installed_apps(
        &self,
        token: &Secret,
        page_id: &PageId,
    ) -> Result<Vec<InstalledApp>, GraphError> {
        let request = self
            .http
            .get(self.url(&[page_id.as_str(), "subscribed_apps"]))
            .bearer_auth(token.expose());
        let text = self.call(request).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|app| InstalledApp {
                id: match app.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                },
                name: app
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                fields: app
                    .get("subscribed_fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
            })
            .collect())
    }

    /// `GET /{page}/thread_owner?recipient={psid}`: the app that owns a customer's
    /// conversation (Handover protocol / conversation routing).
    pub async fn thread_owner(
        &self,
        token: &Secret,
        page_id: &PageId,
        psid: &UserId,
    ) -> Result<String, GraphError> {
        let request = self
            .http
            .get(self.url(&[page_id.as_str(), "thread_owner"]))
            .query(&[("recipient", psid.as_str())])
            .bearer_auth(token.expose());
        let text = self.call(request).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))?;
        match v.pointer("/data/0/thread_owner/app_id") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(GraphError::from_response(200, &text, None)),
        }
    }

    /// `GET /app`: the app a token was issued for, `(id, name)` — how the daemon finds
    /// its own app when `facebook.app_id` is not set.
    pub async fn token_app(&self, token: &Secret) -> Result<(String, String), GraphError> {
        self.id_and_name(token, "app").await
    }

    /// `POST /{page_id}/subscribed_apps?subscribed_fields=…`: subscribes this app to the
    /// Page's webhooks.
    pub async fn subscribe(
        &self,
        token: &Secret,
        account: &impl Sender,
        fields: &[&str],
    ) -> Result<(), GraphError> {
        let request = self
            .http
            .post(self.url(&[account.as_segment(), "subscribed_apps"]))
            .query(&[("subscribed_fields", fields.join(","))])
            .bearer_auth(token.expose());
        let text = self.call(request).await?;
        // `{"success": true}`, or the string "true" as Meta's own samples show it.
        let success =
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| match v.get("success")? {
                    Value::Bool(b) => Some(*b),
                    Value::String(s) => Some(s == "true"),
                    _ => None,
                });
        match success {
            Some(true) => Ok(()),
            _ => Err(GraphError::from_response(200, &text, None)),
        }
    }

    /// `GET url?query` that is never captured (the query carries a token or the app
    /// secret): the body of a 2xx answer, else the classified error.
    pub(super) async fn get_secretly(
        &self,
        url: Url,
        query: &[(&str, &str)],
    ) -> Result<String, GraphError> {
        let response = self
            .http
            .get(url)
            .query(query)
            .send()
            .await
            .map_err(|e| GraphError::network(http_client::describe(e)))?;
        let status = response.status().as_u16();
        let text = http_client::text_within(response, http_client::GRAPH_ANSWER)
            .await
            .map_err(GraphError::network)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(GraphError::from_response(status, &text, None))
        }
    }

    /// Sends a request; the body of a 2xx answer, else the classified error. While a
    /// capture runs, the exchange is recorded (the token masked).
    pub(super) async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<String, GraphError> {
        let request = request
            .build()
            .map_err(|e| GraphError::network(http_client::describe(e)))?;
        let captured = self.capture.as_ref().and_then(|c| c.request(&request));
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| GraphError::network(http_client::describe(e)))?;
        let status = response.status().as_u16();
        let usage = response
            .headers()
            .get("x-business-use-case-usage")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = response.headers().clone();
        let text = http_client::text_within(response, http_client::GRAPH_ANSWER)
            .await
            .map_err(GraphError::network)?;
        if let (Some(capture), Some(request)) = (&self.capture, captured) {
            capture.answer("graph", request, status, &headers, text.as_bytes());
        }
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(GraphError::from_response(status, &text, usage.as_deref()))
        }
    }

    fn message_id(text: &str) -> Result<String, GraphError> {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("message_id")?.as_str().map(str::to_owned))
            .ok_or_else(|| {
                let mut e = GraphError::from_response(200, text, None);
                e.message = format!(
                    "Send API answer has no message_id: {}",
                    http_client::snippet(text)
                );
                e.disposition = Disposition::Retry;
                e
            })
    }

    /// Fetches an attachment Facebook linked in a webhook (its CDN URLs are signed and
    /// need no token), from Facebook's media hosts only. Files over [`MAX_FILE_BYTES`]
    /// and URLs elsewhere are refused for good.
    /// Fetches a file (at most 25 MB) from one of the platform's media hosts, holding
    /// room for it in `budget` before its bytes are read.
    pub async fn download(
        &self,
        url: &str,
        budget: &crate::budget::FileBudget,
    ) -> Result<Download, DownloadError> {
        let parsed = Url::parse(url)
            .map_err(|_| DownloadError::Permanent("the file's link is not a URL".into()))?;
        self.media_hosts
            .check(&parsed)
            .map_err(|why| DownloadError::Permanent(format!("the file was not fetched: {why}")))?;
        let mut response = self.media.get(parsed).send().await.map_err(|e| {
            if media::is_refusal(&e) {
                DownloadError::Permanent(format!(
                    "the file was not fetched: {}",
                    http_client::describe(e)
                ))
            } else {
                DownloadError::Transient(format!("download: {}", http_client::describe(e)))
            }
        })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let message = format!("Facebook's file server answered {status}");
            return Err(if status >= 500 || status == 408 || status == 429 {
                DownloadError::Transient(message)
            } else {
                DownloadError::Permanent(message)
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_FILE_BYTES as u64)
        {
            return Err(DownloadError::Permanent("file is larger than 25 MB".into()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let declared = response
            .content_length()
            .and_then(|n| usize::try_from(n).ok());
        let room = budget.hold(declared.unwrap_or(MAX_FILE_BYTES)).await;
        // A declared length is also the most that is read.
        let limit = declared.map_or(MAX_FILE_BYTES, |n| n.min(MAX_FILE_BYTES));
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(MAX_FILE_BYTES));
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            DownloadError::Transient(format!("download: {}", http_client::describe(e)))
        })? {
            if body.len() + chunk.len() > limit {
                return Err(if limit < MAX_FILE_BYTES {
                    DownloadError::Transient(format!(
                        "download: more bytes than the {limit} Facebook's file server declared"
                    ))
                } else {
                    DownloadError::Permanent("file is larger than 25 MB".into())
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Download {
            file_name: file_name_from_url(url, &content_type),
            content_type,
            bytes: Bytes::from(body),
            room: Some(room),
        })
    }
}

/// A readable file name for a downloaded attachment: the last path segment of its URL,
/// or `attachment.<ext>` from its MIME type.
pub fn file_name_from_url(url: &str, content_type: &str) -> String {
    let from_path = url::Url::parse(url).ok().and_then(|u| {
        let last = u.path_segments()?.next_back()?.to_owned();
        (!last.is_empty() && last.contains('.')).then_some(last)
    });
    from_path.unwrap_or_else(|| {
        let ext = match content_type.split(';').next().unwrap_or("").trim() {
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/gif" => "gif",
            "image/webp" => "webp",
            "video/mp4" => "mp4",
            "audio/mpeg" => "mp3",
            "audio/mp4" | "audio/aac" => "m4a",
            "application/pdf" => "pdf",
            _ => "bin",
        };
        format!("attachment.{ext}")
    })
}

/// A file for a multipart upload, with its name and type.
fn file_part(file: Download) -> Result<reqwest::multipart::Part, GraphError> {
    reqwest::multipart::Part::stream(file.bytes)
        .file_name(file.file_name)
        .mime_str(&file.content_type)
        .map_err(|e| GraphError::network(format!("bad MIME type: {}", http_client::describe(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_map_to_send_api_kinds() {
        assert_eq!(AttachmentType::of_mime("image/png"), AttachmentType::Image);
        assert_eq!(
            AttachmentType::of_mime("Image/JPEG; q=1"),
            AttachmentType::Image
        );
        assert_eq!(AttachmentType::of_mime("video/mp4"), AttachmentType::Video);
        assert_eq!(AttachmentType::of_mime("audio/mpeg"), AttachmentType::Audio);
        assert_eq!(
            AttachmentType::of_mime("application/pdf"),
            AttachmentType::File
        );
        assert_eq!(AttachmentType::of_mime(""), AttachmentType::File);
    }

    /// Real Graph error bodies (from Meta's docs and observed answers) and what they mean.
    #[test]
    fn classification_table() {
        let table: &[(u16, &str, Disposition)] = &[
            (
                500,
                r#"{"error":{"message":"An unknown error has occurred.","type":"OAuthException","code":1,"fbtrace_id":"A1"}}"#,
                Disposition::RetryBriefly,
            ),
            (
                503,
                r#"{"error":{"message":"Service temporarily unavailable","type":"OAuthException","code":2,"fbtrace_id":"A2"}}"#,
                Disposition::RetryBriefly,
            ),
            (
                500,
                r#"{"error":{"message":"Temporary send message failure. Please try again later","type":"OAuthException","code":1200,"fbtrace_id":"A3"}}"#,
                Disposition::Retry,
            ),
            (
                400,
                r#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4,"fbtrace_id":"B1"}}"#,
                Disposition::SlowDown,
            ),
            (
                400,
                r#"{"error":{"message":"(#17) User request limit reached","type":"OAuthException","code":17,"fbtrace_id":"B2"}}"#,
                Disposition::SlowDown,
            ),
            (
                400,
                r#"{"error":{"message":"(#32) Page request limit reached","type":"OAuthException","code":32,"fbtrace_id":"B3"}}"#,
                Disposition::SlowDown,
            ),
            (
                400,
                r#"{"error":{"message":"(#613) Calls to this api have exceeded the rate limit.","type":"OAuthException","code":613,"fbtrace_id":"B4"}}"#,
                Disposition::SlowDown,
            ),
            (
                400,
                r#"{"error":{"message":"(#80006) There have been too many messenger api calls to this Page account in a short period of time.","type":"OAuthException","code":80006,"fbtrace_id":"B5"}}"#,
                Disposition::SlowDown,
            ),
            (
                400,
                r#"{"error":{"message":"(#80001) There have been too many calls to this Page account.","type":"OAuthException","code":80001,"fbtrace_id":"B6"}}"#,
                Disposition::SlowDown,
            ),
            (
                401,
                r#"{"error":{"message":"Error validating access token: Session has expired on Friday, 21-Nov-25 10:00:00 PST.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"C1"}}"#,
                Disposition::TokenInvalid,
            ),
            (
                400,
                r#"{"error":{"message":"Invalid OAuth access token - Cannot parse access token","type":"OAuthException","code":190,"fbtrace_id":"C2"}}"#,
                Disposition::TokenInvalid,
            ),
            (
                400,
                r#"{"error":{"message":"(#10) This message is sent outside of allowed window.","type":"OAuthException","code":10,"error_subcode":2018278,"fbtrace_id":"D1"}}"#,
                Disposition::Permanent,
            ),
            (
                400,
                r#"{"error":{"message":"(#100) No matching user found","type":"OAuthException","code":100,"error_subcode":2018001,"fbtrace_id":"D2"}}"#,
                Disposition::Permanent,
            ),
            (
                403,
                r#"{"error":{"message":"(#200) This person isn't available right now.","type":"OAuthException","code":200,"fbtrace_id":"D3"}}"#,
                Disposition::MissingPermission,
            ),
            (
                400,
                r#"{"error":{"message":"(#230) Requires pages_messaging permission to manage the object","type":"OAuthException","code":230,"fbtrace_id":"D4"}}"#,
                Disposition::MissingPermission,
            ),
            (
                400,
                r#"{"error":{"message":"(#551) This person isn't available right now.","type":"OAuthException","code":551,"error_subcode":1545041,"fbtrace_id":"D5"}}"#,
                Disposition::Permanent,
            ),
            (
                400,
                r#"{"error":{"message":"(#10903) This user cant reply to this activity","type":"OAuthException","code":10903,"fbtrace_id":"D6"}}"#,
                Disposition::Permanent,
            ),
            (
                400,
                r#"{"error":{"message":"(#368) The action attempted has been deemed abusive or is otherwise disallowed","type":"OAuthException","code":368,"error_subcode":1390008,"fbtrace_id":"E1"}}"#,
                Disposition::FeatureBlocked,
            ),
            (
                400,
                r#"{"error":{"message":"(#368) You're Temporarily Blocked From Using This Feature","type":"OAuthException","code":368,"fbtrace_id":"E2"}}"#,
                Disposition::FeatureBlocked,
            ),
            (
                400,
                r#"{"error":{"message":"(#10) Page is temporarily restricted from sending messages","type":"OAuthException","code":10,"error_subcode":1893063,"fbtrace_id":"E3"}}"#,
                Disposition::FeatureBlocked,
            ),
            (
                400,
                r#"{"error":{"message":"An unknown error occurred","type":"OAuthException","code":1,"error_subcode":99,"fbtrace_id":"F1"}}"#,
                Disposition::MissingPermission,
            ),
            (502, "<html>Bad Gateway</html>", Disposition::Retry),
            (429, "", Disposition::SlowDown),
            (404, "not json", Disposition::Permanent),
        ];
        for (status, body, want) in table {
            let e = GraphError::from_response(*status, body, None);
            assert_eq!(e.disposition, *want, "{status} {body}");
        }
        let e = GraphError::from_response(401, table[9].1, None);
        assert_eq!((e.code, e.subcode), (Some(190), Some(463)));
        assert!(e.to_string().contains("code 190, subcode 463"), "{e}");
        assert!(e.to_string().contains("fbtrace_id C1"), "{e}");
    }

    #[test]
    fn usage_header_gives_the_wait() {
        let h = r#"{"112233":[{"type":"pages","call_count":100,"total_cputime":30,"total_time":40,"estimated_time_to_regain_access":7}]}"#;
        assert_eq!(regain_access_after(h), Some(Duration::from_secs(420)));
        assert_eq!(
            regain_access_after(r#"{"1":[{"estimated_time_to_regain_access":0}]}"#),
            None
        );
        assert_eq!(regain_access_after("garbage"), None);
    }

    #[test]
    fn file_names() {
        assert_eq!(
            file_name_from_url(
                "https://scontent.xx.fbcdn.net/v/t1/123_n.jpg?_nc=1&oh=2",
                "image/jpeg"
            ),
            "123_n.jpg"
        );
        assert_eq!(
            file_name_from_url("https://cdn.fbsbx.com/v/t59/", "video/mp4"),
            "attachment.mp4"
        );
        assert_eq!(
            file_name_from_url("IMAGE_URL", "image/png"),
            "attachment.png"
        );
    }
}
