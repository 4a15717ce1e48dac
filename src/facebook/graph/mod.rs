//! The Facebook Graph API calls we make, and what their errors mean.
//!
//! The Page access token always travels in the `Authorization: Bearer` header, never in a
//! URL that could end up in a log — except as `debug_token`'s `input_token`, which Meta
//! takes only as a parameter (the token check; captures mask it). [`classify`] is the one decision about whether a Graph
//! error is worth retrying (DESIGN §2, from
//! <https://developers.facebook.com/docs/graph-api/guides/error-handling> and the
//! Messenger Send API error list).

pub mod conversations;
mod errors;
mod instagram;
mod send;
mod shapes;

pub use errors::*;
pub use shapes::*;

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
        // A day at most, and no overflow of the minutes turned into seconds.
        for minutes in ["1440", "1441", "10000000", "18446744073709551615"] {
            let h = format!(r#"{{"1":[{{"estimated_time_to_regain_access":{minutes}}}]}}"#);
            assert_eq!(regain_access_after(&h), Some(LONGEST_REGAIN), "{minutes}");
        }
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
