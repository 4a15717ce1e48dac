//! What a failed Graph call means: retry, wait, or give up — the one decision
//! ([`classify`]), from Graph's error codes and Meta's usage headers.

use super::*;

/// What to do about a failed Graph call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A passing fault (5xx, network, 1200): try again after backoff.
    Retry,
    /// Facebook's "unknown error" / "service temporarily unavailable" (codes 1 and 2):
    /// worth a few tries, for minutes — not for days; then the agent is told.
    RetryBriefly,
    /// Rate limited (4, 17, 32, 613, 800xx): slow this page down, then try again.
    SlowDown,
    /// The Page token is invalid or expired (190): the page is unhealthy until an admin
    /// puts a new token in the config.
    TokenInvalid,
    /// One feature of the Page is throttled, usually for hours (368 "temporarily
    /// blocked from using this feature"; 10/1893063 "Page temporarily restricted from
    /// sending"): pause that feature, not the Page, and try again after.
    FeatureBlocked,
    /// The token lacks a permission (200–299, 230, 1/99): nothing works until an admin
    /// grants it; name the permission.
    MissingPermission,
    /// Trying again cannot help (10, 100, 551, 10900/10903, other 4xx).
    Permanent,
}

/// Classifies a Graph failure from its HTTP status and the error body's `code` /
/// `error_subcode`. Pure, so it is tested against a table of real error bodies.
pub fn classify(status: u16, code: Option<i64>, subcode: Option<i64>) -> Disposition {
    match (code, subcode) {
        (Some(1), Some(99)) => Disposition::MissingPermission,
        (Some(10), Some(1893063)) => Disposition::FeatureBlocked,
        _ => match code {
            Some(1200) => Disposition::Retry,
            Some(1 | 2) => Disposition::RetryBriefly,
            Some(4 | 17 | 32 | 613 | 80000..=80014) => Disposition::SlowDown,
            Some(190 | 102) => Disposition::TokenInvalid,
            Some(368) => Disposition::FeatureBlocked,
            // 200..=299 includes 230 (pages_messaging permission missing).
            Some(200..=299) => Disposition::MissingPermission,
            Some(10 | 100 | 551 | 10900..=10903) => Disposition::Permanent,
            _ => by_status(status),
        },
    }
}

pub(super) fn by_status(status: u16) -> Disposition {
    match status {
        408 | 500..=599 => Disposition::Retry,
        429 => Disposition::SlowDown,
        _ => Disposition::Permanent,
    }
}

/// A failed Graph call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct GraphError {
    /// HTTP status, 0 when no answer came (network error).
    pub status: u16,
    pub code: Option<i64>,
    pub subcode: Option<i64>,
    pub message: String,
    pub fbtrace_id: Option<String>,
    pub disposition: Disposition,
    /// How long Facebook says to wait before calling again (rate limits).
    pub retry_after: Option<Duration>,
}

impl GraphError {
    pub fn network(message: String) -> Self {
        GraphError {
            status: 0,
            code: None,
            subcode: None,
            message,
            fbtrace_id: None,
            disposition: Disposition::Retry,
            retry_after: None,
        }
    }

    fn describe(&self) -> String {
        let mut text = if self.status == 0 {
            format!("Graph API unreachable: {}", self.message)
        } else {
            format!("Graph API answered {}", self.status)
        };
        if let Some(code) = self.code {
            text.push_str(&format!(" (code {code}"));
            if let Some(sub) = self.subcode {
                text.push_str(&format!(", subcode {sub}"));
            }
            text.push(')');
        }
        if self.status != 0 {
            text.push_str(&format!(": {}", self.message));
        }
        if let Some(hint) = self.hint() {
            text.push_str(&format!(" — {hint}"));
        }
        if let Some(trace) = &self.fbtrace_id {
            text.push_str(&format!(" [fbtrace_id {trace}]"));
        }
        text
    }

    /// What the error usually means, in words for an agent or admin.
    pub fn hint(&self) -> Option<&'static str> {
        match (self.code, self.subcode) {
            (Some(100), Some(33)) => {
                Some("the post or comment no longer exists (deleted?) or the token cannot see it")
            }
            (Some(10900..=10903), _) => Some(
                "this person cannot be answered here (blocked, or the post is closed to replies)",
            ),
            (Some(10), Some(2018278)) => Some("outside Messenger's reply window"),
            (Some(551), _) => Some("this person is not available on Messenger right now"),
            (Some(200..=299), _) => Some(
                "the Page token lacks a permission (pages_messaging for messages, pages_manage_engagement for comments)",
            ),
            (Some(368), _) | (Some(10), Some(1893063)) => Some(
                "Facebook temporarily blocks this Page from this feature (often for hours): it is paused and tried again later",
            ),
            (Some(1), Some(99)) => Some("the Page token lacks a permission for this call"),
            _ => None,
        }
    }

    /// Builds the error from a non-2xx answer.
    pub fn from_response(status: u16, body: &str, usage_header: Option<&str>) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Body,
        }
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            code: Option<i64>,
            #[serde(default)]
            error_subcode: Option<i64>,
            #[serde(default)]
            fbtrace_id: Option<String>,
        }
        let parsed = serde_json::from_str::<Envelope>(body).ok().map(|e| e.error);
        let (code, subcode, message, fbtrace_id) = match parsed {
            Some(b) => (
                b.code,
                b.error_subcode,
                b.message
                    .map_or_else(|| "(no message)".into(), |m| one_line(&m, MESSAGE_CHARS)),
                b.fbtrace_id.map(|t| one_line(&t, TRACE_CHARS)),
            ),
            None => (None, None, http_client::snippet(body), None),
        };
        GraphError {
            status,
            code,
            subcode,
            message,
            fbtrace_id,
            disposition: classify(status, code, subcode),
            retry_after: usage_header.and_then(regain_access_after),
        }
    }
}

/// The longest wait a rate limit's header is believed for: a Page's rate limit is
/// counted over a 24-hour sliding window (Meta, "Page-level rate limits"), so no honest
/// estimate is longer. A longer one (years were tried, and more minutes than a `u64` of
/// seconds holds) would pause the page's replies for as long.
pub const LONGEST_REGAIN: Duration = Duration::from_secs(24 * 3600);

/// The longest `estimated_time_to_regain_access` (minutes) in an
/// `X-Business-Use-Case-Usage` header, e.g.
/// `{"112":[{"type":"pages","call_count":100,"estimated_time_to_regain_access":5}]}`,
/// at most [`LONGEST_REGAIN`].
pub fn regain_access_after(header: &str) -> Option<Duration> {
    let value: Value = serde_json::from_str(header).ok()?;
    let minutes = value
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes.saturating_mul(60)).min(LONGEST_REGAIN))
}

/// Most characters of Graph's own error message kept: its messages run to a few hundred
/// (the longest in Meta's error reference about 300), and each reaches log lines and
/// Motion's error notes.
const MESSAGE_CHARS: usize = 1000;
/// Most characters of an `fbtrace_id` kept (Graph's are 11).
const TRACE_CHARS: usize = 64;

/// A peer's text on one line (control characters, line breaks included, become spaces)
/// and at most `most` characters, `…` marking a cut.
fn one_line(text: &str, most: usize) -> String {
    let mut line: String = text
        .trim()
        .chars()
        .take(most)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().nth(most).is_some() {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_own_message_and_trace_are_bounded_and_on_one_line() {
        let body = serde_json::json!({"error": {
            "message": format!("(#100) bad\nline{}", "x".repeat(100_000)),
            "code": 100,
            "fbtrace_id": format!("A\r\n{}", "t".repeat(10_000)),
        }})
        .to_string();
        let e = GraphError::from_response(400, &body, None);
        assert!(e.message.starts_with("(#100) bad line"), "{}", e.message);
        assert_eq!(e.message.chars().count(), MESSAGE_CHARS + 1);
        assert!(e.message.ends_with('…'));
        let trace = e.fbtrace_id.clone().unwrap();
        assert_eq!(trace.chars().count(), TRACE_CHARS + 1);
        assert!(!e.to_string().contains('\n'));
        let short = GraphError::from_response(
            400,
            r#"{"error":{"message":"Invalid OAuth access token.","code":190,"fbtrace_id":"AbC123"}}"#,
            None,
        );
        assert_eq!(short.message, "Invalid OAuth access token.");
        assert_eq!(short.fbtrace_id.as_deref(), Some("AbC123"));
    }
}
