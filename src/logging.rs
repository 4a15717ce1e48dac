//! Log output: to the journal when systemd runs us, to stderr otherwise.
//!
//! systemd sets `JOURNAL_STREAM` when our stderr goes to the journal. Then we write to
//! journald's native socket: each line gets its priority (error 3, warn 4, info 6,
//! debug 7) and the event's fields as journal fields — `PAGE_ID`, `CONVERSATION`,
//! `OUTCOME`, `ITEM`… — so `journalctl -u fb-openchannel PAGE_ID=123` works. If the
//! socket is not there, or outside systemd, lines go to stderr (without our own
//! timestamps under the journal, which adds its own). `RUST_LOG` (or
//! `FB_OPENCHANNEL_LOG`) sets the level, `info` by default.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn filter() -> EnvFilter {
    std::env::var("FB_OPENCHANNEL_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if under_journal {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
