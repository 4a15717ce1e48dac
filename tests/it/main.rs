//! Integration tests: the real daemon over loopback HTTP(S) against simulated Facebook
//! and Motion servers. One test binary with modules, to keep build times down.

mod app_review;
mod certificates;
mod cli;
mod delivery;
mod faults;
mod gate_records;
mod harness;
mod hostile;
mod instagram;
mod intake;
mod messenger;
mod operator;
mod privileged;
mod process;
mod reconcile;
// The benchmark's record for its regression gate: tested in gate_records.rs.
#[path = "../../benches/relay/records.rs"]
mod records;
mod replies;
mod run_dirs;
mod service;
mod setup;
mod shared_queue;
mod upgrade;
mod wall;

use std::future::Future;
use std::time::Duration;

/// Waits until `check` holds, looking again every 20 ms, for at most `timeout`.
/// For conditions only visible by asking (a store row); events use the peers' own
/// wait functions instead.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
