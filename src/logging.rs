//! Log output: tracing to stderr, shaped for the journal when systemd runs us.
//!
//! systemd sets `JOURNAL_STREAM` when stderr goes to the journal; the journal stamps
//! each line itself, so we print no timestamp and no colours there. `RUST_LOG` (or
//! `FB_OPENCHANNEL_LOG`) sets the level, `info` by default.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("FB_OPENCHANNEL_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if under_journal {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    let _ = result;
}
