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

/// The name on Meta's webhook client certificate (Graph API → Webhooks → Getting
/// started → "mTLS for webhooks").
pub const META_CLIENT_NAME: &str = "client.webhooks.fbclientcerts.com";

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
    /// One table per Instagram professional account (one Openchannel account each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instagram: Vec<InstagramConfig>,
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
    /// Where Meta reaches this listener, when not `https://{name}` (a port mapped on a
    /// router, a proxy path): the base of the links of agents' files sent to Instagram
    /// Login accounts.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Only clients with a certificate from this CA (PEM) may connect: Meta's webhook
    /// client certificate ("mTLS for webhooks"). The signature check stays on.
    #[serde(default)]
    pub client_ca: Option<Spanned<PathBuf>>,
    /// The name that certificate must carry (with `client_ca`); default Meta's,
    /// `client.webhooks.fbclientcerts.com`.
    #[serde(default)]
    pub client_name: Option<Spanned<String>>,
    /// With `client_ca`: `require` (a webhook without Meta's certificate gets 403) or
    /// `report` (every webhook is taken, and whether Meta's certificate came is counted).
    #[serde(default)]
    pub client_cert: Option<Spanned<ClientCertMode>>,
    /// `false` serves plain HTTP, for a TLS-terminating proxy (nginx) in front.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// The certificate from an ACME CA (Let's Encrypt by default), obtained and renewed
    /// by the daemon itself on this listener; instead of `tls_cert` / `tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<Spanned<AcmeConfig>>,
    #[serde(default = "default_tls_cert")]
    pub tls_cert: Spanned<PathBuf>,
    #[serde(default = "default_tls_key")]
    pub tls_key: Spanned<PathBuf>,
    /// Largest webhook body accepted. It must hold the largest body Meta sends, or a
    /// refused batch is retried until Facebook gives up on it: a feed POST carries up to
    /// 1,000 changes, a comment up to 8,000 characters, each of which may arrive escaped
    /// as `\uXXXX` (6 bytes): ~49 MB at worst. Memory is bounded by `body_memory`, not
    /// by this.
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
    /// Connections whose client has spoken (TLS and HTTP state) at once; when all are
    /// taken, the one active the longest (over a second) is closed for a newcomer.
    #[serde(default = "default_max_active_connections")]
    pub max_active_connections: usize,
    /// Memory for webhook bodies whose signature is not checked yet, across every
    /// connection; beyond it bodies are spooled to disk.
    #[serde(default = "default_body_memory")]
    pub body_memory: usize,
    /// Disk (in the state directory) for such bodies once `body_memory` is taken;
    /// beyond both, webhooks get 503. 0 turns spooling off.
    #[serde(default = "default_body_spool")]
    pub body_spool: usize,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "default_storage_path")]
    pub path: PathBuf,
    /// How long delivered and skipped items (and the webhook bodies and attempt history
    /// behind them) are kept before they are deleted. Failed and pending items stay
    /// until they are delivered or an operator drops them.
    #[serde(default = "default_keep", with = "humantime_serde")]
    pub keep: Duration,
    /// Where the queue lives: `sqlite` (the file at `path`, one host) or `postgres` (the
    /// database at `url`, shared by every daemon of the site).
    #[serde(default)]
    pub backend: Backend,
    /// The PostgreSQL database (`postgres://user:password@host:port/database`), with
    /// `backend = "postgres"`. Masked wherever the config is shown.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file holding the PostgreSQL password (instead of one in `url`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// With PostgreSQL: how long a node's hold on a conversation it is delivering lasts
    /// unless renewed — how long the other node waits before it takes over the
    /// conversations of a node that died.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// With `sslmode=require` in `url`: the CA (PEM) the server's certificate must chain
    /// to; without it, the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

/// Where the queue lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

impl StorageConfig {
    /// Whether the queue is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: default_storage_path(),
            keep: default_keep(),
            backend: Backend::Sqlite,
            url: None,
            password_file: None,
            lease: default_lease(),
            ca_file: None,
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
    /// Our app's id (App Dashboard → App ID): the subscription checks look at this app's
    /// entry only. When absent, the app the Page tokens were issued for.
    #[serde(default)]
    pub app_id: Option<Spanned<String>>,
    /// Key of the `X-Hub-Signature-256` HMAC (App Dashboard → Settings → Basic).
    pub app_secret: Spanned<Secret>,
    /// The Instagram app's own secret (App Dashboard → Instagram → API setup with
    /// Instagram login → App secret): webhooks of Instagram Login accounts may be signed
    /// with it. A webhook signed with either secret is taken.
    #[serde(default)]
    pub instagram_app_secret: Option<Spanned<Secret>>,
    /// The configuration of Facebook Login for Business that `setup`'s login link uses
    /// (App Dashboard → Facebook Login for Business → Configurations): Business apps log
    /// in by configuration, not by a list of permissions.
    #[serde(default)]
    pub login_config_id: Option<String>,
    /// What you type into "Verify token" when adding the Callback URL.
    pub verify_token: Spanned<Secret>,
    #[serde(default = "default_graph_url")]
    pub graph_url: Spanned<String>,
    #[serde(default = "default_graph_version")]
    pub graph_version: String,
    /// Instagram API with Instagram Login's host (accounts with their own
    /// `access_token`): Send API, comment answers, profiles and token refreshes.
    #[serde(default = "default_instagram_graph_url")]
    pub instagram_graph_url: Spanned<String>,
    /// Where Facebook Login's dialog is (`setup`'s login link).
    #[serde(default = "default_dialog_url")]
    pub dialog_url: Spanned<String>,
    /// How often the daemon checks each page's webhook subscription and re-subscribes
    /// it if Facebook dropped it; "0s" turns the check off.
    #[serde(default = "default_subscription_check", with = "humantime_serde")]
    pub subscription_check: Duration,
    /// How long Graph's "unknown error" answers (codes 1 and 2) are retried before the
    /// reply is given up and the agent told.
    #[serde(default = "default_unknown_error_retry", with = "humantime_serde")]
    pub unknown_error_retry: Duration,
    /// How long a feature Facebook throttles (code 368, 10/1893063) first pauses; it
    /// doubles while the throttle lasts, up to 16 times this.
    #[serde(default = "default_block_pause", with = "humantime_serde")]
    pub block_pause: Duration,
    /// Where customers' files may be downloaded from: domains (with their subdomains,
    /// https only) or addresses written out. Names never reach private addresses.
    #[serde(default = "default_media_hosts")]
    pub media_hosts: Spanned<Vec<String>>,
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
pub enum Standby {
    Forward,
    Ignore,
}

/// Whether something the customer did not write (a reply the Page sent from another
/// tool, a reaction) reaches the interaction as a note, or is only recorded.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Notes {
    #[default]
    Note,
    Ignore,
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
    /// What happens to customer messages that come as `standby` events (another app
    /// owns the conversation): forwarded to Motion (the default), or only recorded.
    #[serde(default = "default_standby")]
    pub standby: Standby,
    /// Least time between two comments the daemon posts on this Page: bursts of
    /// comments are what makes Facebook throttle them (code 368). 0 turns it off.
    #[serde(default = "default_comment_interval", with = "humantime_serde")]
    pub comment_interval: Duration,
    /// The Contact field of this Openchannel account that holds the customer's id
    /// (notify `mapKey`, and where a reply names its customer); default `[motion] map_key`.
    #[serde(default)]
    pub map_key: Option<String>,
    /// Messages the Page sent to a customer from another tool (Meta Business Suite, the
    /// Pages app): a note in the customer's interaction, or only recorded.
    #[serde(default)]
    pub outside_replies: Notes,
    /// The customer's reactions to messages: a note quoting the message, or only recorded.
    #[serde(default)]
    pub reactions: Notes,
    /// Reactions to the Page's posts and comments on the wall: notes in the post's
    /// thread, or (the default) only recorded — on a busy Page they are noise.
    #[serde(default)]
    pub wall_reactions: bool,
}

impl PageConfig {
    /// This account's map key: its own, else `[motion] map_key`.
    pub fn map_key<'a>(&'a self, motion: &'a MotionConfig) -> &'a str {
        self.map_key.as_deref().unwrap_or(&motion.map_key)
    }

    /// The page id as Graph calls take it (checked when the config was loaded).
    pub fn page_id(&self) -> crate::ids::PageId {
        crate::ids::PageId::parse(self.id.get_ref())
            .expect("page ids are validated when the config is loaded")
    }
}

/// An Instagram professional account: its direct messages (and, with `comments`, the
/// comments and mentions on its media) go to its own Openchannel account in Motion.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstagramConfig {
    /// The professional account's id: `entry.id` of its webhooks (17841…).
    pub id: Spanned<String>,
    /// Instagram API with Facebook Login: the linked Page (a `[[page]]` of this file),
    /// whose Page access token the account's calls use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Spanned<String>>,
    /// Instagram API with Instagram Login: the account's own token (instead of `page`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Spanned<Secret>>,
    /// Motion's Receive URL for this Openchannel account.
    #[serde(serialize_with = "serialize_url_redacted")]
    pub receive_url: Spanned<String>,
    /// The `token` Motion's Reply URL carries for this account.
    pub reply_token: Spanned<Secret>,
    /// The Contact field that holds the customer's id; default `[motion] map_key`.
    #[serde(default)]
    pub map_key: Option<String>,
    /// Comments and mentions on the account's media.
    #[serde(default = "default_true")]
    pub comments: bool,
    #[serde(default = "default_comment_reply")]
    pub comment_reply: CommentReply,
    #[serde(default)]
    pub human_agent_tag: bool,
    /// As a page's: messages the account sent from the Instagram app, and reactions.
    #[serde(default)]
    pub outside_replies: Notes,
    #[serde(default)]
    pub reactions: Notes,
}

/// Where an Instagram account's token comes from.
#[derive(Debug, Clone, Copy)]
pub enum InstagramLogin<'a> {
    /// Instagram API with Facebook Login: the linked Page's token, on graph.facebook.com.
    Facebook { page: &'a PageConfig },
    /// Instagram API with Instagram Login: the account's own token, on graph.instagram.com.
    Instagram { token: &'a Secret },
}

impl InstagramConfig {
    /// This account's map key: its own, else `[motion] map_key`.
    pub fn map_key<'a>(&'a self, motion: &'a MotionConfig) -> &'a str {
        self.map_key.as_deref().unwrap_or(&motion.map_key)
    }
}

fn default_true() -> bool {
    true
}
/// `[public] acme = { … }`: which names the certificate covers and where it comes from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The names the certificate covers (the Callback URL's host among them); each must
    /// resolve to this host, port 443, for the CA's TLS-ALPN-01 check.
    pub domains: Vec<String>,
    /// Given to the CA with the account (Let's Encrypt no longer mails expiry notices,
    /// but may write about the account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The CA's ACME directory.
    #[serde(default = "default_acme_directory")]
    pub directory: String,
    /// A CA certificate (PEM) to trust for the directory's HTTPS besides the system's:
    /// a private ACME server (step-ca, a test pebble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_ca: Option<PathBuf>,
}

/// Let's Encrypt's production directory (RFC 8555 §7.1.1).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

fn default_acme_directory() -> String {
    LETS_ENCRYPT.into()
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
    64 * 1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_tls_watch_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_active_connections() -> usize {
    512
}
fn default_body_memory() -> usize {
    32 * 1024 * 1024
}
fn default_body_spool() -> usize {
    1024 * 1024 * 1024
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
fn default_dialog_url() -> Spanned<String> {
    Spanned::new(0..0, "https://www.facebook.com".into())
}
fn default_instagram_graph_url() -> Spanned<String> {
    Spanned::new(0..0, "https://graph.instagram.com".into())
}
fn default_graph_version() -> String {
    "v24.0".into()
}
fn default_subscription_check() -> Duration {
    Duration::from_secs(3600)
}
fn default_unknown_error_retry() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_block_pause() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_comment_interval() -> Duration {
    Duration::from_secs(3)
}
fn default_media_hosts() -> Spanned<Vec<String>> {
    Spanned::new(
        0..0,
        crate::hosts::DEFAULT_MEDIA_HOSTS
            .iter()
            .map(|h| h.to_string())
            .collect(),
    )
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
fn default_standby() -> Standby {
    Standby::Forward
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
    /// Every secret value of the config (tokens, keys, and the query values of Receive
    /// URLs, which may carry one), longest first so that masking one that contains
    /// another hides it whole; values under 4 characters are left (they would mask
    /// ordinary text).
    pub fn secret_values(&self) -> Vec<String> {
        let mut secrets: Vec<String> = vec![
            self.facebook.app_secret.get_ref().expose().to_owned(),
            self.facebook.verify_token.get_ref().expose().to_owned(),
            self.motion.api_key.get_ref().expose().to_owned(),
        ];
        if let Some(secret) = &self.facebook.instagram_app_secret {
            secrets.push(secret.get_ref().expose().to_owned());
        }
        if let Some(url) = &self.storage.url {
            secrets.push(url.expose().to_owned());
            if let Ok(url) = url::Url::parse(url.expose())
                && let Some(password) = url.password()
            {
                secrets.push(password.to_owned());
            }
        }
        for page in &self.pages {
            secrets.push(page.access_token.get_ref().expose().to_owned());
            secrets.push(page.reply_token.get_ref().expose().to_owned());
            if let Ok(url) = url::Url::parse(page.receive_url.get_ref()) {
                secrets.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
            }
        }
        for account in &self.instagram {
            secrets.push(account.reply_token.get_ref().expose().to_owned());
            if let Some(token) = &account.access_token {
                secrets.push(token.get_ref().expose().to_owned());
            }
            if let Ok(url) = url::Url::parse(account.receive_url.get_ref()) {
                secrets.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
            }
        }
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }

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
                key: key_in_message(e.message())
                    .or_else(|| e.span().and_then(|span| key_at(text, span.start)))
                    .unwrap_or_else(|| "(syntax)".into()),
                message: without_values(e.message()),
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

        if let Some(acme) = &self.public.acme {
            for m in acme_problems(&self.public, acme.get_ref()) {
                err(acme.span(), "public.acme", m);
            }
        } else if self.public.tls {
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
                key_span(text, "public.max_body_bytes"),
                "public.max_body_bytes",
                "must be greater than 0".into(),
            );
        }
        if self.public.body_memory < 1024 * 1024 {
            err(
                key_span(text, "public.body_memory"),
                "public.body_memory",
                "must be at least 1048576 (1 MiB): webhooks are read in this memory while their signature is checked".into(),
            );
        }
        if self.public.max_active_connections == 0 {
            err(
                key_span(text, "public.max_active_connections"),
                "public.max_active_connections",
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
        for (key, value, range) in self.durations() {
            if let Err(m) = range.check(value) {
                err(key_span(text, key), key, m);
            }
        }
        match (self.storage.backend, &self.storage.url) {
            (Backend::Postgres, None) => err(
                key_span(text, "storage.backend"),
                "storage.backend",
                "\"postgres\" needs storage.url = \"postgres://user@host/database\"".into(),
            ),
            (Backend::Postgres, Some(_)) => {
                let checked = self.storage.postgres().and_then(|c| {
                    // With sslmode=require the server is checked against storage.ca_file:
                    // it must be there to be read.
                    match (&c.get_ssl_mode(), &self.storage.ca_file) {
                        (postgres::config::SslMode::Require, Some(file)) => {
                            std::fs::read(file).map(drop).map_err(|e| {
                                format!("cannot read storage.ca_file {}: {e}", file.display())
                            })
                        }
                        _ => Ok(()),
                    }
                });
                if let Err(m) = checked {
                    err(key_span(text, "storage.url"), "storage.url", m);
                }
            }
            (Backend::Sqlite, Some(_)) => err(
                key_span(text, "storage.url"),
                "storage.url",
                "is for backend = \"postgres\"; the queue is the SQLite file at storage.path"
                    .into(),
            ),
            (Backend::Sqlite, None) => {}
        }
        if self.delivery.concurrency == 0 {
            err(
                0..0,
                "delivery.concurrency",
                "must be greater than 0".into(),
            );
        }
        if self.delivery.retry_max < self.delivery.retry_initial {
            err(
                key_span(text, "delivery.retry_max"),
                "delivery.retry_max",
                format!(
                    "must be at least delivery.retry_initial ({})",
                    humantime::format_duration(self.delivery.retry_initial)
                ),
            );
        }

        for (key, secret) in [
            ("facebook.app_secret", &self.facebook.app_secret),
            ("facebook.verify_token", &self.facebook.verify_token),
            ("motion.api_key", &self.motion.api_key),
        ] {
            check_secret(&mut err, key, secret);
        }
        if let Some(secret) = &self.facebook.instagram_app_secret {
            check_secret(&mut err, "facebook.instagram_app_secret", secret);
        }
        if let Some(id) = &self.facebook.login_config_id
            && (id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            err(
                key_span(text, "facebook.login_config_id"),
                "facebook.login_config_id",
                "must be the configuration's id: digits (App Dashboard → Facebook Login for Business → Configurations)".into(),
            );
        }
        if let Some(url) = &self.public.url
            && let Err(m) = check_http_url(url.get_ref())
        {
            err(url.span(), "public.url", m);
        }
        if let (None, Some(mode)) = (&self.public.client_ca, &self.public.client_cert) {
            err(
                mode.span(),
                "public.client_cert",
                "is set without public.client_ca: name the CA of Meta's webhook client certificate first".into(),
            );
        }
        match (&self.public.client_ca, &self.public.client_name) {
            (None, Some(name)) => err(
                name.span(),
                "public.client_name",
                "is set without public.client_ca: name the CA whose certificates may connect (Meta's, for Meta's webhook client certificate)".into(),
            ),
            (Some(ca), _) if !self.public.tls => err(
                ca.span(),
                "public.client_ca",
                "needs public.tls = true: behind a TLS proxy (nginx), check the client certificate there (ssl_verify_client)".into(),
            ),
            (Some(_), Some(name)) if name.get_ref().trim().is_empty() => {
                err(name.span(), "public.client_name", "must not be empty".into())
            }
            _ => {}
        }
        for (key, url) in [
            ("facebook.graph_url", &self.facebook.graph_url),
            ("facebook.dialog_url", &self.facebook.dialog_url),
            (
                "facebook.instagram_graph_url",
                &self.facebook.instagram_graph_url,
            ),
        ] {
            if let Err(m) = check_http_url(url.get_ref()) {
                err(url.span(), key, m);
            }
        }
        if let Some(app) = &self.facebook.app_id
            && crate::ids::PageId::parse(app.get_ref()).is_err()
        {
            err(
                app.span(),
                "facebook.app_id",
                "is not an app id: digits only (App Dashboard → App ID)".into(),
            );
        }
        if let Err(m) = crate::hosts::MediaHosts::parse(
            self.facebook
                .media_hosts
                .get_ref()
                .iter()
                .map(String::as_str),
        ) {
            err(self.facebook.media_hosts.span(), "facebook.media_hosts", m);
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

        check_map_key(&mut err, "motion.map_key", &self.motion.map_key);
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
            check_account(
                &mut err,
                &mut seen,
                Account {
                    table: "page",
                    id: &page.id,
                    id_help: "is not a Facebook Page id: digits only, e.g. \"1234567890\" (Page → About → Page transparency)",
                    receive_url: &page.receive_url,
                    reply_token: &page.reply_token,
                    map_key: page.map_key.as_deref(),
                },
            );
            check_secret(&mut err, "page.access_token", &page.access_token);
        }
        for account in &self.instagram {
            check_account(
                &mut err,
                &mut seen,
                Account {
                    table: "instagram",
                    id: &account.id,
                    id_help: "is not an Instagram professional account id: digits only, e.g. \"17841400000000000\" (Graph API: GET /{page-id}?fields=instagram_business_account)",
                    receive_url: &account.receive_url,
                    reply_token: &account.reply_token,
                    map_key: account.map_key.as_deref(),
                },
            );
            match (&account.page, &account.access_token) {
                (Some(page), None) if self.page(page.get_ref()).is_none() => err(
                    page.span(),
                    "instagram.page",
                    format!(
                        "names page {}, which has no [[page]] table here: the linked Page's token is the one used (Instagram API with Facebook Login)",
                        if is_graph_id(page.get_ref()) { page.get_ref().as_str() } else { "(not an id)" }
                    ),
                ),
                (Some(_), None) => {}
                (None, Some(token)) => check_secret(&mut err, "instagram.access_token", token),
                (Some(page), Some(_)) => err(
                    page.span(),
                    "instagram",
                    "has both `page` and `access_token`: keep `page` for Instagram API with Facebook Login, or `access_token` for Instagram Login".into(),
                ),
                (None, None) => err(
                    account.id.span(),
                    "instagram",
                    "needs `page` (the linked Facebook Page, Instagram API with Facebook Login) or `access_token` (Instagram Login)".into(),
                ),
            }
        }
        errors
    }

    /// Every duration in the config, with the range it must be in.
    fn durations(&self) -> Vec<(&'static str, Duration, Range)> {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let ms = Duration::from_millis;
        let mut all = vec![
            (
                "public.request_timeout",
                self.public.request_timeout,
                Range::new(ms(100), HOUR),
            ),
            (
                "public.tls_watch_interval",
                self.public.tls_watch_interval,
                Range::new(ms(10), DAY),
            ),
            (
                "local.reply_wait",
                self.local.reply_wait,
                Range::new(Duration::ZERO, 10 * MINUTE),
            ),
            (
                "local.ready_max_pending_age",
                self.local.ready_max_pending_age,
                Range::new(ms(100), 365 * DAY),
            ),
            (
                "storage.lease",
                self.storage.lease,
                Range::new(Duration::from_secs(3), 10 * MINUTE).why_min(
                    "a node renews its holds every third of this; shorter, a slow database would make two nodes send one message",
                ),
            ),
            (
                "storage.keep",
                self.storage.keep,
                Range::new(MIN_KEEP, MAX_KEEP).why_min(
                    "Facebook redelivers webhooks for up to 36 hours and agents may answer for 7 days; delivered items are how the daemon recognises both",
                ),
            ),
            (
                "facebook.subscription_check",
                self.facebook.subscription_check,
                Range::new(Duration::ZERO, 30 * DAY).or_zero("\"0s\" turns the check off"),
            ),
            (
                "motion.timeout",
                self.motion.timeout,
                Range::new(ms(100), HOUR),
            ),
            (
                "delivery.retry_initial",
                self.delivery.retry_initial,
                Range::new(ms(1), HOUR),
            ),
            (
                "delivery.retry_max",
                self.delivery.retry_max,
                Range::new(ms(1), 7 * DAY),
            ),
            (
                "delivery.give_up_after",
                self.delivery.give_up_after,
                Range::new(ms(1), 365 * DAY),
            ),
            (
                "facebook.unknown_error_retry",
                self.facebook.unknown_error_retry,
                Range::new(ms(1), DAY),
            ),
            (
                "facebook.block_pause",
                self.facebook.block_pause,
                Range::new(ms(1), DAY),
            ),
        ];
        for page in &self.pages {
            all.push((
                "page.comment_interval",
                page.comment_interval,
                Range::new(Duration::ZERO, MINUTE),
            ));
        }
        all
    }

    /// The hosts customers' files may be downloaded from (validated at load).
    pub fn media_hosts(&self) -> crate::hosts::MediaHosts {
        crate::hosts::MediaHosts::parse(
            self.facebook
                .media_hosts
                .get_ref()
                .iter()
                .map(String::as_str),
        )
        .unwrap_or_default()
    }

    pub fn page(&self, id: &str) -> Option<&PageConfig> {
        self.pages.iter().find(|p| p.id.get_ref() == id)
    }

    /// Whether `id` is a configured account: a page or an Instagram account.
    pub fn knows_account(&self, id: &str) -> bool {
        self.page(id).is_some() || self.instagram(id).is_some()
    }

    /// The Instagram account with this id, if configured.
    pub fn instagram(&self, id: &str) -> Option<&InstagramConfig> {
        self.instagram.iter().find(|a| a.id.get_ref() == id)
    }

    /// Where the Instagram account's token comes from (checked when the config was
    /// loaded: exactly one of `page` and `access_token`, and the page is configured).
    pub fn instagram_login<'a>(&'a self, account: &'a InstagramConfig) -> InstagramLogin<'a> {
        match (&account.page, &account.access_token) {
            (_, Some(token)) => InstagramLogin::Instagram {
                token: token.get_ref(),
            },
            (Some(page), None) => InstagramLogin::Facebook {
                page: self
                    .page(page.get_ref())
                    .expect("an Instagram account's page is checked when the config is loaded"),
            },
            (None, None) => unreachable!("checked when the config is loaded"),
        }
    }

    /// Who may connect to the public listener (`public.client_ca` / `client_name`).
    pub fn client_auth(&self) -> Option<ClientAuth> {
        let ca = self.public.client_ca.as_ref()?;
        Some(ClientAuth {
            ca: ca.get_ref().clone(),
            name: self
                .public
                .client_name
                .as_ref()
                .map_or(META_CLIENT_NAME, |n| n.get_ref().as_str())
                .to_owned(),
            mode: self
                .public
                .client_cert
                .as_ref()
                .map(|m| *m.get_ref())
                .unwrap_or_default(),
        })
    }

    /// Where Meta reaches the public listener: `public.url`, else `https://{public.name}`.
    pub fn public_base(&self) -> Option<url::Url> {
        match (&self.public.url, &self.public.name) {
            (Some(url), _) => url::Url::parse(url.get_ref()).ok(),
            (None, Some(name)) => {
                let mut url = url::Url::parse("https://localhost/").ok()?;
                url.set_host(Some(name)).ok()?;
                Some(url)
            }
            (None, None) => None,
        }
    }

    /// The effective config as TOML, secrets masked (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

/// The keys every Openchannel account has, a page's or an Instagram account's.
struct Account<'a> {
    table: &'static str,
    id: &'a Spanned<String>,
    /// What to say of an id that is not one.
    id_help: &'static str,
    receive_url: &'a Spanned<String>,
    reply_token: &'a Spanned<Secret>,
    map_key: Option<&'a str>,
}

/// Checks an account's keys; `seen` holds the ids of the accounts before it (an id is
/// one account: a page and an Instagram account never share one).
fn check_account<'a>(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    seen: &mut Vec<&'a str>,
    account: Account<'a>,
) {
    let key = |name: &str| format!("{}.{name}", account.table);
    let id = account.id.get_ref().as_str();
    if !is_graph_id(id) {
        err(account.id.span(), &key("id"), account.id_help.into());
    } else if seen.contains(&id) {
        err(
            account.id.span(),
            &key("id"),
            format!(
                "{} {id} is configured twice (an id is one [[page]] or one [[instagram]])",
                account.table
            ),
        );
    }
    seen.push(id);
    check_secret(err, &key("reply_token"), account.reply_token);
    check_reply_token(err, &key("reply_token"), account.reply_token);
    if let Some(map_key) = account.map_key {
        check_map_key(err, &key("map_key"), map_key);
    }
    if let Err(m) = check_http_url(account.receive_url.get_ref()) {
        err(account.receive_url.span(), &key("receive_url"), m);
    }
}

/// Whether `id` has the shape of a Graph object id (digits). The value is never
/// repeated in a message: a token pasted into the wrong key must not end up in a log.
fn is_graph_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
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

/// A Contact field name, as Motion names them (`facebook`, `cf_7`, `email`…).
fn check_map_key(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    key: &str,
    value: &str,
) {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        err(
            0..0,
            key,
            "must be the name of a Motion Contact field: letters, digits, '_' or '-' (e.g. \"facebook\", \"cf_7\")".into(),
        );
    }
}

/// Shortest length of a `reply_token`: it is all that stands between the local
/// listener and sending messages as the Page.
pub const MIN_REPLY_TOKEN_CHARS: usize = 16;

fn check_reply_token(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    key: &str,
    secret: &Spanned<Secret>,
) {
    let token = secret.get_ref().expose();
    if token.is_empty() || secret.get_ref().is_placeholder() {
        return; // already reported by check_secret
    }
    let how =
        "generate one with `openssl rand -hex 24` and put the same value in Motion's Reply URL";
    if token.chars().count() < MIN_REPLY_TOKEN_CHARS {
        err(
            secret.span(),
            key,
            format!(
                "is too short ({} characters, at least {MIN_REPLY_TOKEN_CHARS}): {how}",
                token.chars().count()
            ),
        );
    } else if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        err(
            secret.span(),
            key,
            format!(
                "may hold only letters, digits, '-', '_', '.' and '~' (it travels in a URL): {how}"
            ),
        );
    }
}

/// Longest `storage.keep`: ten years. Anything longer is a typo, and once turned into
/// milliseconds it could reach past what a timestamp holds.
pub const MAX_KEEP: Duration = Duration::from_secs(3650 * 86_400);

/// The range a duration of the config must be in.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: Duration,
    max: Duration,
    /// Why the minimum is what it is, for the error message.
    why_min: Option<&'static str>,
    /// Zero is allowed outside `min..=max`, with this meaning.
    zero: Option<&'static str>,
}

impl Range {
    const fn new(min: Duration, max: Duration) -> Range {
        Range {
            min,
            max,
            why_min: None,
            zero: None,
        }
    }

    const fn why_min(self, why: &'static str) -> Range {
        Range {
            why_min: Some(why),
            ..self
        }
    }

    const fn or_zero(self, meaning: &'static str) -> Range {
        Range {
            zero: Some(meaning),
            ..self
        }
    }

    fn check(&self, value: Duration) -> Result<(), String> {
        if value.is_zero() && self.zero.is_some() {
            return Ok(());
        }
        if value >= self.min && value <= self.max {
            return Ok(());
        }
        let show = |d: Duration| {
            let days = d.as_secs() / 86_400;
            if days > 0 && d == Duration::from_secs(days * 86_400) {
                format!("{days}d")
            } else {
                humantime::format_duration(d).to_string()
            }
        };
        let mut message = format!(
            "must be between {} and {} (is {})",
            show(self.min),
            show(self.max),
            show(value)
        );
        if value < self.min
            && let Some(why) = self.why_min
        {
            message = format!(
                "must be at least {} (is {}): {why}",
                show(self.min),
                show(value)
            );
        }
        if let Some(zero) = self.zero {
            message.push_str(&format!("; {zero}"));
        }
        Err(message)
    }
}

/// An absolute `http://` or `https://` URL with a host. The message never repeats the
/// value: URLs carry tokens.
/// What is wrong with `[public] acme`, each as a sentence after "public.acme".
fn acme_problems(public: &PublicConfig, acme: &AcmeConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if !public.tls {
        problems.push("needs public.tls = true: behind a TLS proxy (nginx), let the proxy get the certificate".into());
    }
    for (key, file) in [("tls_cert", &public.tls_cert), ("tls_key", &public.tls_key)] {
        if file.span() != (0..0) {
            problems.push(format!(
                "and public.{key} are both set: the certificate comes either from ACME or from your files — remove one"
            ));
        }
    }
    if acme.domains.is_empty() {
        problems.push(
            "domains is empty: name the Callback URL's host, e.g. domains = [\"fb.example.com\"]"
                .into(),
        );
    }
    for domain in &acme.domains {
        if let Err(why) = Domain::parse(domain) {
            problems.push(format!("domains: {why}"));
        }
    }
    if let Some(name) = &public.name
        && !acme.domains.iter().any(|d| d.eq_ignore_ascii_case(name))
    {
        problems.push(format!(
            "domains does not name {name} (public.name): the certificate would not cover the Callback URL's host"
        ));
    }
    if let Some(email) = &acme.email
        && (email.chars().any(|c| c.is_whitespace() || c.is_control())
            || email
                .split_once('@')
                .is_none_or(|(user, host)| user.is_empty() || !host.contains('.')))
    {
        problems.push("email is not an e-mail address".into());
    }
    match Url::parse(&acme.directory) {
        Ok(url) if url.scheme() == "https" && url.host_str().is_some() => {}
        _ => problems.push(format!(
            "directory must be an https:// URL (RFC 8555), e.g. {LETS_ENCRYPT}"
        )),
    }
    if let Some(ca) = &acme.directory_ca
        && let Err(e) = std::fs::File::open(ca)
    {
        problems.push(format!("directory_ca: cannot read {}: {e}", ca.display()));
    }
    problems
}

fn check_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

/// The place of `key` (`table.key`) in the file, for an error about a value serde took
/// without a span; `0..0` (no line) when it is not written there (a default).
fn key_span(text: &str, dotted: &str) -> std::ops::Range<usize> {
    let Some((table, key)) = dotted.split_once('.') else {
        return 0..0;
    };
    let mut current = "";
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = header.trim_matches(['[', ' ']);
        } else if current == table
            && let Some((k, _)) = trimmed.split_once('=')
            && k.trim() == key
        {
            return offset..offset + line.len();
        }
        offset += line.len();
    }
    0..0
}

/// A serde message with the offending value taken out ("invalid type: integer `123`,
/// expected a string" → "invalid type: integer (value not shown), expected a string"):
/// the value may be a secret written in the wrong place. Key names are kept.
fn without_values(message: &str) -> String {
    let message = message.trim();
    if message.starts_with("unknown field")
        || message.starts_with("missing field")
        || message.starts_with("duplicate key")
    {
        return message.to_owned();
    }
    let (head, tail) = match message.find(", expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = head;
    let mut hidden = false;
    while let Some(start) = rest.find(['`', '"', '\'']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let Some(len) = rest[start + 1..].find(quote) else {
            break;
        };
        out.push_str(rest[..start].trim_end());
        if !hidden {
            out.push_str(" (value not shown)");
            hidden = true;
        }
        rest = &rest[start + 1 + len + 1..];
    }
    out.push_str(rest);
    out.push_str(tail);
    out
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

/// The dotted key (`table.key`) written on the line holding byte `at`, if that line is
/// a `key = value` line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(['[', ']', ' ']).to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

/// The key named in a serde message such as "unknown field `foo`, expected …" (only
/// those messages name a key; others name a value, which is never repeated).
fn key_in_message(message: &str) -> Option<String> {
    if !(message.starts_with("unknown field")
        || message.starts_with("missing field")
        || message.starts_with("duplicate key"))
    {
        return None;
    }
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

/// What a reload changes, key by key (`section.key`; an account's as `page.<id>.key`
/// or `instagram.<id>.key`).
/// Secrets are compared by the daemon where they are used (they print masked here).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Keys whose value differs, in force from now on.
    pub now: Vec<String>,
    /// Keys whose value differs but that are read only at start: `(key, was, now)`.
    pub at_restart: Vec<(String, String, String)>,
    /// Accounts added and removed: a page by its id, others as `instagram <id>`.
    pub accounts_added: Vec<String>,
    pub accounts_removed: Vec<String>,
}

/// Keys the daemon reads only when it starts: its listeners, the store, the workers.
const READ_AT_START: &[&str] = &[
    "public.listen",
    "public.tls",
    "public.tls_cert",
    "public.tls_key",
    "public.max_connections",
    "public.max_active_connections",
    "public.body_memory",
    "public.body_spool",
    "public.acme",
    "local.listen",
    "storage.path",
    "storage.backend",
    "storage.url",
    "storage.password_file",
    "storage.lease",
    "storage.ca_file",
    "delivery.concurrency",
];

impl Config {
    /// How `new` differs from this config, section by section.
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        use serde_json::Value;
        let as_value = |c: &Config| serde_json::to_value(c).unwrap_or(Value::Null);
        let (before, after) = (as_value(self), as_value(new));
        let mut diff = ConfigDiff::default();
        let mut changed = Vec::new();
        let fields = |v: &Value| v.as_object().cloned().unwrap_or_default();
        let compare =
            |prefix: &str, a: &Value, b: &Value, changed: &mut Vec<(String, String, String)>| {
                let (a, b) = (fields(a), fields(b));
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let (was, now) = (a.get(key), b.get(key));
                    if was != now {
                        let show = |v: Option<&Value>| {
                            v.map_or_else(|| "(unset)".into(), Value::to_string)
                        };
                        changed.push((format!("{prefix}.{key}"), show(was), show(now)));
                    }
                }
            };
        // Accounts are compared by id: `page.<id>.key`, `instagram.<id>.key`.
        const ACCOUNT_TABLES: [&str; 2] = ["page", "instagram"];
        for (section, value) in fields(&before) {
            if !ACCOUNT_TABLES.contains(&section.as_str()) {
                compare(&section, &value, &after[&section], &mut changed);
            }
        }
        for table in ACCOUNT_TABLES {
            let accounts = |v: &Value| -> Vec<(String, Value)> {
                v[table]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| (a["id"].as_str().unwrap_or_default().to_owned(), a.clone()))
                    .collect()
            };
            // A page is named by its id alone, as everywhere else.
            let name = |id: &str| match table {
                "page" => id.to_owned(),
                _ => format!("{table} {id}"),
            };
            let (old, new) = (accounts(&before), accounts(&after));
            for (id, account) in &new {
                match old.iter().find(|(old, _)| old == id) {
                    Some((_, was)) => compare(&format!("{table}.{id}"), was, account, &mut changed),
                    None => diff.accounts_added.push(name(id)),
                }
            }
            diff.accounts_removed.extend(
                old.iter()
                    .filter(|(id, _)| !new.iter().any(|(new, _)| new == id))
                    .map(|(id, _)| name(id)),
            );
        }
        for (key, was, now) in changed {
            if READ_AT_START.contains(&key.as_str()) {
                diff.at_restart.push((key, was, now));
            } else {
                diff.now.push(key);
            }
        }
        diff
    }
}

// ---- types the other layers take from the config ----

/// A name the certificate covers: a DNS host name, lowercase. No wildcard (TLS-ALPN-01
/// cannot prove one) and no IP address (Meta calls a host name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Domain, String> {
        let name = raw.trim_end_matches('.').to_ascii_lowercase();
        if name.starts_with("*.") {
            return Err(format!(
                "{raw:?} is a wildcard: the TLS-ALPN-01 check cannot prove one; name each host"
            ));
        }
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "{raw:?} is an IP address: Meta calls a host name, name that"
            ));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
            return Err(format!(
                "{raw:?} is not a DNS host name (letters, digits, hyphens and dots; punycode for other scripts)"
            ));
        }
        Ok(Domain(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may deliver webhooks: anyone (the default: the webhook signature is the check),
/// or a client presenting a certificate from `ca` named `name` — Meta's webhook client
/// certificate ("mTLS for webhooks") — required, or only recorded (`report`).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub name: String,
    pub mode: ClientCertMode,
}

/// What `/webhook` does with the client certificate (`public.client_cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// A webhook without Meta's certificate is refused (403).
    #[default]
    Require,
    /// Every webhook is taken; whether Meta's certificate came is counted and shown
    /// (`doctor`, `/metrics`, `capture --check`): the way to learn whether Meta sends one
    /// for Page and Instagram webhooks before requiring it.
    Report,
}

impl ClientCertMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertMode::Require => "require",
            ClientCertMode::Report => "report",
        }
    }
}

impl StorageConfig {
    /// The PostgreSQL server's connection settings: `storage.url`, with the password from
    /// `storage.password_file` when there is one, a connect timeout and keepalives.
    pub fn postgres(&self) -> Result<postgres::Config, String> {
        let Some(url) = &self.url else {
            return Err("storage.backend = \"postgres\" needs storage.url".into());
        };
        let mut config: postgres::Config = url
            .expose()
            .parse()
            .map_err(|e| format!("storage.url is not a PostgreSQL URL: {e}"))?;
        if let Some(file) = &self.password_file {
            let password = std::fs::read_to_string(file).map_err(|e| {
                format!("cannot read storage.password_file {}: {e}", file.display())
            })?;
            config.password(password.trim_end_matches(['\n', '\r']));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that stops answering (SIGSTOP, a partition that drops packets) must not
        // hold a worker for minutes: unacknowledged data or silent keepalives end the
        // connection within seconds, and the worker connects again.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(2);
        config.tcp_user_timeout(Duration::from_secs(15));
        if config.get_application_name().is_none() {
            config.application_name("fb-openchannel");
        }
        Ok(config)
    }
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
reply_token = "rt-0123456789abcdef"
"#
        )
    }

    /// The minimal config with `key = "value"` in `[table]`.
    fn with_key(table: &str, key: &str, value: &str) -> String {
        let text = minimal("");
        let line = format!("{key} = \"{value}\"\n");
        match text.find(&format!("[{table}]\n")) {
            Some(at) => {
                let at = at + table.len() + 3;
                format!("{}{line}{}", &text[..at], &text[at..])
            }
            None => text.replacen("[[page]]", &format!("[{table}]\n{line}[[page]]"), 1),
        }
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        Config::from_toml(Path::new("c.toml"), text).unwrap_err().0
    }

    /// A reload learns what changed key by key, and which keys wait for a restart.
    #[test]
    fn a_reload_sees_each_changed_key_and_what_needs_a_restart() {
        let load = |text: &str| Config::from_toml(Path::new("c.toml"), text).unwrap();
        let before = load(&minimal(""));
        assert_eq!(before.diff(&load(&minimal(""))), ConfigDiff::default());
        let after = load(
            &(minimal("[delivery]\nconcurrency = 4\nretry_max = \"2m\"")
                .replace("[public]\n", "[public]\nlisten = \"0.0.0.0:8443\"\n")
                .replace(
                    "reply_token = \"rt-0123456789abcdef\"",
                    "reply_token = \"rt-0123456789abcdef\"\nhuman_agent_tag = true",
                )
                + "[[page]]\nid = \"456\"\naccess_token = \"t2\"\nreceive_url = \"http://127.0.0.1:9/n\"\nreply_token = \"rt-fedcba9876543210\"\n"),
        );
        let diff = before.diff(&after);
        let restart: Vec<&str> = diff.at_restart.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(restart, ["delivery.concurrency", "public.listen"]);
        assert_eq!(diff.now, ["delivery.retry_max", "page.123.human_agent_tag"]);
        assert_eq!(diff.accounts_added, ["456"]);
        assert!(diff.accounts_removed.is_empty());
        let (_, was, now) = &diff.at_restart[1];
        assert!(
            was.contains("8443") || now.contains("0.0.0.0:8443"),
            "{was} → {now}"
        );
        // A token rotation is not printed: secrets serialise masked.
        let rotated =
            load(&minimal("").replace("access_token = \"tok\"", "access_token = \"tok2\""));
        assert!(before.diff(&rotated).now.is_empty());
    }

    /// An Instagram account, after the minimal config's page.
    fn with_instagram(table: &str) -> String {
        format!("{}[[instagram]]\n{table}", minimal(""))
    }

    const IG: &str = "id = \"17841400000000000\"\nreceive_url = \"http://127.0.0.1:9/api/openchannel/accounts/8/notify?token=igsecret\"\nreply_token = \"rt-ig-0123456789abcdef\"\n";

    #[test]
    fn an_instagram_account_takes_its_token_from_the_linked_page() {
        let load = |text: &str| Config::from_toml(Path::new("c.toml"), text).unwrap();
        let c = load(&with_instagram(&format!("{IG}page = \"123\"\n")));
        let account = c.instagram("17841400000000000").unwrap();
        assert!(account.comments, "comments are on by default");
        assert_eq!(account.comment_reply, CommentReply::Public);
        assert_eq!(account.map_key(&c.motion), "facebook");
        match c.instagram_login(account) {
            InstagramLogin::Facebook { page } => assert_eq!(page.id.get_ref(), "123"),
            other => panic!("{other:?}"),
        }
        // Its secrets are masked like a page's, the Receive URL's token included.
        let secrets = c.secret_values();
        for s in ["rt-ig-0123456789abcdef", "igsecret"] {
            assert!(secrets.iter().any(|v| v == s), "{s} not among the secrets");
        }
        let printed = c.to_redacted_toml();
        assert!(printed.contains("[[instagram]]"), "{printed}");
        assert!(!printed.contains("igsecret"), "{printed}");
    }

    #[test]
    fn an_instagram_login_account_has_its_own_token_and_host() {
        let c = Config::from_toml(
            Path::new("c.toml"),
            &with_instagram(&format!("{IG}access_token = \"IGAAtoken-4242\"\n")),
        )
        .unwrap();
        let account = c.instagram("17841400000000000").unwrap();
        match c.instagram_login(account) {
            InstagramLogin::Instagram { token } => assert_eq!(token.expose(), "IGAAtoken-4242"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.facebook.instagram_graph_url.get_ref(),
            "https://graph.instagram.com"
        );
        assert!(c.secret_values().iter().any(|v| v == "IGAAtoken-4242"));
        assert!(!c.to_redacted_toml().contains("IGAAtoken-4242"));
    }

    #[test]
    fn a_client_ca_is_checked_with_its_name_and_tls() {
        // `public` replaces the minimal config's `tls = false`, with real PEM files.
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::sim::tls::generate(dir.path()).unwrap();
        let files = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            certs.cert_path.display(),
            certs.key_path.display()
        );
        let text =
            |public: &str| minimal("").replace("tls = false\n", &format!("{files}\n{public}\n"));
        let keys = |public: &str| -> Vec<String> {
            match Config::from_toml(Path::new("c.toml"), &text(public)) {
                Ok(_) => Vec::new(),
                Err(e) => e.0.iter().map(|e| e.key.clone()).collect(),
            }
        };
        let c = Config::from_toml(
            Path::new("c.toml"),
            &text("client_ca = \"/etc/fb-openchannel/meta-ca.pem\""),
        )
        .unwrap();
        assert_eq!(c.client_auth().unwrap().name, META_CLIENT_NAME);
        assert_eq!(keys("client_name = \"x.example\""), ["public.client_name"]);
        assert_eq!(
            keys("client_ca = \"/etc/ca.pem\"\ntls = false"),
            ["public.client_ca"]
        );
    }

    #[test]
    fn acme_is_checked_and_excludes_certificate_files() {
        // `public` replaces the minimal config's `tls = false`.
        let text = |public: &str| minimal("").replace("tls = false\n", &format!("{public}\n"));
        let messages = |public: &str| -> Vec<String> {
            match Config::from_toml(Path::new("c.toml"), &text(public)) {
                Ok(_) => Vec::new(),
                Err(e) => {
                    e.0.iter()
                        .map(|e| format!("{}: {}", e.key, e.message))
                        .collect()
                }
            }
        };
        let acme = "acme = { domains = [\"fb.example.com\"], email = \"ops@example.com\" }";
        // Without tls_cert / tls_key files: no "cannot read" error for them.
        let c = Config::from_toml(Path::new("c.toml"), &text(acme)).unwrap();
        let a = c.public.acme.as_ref().unwrap().get_ref();
        assert_eq!(a.directory, LETS_ENCRYPT);
        assert_eq!(
            messages(&format!("{acme}\nname = \"fb.example.com\"")),
            Vec::<String>::new()
        );

        let one = |public: &str| {
            let m = messages(public);
            assert_eq!(m.len(), 1, "{public}: {m:?}");
            m[0].clone()
        };
        assert!(
            one(&format!("{acme}\ntls_cert = \"/etc/x.pem\""))
                .contains("either from ACME or from your files"),
        );
        assert!(one(&format!("{acme}\ntls = false")).contains("needs public.tls = true"));
        assert!(one("acme = { domains = [] }").contains("domains is empty"));
        assert!(one("acme = { domains = [\"*.example.com\"] }").contains("wildcard"));
        assert!(one("acme = { domains = [\"192.0.2.7\"] }").contains("IP address"));
        assert!(
            one(&format!("{acme}\nname = \"other.example.com\""))
                .contains("does not name other.example.com")
        );
        assert!(
            one("acme = { domains = [\"fb.example.com\"], email = \"ops\" }")
                .contains("not an e-mail")
        );
        assert!(
            one("acme = { domains = [\"fb.example.com\"], directory = \"http://ca.example/dir\" }")
                .contains("https:// URL")
        );
        assert!(
            one(
                "acme = { domains = [\"fb.example.com\"], directory_ca = \"/nonexistent/ca.pem\" }"
            )
            .contains("cannot read /nonexistent/ca.pem")
        );
        assert!(
            one("acme = { domains = [\"fb.example.com\"], dommains = [] }").contains("dommains")
        );
        // ACME is read at start: a reload names it as needing a restart.
        let before = Config::from_toml(Path::new("c.toml"), &text(acme)).unwrap();
        let after = Config::from_toml(
            Path::new("c.toml"),
            &text("acme = { domains = [\"fb2.example.com\"] }"),
        )
        .unwrap();
        let diff = before.diff(&after);
        assert_eq!(diff.at_restart.len(), 1, "{:?}", diff.at_restart);
        assert_eq!(diff.at_restart[0].0, "public.acme");
    }

    #[test]
    fn a_broken_instagram_table_is_named_key_by_key() {
        let keys = |text: &str| -> Vec<(String, String)> {
            errors(text)
                .into_iter()
                .map(|e| (e.key, e.message))
                .collect()
        };
        let e = keys(&with_instagram(IG));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "instagram");
        assert!(e[0].1.contains("needs `page`"), "{e:?}");
        let e = keys(&with_instagram(&format!("{IG}page = \"999\"\n")));
        assert_eq!(e[0].0, "instagram.page");
        assert!(e[0].1.contains("no [[page]] table"), "{e:?}");
        let e = keys(&with_instagram(&format!(
            "{IG}page = \"123\"\naccess_token = \"IGAAtoken\"\n"
        )));
        assert!(e[0].1.contains("both `page` and `access_token`"), "{e:?}");
        // Instagram Login: an empty token is named, never printed.
        let e = keys(&with_instagram(&format!("{IG}access_token = \"\"\n")));
        assert_eq!(e[0].0, "instagram.access_token");
        assert!(e[0].1.contains("must not be empty"), "{e:?}");
        let e = keys(&with_instagram(
            &format!("{IG}page = \"123\"\n").replace("17841400000000000", "123"),
        ));
        assert_eq!(e[0].0, "instagram.id");
        assert!(e[0].1.contains("configured twice"), "{e:?}");
        let e = keys(&with_instagram(
            &format!("{IG}page = \"123\"\n").replace("rt-ig-0123456789abcdef", "short"),
        ));
        assert_eq!(e[0].0, "instagram.reply_token");
        let e = keys(&with_instagram(&format!(
            "{IG}page = \"123\"\nwall_posts = true\n"
        )));
        assert!(
            e[0].0.contains("wall_posts"),
            "unknown keys are refused: {e:?}"
        );
    }

    #[test]
    fn a_reload_names_instagram_accounts_added_and_changed() {
        let load = |text: &str| Config::from_toml(Path::new("c.toml"), text).unwrap();
        let before = load(&minimal(""));
        let with = load(&with_instagram(&format!("{IG}page = \"123\"\n")));
        let diff = before.diff(&with);
        assert_eq!(diff.accounts_added, ["instagram 17841400000000000"]);
        let changed = load(&with_instagram(&format!(
            "{IG}page = \"123\"\nhuman_agent_tag = true\n"
        )));
        assert_eq!(
            with.diff(&changed).now,
            ["instagram.17841400000000000.human_agent_tag"]
        );
        assert_eq!(
            with.diff(&before).accounts_removed,
            ["instagram 17841400000000000"]
        );
    }

    /// The shared queue's settings: each mistake named by its key, the URL (which may
    /// hold a password) never shown.
    #[test]
    fn postgres_storage_is_checked_and_its_url_never_shown() {
        let keys = |text: &str| -> Vec<(String, String)> {
            errors(text)
                .into_iter()
                .map(|e| (e.key, e.message))
                .collect()
        };
        let e = keys(&minimal("[storage]\nbackend = \"postgres\"\n"));
        assert_eq!(e[0].0, "storage.backend", "{e:?}");
        assert!(e[0].1.contains("needs storage.url"), "{e:?}");
        let e = keys(&minimal("[storage]\nurl = \"postgres://db/fb\"\n"));
        assert_eq!(e[0].0, "storage.url", "{e:?}");
        assert!(e[0].1.contains("backend = \"postgres\""), "{e:?}");
        let e = keys(&minimal(
            "[storage]\nbackend = \"postgres\"\nurl = \"mysql://u:hunter2pw@db/fb\"\n",
        ));
        assert_eq!(e[0].0, "storage.url", "{e:?}");
        assert!(!format!("{e:?}").contains("hunter2pw"), "{e:?}");
        let e = keys(&minimal(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://db/fb\"\nlease = \"1s\"\n",
        ));
        assert_eq!(e[0].0, "storage.lease", "{e:?}");

        let c = Config::from_toml(
            Path::new("c.toml"),
            &minimal(
                "[storage]\nbackend = \"postgres\"\nurl = \"postgres://fb:hunter2pw@db/fb\"\n",
            ),
        )
        .unwrap();
        assert!(c.storage.is_postgres());
        assert!(
            !c.to_redacted_toml().contains("hunter2pw"),
            "{}",
            c.to_redacted_toml()
        );
        assert!(c.secret_values().iter().any(|s| s == "hunter2pw"));
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
        assert_eq!(c.public.max_body_bytes, 64 << 20);
        assert_eq!(c.storage.keep, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn keeping_delivered_items_under_a_week_is_refused() {
        let e = errors(&minimal("[storage]\nkeep = \"2d\""));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "storage.keep");
        assert!(e[0].message.contains("at least 7d (is 2d)"), "{}", e[0]);
        assert_eq!(e[0].line, 10, "the line of `keep` in [storage]");
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
            "[[page]]\nid = \"123\"\naccess_token = \"CHANGE-ME\"\nreceive_url = \"http://m/notify\"\nreply_token = \"r-0123456789abcdef\"\n",
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
        for secret in ["s3cret", "\"vt\"", "\"key\"", "\"tok\"", "rt-0123", "abc"] {
            assert!(!dump.contains(secret), "{secret} leaked in:\n{dump}");
        }
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(dump.contains("********"));
    }

    /// Every duration is range-checked, with the line of its key; none can wrap into a
    /// negative number of milliseconds (300000000years once made retention delete all).
    #[test]
    fn every_duration_out_of_range_is_refused_with_its_line() {
        let cases = [
            ("public", "request_timeout", "0s"),
            ("public", "request_timeout", "2h"),
            ("public", "tls_watch_interval", "5ms"),
            ("public", "tls_watch_interval", "40d"),
            ("local", "reply_wait", "1h"),
            ("local", "ready_max_pending_age", "0s"),
            ("local", "ready_max_pending_age", "400d"),
            ("storage", "keep", "300000000years"),
            ("storage", "keep", "3651d"),
            ("storage", "keep", "1h"),
            ("facebook", "subscription_check", "31d"),
            ("motion", "timeout", "0s"),
            ("motion", "timeout", "2h"),
            ("delivery", "retry_initial", "0s"),
            ("delivery", "retry_initial", "2h"),
            ("delivery", "retry_max", "8d"),
            ("delivery", "give_up_after", "0s"),
            ("delivery", "give_up_after", "1000years"),
        ];
        for (table, key, value) in cases {
            let text = with_key(table, key, value);
            let e = errors(&text);
            let dotted = format!("{table}.{key}");
            let hit = e.iter().find(|e| e.key == dotted);
            let Some(hit) = hit else {
                panic!("{dotted} = {value:?} was not refused: {e:?}\n{text}");
            };
            let line = text
                .lines()
                .position(|l| l.starts_with(&format!("{key} = ")))
                .unwrap()
                + 1;
            assert_eq!(hit.line, line, "{hit}");
            assert!(hit.message.starts_with("must be"), "{hit}");
        }
        // Zero turns the subscription check off; the bounds themselves are accepted.
        for (table, key, value) in [
            ("facebook", "subscription_check", "0s"),
            ("storage", "keep", "3650d"),
            ("storage", "keep", "7d"),
            ("local", "reply_wait", "0s"),
        ] {
            Config::from_toml(Path::new("c.toml"), &with_key(table, key, value)).unwrap();
        }
    }

    #[test]
    fn retry_max_below_retry_initial_is_refused() {
        let e = errors(&minimal(
            "[delivery]\nretry_initial = \"10s\"\nretry_max = \"5s\"",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "delivery.retry_max");
        assert!(
            e[0].message
                .contains("at least delivery.retry_initial (10s)"),
            "{}",
            e[0]
        );
    }

    /// A secret in the wrong place or of the wrong type is never repeated in an error.
    #[test]
    fn no_value_appears_in_any_error() {
        let leaks = [
            // A number where a string belongs.
            minimal("").replace("app_secret = \"s3cret\"", "app_secret = 918273645546"),
            // A token pasted where the page id goes.
            minimal("").replace("id = \"123\"", "id = \"EAAGsecrettoken918273645546\""),
            // An invalid Receive URL with its token.
            minimal("").replace(
                "http://127.0.0.1:9/api/openchannel/accounts/1/notify?token=abc",
                "127.0.0.1/notify?token=918273645546",
            ),
            // An invalid Graph URL with a token in it.
            minimal("").replace(
                "[facebook]\n",
                "[facebook]\ngraph_url = \"ftp://x/?access_token=918273645546\"\n",
            ),
            // A token where a boolean belongs, and where an enum goes.
            minimal("").replace(
                "reply_token = \"rt-0123456789abcdef\"",
                "reply_token = \"rt-0123456789abcdef\"\nwall_posts = \"918273645546\"",
            ),
            minimal("").replace(
                "reply_token = \"rt-0123456789abcdef\"",
                "reply_token = \"rt-0123456789abcdef\"\ncomment_reply = \"918273645546\"",
            ),
            minimal("").replace("api_key = \"key\"", "api_key = [\"918273645546\"]"),
        ];
        for text in leaks {
            let e = errors(&text);
            let shown: String = e.iter().map(|e| format!("{e} {} ", e.key)).collect();
            assert!(!shown.contains("918273645546"), "a value leaked: {shown}");
            assert!(!shown.contains("secrettoken"), "a value leaked: {shown}");
            assert!(e.iter().all(|e| e.line > 0), "{shown}");
        }
        let e =
            errors(&minimal("").replace("app_secret = \"s3cret\"", "app_secret = 918273645546"));
        assert_eq!(e[0].key, "facebook.app_secret", "{}", e[0]);
        assert!(e[0].message.contains("expected a string"), "{}", e[0]);
    }

    #[test]
    fn a_short_or_url_unsafe_reply_token_is_refused_with_how_to_make_one() {
        for (token, why) in [
            ("x", "too short (1 characters, at least 16)"),
            ("0123456789abcde", "too short (15 characters"),
            ("0123456789 abcdef&x", "may hold only letters"),
        ] {
            let text = minimal("").replace("rt-0123456789abcdef", token);
            let e = errors(&text);
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].key, "page.reply_token");
            assert!(e[0].message.contains(why), "{}", e[0]);
            assert!(e[0].message.contains("openssl rand -hex 24"), "{}", e[0]);
            if token.len() > 3 {
                assert!(!e[0].to_string().contains(token), "{}", e[0]);
            }
        }
    }
}
