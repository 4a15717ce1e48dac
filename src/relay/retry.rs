//! The retry schedule: data and pure decisions, kept apart from the workers that wait.
//!
//! Delays grow exponentially from `retry_initial` to `retry_max`, each with up to 100 %
//! random jitter (so a recovering peer is not hit by every item at the same instant);
//! an item that has been failing for longer than `give_up_after` is parked as failed.
//! The delay sequence comes from `backon`'s exponential builder.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::DeliveryConfig;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &DeliveryConfig) -> Self {
        Self {
            initial: c.retry_initial,
            max: c.retry_max,
            give_up_after: c.give_up_after,
        }
    }

    /// How long to wait after the `failures`-th failed attempt (1 = the first failure).
    /// A peer's own "come back in" hint, when longer, wins.
    pub fn delay(&self, failures: u32, peer_hint: Option<Duration>) -> Duration {
        let scheduled = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            // Past ~30 doublings every delay is `max`; walking further only costs time.
            .nth(failures.clamp(1, 64) as usize - 1)
            .unwrap_or(self.max);
        peer_hint.map_or(scheduled, |hint| hint.max(scheduled))
    }

    /// `d` to whole milliseconds, for log lines ("3s 712ms", not nanoseconds).
    pub fn whole_ms(d: Duration) -> Duration {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Whether an item failing since `first_failure_ms` should stop being retried at `now_ms`.
    pub fn exhausted(&self, first_failure_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(first_failure_ms) >= crate::time::duration_ms(self.give_up_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_stay_capped() {
        let p = policy();
        for _ in 0..50 {
            let d1 = p.delay(1, None);
            assert!(
                d1 >= Duration::from_secs(2) && d1 < Duration::from_secs(4),
                "{d1:?}"
            );
            let d3 = p.delay(3, None);
            assert!(
                d3 >= Duration::from_secs(8) && d3 < Duration::from_secs(16),
                "{d3:?}"
            );
            let d30 = p.delay(30, None);
            assert!(
                d30 >= Duration::from_secs(300) && d30 < Duration::from_secs(600),
                "{d30:?}"
            );
        }
    }

    #[test]
    fn peer_hint_wins_when_longer() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(420))),
            Duration::from_secs(420)
        );
        assert!(p.delay(1, Some(Duration::from_millis(1))) >= Duration::from_secs(2));
    }

    #[test]
    fn gives_up_after_the_window() {
        let p = policy();
        assert!(!p.exhausted(0, 3_599_999));
        assert!(p.exhausted(0, 3_600_000));
    }

    #[test]
    fn huge_windows_and_clock_jumps_never_wrap() {
        let p = RetryPolicy {
            give_up_after: Duration::MAX,
            ..policy()
        };
        assert!(
            !p.exhausted(0, 1_800_000_000_000),
            "an endless window never ends"
        );
        assert!(
            !p.exhausted(i64::MAX, i64::MIN),
            "a clock set back is no failure time"
        );
        assert!(policy().exhausted(i64::MIN, i64::MAX));
        let long = RetryPolicy {
            max: Duration::from_secs(7 * 86_400),
            ..policy()
        };
        assert!(long.delay(u32::MAX, Some(Duration::MAX)) == Duration::MAX);
        assert!(long.delay(u32::MAX, None) <= Duration::from_secs(14 * 86_400));
    }
}
