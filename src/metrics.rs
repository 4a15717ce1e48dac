//! Prometheus metrics, served as text on the local listener's `GET /metrics`.
//!
//! Counters and histograms are updated where things happen; queue depth, the age of the
//! oldest pending item, item states and fsync counts are read from the store when
//! `/metrics` is scraped, so they are never stale. Page ids are labels; secrets never are.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{QueueStat, StoreStats};
use crate::time::now_ms;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub page_id: String,
    pub kind: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub page_id: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphLabels {
    pub page_id: String,
    pub call: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub page_id: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PageLabels {
    pub page_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    /// Webhook POSTs by result: stored, bad_signature, too_large, timeout, bad_body, store_error.
    pub webhooks: Family<ResultLabels, Counter>,
    /// Events stored from webhooks, by page, kind and initial state (pending/skipped/failed).
    pub events: Family<EventLabels, Counter>,
    /// Inbound items by outcome: delivered, retry, failed.
    pub notifies: Family<OutcomeLabels, Counter>,
    /// Outbound replies by outcome: delivered, retry, failed.
    pub replies: Family<OutcomeLabels, Counter>,
    /// Graph API calls by kind (send, comment, profile) and outcome.
    pub graph_calls: Family<GraphLabels, Counter>,
    /// Pending items per page and direction (read at scrape time).
    queue_depth: Family<QueueLabels, Gauge>,
    /// Age of the oldest pending item per page and direction, seconds (scrape time).
    oldest_pending: Family<QueueLabels, FloatGauge>,
    /// Items per state (scrape time).
    items: Family<StateLabels, Gauge>,
    /// Unix time of the last event stored per page.
    pub last_event: Family<PageLabels, FloatGauge>,
    /// Unix time of the last successful delivery to Motion per page.
    pub last_delivery: Family<PageLabels, FloatGauge>,
    /// When each Page token expires, Unix time (0: never, or not checked yet).
    pub token_expiry: Family<PageLabels, FloatGauge>,
    /// When the app's data access through each Page token ends, Unix time.
    pub token_data_access_expiry: Family<PageLabels, FloatGauge>,
    /// Customer messages found in an account's inbox that no webhook brought.
    pub reconcile_recovered: Family<PageLabels, Counter>,
    /// When an account's inbox was last compared with the queue, Unix time.
    pub reconcile_last_run: Family<PageLabels, FloatGauge>,
    /// Conversations the last comparison looked at, per account.
    pub reconcile_conversations: Family<PageLabels, Gauge>,
    /// Messages the last comparison found missing, per account.
    pub reconcile_missing: Family<PageLabels, Gauge>,
    /// 1 while an account's customer name lookups pause after refusals, else 0.
    pub customer_names_paused: Family<PageLabels, Gauge>,
    /// Request latency per listener and route.
    pub request_seconds: HistogramFamily,
    /// notAfter of the public certificate, Unix time.
    pub cert_expiry: FloatGauge,
    /// Certificate reloads (file change or SIGHUP) by result: ok, error.
    pub cert_reloads: Family<ResultLabels, Counter>,
    /// ACME orders for the public certificate by result: ok, error.
    pub acme_attempts: Family<ResultLabels, Counter>,
    /// When the last ACME order was tried, Unix time (0: none since the start).
    pub acme_last_attempt: FloatGauge,
    /// When the daemon next asks the ACME CA, Unix time.
    pub acme_next_attempt: FloatGauge,
    /// When each Instagram Login token expires, Unix time (0: not known yet).
    instagram_token_expiry: Family<PageLabels, FloatGauge>,
    /// Store transactions that wrote, and fsyncs of the WAL, read at scrape time.
    store_commits: Gauge,
    store_relaxed_commits: Gauge,
    store_wal_syncs: Gauge,
    /// Requests waiting for the store thread, read at scrape time.
    store_waiting: Gauge,
    /// Where acknowledged requests spent their time in the store, by stage, summed over
    /// requests; the requests counted; the writer's WAL-tail checkpoints and their time.
    store_durable_seconds: Family<StageLabels, FloatGauge>,
    store_durable_requests: Gauge,
    store_tail_checkpoints: Gauge,
    store_tail_checkpoint_seconds: FloatGauge,
    /// Webhook verification handshakes by result: accepted, refused, throttled.
    pub handshakes: Family<ResultLabels, Counter>,
    /// Requests to /webhook by the client certificate they came with (meta, none,
    /// other), with `public.client_ca`.
    client_certs: Family<ResultLabels, Counter>,
    /// Signed webhook bodies or items in them that could not be read (kept as failed).
    pub unreadable: Counter,
    /// Items left to another node of a shared queue: their account is not in this config.
    pub left_to_other_nodes: Counter,
    /// Log lines not written because their topic was flooding (read at scrape time).
    log_suppressed: Family<TopicLabels, Gauge>,
    /// 1 for each feature of a page Facebook throttles now (scrape time).
    feature_paused: Family<FeatureLabels, Gauge>,
    /// Bytes of webhook bodies held before their signature is checked, by where
    /// (memory, spool) (scrape time).
    unverified_bytes: Family<WhereLabels, Gauge>,
    /// Delivery outcomes kept in memory because the store refused them (scrape time).
    outcomes_kept: Gauge,
    /// Tries to write them that failed (scrape time).
    outcome_write_retries: Gauge,
    /// Parts of the config another node of the shared queue holds otherwise (scrape time).
    config_differences: Gauge,
    /// Background tasks that crashed (a bug) and were started again, by task.
    pub task_restarts: Family<TaskLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    pub page_id: String,
    pub feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhereLabels {
    pub held: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fb_openchannel");
        let webhooks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook POSTs received, by result",
            webhooks.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events_stored",
            "Events received in verified webhooks (redeliveries included), by page, kind and state",
            events.clone(),
        );
        let notifies = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "inbound_deliveries",
            "Inbound items handed to Motion, by outcome",
            notifies.clone(),
        );
        let replies = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "outbound_deliveries",
            "Agent replies sent to Facebook, by outcome",
            replies.clone(),
        );
        let graph_calls = Family::<GraphLabels, Counter>::default();
        registry.register(
            "graph_calls",
            "Graph API calls, by call and outcome",
            graph_calls.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_pending",
            "Pending items per page and direction",
            queue_depth.clone(),
        );
        let oldest_pending = Family::<QueueLabels, FloatGauge>::default();
        registry.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest pending item per page and direction",
            oldest_pending.clone(),
        );
        let items = Family::<StateLabels, Gauge>::default();
        registry.register("items", "Stored items per state", items.clone());
        let last_event = Family::<PageLabels, FloatGauge>::default();
        registry.register(
            "last_event_timestamp_seconds",
            "When the last event of a page was stored",
            last_event.clone(),
        );
        let last_delivery = Family::<PageLabels, FloatGauge>::default();
        registry.register(
            "last_delivery_timestamp_seconds",
            "When an item of a page was last delivered to Motion",
            last_delivery.clone(),
        );
        let token_expiry = Family::<PageLabels, FloatGauge>::default();
        registry.register(
            "page_token_expiry_timestamp_seconds",
            "When each Page token expires per debug_token (0: never)",
            token_expiry.clone(),
        );
        let token_data_access_expiry = Family::<PageLabels, FloatGauge>::default();
        registry.register(
            "page_token_data_access_expiry_timestamp_seconds",
            "When the app's data access through each Page token ends, per debug_token",
            token_data_access_expiry.clone(),
        );
        let reconcile_recovered = Family::<PageLabels, Counter>::default();
        registry.register(
            "reconcile_recovered_messages",
            "Customer messages found in an account's inbox (Conversations API) that no webhook brought",
            reconcile_recovered.clone(),
        );
        let reconcile_last_run = Family::<PageLabels, FloatGauge>::default();
        registry.register(
            "reconcile_last_run_timestamp_seconds",
            "When an account's inbox was last compared with the queue",
            reconcile_last_run.clone(),
        );
        let reconcile_conversations = Family::<PageLabels, Gauge>::default();
        registry.register(
            "reconcile_conversations",
            "Conversations the last comparison of an account's inbox looked at",
            reconcile_conversations.clone(),
        );
        let reconcile_missing = Family::<PageLabels, Gauge>::default();
        registry.register(
            "reconcile_missing_messages",
            "Messages the last comparison of an account's inbox found missing",
            reconcile_missing.clone(),
        );
        let request_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        let cert_expiry = FloatGauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the public listener's certificate",
            cert_expiry.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Certificate reloads after a file change or SIGHUP, by result",
            cert_reloads.clone(),
        );
        let acme_attempts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "acme_attempts",
            "Orders for the public certificate from the ACME CA (public.acme), by result",
            acme_attempts.clone(),
        );
        let acme_last_attempt = FloatGauge::default();
        registry.register(
            "acme_last_attempt_timestamp_seconds",
            "When the daemon last asked the ACME CA for a certificate (0: not since the start)",
            acme_last_attempt.clone(),
        );
        let acme_next_attempt = FloatGauge::default();
        registry.register(
            "acme_next_attempt_timestamp_seconds",
            "When the daemon next asks the ACME CA: the renewal time, or the next retry after a failure",
            acme_next_attempt.clone(),
        );
        let instagram_token_expiry = Family::<PageLabels, FloatGauge>::default();
        registry.register(
            "instagram_token_expiry_timestamp_seconds",
            "When the access token of an Instagram Login account expires (0 until its first refresh tells); the daemon refreshes it weekly",
            instagram_token_expiry.clone(),
        );
        let store_commits = Gauge::default();
        registry.register(
            "store_write_commits",
            "Store transactions that wrote something acknowledged to a peer (each answered after an fsync of the WAL)",
            store_commits.clone(),
        );
        let store_wal_syncs = Gauge::default();
        registry.register(
            "store_wal_syncs",
            "Fsyncs of the SQLite WAL, each shared by the acknowledged transactions committed while the one before it ran (0 on PostgreSQL)",
            store_wal_syncs.clone(),
        );
        let store_relaxed_commits = Gauge::default();
        registry.register(
            "store_relaxed_commits",
            "Store transactions that wrote delivery outcomes only (synced by the next fsync)",
            store_relaxed_commits.clone(),
        );
        let store_waiting = Gauge::default();
        registry.register(
            "store_waiting_requests",
            "Requests waiting for the store thread; a number that stays up means a slow or stalled disk, or another process holding the database's lock",
            store_waiting.clone(),
        );
        let store_durable_seconds = Family::<StageLabels, FloatGauge>::default();
        registry.register(
            "store_durable_seconds",
            "Time the acknowledged requests (webhooks, Reply URL calls) spent in each stage of the store, summed over requests: queue (waiting for the store thread), commit (their transaction), sync_wait (for the fsync already running), sync (their own fsync of the WAL). Divided by store_durable_requests, the mean per request; on PostgreSQL only queue",
            store_durable_seconds.clone(),
        );
        let store_durable_requests = Gauge::default();
        registry.register(
            "store_durable_requests",
            "Acknowledged requests (webhooks, Reply URL calls) the store has taken",
            store_durable_requests.clone(),
        );
        let store_tail_checkpoints = Gauge::default();
        registry.register(
            "store_tail_checkpoints",
            "Checkpoints of the WAL's tail by the store thread itself (about 5 a second under load), during which no request is taken",
            store_tail_checkpoints.clone(),
        );
        let store_tail_checkpoint_seconds = FloatGauge::default();
        registry.register(
            "store_tail_checkpoint_seconds",
            "Time the store thread spent in those checkpoints: each is an fsync of the database file, so a slow disk shows here",
            store_tail_checkpoint_seconds.clone(),
        );
        let unreadable = Counter::default();
        registry.register(
            "webhook_items_unreadable",
            "Signed webhook bodies, or items in them, that could not be read; each is kept as failed while its neighbours are delivered",
            unreadable.clone(),
        );
        let left_to_other_nodes = Counter::default();
        registry.register(
            "items_left_to_other_nodes",
            "Times this node left an item to another node of the shared queue because the item's account is not in this node's config (its config differs: copy the same file to every node)",
            left_to_other_nodes.clone(),
        );
        let customer_names_paused = Family::<PageLabels, Gauge>::default();
        registry.register(
            "customer_names_paused",
            "1 while an account's customer name lookups pause because Graph refused ten new customers' names in a row (the app may lack Business Asset User Profile Access): new customers show with stand-in names; 0 once Graph gives names again",
            customer_names_paused.clone(),
        );
        let task_restarts = Family::<TaskLabels, Counter>::default();
        registry.register(
            "task_restarts",
            "Background tasks (certificate watcher and renewal, log summaries, capture, the shared queue's hearing of the other nodes) that crashed and were started again, by task; any is a bug: report it with the journal's line",
            task_restarts.clone(),
        );
        let handshakes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "handshakes",
            "Webhook verification handshakes (GET /webhook), by result",
            handshakes.clone(),
        );
        let client_certs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_client_certs",
            "Webhooks (POST /webhook) by the client certificate they came with (meta, none, other), with public.client_ca",
            client_certs.clone(),
        );
        let log_suppressed = Family::<TopicLabels, Gauge>::default();
        registry.register(
            "log_lines_suppressed",
            "Log lines not written because their kind was flooding (a summary line is written instead), by topic",
            log_suppressed.clone(),
        );
        let feature_paused = Family::<FeatureLabels, Gauge>::default();
        registry.register(
            "feature_paused",
            "Features of a page (messages, comments, private_replies) Facebook throttles now (code 368, 10/1893063): their replies wait",
            feature_paused.clone(),
        );
        let unverified_bytes = Family::<WhereLabels, Gauge>::default();
        registry.register(
            "unverified_body_bytes",
            "Bytes of webhook bodies being read before their signature is checked, held in memory or in spool files",
            unverified_bytes.clone(),
        );
        let outcomes_kept = Gauge::default();
        registry.register(
            "delivery_outcomes_kept",
            "Outcomes of deliveries already made that the state database refused (full disk); deliveries are paused while this is above 0",
            outcomes_kept.clone(),
        );
        let outcome_write_retries = Gauge::default();
        registry.register(
            "delivery_outcome_write_retries",
            "Tries to write kept delivery outcomes that the state database refused, since the start",
            outcome_write_retries.clone(),
        );
        let config_differences = Gauge::default();
        registry.register(
            "shared_queue_config_differences",
            "Parts of the config (a token, a Receive URL, an account, settings) that other living nodes of the shared queue hold otherwise than this node, summed over them; 0 on one host",
            config_differences.clone(),
        );
        Metrics {
            registry,
            left_to_other_nodes,
            config_differences,
            task_restarts,
            customer_names_paused,
            feature_paused,
            unverified_bytes,
            outcomes_kept,
            outcome_write_retries,
            handshakes,
            client_certs,
            unreadable,
            log_suppressed,
            webhooks,
            events,
            notifies,
            replies,
            graph_calls,
            queue_depth,
            oldest_pending,
            items,
            last_event,
            last_delivery,
            token_expiry,
            token_data_access_expiry,
            reconcile_recovered,
            reconcile_last_run,
            reconcile_conversations,
            reconcile_missing,
            request_seconds,
            cert_expiry,
            cert_reloads,
            acme_attempts,
            acme_last_attempt,
            acme_next_attempt,
            instagram_token_expiry,
            store_commits,
            store_relaxed_commits,
            store_wal_syncs,
            store_waiting,
            store_durable_seconds,
            store_durable_requests,
            store_tail_checkpoints,
            store_tail_checkpoint_seconds,
        }
    }

    /// The expiry of an Instagram Login account's token, Unix seconds (`None`: unknown).
    pub fn instagram_token_expiry(&self, account: &str, expires_at_s: Option<i64>) {
        self.instagram_token_expiry
            .get_or_create(&PageLabels {
                page_id: account.to_owned(),
            })
            .set(expires_at_s.unwrap_or(0) as f64);
    }

    pub fn webhook(&self, result: &str) {
        self.webhooks
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// A request to /webhook came with this client certificate (`meta`, `none`, `other`).
    pub fn client_cert(&self, label: &str) {
        self.client_certs
            .get_or_create(&ResultLabels {
                result: label.into(),
            })
            .inc();
    }

    pub fn handshake(&self, result: &str) {
        self.handshakes
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn request(&self, listener: &str, route: &str, took: Duration) {
        self.request_seconds
            .get_or_create(&RouteLabels {
                listener: listener.into(),
                route: route.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn graph_call(&self, page_id: &str, call: &str, outcome: &str) {
        self.graph_calls
            .get_or_create(&GraphLabels {
                page_id: page_id.into(),
                call: call.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn inbound(&self, page_id: &str, outcome: &str) {
        self.notifies
            .get_or_create(&OutcomeLabels {
                page_id: page_id.into(),
                outcome: outcome.into(),
            })
            .inc();
        if outcome == "delivered" {
            self.last_delivery
                .get_or_create(&PageLabels {
                    page_id: page_id.into(),
                })
                .set(now_ms() as f64 / 1000.0);
        }
    }

    pub fn outbound(&self, page_id: &str, outcome: &str) {
        self.replies
            .get_or_create(&OutcomeLabels {
                page_id: page_id.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Renders every metric as Prometheus text, with the figures of the moment that
    /// the caller read (see `relay::Shared::metrics_text`).
    pub fn render(&self, now: Now<'_>) -> String {
        self.feature_paused.clear();
        for (page_id, feature) in now.paused {
            self.feature_paused
                .get_or_create(&FeatureLabels {
                    page_id,
                    feature: feature.into(),
                })
                .set(1);
        }
        for (held, bytes) in [("memory", now.unverified.0), ("spool", now.unverified.1)] {
            self.unverified_bytes
                .get_or_create(&WhereLabels { held: held.into() })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.outcomes_kept
            .set(i64::try_from(now.outcomes_kept).unwrap_or(i64::MAX));
        self.outcome_write_retries
            .set(i64::try_from(now.outcome_write_retries).unwrap_or(i64::MAX));
        self.config_differences
            .set(i64::try_from(now.config_differences).unwrap_or(i64::MAX));
        let (queue, states, store) = (now.queue, now.states, now.store);
        let now = now_ms();
        self.queue_depth.clear();
        self.oldest_pending.clear();
        for q in queue {
            let labels = QueueLabels {
                page_id: q.page_id,
                direction: q.direction,
            };
            self.queue_depth.get_or_create(&labels).set(q.pending);
            self.oldest_pending
                .get_or_create(&labels)
                .set((now - q.oldest_created_at).max(0) as f64 / 1000.0);
        }
        self.items.clear();
        for (state, n) in states {
            self.items.get_or_create(&StateLabels { state }).set(n);
        }
        self.store_relaxed_commits.set(
            store
                .relaxed_commits
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
        self.store_commits.set(
            store
                .write_commits
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
        self.store_wal_syncs
            .set(store.wal_syncs.load(std::sync::atomic::Ordering::Relaxed) as i64);
        self.store_waiting
            .set(store.waiting.load(std::sync::atomic::Ordering::Relaxed) as i64);
        let read = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let durable = &store.durable;
        for (stage, us) in [
            ("queue", &durable.queue_us),
            ("commit", &durable.commit_us),
            ("sync_wait", &durable.sync_wait_us),
            ("sync", &durable.sync_us),
        ] {
            self.store_durable_seconds
                .get_or_create(&StageLabels {
                    stage: stage.into(),
                })
                .set(read(us) as f64 / 1e6);
        }
        self.store_durable_requests
            .set(i64::try_from(read(&durable.requests)).unwrap_or(i64::MAX));
        self.store_tail_checkpoints
            .set(i64::try_from(read(&store.tail_checkpoints)).unwrap_or(i64::MAX));
        self.store_tail_checkpoint_seconds
            .set(read(&store.tail_checkpoint_us) as f64 / 1e6);
        for (topic, n) in crate::logging::suppressed_totals() {
            self.log_suppressed
                .get_or_create(&TopicLabels {
                    topic: topic.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The figures of the moment behind the gauges, read by the caller.
pub struct Now<'a> {
    /// Paused features: (page, feature).
    pub paused: Vec<(String, &'static str)>,
    /// Bytes of bodies not verified yet: (in memory, spooled).
    pub unverified: (usize, usize),
    pub outcomes_kept: usize,
    pub outcome_write_retries: u64,
    /// Parts of the config other nodes hold otherwise, summed over them.
    pub config_differences: usize,
    pub queue: Vec<QueueStat>,
    pub states: Vec<(String, i64)>,
    pub store: &'a StoreStats,
}
