//! Agents' files offered to Meta by URL: Instagram Login's Send API takes an attachment
//! only as a public URL, which Meta's servers then fetch. The file is served from the
//! public listener (the one Facebook already reaches) at `/files/<token>/<name>`, where
//! the token is 32 random bytes from the kernel: unguessable, not derived from anything,
//! and never Motion's key or attachment id. Each lives [`LIFETIME`] and then is gone; the
//! files are held in memory, at most [`MAX_BYTES`] in all (a send beyond that waits and
//! is tried again).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a file stays reachable: Meta fetches it while the Send API call runs; the
/// margin covers its retries.
pub const LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Memory for files being offered, across all sends.
pub const MAX_BYTES: usize = 128 * 1024 * 1024;

/// A file being offered.
#[derive(Clone)]
pub struct Offered {
    pub content_type: String,
    pub bytes: Bytes,
    until: Instant,
}

#[derive(Default)]
pub struct PublicFiles {
    files: Mutex<HashMap<String, Offered>>,
}

impl PublicFiles {
    /// Offers `bytes` for [`LIFETIME`]; returns the token of its path, or why not (no
    /// room now: try again later).
    pub fn offer(&self, content_type: &str, bytes: Bytes) -> Result<String, String> {
        let token = random_token()?;
        let now = Instant::now();
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.retain(|_, f| f.until > now);
        let held: usize = files.values().map(|f| f.bytes.len()).sum();
        if held + bytes.len() > MAX_BYTES {
            return Err(format!(
                "{} MiB of files are being offered to Meta already (the limit is {} MiB)",
                held / (1024 * 1024),
                MAX_BYTES / (1024 * 1024)
            ));
        }
        files.insert(
            token.clone(),
            Offered {
                content_type: content_type.to_owned(),
                bytes,
                until: now + LIFETIME,
            },
        );
        Ok(token)
    }

    /// The file behind `token`, while it lives.
    pub fn get(&self, token: &str) -> Option<Offered> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .get(token)
            .filter(|f| f.until > Instant::now())
            .cloned()
    }

    /// Ends an offer (the send is over).
    pub fn withdraw(&self, token: &str) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

/// 32 bytes from the kernel's random source, as 64 hex digits.
pub(crate) fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_unguessable_bounded_and_withdrawn() {
        let files = PublicFiles::default();
        let a = files
            .offer("image/png", Bytes::from_static(b"png"))
            .unwrap();
        let b = files
            .offer("image/png", Bytes::from_static(b"png"))
            .unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(files.get(&a).unwrap().bytes, Bytes::from_static(b"png"));
        files.withdraw(&a);
        assert!(files.get(&a).is_none());
        let too_big = Bytes::from(vec![0u8; MAX_BYTES]);
        assert!(files.offer("video/mp4", too_big).is_err());
    }
}
