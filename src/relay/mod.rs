//! The flow between Facebook and Motion, both ways, and the state the running daemon
//! shares ([`Shared`]).
//!
//! - Facebook → Motion: a signed webhook is classified and stored ([`intake`]); each
//!   Messenger event ([`messenger`]) or wall change ([`feed`]) becomes notify calls,
//!   made by the inbound worker ([`inbound`]).
//! - Motion → Facebook: a Reply URL call is checked and queued ([`reply`]) and sent to
//!   Graph by the outbound worker ([`outbound`]).
//! - Both: the dispatcher hands out one item per conversation at a time ([`dispatch`]),
//!   [`outcome`] records what each attempt came to, with the retry schedule
//!   ([`retry`]); outcomes the store could not take yet wait in [`ledger`]. Each page's
//!   health ([`health`]) and the features Facebook throttles ([`pauses`]), who owns a
//!   Page's conversations ([`routing`]), our app's subscription ([`subscription`]) and
//!   old history's removal ([`retention`]). Replies go out through [`messenger_reply`]
//!   and [`wall_reply`], on what both need ([`sending`]). Instagram direct messages have
//!   their own rules both ways ([`instagram`], [`instagram_reply`]).

pub mod dispatch;
pub mod feed;
pub mod health;
pub mod inbound;
pub mod instagram;
pub mod instagram_login;
pub mod instagram_reply;
pub mod intake;
pub mod ledger;
pub mod messenger;
pub mod messenger_reply;
pub mod names;
pub mod nodes;
pub mod outbound;
pub mod outcome;
pub mod pauses;
pub mod public_files;
pub mod reconcile;
pub mod reply;
pub mod retention;
pub mod retry;
pub mod routing;
pub mod sending;
pub mod subscription;
pub mod token_health;
pub mod wall_reply;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, oneshot};

use crate::metrics::Metrics;

use crate::config::{Config, PageConfig};
use crate::facebook::graph::GraphClient;
use crate::ids::{IdError, UserId};
use crate::motion::MotionClient;
use crate::store::Store;

/// Customers made up by `fb-openchannel simulate` have ids starting with this: they get
/// no Graph lookups, and replies to them are acknowledged without calling Facebook.
pub const SIMULATED_ID_PREFIX: &str = "fbo-simulated-";

/// Who a conversation is with: a customer on Facebook, or one that `fb-openchannel
/// simulate` made up (never looked up, never sent to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Customer {
    Facebook(UserId),
    Simulated(String),
}

impl Customer {
    /// A customer id from a webhook or a Reply URL call.
    pub fn parse(text: &str) -> Result<Customer, IdError> {
        match text.strip_prefix(SIMULATED_ID_PREFIX) {
            Some(rest)
                if !rest.is_empty()
                    && rest.len() <= 64
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Ok(Customer::Simulated(text.to_owned()))
            }
            _ => UserId::parse(text).map(Customer::Facebook),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Customer::Facebook(id) => id.as_str(),
            Customer::Simulated(id) => id,
        }
    }
}

/// What a config reload replaces as a whole: the config and everything built from it.
/// Work in progress keeps the `Live` it started with; new work takes the current one.
pub struct Live {
    pub config: Arc<Config>,
    pub motion: MotionClient,
    pub graph: GraphClient,
    /// graph.instagram.com, for Instagram Login accounts.
    pub instagram_graph: GraphClient,
    pub retry: retry::RetryPolicy,
}

impl Live {
    /// The config and its clients; `capture` records their exchanges while
    /// `fb-openchannel capture` runs.
    pub fn new(
        config: Config,
        capture: Option<Arc<crate::capture::Capture>>,
    ) -> Result<Live, String> {
        if let Some(c) = &capture {
            c.set_secrets(&config);
        }
        let capture: crate::http_client::Tap =
            capture.map(|c| c as Arc<dyn crate::http_client::Recorder>);
        let motion = MotionClient::new(&config.motion, capture.clone())?;
        let graph = GraphClient::new(
            config.facebook.graph_url.get_ref(),
            &config.facebook.graph_version,
            config.motion.timeout,
            config.media_hosts(),
            capture.clone(),
        )?;
        let instagram_graph = GraphClient::new(
            config.facebook.instagram_graph_url.get_ref(),
            &config.facebook.graph_version,
            config.motion.timeout,
            config.media_hosts(),
            capture,
        )?;
        Ok(Live {
            retry: retry::RetryPolicy::from_config(&config.delivery),
            config: Arc::new(config),
            motion,
            graph,
            instagram_graph,
        })
    }

    pub fn page(&self, id: &str) -> Option<&PageConfig> {
        self.config.page(id)
    }

    /// The Openchannel account with this id: a page, or an Instagram account.
    pub fn account(&self, id: &str) -> Option<Account<'_>> {
        self.config
            .page(id)
            .map(Account::Page)
            .or_else(|| self.config.instagram(id).map(Account::Instagram))
    }
}

/// One Openchannel account in Motion: a Facebook Page (Messenger and its wall) or an
/// Instagram professional account (its direct messages).
#[derive(Debug, Clone, Copy)]
pub enum Account<'a> {
    Page(&'a PageConfig),
    Instagram(&'a crate::config::InstagramConfig),
}

impl<'a> Account<'a> {
    pub fn id(self) -> &'a str {
        match self {
            Account::Page(page) => page.id.get_ref(),
            Account::Instagram(account) => account.id.get_ref(),
        }
    }

    pub fn receive_url(self) -> &'a str {
        match self {
            Account::Page(page) => page.receive_url.get_ref(),
            Account::Instagram(account) => account.receive_url.get_ref(),
        }
    }

    pub fn map_key(self, motion: &'a crate::config::MotionConfig) -> &'a str {
        match self {
            Account::Page(page) => page.map_key(motion),
            Account::Instagram(account) => account.map_key(motion),
        }
    }

    pub fn reply_token(self) -> &'a crate::config::Secret {
        match self {
            Account::Page(page) => page.reply_token.get_ref(),
            Account::Instagram(account) => account.reply_token.get_ref(),
        }
    }
}

/// Everything the listeners and workers share.
pub struct Shared {
    /// The current config and its clients; swapped whole by a reload.
    live: ArcSwap<Live>,
    pub store: Store,
    pub metrics: Metrics,
    /// Poked when new inbound work is stored (here, or on another node of a shared
    /// queue), so the worker does not wait for its timer.
    pub inbound_wake: Arc<Notify>,
    /// Poked when an agent's reply is stored (here, or another node let go of work).
    pub outbound_wake: Arc<Notify>,
    /// Reply URL calls waiting for the first attempt of their item, by (page, dedup key).
    pub reply_waiters:
        Mutex<HashMap<(String, crate::model::DedupKey), oneshot::Sender<reply::FirstAttempt>>>,
    /// Each page's ability to send: a problem for an admin, Facebook's slow-down.
    pub health: health::Health,
    /// Customer names in memory, and each account's refused name lookups.
    pub names: names::Names,
    /// Delivery outcomes the store could not write yet (a full disk): dispatch waits
    /// until they are written.
    pub ledger: ledger::Ledger,
    /// Pages whose conversations Meta routes to another app (standby-only traffic).
    pub routing: routing::Routing,
    /// Features of pages Facebook throttles (code 368…), and the pace of comments.
    pub pauses: pauses::Pauses,
    /// Records exchanges with the peers while `fb-openchannel capture` runs.
    pub capture: Arc<crate::capture::Capture>,
    /// Memory and spool budgets for webhook bodies not verified yet.
    pub bodies: crate::budget::BodyBudget,
    /// The newest token of each Instagram Login account.
    pub instagram_tokens: instagram_login::Tokens,
    /// Instagram media ids → their permalinks (a comment thread's `externalUrl`);
    /// cleared when it grows past its bound.
    pub permalinks: Mutex<HashMap<String, String>>,
    /// Agents' files offered to Meta by URL on the public listener.
    pub public_files: public_files::PublicFiles,
    /// Room for files in transit (customers' media into Motion, agents' files to Graph).
    pub files: crate::budget::FileBudget,
    /// Poked by a reload: the subscription check takes its new interval at once.
    pub subscription_wake: Notify,
    /// The latest `debug_token` verdict on each account's token.
    pub token_health: token_health::TokenHealth,
    /// What the other nodes of a shared queue run that differs from this node's config.
    pub config_drift: nodes::Drift,
    /// The public listener's certificate and, with ACME, its keeper (set once the
    /// listener is up), for `/readyz`.
    pub certificate: std::sync::OnceLock<Box<dyn CertificateWatch>>,
}

/// What `/readyz` asks of the public listener's certificate (the daemon sets it once the
/// listener is up: a certificate from files or from ACME, known above this layer).
pub trait CertificateWatch: Send + Sync {
    /// What is wrong with the certificate at `now` (Unix seconds), if anything.
    fn problem(&self, now: i64) -> Option<String>;
    /// Whether Facebook cannot connect at `now`: no certificate yet, or an expired one
    /// (its `problem`); one that merely ends soon still serves.
    fn unusable(&self, now: i64) -> Option<String>;
}

impl Shared {
    /// Every metric as Prometheus text, with the queue read from the store now.
    pub async fn metrics_text(&self) -> Result<String, crate::store::StoreError> {
        let now = crate::time::now_ms();
        let paused = self
            .pauses
            .all()
            .into_iter()
            .filter(|(_, _, p)| p.until > now)
            .map(|(page, feature, _)| (page, feature.as_str()))
            .collect();
        let figures = crate::metrics::Now {
            paused,
            unverified: self.bodies.in_use(),
            outcomes_kept: self.ledger.kept(),
            outcome_write_retries: self.ledger.failed_flushes(),
            config_differences: self.config_drift.all().iter().map(|(_, d)| d.len()).sum(),
            queue: self.store.queue_stats().await?,
            states: self.store.count_by_state().await?,
            store: self.store.stats(),
        };
        Ok(self.metrics.render(figures))
    }

    pub fn new(
        live: Live,
        store: Store,
        bodies: crate::budget::BodyBudget,
        capture: Arc<crate::capture::Capture>,
    ) -> Arc<Self> {
        // The store's: on a shared queue, the other nodes' work wakes them too.
        let inbound = store.wake(crate::store::Direction::Inbound);
        let outbound = store.wake(crate::store::Direction::Outbound);
        Arc::new(Shared {
            bodies,
            capture,
            live: ArcSwap::from_pointee(live),
            store,
            metrics: Metrics::new(),
            inbound_wake: inbound,
            outbound_wake: outbound,
            reply_waiters: Mutex::new(HashMap::new()),
            health: health::Health::default(),
            names: names::Names::default(),
            ledger: ledger::Ledger::default(),
            pauses: pauses::Pauses::default(),
            routing: routing::Routing::default(),
            instagram_tokens: instagram_login::Tokens::default(),
            permalinks: Mutex::new(HashMap::new()),
            public_files: public_files::PublicFiles::default(),
            files: crate::budget::FileBudget::new(crate::budget::FILE_MEMORY),
            subscription_wake: Notify::new(),
            token_health: token_health::TokenHealth::default(),
            config_drift: nodes::Drift::default(),
            certificate: std::sync::OnceLock::new(),
        })
    }

    /// The current config and clients.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Puts a new config in force for all work that starts from now on.
    pub fn replace_live(&self, live: Live) {
        let old = self.live();
        // A page whose token was rotated (or that was removed) gets a fresh start.
        self.health
            .keep_problems(|page| match (old.page(page), live.page(page)) {
                (Some(before), Some(after)) => {
                    before.access_token.get_ref() == after.access_token.get_ref()
                }
                _ => false,
            });
        self.live.store(Arc::new(live));
        self.inbound_wake.notify_one();
        self.outbound_wake.notify_one();
        self.instagram_tokens.wake.notify_one();
        self.subscription_wake.notify_one();
        self.token_health.wake.notify_one();
        self.config_drift.wake.notify_one();
    }
}
