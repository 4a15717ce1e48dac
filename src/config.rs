//! The one configuration file (`/etc/fb-openchannel/config.toml`).
//!
//! Loading is two steps: serde parses the TOML into plain structs (unknown keys are
//! errors, defaults are named functions), then [`Config::validate`] checks what serde
//! cannot (URLs, readable files, duplicate pages, placeholder secrets). Every error names
//! the file, the line and the key, and all of them are reported at once so a sysadmin
//! fixes the file in one pass. Secrets are [`Secret`]s: their `Debug`, `Display` and
//! `Serialize` print a mask, so `check-config` and logs can never leak them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;
use url::Url;

/// Default location of the config file; `$FB_OPENCHANNEL_CONFIG` or `--config` override it.
pub const DEFAULT_PATH: &str = "/etc/fb-openchannel/config.toml";

/// Values in the shipped example config that must be replaced before the daemon starts.
const PLACEHOLDER_PREFIX: &str = "CHANGE-ME";

/// A secret string (token, app secret, API key). Printing it in any way shows a mask.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the few places that must send it (HTTP headers, HMAC keys).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn is_placeholder(&self) -> bool {
        self.0.starts_with(PLACEHOLDER_PREFIX)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// The whole configuration file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Facebook-facing listener (webhooks).
    pub public: PublicConfig,
    /// Loopback listener: Motion's Reply URL, health and metrics.
    #[serde(default)]
    pub local: LocalConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    pub facebook: FacebookConfig,
    pub motion: MotionConfig,
    /// How hard and how wide deliveries are retried and run.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// One table per Facebook Page (one Openchannel account each).
    #[serde(rename = "page", default)]
    pub pages: Vec<PageConfig>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicConfig {
    #[serde(default = "default_public_listen")]
    pub listen: SocketAddr,
    /// The host name in Facebook's Callback URL (e.g. "fb.example.com"); `doctor`
    /// checks that the certificate covers it.
    #[serde(default)]
    pub name: Option<String>,
    /// `false` serves plain HTTP, for a TLS-terminating proxy (nginx) in front.
    #[serde(default = "default_true")]
    pub tls: bool,
    #[serde(default = "default_tls_cert")]
    pub tls_cert: Spanned<PathBuf>,
    #[serde(default = "default_tls_key")]
    pub tls_key: Spanned<PathBuf>,
    /// Largest webhook body accepted; Facebook's feed batches stay well under 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A client must send its headers and its whole body within this time, else 408.
    /// Facebook sends a webhook in one go; anything slower is a broken or hostile peer.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections beyond this wait to be accepted (protects memory and fds).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How often the certificate files are checked for a renewal (size, mtime).
    #[serde(default = "default_tls_watch_interval", with = "humantime_serde")]
    pub tls_watch_interval: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default = "default_local_listen")]
    pub listen: SocketAddr,
    /// How long a Reply URL call waits for the first Graph attempt before answering
    /// 202 (queued). Motion shows the agent the outcome of that first attempt.
    #[serde(default = "default_reply_wait", with = "humantime_serde")]
    pub reply_wait: Duration,
    /// `/readyz` turns not-ready when a pending item is older than this.
    #[serde(default = "default_ready_max_pending_age", with = "humantime_serde")]
    pub ready_max_pending_age: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            listen: default_local_listen(),
            reply_wait: default_reply_wait(),
            ready_max_pending_age: default_ready_max_pending_age(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "default_storage_path")]
    pub path: PathBuf,
    /// How long delivered and skipped items (and the webhook bodies and attempt history
    /// behind them) are kept before they are deleted. Failed and pending items stay
    /// until they are delivered or an operator drops them.
    #[serde(default = "default_keep", with = "humantime_serde")]
    pub keep: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: default_storage_path(),
            keep: default_keep(),
        }
    }
}

/// Shortest `storage.keep`: Facebook redelivers webhooks for up to 36 hours (found again
/// by their ids) and replies may go out up to 7 days after the customer's message.
pub const MIN_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

fn default_keep() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FacebookConfig {
    /// Key of the `X-Hub-Signature-256` HMAC (App Dashboard → Settings → Basic).
    pub app_secret: Spanned<Secret>,
    /// What you type into "Verify token" when adding the Callback URL.
    pub verify_token: Spanned<Secret>,
    #[serde(default = "default_graph_url")]
    pub graph_url: Spanned<String>,
    #[serde(default = "default_graph_version")]
    pub graph_version: String,
    /// How often the daemon checks each page's webhook subscription and re-subscribes
    /// it if Facebook dropped it; "0s" turns the check off.
    #[serde(default = "default_subscription_check", with = "humantime_serde")]
    pub subscription_check: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Motion user API key, for uploading and fetching attachments.
    pub api_key: Spanned<Secret>,
    /// Extra CA certificate (PEM) to trust for Motion's HTTPS, e.g. its self-signed one.
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// The Contact field that `from` is matched against.
    #[serde(default = "default_map_key")]
    pub map_key: String,
    /// Longest wait for one Motion call before it counts as failed and is retried.
    #[serde(default = "default_motion_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Conversations delivered in parallel (each conversation is always one at a time).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// First retry delay; doubles each attempt (plus up to 100 % jitter).
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Largest delay between two attempts (before jitter).
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// After failing this long an item is parked as failed for an operator to see.
    #[serde(default = "default_give_up_after", with = "humantime_serde")]
    pub give_up_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            give_up_after: default_give_up_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CommentReply {
    Public,
    Private,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    /// The numeric Facebook Page id, as a string.
    pub id: Spanned<String>,
    pub access_token: Spanned<Secret>,
    /// Motion's Receive URL for this Openchannel account (kept whole, query included;
    /// printed with its query values masked, since they are often tokens).
    #[serde(serialize_with = "serialize_url_redacted")]
    pub receive_url: Spanned<String>,
    /// The `token` Motion's Reply URL carries for this page.
    pub reply_token: Spanned<Secret>,
    #[serde(default = "default_true")]
    pub wall_posts: bool,
    #[serde(default = "default_comment_reply")]
    pub comment_reply: CommentReply,
    #[serde(default)]
    pub human_agent_tag: bool,
}

fn default_true() -> bool {
    true
}
fn default_public_listen() -> SocketAddr {
    "0.0.0.0:443".parse().expect("static address")
}
fn default_local_listen() -> SocketAddr {
    "127.0.0.1:8089".parse().expect("static address")
}
fn default_ready_max_pending_age() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_reply_wait() -> Duration {
    Duration::from_secs(10)
}
fn default_tls_cert() -> Spanned<PathBuf> {
    Spanned::new(0..0, "/etc/fb-openchannel/tls/fullchain.pem".into())
}
fn default_tls_key() -> Spanned<PathBuf> {
    Spanned::new(0..0, "/etc/fb-openchannel/tls/privkey.pem".into())
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_tls_watch_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    8192
}
fn default_storage_path() -> PathBuf {
    "/var/lib/fb-openchannel/state.db".into()
}
fn default_graph_url() -> Spanned<String> {
    Spanned::new(0..0, "https://graph.facebook.com".into())
}
fn default_graph_version() -> String {
    "v24.0".into()
}
fn default_subscription_check() -> Duration {
    Duration::from_secs(3600)
}
fn default_map_key() -> String {
    "facebook".into()
}
fn default_motion_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    32
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_comment_reply() -> CommentReply {
    CommentReply::Public
}

/// One problem in the config file: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (a default value).
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.key,
                self.message
            )
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// All the problems found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line,
                key: key_in_message(e.message()).unwrap_or_else(|| "(syntax)".into()),
                message: e.message().trim().to_owned(),
            }])
        })?;
        let errors = config.validate(path, text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// What serde cannot check. Returns every problem found.
    fn validate(&self, path: &Path, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, key: &str, message: String| {
            let line = if span == (0..0) {
                0
            } else {
                line_of(text, span.start)
            };
            errors.push(ConfigError {
                file: path.to_owned(),
                line,
                key: key.to_owned(),
                message,
            });
        };

        if self.public.tls {
            for (key, file) in [
                ("public.tls_cert", &self.public.tls_cert),
                ("public.tls_key", &self.public.tls_key),
            ] {
                if let Err(e) = std::fs::File::open(file.get_ref()) {
                    err(
                        file.span(),
                        key,
                        format!(
                            "cannot read {}: {e} (put the PEM file there, or set `tls = false` behind a TLS proxy)",
                            file.get_ref().display()
                        ),
                    );
                }
            }
        }
        if self.public.max_body_bytes == 0 {
            err(
                0..0,
                "public.max_body_bytes",
                "must be greater than 0".into(),
            );
        }
        if self.public.max_connections == 0 {
            err(
                0..0,
                "public.max_connections",
                "must be greater than 0".into(),
            );
        }
        if self.storage.keep < MIN_KEEP {
            err(
                0..0,
                "storage.keep",
                format!(
                    "must be at least 7d (is {}): Facebook redelivers webhooks for up to 36 hours and agents may answer for 7 days; delivered items are how the daemon recognises both",
                    humantime::format_duration(self.storage.keep)
                ),
            );
        }
        if self.delivery.concurrency == 0 {
            err(
                0..0,
                "delivery.concurrency",
                "must be greater than 0".into(),
            );
        }
        if self.delivery.retry_initial.is_zero()
            || self.delivery.retry_max < self.delivery.retry_initial
        {
            err(
                0..0,
                "delivery.retry_max",
                "retry_initial must be above 0 and retry_max at least retry_initial".into(),
            );
        }

        for (key, secret) in [
            ("facebook.app_secret", &self.facebook.app_secret),
            ("facebook.verify_token", &self.facebook.verify_token),
            ("motion.api_key", &self.motion.api_key),
        ] {
            check_secret(&mut err, key, secret);
        }
        if let Err(m) = check_http_url(self.facebook.graph_url.get_ref()) {
            err(self.facebook.graph_url.span(), "facebook.graph_url", m);
        }
        if let Some(ca) = &self.motion.ca_file
            && let Err(e) = std::fs::read(ca.get_ref())
        {
            err(
                ca.span(),
                "motion.ca_file",
                format!("cannot read {}: {e}", ca.get_ref().display()),
            );
        }

        if self.pages.is_empty() {
            err(
                0..0,
                "page",
                "no [[page]] table: add one per Facebook Page (id, access_token, receive_url, reply_token)"
                    .into(),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for page in &self.pages {
            let id = page.id.get_ref().as_str();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                err(
                    page.id.span(),
                    "page.id",
                    format!("{id:?} is not a Facebook Page id (digits only, e.g. \"1234567890\")"),
                );
            }
            if seen.contains(&id) {
                err(
                    page.id.span(),
                    "page.id",
                    format!("page {id} is configured twice"),
                );
            }
            seen.push(id);
            check_secret(&mut err, "page.access_token", &page.access_token);
            check_secret(&mut err, "page.reply_token", &page.reply_token);
            if let Err(m) = check_http_url(page.receive_url.get_ref()) {
                err(page.receive_url.span(), "page.receive_url", m);
            }
        }
        errors
    }

    pub fn page(&self, id: &str) -> Option<&PageConfig> {
        self.pages.iter().find(|p| p.id.get_ref() == id)
    }

    /// The effective config as TOML, secrets masked (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

fn check_secret(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    key: &str,
    secret: &Spanned<Secret>,
) {
    if secret.get_ref().expose().is_empty() {
        err(secret.span(), key, "must not be empty".into());
    } else if secret.get_ref().is_placeholder() {
        err(
            secret.span(),
            key,
            "still the placeholder from the example config: put the real value here".into(),
        );
    }
}

/// An absolute `http://` or `https://` URL with a host.
fn check_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{raw:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

fn serialize_url_redacted<S: Serializer>(url: &Spanned<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.get_ref()))
}

/// `url` with every query value replaced by a mask: Receive URLs carry `?token=…` or
/// `?apikey=…`, and such a URL must be printable in logs and config dumps.
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_owned(),
        Some((base, query)) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) => format!("{k}=********"),
                    None => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", masked.join("&"))
        }
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key named in a serde message such as "unknown field `foo`, expected …".
fn key_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    let key = &message[start..start + len];
    // TOML allows an empty quoted key (`"" = 1`): name it the way it is written.
    Some(if key.is_empty() {
        "\"\"".to_owned()
    } else {
        key.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(extra: &str) -> String {
        format!(
            r#"
[public]
tls = false
[facebook]
app_secret = "s3cret"
verify_token = "vt"
[motion]
api_key = "key"
{extra}
[[page]]
id = "123"
access_token = "tok"
receive_url = "http://127.0.0.1:9/api/openchannel/accounts/1/notify?token=abc"
reply_token = "rt"
"#
        )
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        Config::from_toml(Path::new("c.toml"), text).unwrap_err().0
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(Path::new("c.toml"), &minimal("")).unwrap();
        assert_eq!(c.local.listen.to_string(), "127.0.0.1:8089");
        assert_eq!(c.facebook.graph_version, "v24.0");
        assert_eq!(c.motion.map_key, "facebook");
        assert!(c.pages[0].wall_posts);
        assert_eq!(c.pages[0].comment_reply, CommentReply::Public);
        assert!(!c.pages[0].human_agent_tag);
        assert_eq!(c.public.max_body_bytes, 1 << 20);
        assert_eq!(c.storage.keep, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn keeping_delivered_items_under_a_week_is_refused() {
        let e = errors(&minimal("[storage]\nkeep = \"2d\""));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "storage.keep");
        assert!(e[0].message.contains("at least 7d (is 2days)"), "{}", e[0]);
        let ok = minimal("[storage]\nkeep = \"90d\"");
        let c = Config::from_toml(Path::new("c.toml"), &ok).unwrap();
        assert_eq!(c.storage.keep, Duration::from_secs(90 * 86400));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = errors(&minimal("colour = \"blue\""));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "colour");
        assert_eq!(e[0].line, 9);
        assert!(
            e[0].to_string().starts_with("c.toml:9: colour:"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn an_empty_key_is_named_as_written() {
        let e = errors("\"\"=0");
        assert_eq!(e[0].key, "\"\"");
        assert!(
            e[0].to_string()
                .starts_with("c.toml:1: \"\": unknown field"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn missing_required_key_is_named() {
        let text = minimal("").replace("app_secret = \"s3cret\"\n", "");
        let e = errors(&text);
        assert_eq!(e[0].key, "app_secret", "{}", e[0]);
    }

    #[test]
    fn bad_url_duplicate_page_and_placeholder_are_all_reported() {
        let mut text = minimal("").replace("http://127.0.0.1:9/api", "ftp://x/api");
        text.push_str(
            "[[page]]\nid = \"123\"\naccess_token = \"CHANGE-ME\"\nreceive_url = \"http://m/notify\"\nreply_token = \"r\"\n",
        );
        let e = errors(&text);
        let keys: Vec<_> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(keys.contains(&("page.receive_url", 13)), "{keys:?}");
        assert!(keys.contains(&("page.id", 16)), "{keys:?}");
        assert!(keys.contains(&("page.access_token", 17)), "{keys:?}");
    }

    #[test]
    fn unreadable_cert_file_is_an_error() {
        let text = minimal("").replace(
            "tls = false",
            "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"",
        );
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].key, "public.tls_cert");
        assert_eq!(e[0].line, 3);
    }

    #[test]
    fn redacted_dump_hides_every_secret() {
        let c = Config::from_toml(Path::new("c.toml"), &minimal("")).unwrap();
        let dump = c.to_redacted_toml();
        for secret in ["s3cret", "\"vt\"", "\"key\"", "\"tok\"", "\"rt\"", "abc"] {
            assert!(!dump.contains(secret), "{secret} leaked in:\n{dump}");
        }
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(dump.contains("********"));
    }
}
