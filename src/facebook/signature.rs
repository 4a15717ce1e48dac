//! `X-Hub-Signature-256` verification.
//!
//! Facebook signs the raw body bytes with HMAC-SHA256 keyed by the App Secret and sends
//! `sha256=<lowercase hex>`. We hash the bytes exactly as received (never a re-serialised
//! JSON) and compare in constant time (`Mac::verify_slice`).
//! Source: <https://developers.facebook.com/docs/messenger-platform/webhooks#validate-payloads>.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Facebook puts the signature in.
pub const HEADER: &str = "x-hub-signature-256";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error(
        "X-Hub-Signature-256 does not match the body (wrong app_secret, or the body was altered)"
    )]
    Mismatch,
}

impl SignatureError {
    /// Short label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}

/// Checks `header` (the value of `X-Hub-Signature-256`, if any) against `body`.
pub fn verify(app_secret: &[u8], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let mut verifier = Verifier::start(app_secret, header)?;
    verifier.update(body);
    verifier.finish()
}

/// Which secret signed a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedBy {
    /// `facebook.app_secret`: the Meta app's.
    App,
    /// `facebook.instagram_app_secret`: the Instagram app's (Instagram Login).
    InstagramApp,
}

impl SignedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SignedBy::App => "app_secret",
            SignedBy::InstagramApp => "instagram_app_secret",
        }
    }
}

/// A signature check fed the body as it arrives, so that the body need not be whole in
/// memory to be checked — and so that a request without a well-formed signature header
/// is refused before a byte of its body is read. With a second secret (the Instagram
/// app's), both are computed and either may match.
pub struct Verifier {
    mac: Hmac<Sha256>,
    instagram: Option<Hmac<Sha256>>,
    expected: [u8; 32],
}

impl Verifier {
    /// Reads the header; fails at once when it is missing or malformed.
    pub fn start(app_secret: &[u8], header: Option<&[u8]>) -> Result<Verifier, SignatureError> {
        Self::start_with(app_secret, None, header)
    }

    /// Like [`Verifier::start`], taking also a signature made with `instagram_secret`.
    pub fn start_with(
        app_secret: &[u8],
        instagram_secret: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<Verifier, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_digest = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed)?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
        let mac = |key: &[u8]| {
            Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
        };
        Ok(Verifier {
            mac: mac(app_secret),
            instagram: instagram_secret.map(mac),
            expected,
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.mac.update(bytes);
        if let Some(instagram) = &mut self.instagram {
            instagram.update(bytes);
        }
    }

    /// Compares in constant time (both, when there are two secrets: the time does not
    /// tell which one matched).
    pub fn finish(self) -> Result<(), SignatureError> {
        self.finish_which().map(drop)
    }

    /// Like [`Verifier::finish`], saying which secret signed.
    pub fn finish_which(self) -> Result<SignedBy, SignatureError> {
        let app = self.mac.verify_slice(&self.expected).is_ok();
        let instagram = self
            .instagram
            .map(|m| m.verify_slice(&self.expected).is_ok())
            .unwrap_or(false);
        match (app, instagram) {
            (true, _) => Ok(SignedBy::App),
            (false, true) => Ok(SignedBy::InstagramApp),
            _ => Err(SignatureError::Mismatch),
        }
    }
}

/// The header value Facebook would send for `body` (used by `simulate`, `demo` and tests).
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style vector.
        let sig = sign(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            sig,
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(
            verify(
                b"key",
                Some(sig.as_bytes()),
                b"The quick brown fox jumps over the lazy dog"
            ),
            Ok(())
        );
    }

    /// An Instagram Login webhook may be signed with the Instagram app's secret: either
    /// secret is taken, and which one signed is told.
    #[test]
    fn either_secret_may_sign() {
        let body = b"{\"object\":\"instagram\"}";
        for (key, by) in [
            (&b"app"[..], SignedBy::App),
            (b"insta", SignedBy::InstagramApp),
        ] {
            let sig = sign(key, body);
            let mut v = Verifier::start_with(b"app", Some(b"insta"), Some(sig.as_bytes())).unwrap();
            v.update(body);
            assert_eq!(v.finish_which(), Ok(by));
        }
        let sig = sign(b"other", body);
        let mut v = Verifier::start_with(b"app", Some(b"insta"), Some(sig.as_bytes())).unwrap();
        v.update(body);
        assert_eq!(v.finish_which(), Err(SignatureError::Mismatch));
        let sig = sign(b"insta", body);
        assert_eq!(
            verify(b"app", Some(sig.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejections() {
        let body = b"{}";
        let good = sign(b"secret", body);
        assert_eq!(verify(b"secret", None, body), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"other", Some(good.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", Some(good.as_bytes()), b"{ }"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", Some(&good.as_bytes()[7..]), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"secret", Some(b"sha256=zz"), body),
            Err(SignatureError::Malformed)
        );
        let upper = good.to_uppercase().replace("SHA256=", "sha256=");
        // Upper-case hex still decodes to the same bytes; Facebook sends lower case.
        assert_eq!(verify(b"secret", Some(upper.as_bytes()), body), Ok(()));
        // The legacy sha1 header alone is not enough.
        assert_eq!(
            verify(
                b"secret",
                Some(b"sha1=0000000000000000000000000000000000000000"),
                body
            ),
            Err(SignatureError::Malformed)
        );
    }
}
