//! Time as the daemon counts it: milliseconds since the Unix epoch (what the store
//! keeps, what Facebook sends), durations turned into them without wrapping, and times
//! written for people. At the bottom of the layers: every part uses it, it uses nothing
//! of ours.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in milliseconds, saturating at `i64::MAX` instead of wrapping negative
/// (a `Duration` holds far more than an `i64` of milliseconds). Every duration that
/// meets a timestamp goes through here, and the sum or difference saturates too.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The time span from `now` to `at` (ms), zero when `at` is not in the future.
pub fn until(at: i64, now: i64) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// The last second the time formatter writes (the year 9999's): a peer may name any
/// time an i64 holds, and past this one the formatter fails (`format!` then panics).
const LAST_WRITTEN_MS: i64 = 253_402_300_799_000;

/// A Unix time in ms as UTC `YYYY-MM-DD HH:MM:SS`; before 1970 as its start, past the
/// year 9999 as its last second.
pub fn timestamp(ms: i64) -> String {
    let ms = ms.clamp(0, LAST_WRITTEN_MS).unsigned_abs();
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// A Unix time in seconds for a log line: `2026-12-01 10:00:00 UTC`.
pub fn when(unix_s: i64) -> String {
    format!("{} UTC", timestamp(unix_s.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_well_and_durations_never_wrap() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(when(86_400), "1970-01-02 00:00:00 UTC");
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
        assert_eq!(until(5, 10), Duration::ZERO);
        assert_eq!(until(10, 5), Duration::from_millis(5));
    }

    /// Times a peer names (a token's expiry, a webhook's or an inbox message's time) can
    /// be anything an i64 holds; past the year 9999 the formatter fails, and a failing
    /// `Display` panics in `format!`.
    #[test]
    fn any_time_an_i64_holds_is_written() {
        assert_eq!(timestamp(253_402_300_799_000), "9999-12-31 23:59:59");
        assert_eq!(timestamp(i64::MAX), "9999-12-31 23:59:59");
        assert_eq!(timestamp(i64::MIN), "1970-01-01 00:00:00");
        assert_eq!(when(i64::MAX), "9999-12-31 23:59:59 UTC");
    }
}
