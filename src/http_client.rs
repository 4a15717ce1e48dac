//! Outgoing HTTP: one place that builds reqwest clients and turns their errors into text
//! that is safe to log.

use std::path::Path;
use std::time::Duration;

/// What records a client's exchanges while asked to: the capture, built above the
/// clients and handed to them. A client knows only this seam, never the capture itself.
pub trait Recorder: Send + Sync {
    /// Whether exchanges are recorded now.
    fn recording(&self) -> bool;
    /// The request as it will be recorded, when exchanges are recorded now; called
    /// before the request is sent (its body is gone after).
    fn request(&self, request: &reqwest::Request) -> Option<serde_json::Value>;
    /// Records the exchange that `request` (from [`Recorder::request`]) began, with
    /// the answer's status, headers and body.
    fn answer(
        &self,
        kind: &'static str,
        request: serde_json::Value,
        status: u16,
        headers: &http::HeaderMap,
        body: &[u8],
    );
}

/// A client's recorder, when it has one (the daemon's clients do, the CLI's do not).
pub type Tap = Option<std::sync::Arc<dyn Recorder>>;

/// `User-Agent` of every outgoing call, so Motion's and Facebook's logs show who called.
pub const USER_AGENT: &str = concat!("fb-openchannel/", env!("CARGO_PKG_VERSION"));

/// Makes sure rustls has its process-wide crypto provider (ring) before any TLS use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client trusting the system roots, plus `extra_ca` (PEM) when given. It follows no
/// redirect: neither Graph nor Motion's API redirects, and a redirect must not carry a
/// token or API key anywhere else.
pub fn build(timeout: Duration, extra_ca: Option<&Path>) -> Result<reqwest::Client, String> {
    builder(timeout, extra_ca)?
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(describe)
}

/// The common settings of every client, to be finished by the caller.
pub fn builder(
    timeout: Duration,
    extra_ca: Option<&Path>,
) -> Result<reqwest::ClientBuilder, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = extra_ca {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "{} is not a PEM certificate bundle: {}",
                path.display(),
                describe(e)
            )
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

/// The error and its causes on one line, without the URL (URLs may carry tokens).
pub fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = kind.to_owned();
    push_causes(&mut text, std::error::Error::source(&error));
    text
}

/// Appends `": cause"` for `source` and each cause behind it.
pub fn push_causes(text: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
}

/// Most of an answer from Motion that is read: its answers are a few hundred bytes
/// (an attachment's id, its metadata, an error).
pub const MOTION_ANSWER: usize = 64 * 1024;
/// Most of an answer from Graph that is read: a page of conversations with their messages
/// is the largest the daemon asks for.
pub const GRAPH_ANSWER: usize = 4 * 1024 * 1024;

/// A peer's answer, read up to `max` bytes (DESIGN §4 rule 15: an authenticated peer is
/// bounded too — Motion answering 40 notifies with 50 MB each took the daemon to
/// 1.3 GiB). Past `max` the rest is not read (the connection is dropped) and the error
/// says so; text that is not UTF-8 is read lossily.
pub async fn text_within(mut response: reqwest::Response, max: usize) -> Result<String, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!(
            "an answer of {} bytes, over the {max} read from this peer",
            response.content_length().unwrap_or(0)
        ));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if bytes.len() + chunk.len() > max {
            return Err(over_bound(max));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(lossy_text(bytes))
}

/// What is said of an answer longer than the `max` bytes read from a peer.
pub fn over_bound(max: usize) -> String {
    format!("an answer over the {max} bytes read from this peer")
}

/// A peer's answer as text, bytes that are not UTF-8 replaced (copied only then).
pub fn lossy_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The start of a peer's answer, for an error message.
pub fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!("{}{more}", &text[..end])
}
