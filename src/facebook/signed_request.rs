//! Meta's `signed_request`: how the App Dashboard's Deauthorize and Data Deletion
//! callbacks say who they are about.
//!
//! `base64url(signature) "." base64url(payload)`, the signature an HMAC-SHA256 of the
//! payload *as sent* (its base64url text) keyed with the app secret; the payload JSON
//! names its `algorithm` (only `HMAC-SHA256`), when it was `issued_at` (Unix seconds)
//! and the app-scoped `user_id`. Checked in constant time; a request more than a day
//! old (or from the future) is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The longest `signed_request` taken (Meta's are a few hundred bytes).
pub const MAX_SIGNED_REQUEST_BYTES: usize = 4096;
/// How old a signed request may be.
const MAX_AGE_S: i64 = 24 * 3600;
/// How far ahead of our clock its `issued_at` may be.
const MAX_SKEW_S: i64 = 300;

/// What a verified signed request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The app-scoped id of the Facebook user it is about.
    pub user_id: String,
    pub issued_at: i64,
}

/// Why a signed request was refused: short, for the 400 answer and one log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedRequestError {
    #[error("signed_request is missing")]
    Missing,
    #[error("signed_request is not two base64url parts")]
    Malformed,
    #[error("signed_request's signature does not match the app secret")]
    BadSignature,
    #[error("signed_request's algorithm is not HMAC-SHA256")]
    Algorithm,
    #[error("signed_request is more than a day old, or from the future")]
    Stale,
    #[error("signed_request names no user_id")]
    NoUser,
}

/// Verifies `text` with `app_secret` at `now_s` (Unix seconds).
pub fn verify(
    text: Option<&str>,
    app_secret: &[u8],
    now_s: i64,
) -> Result<SignedRequest, SignedRequestError> {
    let text = text
        .filter(|t| !t.is_empty())
        .ok_or(SignedRequestError::Missing)?;
    if text.len() > MAX_SIGNED_REQUEST_BYTES {
        return Err(SignedRequestError::Malformed);
    }
    let (signature, payload) = text.split_once('.').ok_or(SignedRequestError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| SignedRequestError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| SignedRequestError::Malformed)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| SignedRequestError::BadSignature)?;
    let data: Value = serde_json::from_slice(&json).map_err(|_| SignedRequestError::Malformed)?;
    if !data["algorithm"]
        .as_str()
        .is_some_and(|a| a.eq_ignore_ascii_case("HMAC-SHA256"))
    {
        return Err(SignedRequestError::Algorithm);
    }
    let issued_at = data["issued_at"]
        .as_i64()
        .ok_or(SignedRequestError::Stale)?;
    if issued_at < now_s - MAX_AGE_S || issued_at > now_s + MAX_SKEW_S {
        return Err(SignedRequestError::Stale);
    }
    let user_id = match &data["user_id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(SignedRequestError::NoUser),
    };
    if user_id.is_empty() || user_id.len() > 64 || !user_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignedRequestError::NoUser);
    }
    Ok(SignedRequest { user_id, issued_at })
}

/// A signed request as Meta makes it (the simulator's and tests').
pub fn sign(app_secret: &[u8], payload: &Value) -> String {
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signature}.{payload}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_764_000_000;

    fn payload(issued_at: i64) -> Value {
        json!({"algorithm": "HMAC-SHA256", "expires": 0, "issued_at": issued_at, "user_id": "10158000000000001"})
    }

    #[test]
    fn a_good_request_names_its_user() {
        let signed = sign(b"secret", &payload(NOW - 60));
        let got = verify(Some(&signed), b"secret", NOW).unwrap();
        assert_eq!(got.user_id, "10158000000000001");
    }

    #[test]
    fn forged_stale_and_malformed_requests_are_refused_with_their_reason() {
        use SignedRequestError::*;
        let forged = sign(b"another secret", &payload(NOW));
        assert_eq!(verify(Some(&forged), b"secret", NOW), Err(BadSignature));
        // The payload changed after signing.
        let good = sign(b"secret", &payload(NOW));
        let (sig, _) = good.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(
            json!({"algorithm": "HMAC-SHA256", "issued_at": NOW, "user_id": "1"}).to_string(),
        );
        assert_eq!(
            verify(Some(&format!("{sig}.{other}")), b"secret", NOW),
            Err(BadSignature)
        );
        let stale = sign(b"secret", &payload(NOW - 2 * 86_400));
        assert_eq!(verify(Some(&stale), b"secret", NOW), Err(Stale));
        let future = sign(b"secret", &payload(NOW + 3600));
        assert_eq!(verify(Some(&future), b"secret", NOW), Err(Stale));
        let md5 = sign(
            b"secret",
            &json!({"algorithm": "HMAC-MD5", "issued_at": NOW, "user_id": "1"}),
        );
        assert_eq!(verify(Some(&md5), b"secret", NOW), Err(Algorithm));
        let nobody = sign(
            b"secret",
            &json!({"algorithm": "HMAC-SHA256", "issued_at": NOW, "user_id": "../me"}),
        );
        assert_eq!(verify(Some(&nobody), b"secret", NOW), Err(NoUser));
        for bad in ["", "abc", "!!!.???", "a.b.c"] {
            assert!(verify(Some(bad), b"secret", NOW).is_err(), "{bad}");
        }
        assert_eq!(verify(None, b"secret", NOW), Err(Missing));
        let huge = "a".repeat(MAX_SIGNED_REQUEST_BYTES + 1);
        assert_eq!(verify(Some(&huge), b"secret", NOW), Err(Malformed));
    }
}
