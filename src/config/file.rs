//! The file's types, as serde reads them, and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::dump::serialize_url_redacted;
use super::{ClientCertMode, Secret};

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
    /// Comparing each account's inbox (Meta's Conversations API) with what webhooks
    /// brought, to recover the messages Meta never sent.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// How often each account's inbox is compared with the queue; "0s" turns it off.
    #[serde(default = "default_reconcile_every", with = "humantime_serde")]
    pub every: Duration,
    /// How far back each run looks, past the previous one (so nothing falls between
    /// two runs). After the daemon was down, the first run looks back to when it last
    /// received a webhook, at most 7 days (and never past `storage.keep`).
    #[serde(default = "default_reconcile_lookback", with = "humantime_serde")]
    pub lookback: Duration,
    /// Least time between two Conversations API calls of one account (Meta allows
    /// about 2 a second per Page).
    #[serde(default = "default_reconcile_pace", with = "humantime_serde")]
    pub pace: Duration,
    /// How long a run waits when Meta answers "too many calls" (codes 4, 17, 32, 613)
    /// without saying how long, before it asks again.
    #[serde(default = "default_reconcile_pause", with = "humantime_serde")]
    pub pause: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            every: default_reconcile_every(),
            lookback: default_reconcile_lookback(),
            pace: default_reconcile_pace(),
            pause: default_reconcile_pause(),
        }
    }
}

fn default_reconcile_every() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_reconcile_lookback() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_reconcile_pace() -> Duration {
    Duration::from_millis(500)
}
fn default_reconcile_pause() -> Duration {
    Duration::from_secs(60)
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

/// An account's table with every setting at its default, for `id` (the credentials and
/// the Receive URL empty): what decides which events of an account another node of a
/// shared queue has are delivered, on a node whose config lacks it.
fn stand_in<T: serde::de::DeserializeOwned>(id: &str, required: &[&str]) -> T {
    let mut table = toml::Table::new();
    table.insert("id".into(), id.into());
    for key in required {
        table.insert((*key).into(), "".into());
    }
    let text = toml::to_string(&table).expect("a table of strings serialises");
    toml::from_str(&text).expect("an account's table with its required keys parses")
}

impl PageConfig {
    /// This page with the default settings (see [`stand_in`]).
    pub fn stand_in(id: &str) -> PageConfig {
        stand_in(id, &["access_token", "receive_url", "reply_token"])
    }

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
    /// This account with the default settings (see [`stand_in`]).
    pub fn stand_in(id: &str) -> InstagramConfig {
        stand_in(id, &["receive_url", "reply_token"])
    }

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
