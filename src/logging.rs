//! Log output: to the journal when systemd runs us, to stderr otherwise.
//!
//! systemd sets `JOURNAL_STREAM` when our stderr goes to the journal. Then we write to
//! journald's native socket: each line gets its priority (error 3, warn 4, info 6,
//! debug 7) and the event's fields as journal fields — `PAGE_ID`, `CONVERSATION`,
//! `OUTCOME`, `ITEM`… — so `journalctl -u fb-openchannel PAGE_ID=123` works. If the
//! socket is not there, or outside systemd, lines go to stderr (without our own
//! timestamps under the journal, which adds its own). `RUST_LOG` (or
//! `FB_OPENCHANNEL_LOG`) sets the level, `info` by default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn filter() -> Targets {
    let spec = ["FB_OPENCHANNEL_LOG", "RUST_LOG"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| v.parse::<Targets>().is_ok())
        // The PostgreSQL client logs the server's notices (one per connection when it
        // stops); the daemon says what that means itself, once.
        .unwrap_or_else(|| "info,tokio_postgres=warn".to_owned());
    with_quiet_tls(&spec)
}

/// `spec` (`level` or `target=level`, comma-separated), with rustls held to errors unless
/// it names rustls itself: rustls warns once per handshake about things any client on the
/// internet may send (an IP address as SNI: "Illegal SNI extension"), a line per
/// connection from anyone (DESIGN §4 rule 11). The daemon says what a refused handshake
/// means itself, at debug level.
fn with_quiet_tls(spec: &str) -> Targets {
    let filter: Targets = spec
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(Level::INFO));
    if spec.contains("rustls") {
        return filter;
    }
    filter.with_target("rustls", Level::ERROR)
}

pub fn init() {
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if under_journal
        && std::env::var_os("FB_OPENCHANNEL_LOG_STDERR").is_none()
        && let Ok(journal) = tracing_journald::layer()
    {
        let mut priorities = tracing_journald::PriorityMappings::new();
        priorities.info = tracing_journald::Priority::Informational;
        priorities.debug = tracing_journald::Priority::Debug;
        let journal = journal
            .with_field_prefix(None)
            .with_priority_mappings(priorities)
            .with_syslog_identifier("fb-openchannel".into());
        let _ = tracing_subscriber::registry()
            .with(filter())
            .with(journal)
            .try_init();
        return;
    }
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if under_journal {
        let format = format.without_time().with_ansi(false);
        tracing_subscriber::registry()
            .with(filter())
            .with(format)
            .try_init()
    } else {
        let format = format.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        tracing_subscriber::registry()
            .with(filter())
            .with(format)
            .try_init()
    };
}

/// A kind of log line that can come in floods, and how many of it are written.
///
/// Refused requests (an attacker's bad signatures), deliveries under load and a store
/// that cannot write can each cause thousands of lines a second — enough for journald
/// to drop the lines that matter. Each topic writes its first `burst` lines of an
/// interval in full, counts the rest, and [`summarise`] writes one line per topic with
/// the count at the end of the interval.
#[derive(Debug)]
pub struct Topic {
    /// What the suppressed lines were, for the summary ("webhooks refused for a bad
    /// signature"); also the `topic` label of `fb_openchannel_log_lines_suppressed_total`.
    pub name: &'static str,
    pub warn: bool,
    pub burst: u32,
    pub every: Duration,
}

impl Topic {
    pub const fn warn(name: &'static str, burst: u32, every: Duration) -> Topic {
        Topic {
            name,
            warn: true,
            burst,
            every,
        }
    }

    pub const fn info(name: &'static str, burst: u32, every: Duration) -> Topic {
        Topic {
            name,
            warn: false,
            burst,
            every,
        }
    }

    /// Whether this occurrence is written. Counted either way.
    pub fn admit(&'static self) -> bool {
        THROTTLE.admit(self, Instant::now())
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// Webhook POSTs refused before anything was stored (bad signature, too large, slow).
pub static WEBHOOK_REFUSED: Topic = Topic::warn("webhooks refused", 1, MINUTE);
/// Handshakes with a wrong verify token.
pub static HANDSHAKE_REFUSED: Topic =
    Topic::warn("webhook verification handshakes refused", 1, MINUTE);
/// Reply URL calls with a wrong token or an unknown page.
pub static REPLY_REFUSED: Topic = Topic::warn("Reply URL calls refused", 1, MINUTE);
/// Webhooks and replies answered 503 because the store could not write.
pub static STORE_REFUSED: Topic = Topic::warn(
    "webhooks and replies answered 503 (state database cannot write)",
    1,
    MINUTE,
);
/// Store transactions that failed.
pub static STORE_FAILED: Topic = Topic::warn("failed state database transactions", 1, MINUTE);
/// Items delivered: one line each while traffic is human-sized (a few a second).
pub static DELIVERED: Topic = Topic::info(
    "items delivered (per-item lines resume below 100 per 10 s)",
    100,
    Duration::from_secs(10),
);
/// Delivery attempts that will be retried.
pub static RETRYING: Topic = Topic::warn(
    "delivery attempts failed and scheduled for retry (per-item lines resume below 20 a minute)",
    20,
    MINUTE,
);

/// Active connections closed to make room for new ones.
pub static EVICTED: Topic = Topic::warn(
    "connections closed to make room (every active slot taken)",
    1,
    MINUTE,
);

/// Signed webhook items kept as failed (they cannot be read or delivered as they are).
pub static ITEM_FAILED: Topic = Topic::warn("webhook items kept as failed", 10, MINUTE);

/// Customer name lookups that failed for a passing reason (asked again next time).
pub static NAME_LOOKUP_FAILED: Topic = Topic::warn(
    "customer name lookups failed (Graph unreachable?)",
    5,
    MINUTE,
);

/// Items left to another node of a shared queue (their account is not in this config).
pub static HANDED_OVER: Topic = Topic::warn(
    "items left to another node of the shared queue (their account is not in this node's config)",
    5,
    MINUTE,
);

/// Every topic, for [`summarise`].
pub static TOPICS: [&Topic; 11] = [
    &HANDED_OVER,
    &NAME_LOOKUP_FAILED,
    &ITEM_FAILED,
    &EVICTED,
    &WEBHOOK_REFUSED,
    &HANDSHAKE_REFUSED,
    &REPLY_REFUSED,
    &STORE_REFUSED,
    &STORE_FAILED,
    &DELIVERED,
    &RETRYING,
];

static THROTTLE: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(Throttle::default);

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

/// The state behind every [`Topic`]: one small window per topic (the set of topics is
/// fixed, so this is bounded whatever a caller sends).
#[derive(Debug, Default)]
struct Throttle {
    windows: Mutex<HashMap<&'static str, Window>>,
    /// Lines not written since the start, per topic (for metrics).
    totals: Mutex<HashMap<&'static str, u64>>,
}

impl Throttle {
    fn admit(&self, topic: &'static Topic, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(topic.name).or_default();
        let fresh = w
            .started
            .is_none_or(|start| now.duration_since(start) >= topic.every);
        if fresh {
            // The summary of the window that ended, if [`summarise`] has not written it.
            let suppressed = w.suppressed;
            *w = Window {
                started: Some(now),
                written: 0,
                suppressed: 0,
            };
            if suppressed > 0 {
                drop(windows);
                write_summary(topic, suppressed);
                return self.admit(topic, now);
            }
        }
        if w.written < topic.burst {
            w.written += 1;
            return true;
        }
        w.suppressed += 1;
        drop(windows);
        *self
            .totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.name)
            .or_default() += 1;
        false
    }

    /// The suppressed count of each topic whose interval is over, starting a new one.
    fn due(&self, now: Instant) -> Vec<(&'static Topic, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for topic in TOPICS {
            if let Some(w) = windows.get_mut(topic.name)
                && w.suppressed > 0
                && w.started
                    .is_some_and(|s| now.duration_since(s) >= topic.every)
            {
                out.push((topic, w.suppressed));
                // The next line of this topic opens a new window and is written in full.
                *w = Window::default();
            }
        }
        out
    }
}

/// Lines not written since the start, per topic name.
pub fn suppressed_totals() -> Vec<(&'static str, u64)> {
    let totals = THROTTLE.totals.lock().unwrap_or_else(|e| e.into_inner());
    TOPICS
        .iter()
        .filter_map(|t| totals.get(t.name).map(|n| (t.name, *n)))
        .collect()
}

/// Writes one summary line per topic that suppressed lines, once its interval is over;
/// checks every second until `shutdown` turns true.
pub async fn summarise(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        for (topic, n) in THROTTLE.due(Instant::now()) {
            write_summary(topic, n);
        }
    }
}

fn write_summary(topic: &Topic, n: u64) {
    let every = humantime::format_duration(topic.every);
    if topic.warn {
        tracing::warn!(
            suppressed = n,
            "{n} more {} in the last {every} (the first ones are logged in full above; fb_openchannel_log_lines_suppressed_total counts them all)",
            topic.name
        );
    } else {
        tracing::info!(
            suppressed = n,
            "{n} more {} in the last {every}",
            topic.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST_TOPIC: Topic = Topic::warn("test lines", 3, Duration::from_secs(10));

    #[test]
    fn a_flood_writes_its_burst_then_one_summary_per_interval() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let written = (0..10_000)
            .filter(|_| throttle.admit(&TEST_TOPIC, t0))
            .count();
        assert_eq!(written, 3);
        // Still inside the interval: nothing to summarise, nothing more written.
        assert!(throttle.due(t0 + Duration::from_secs(5)).is_empty());
        assert!(!throttle.admit(&TEST_TOPIC, t0 + Duration::from_secs(5)));
        // TEST_TOPIC is not among TOPICS: look at the window directly.
        let windows = throttle.windows.lock().unwrap();
        assert_eq!(windows["test lines"].suppressed, 9_998);
    }

    #[test]
    fn after_the_summary_lines_are_written_in_full_again() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let written = (0..500).filter(|_| throttle.admit(&DELIVERED, t0)).count();
        assert_eq!(written, 100);
        let later = t0 + Duration::from_secs(11);
        let due = throttle.due(later);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, 400);
        assert!(throttle.due(later).is_empty(), "summarised once");
        assert!(throttle.admit(&DELIVERED, later));
        assert_eq!(throttle.totals.lock().unwrap()[DELIVERED.name], 400);
    }
}
