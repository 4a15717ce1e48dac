//! The flow between Facebook and Motion: what is stored when a webhook arrives
//! ([`intake`]), how each Messenger event becomes notify calls ([`messenger`]), the worker
//! that delivers them ([`inbound`]) and the retry schedule ([`retry`]).

pub mod dispatch;
pub mod feed;
pub mod inbound;
pub mod intake;
pub mod messenger;
pub mod outbound;
pub mod reply;
pub mod retry;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

use crate::config::{Config, PageConfig};
use crate::facebook::graph::GraphClient;
use crate::motion::MotionClient;
use crate::store::Store;

/// Everything the listeners and workers share.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub motion: MotionClient,
    pub graph: GraphClient,
    pub retry: retry::RetryPolicy,
    /// Poked when new inbound work is stored, so the worker does not wait for its timer.
    pub inbound_wake: Arc<Notify>,
    /// Poked when an agent's reply is stored.
    pub outbound_wake: Arc<Notify>,
    /// Reply URL calls waiting for the first attempt of their item, by (page, dedup key).
    pub reply_waiters: Mutex<HashMap<(String, String), oneshot::Sender<reply::FirstAttempt>>>,
    /// Pages that cannot send until an admin acts (invalid token, policy block): why.
    pub page_problems: Mutex<BTreeMap<String, String>>,
    /// Pages Facebook rate-limited: no Graph call for them before this time (ms).
    pub page_paused_until: Mutex<HashMap<String, i64>>,
}

impl Shared {
    pub fn new(config: Arc<Config>, store: Store) -> Result<Arc<Self>, String> {
        let motion = MotionClient::new(&config.motion)?;
        let graph = GraphClient::new(
            config.facebook.graph_url.get_ref(),
            &config.facebook.graph_version,
            config.motion.timeout,
        )?;
        Ok(Arc::new(Shared {
            retry: retry::RetryPolicy::from_config(&config.delivery),
            config,
            store,
            motion,
            graph,
            inbound_wake: Arc::new(Notify::new()),
            outbound_wake: Arc::new(Notify::new()),
            reply_waiters: Mutex::new(HashMap::new()),
            page_problems: Mutex::new(BTreeMap::new()),
            page_paused_until: Mutex::new(HashMap::new()),
        }))
    }

    pub fn page(&self, id: &str) -> Option<&PageConfig> {
        self.config.page(id)
    }
}
