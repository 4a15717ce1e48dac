//! What an attempt at an item came to, and the one place where that is recorded for both
//! directions: the item's new state in the store (through the ledger, so a full disk
//! delays it and never doubles a delivery), the give-up rule, the log line and the
//! metric. The workers ([`inbound`](super::inbound), [`outbound`](super::outbound)) only
//! say what happened; what it means for the item is decided here, from one config
//! snapshot.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::logging;
use crate::motion::MotionError;
use crate::relay::retry::RetryPolicy;
use crate::relay::{Live, Shared};
use crate::store::{Direction, Item, Write, duration_ms, now_ms};

/// Why an attempt did not deliver.
#[derive(Debug)]
pub enum Failure {
    /// May work later; `wait` is the peer's own hint, if it gave one. `rate_limited`:
    /// Facebook asked us to slow down, the whole page pauses. `brief`: worth retrying
    /// for minutes only (Graph codes 1 and 2, `facebook.unknown_error_retry`), then the
    /// agent is told.
    Transient {
        reason: String,
        wait: Option<Duration>,
        rate_limited: bool,
        brief: bool,
    },
    /// Will not work as it is. `status` is what a waiting Reply URL call is answered
    /// (Motion → Facebook only).
    Permanent { status: u16, reason: String },
}

impl Failure {
    /// May work later, on the retry schedule.
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure::Transient {
            reason: reason.into(),
            wait: None,
            rate_limited: false,
            brief: false,
        }
    }

    /// Will not work as it is.
    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure::Permanent {
            status: 422,
            reason: reason.into(),
        }
    }
}

impl From<MotionError> for Failure {
    fn from(e: MotionError) -> Self {
        match e {
            MotionError::Transient(reason) => Failure::transient(reason),
            MotionError::Permanent(reason) | MotionError::TooLarge(reason) => {
                Failure::permanent(reason)
            }
        }
    }
}

/// A successful attempt: what it produced (JSON, kept with the item) and the words of
/// its log line.
pub struct Delivered {
    pub result: Option<String>,
    pub summary: String,
}

/// What became of the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Parked for an operator; `status` as in [`Failure::Permanent`].
    Failed {
        status: u16,
        reason: String,
    },
    /// Another attempt at `next_at` (ms).
    Retry {
        next_at: i64,
        reason: String,
    },
}

/// Records the outcome of an attempt at `item`: decides retry or give-up (by `live`, the
/// snapshot the attempt ran with), logs, counts, and writes the item's new state. A
/// failure's reason gets `failed_note` appended (why it may have failed; empty when
/// nothing is known).
pub async fn record(
    shared: &Shared,
    live: &Live,
    direction: Direction,
    item: &Item,
    result: Result<Delivered, Failure>,
    failed_note: &str,
) -> Settled {
    let words = Words::of(direction);
    let now = now_ms();
    let settled = match result {
        Ok(delivered) => {
            if logging::DELIVERED.admit() {
                info!(
                    page_id = %item.page_id,
                    conversation = %item.conversation,
                    item = item.id,
                    kind = %item.kind,
                    outcome = "delivered",
                    "{}", delivered.summary
                );
            }
            shared
                .ledger
                .record(
                    &shared.store,
                    Write::Delivered {
                        item: item.id,
                        result: delivered.result,
                        at: now,
                    },
                )
                .await;
            Settled::Delivered
        }
        Err(Failure::Permanent { status, reason }) => {
            let reason = format!("{reason}{failed_note}");
            error!(
                page_id = %item.page_id,
                conversation = %item.conversation,
                item = item.id,
                kind = %item.kind,
                outcome = "failed",
                "{} failed for good: {reason}{}", words.what, words.failed_hint
            );
            fail(shared, item, now, status, reason).await
        }
        Err(Failure::Transient {
            reason,
            wait,
            rate_limited,
            brief,
        }) => {
            let first_failure = item.first_failure_at.unwrap_or(now);
            // Facebook's "unknown error" is worth minutes of tries, not days.
            let window = if brief {
                live.config
                    .facebook
                    .unknown_error_retry
                    .min(live.retry.give_up_after)
            } else {
                live.retry.give_up_after
            };
            if now.saturating_sub(first_failure) >= duration_ms(window) {
                let reason = format!(
                    "{}gave up after {} of failures: {reason}{failed_note}",
                    words.gave_up_prefix,
                    humantime::format_duration(window)
                );
                error!(
                    page_id = %item.page_id,
                    conversation = %item.conversation,
                    item = item.id,
                    kind = %item.kind,
                    outcome = "failed",
                    "{} {reason}{}", words.what, words.gave_up_hint
                );
                fail(shared, item, now, 504, reason).await
            } else {
                let failures = u32::try_from(item.attempts.saturating_add(1)).unwrap_or(u32::MAX);
                let delay = live.retry.delay(failures, wait);
                let next_at = now.saturating_add(duration_ms(delay));
                if rate_limited {
                    // Every item of this page waits, not only this one.
                    shared.health.slow_down(&item.page_id, next_at);
                }
                if logging::RETRYING.admit() {
                    warn!(
                        page_id = %item.page_id,
                        conversation = %item.conversation,
                        item = item.id,
                        kind = %item.kind,
                        outcome = "retry",
                        attempt = failures,
                        "{} {}: {reason}; retrying in {}",
                        words.what,
                        words.not_yet,
                        humantime::format_duration(RetryPolicy::whole_ms(delay))
                    );
                }
                shared
                    .ledger
                    .record(
                        &shared.store,
                        Write::RetryAt {
                            item: item.id,
                            next_at,
                            error: reason.clone(),
                            at: now,
                        },
                    )
                    .await;
                Settled::Retry { next_at, reason }
            }
        }
    };
    let label = match &settled {
        Settled::Delivered => "delivered",
        Settled::Failed { .. } => "failed",
        Settled::Retry { .. } => "retry",
    };
    match direction {
        Direction::Inbound => shared.metrics.inbound(&item.page_id, label),
        Direction::Outbound => shared.metrics.outbound(&item.page_id, label),
    }
    settled
}

async fn fail(shared: &Shared, item: &Item, now: i64, status: u16, reason: String) -> Settled {
    // Kept in memory when the store refuses it: the item is not handed out again until
    // it is written (see `ledger`).
    shared
        .ledger
        .record(
            &shared.store,
            Write::Failed {
                item: item.id,
                reason: reason.clone(),
                at: now,
            },
        )
        .await;
    Settled::Failed { status, reason }
}

/// The words of the log lines, by direction.
struct Words {
    what: &'static str,
    not_yet: &'static str,
    failed_hint: &'static str,
    gave_up_prefix: &'static str,
    gave_up_hint: &'static str,
}

impl Words {
    fn of(direction: Direction) -> Words {
        match direction {
            Direction::Inbound => Words {
                what: "delivery to Motion",
                not_yet: "failed",
                failed_hint: ". The item is kept as failed; fix the cause, then retry it",
                gave_up_prefix: "",
                gave_up_hint: ". The item is kept as failed; retry it once Motion is reachable",
            },
            Direction::Outbound => Words {
                what: "agent reply",
                not_yet: "not sent yet",
                failed_hint: "",
                gave_up_prefix: "Not sent: ",
                gave_up_hint: "",
            },
        }
    }
}
