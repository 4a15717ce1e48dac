//! What an attempt at an item came to, and the one place where that is recorded for both
//! directions: the item's new state in the store (through the ledger, so a full disk
//! delays it and never doubles a delivery), the give-up rule, the log line and the
//! metric. The workers ([`inbound`](super::inbound), [`outbound`](super::outbound)) only
//! say what happened; what it means for the item is decided here, from one config
//! snapshot.

use std::time::Duration;

use crate::logging;
use crate::motion::MotionError;
use crate::relay::pauses::Feature;
use crate::relay::retry::RetryPolicy;
use crate::relay::{Live, Shared};
use crate::store::{Direction, Item, Write, duration_ms, now_ms};

/// A log line about an item: which page, conversation, item and kind, and the outcome.
macro_rules! item_log {
    ($level:ident, $item:expr, $outcome:literal, $($rest:tt)+) => {
        tracing::$level!(
            page_id = %$item.page_id,
            conversation = %$item.conversation,
            item = $item.id,
            kind = %$item.kind,
            outcome = $outcome,
            $($rest)+
        )
    };
}

/// Why an attempt did not deliver: the one failure taxonomy, produced from the Motion
/// and Graph clients' errors and consumed here and at the Reply URL edge (which alone
/// chooses HTTP statuses, see [`Refusal`]). No decision reads a reason's text: the
/// reason is for people.
#[derive(Debug)]
pub enum Failure {
    /// May work later: on the retry schedule, or `after` the peer's own hint. `brief`:
    /// worth retrying for minutes only (Graph codes 1 and 2,
    /// `facebook.unknown_error_retry`), then the agent is told.
    Retry {
        reason: String,
        after: Option<Duration>,
        brief: bool,
    },
    /// Facebook asked us to slow down: every item of the page waits, `after` its hint.
    SlowDown {
        reason: String,
        after: Option<Duration>,
    },
    /// Facebook throttles one feature of the page (see `pauses`): tried again `after`.
    Blocked {
        feature: Feature,
        reason: String,
        after: Duration,
    },
    /// A file over what may pass on, `limit` bytes.
    TooLarge { reason: String, limit: u64 },
    /// The page's access token is invalid or expired: an admin must put a new one.
    TokenInvalid { reason: String },
    /// Will not work as it is.
    Refused { reason: String, why: Refusal },
}

/// Why an item is refused for good, as the agent's Reply URL call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// What the agent sent cannot be sent (an empty reply, a customer who is no id).
    BadRequest,
    /// The page is not in the config.
    UnknownPage,
    /// Facebook's rules refuse it (the reply window, a comment's photo-only rule…).
    Policy,
    /// Facebook or Motion refused it (a permission, an unreadable file).
    Peer,
    /// What the store holds for it does not parse.
    Broken,
}

impl Failure {
    /// May work later, on the retry schedule.
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure::Retry {
            reason: reason.into(),
            after: None,
            brief: false,
        }
    }

    /// Will not work as it is: a peer refused it.
    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure::refused(Refusal::Peer, reason)
    }

    /// Will not work as it is, for this reason.
    pub fn refused(why: Refusal, reason: impl Into<String>) -> Failure {
        Failure::Refused {
            reason: reason.into(),
            why,
        }
    }
}

impl From<MotionError> for Failure {
    fn from(e: MotionError) -> Self {
        match e {
            MotionError::Transient(reason) => Failure::transient(reason),
            MotionError::Permanent(reason) => Failure::permanent(reason),
            MotionError::TooLarge { reason, limit } => Failure::TooLarge { reason, limit },
        }
    }
}

/// A successful attempt: what it produced (JSON, kept with the item) and the words of
/// its log line.
pub struct Delivered {
    pub result: Option<String>,
    pub summary: String,
}

/// Why an item was parked as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Refused(Refusal),
    TooLarge,
    TokenInvalid,
    /// Retried for as long as it may be, in vain.
    GaveUp,
}

/// What became of the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Parked for an operator, because of `cause`.
    Failed {
        cause: Cause,
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
                item_log!(info, item, "delivered", "{}", delivered.summary);
            }
            shared
                .ledger
                .record(
                    &shared.store,
                    Write::Delivered {
                        item: item.id,
                        result: delivered.result,
                        at: now,
                        earlier_attempts: item.attempts > 0,
                    },
                )
                .await;
            Settled::Delivered
        }
        Err(Failure::Refused { reason, why }) => {
            failed(
                shared,
                item,
                words,
                Cause::Refused(why),
                reason,
                failed_note,
                now,
            )
            .await
        }
        Err(Failure::TooLarge { reason, .. }) => {
            failed(
                shared,
                item,
                words,
                Cause::TooLarge,
                reason,
                failed_note,
                now,
            )
            .await
        }
        Err(Failure::TokenInvalid { reason }) => {
            failed(
                shared,
                item,
                words,
                Cause::TokenInvalid,
                reason,
                failed_note,
                now,
            )
            .await
        }
        Err(Failure::Retry {
            reason,
            after,
            brief,
        }) => {
            retry(
                shared,
                live,
                item,
                words,
                (reason, after, brief),
                failed_note,
                now,
            )
            .await
        }
        Err(Failure::SlowDown { reason, after }) => {
            let settled = retry(
                shared,
                live,
                item,
                words,
                (reason, after, false),
                failed_note,
                now,
            )
            .await;
            if let Settled::Retry { next_at, .. } = &settled {
                // Every item of this page waits, not only this one, on every node.
                shared.health.slow_down(&item.page_id, *next_at);
                crate::relay::nodes::tell_slow_down(shared, &item.page_id, *next_at);
            }
            settled
        }
        Err(Failure::Blocked { reason, after, .. }) => {
            retry(
                shared,
                live,
                item,
                words,
                (reason, Some(after), false),
                failed_note,
                now,
            )
            .await
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

/// Parks the item as failed for good.
async fn failed(
    shared: &Shared,
    item: &Item,
    words: Words,
    cause: Cause,
    reason: String,
    failed_note: &str,
    now: i64,
) -> Settled {
    let reason = format!("{reason}{failed_note}");
    item_log!(
        error,
        item,
        "failed",
        "{} failed for good: {reason}{}",
        words.what,
        words.failed_hint
    );
    park(shared, item, now, cause, reason).await
}

/// Schedules another attempt, or gives up once the item has failed for long enough.
async fn retry(
    shared: &Shared,
    live: &Live,
    item: &Item,
    words: Words,
    (reason, after, brief): (String, Option<Duration>, bool),
    failed_note: &str,
    now: i64,
) -> Settled {
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
        item_log!(
            error,
            item,
            "failed",
            "{} {reason}{}",
            words.what,
            words.gave_up_hint
        );
        return park(shared, item, now, Cause::GaveUp, reason).await;
    }
    let failures = u32::try_from(item.attempts.saturating_add(1)).unwrap_or(u32::MAX);
    // Never past the end of the window, whatever a peer's hint said: the last try is
    // made then, and an item still refused is parked with the reason.
    let delay = live.retry.delay(failures, after);
    let give_up_at = first_failure.saturating_add(duration_ms(window));
    let next_at = now.saturating_add(duration_ms(delay)).min(give_up_at);
    let delay = crate::time::until(next_at, now);
    if logging::RETRYING.admit() {
        item_log!(
            warn,
            item,
            "retry",
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

async fn park(shared: &Shared, item: &Item, now: i64, cause: Cause, reason: String) -> Settled {
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
    Settled::Failed { cause, reason }
}

/// The words of the log lines, by direction.
#[derive(Clone, Copy)]
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
