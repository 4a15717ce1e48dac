//! The TLS-ALPN-01 proofs (RFC 8737) the public listener shows the ACME CA: those of this
//! node's own order, and — on a shared queue — those of the order another node runs,
//! looked up when the CA's check reaches this node (a floating IP or a load balancer
//! sends it to either).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::time::Instant;

/// Finds the proof (SHA-256 of the key authorization) another node shows for a name
/// while an order is being checked.
pub type Lookup =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<[u8; 32]>> + Send>> + Send + Sync>;

/// How long a check waits for the shared queue's answer before its handshake fails.
const LOOKUP_WAIT: Duration = Duration::from_secs(3);

/// The shared queue is asked for a name at most this often, whatever the number of
/// handshakes asking for it: anyone can open them, and the queue's connections are the
/// webhooks'.
const LOOKUP_PACE: Duration = Duration::from_millis(100);

/// The proofs served, by lowercase name.
#[derive(Default)]
pub(super) struct Challenges {
    /// This node's order's.
    own: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// The names of the certificate (lowercase), and where other nodes' proofs are.
    lookup: OnceLock<(Vec<String>, Lookup)>,
    /// The last answer of `lookup` for each name asked, with when it was asked, and the
    /// certificate made for it, kept while the proof is the same (the CA checks from
    /// several places at once). Held while asking, so that one question is asked at a
    /// time.
    others: tokio::sync::Mutex<HashMap<String, Asked>>,
}

/// What the shared queue answered for a name, asked at `at`.
struct Asked {
    at: Instant,
    proof: Option<([u8; 32], Arc<CertifiedKey>)>,
}

impl Challenges {
    pub(super) fn set(&self, name: &str, cert: Arc<CertifiedKey>) {
        if let Ok(mut own) = self.own.write() {
            own.insert(name.to_ascii_lowercase(), cert);
        }
    }

    pub(super) fn clear(&self) {
        if let Ok(mut own) = self.own.write() {
            own.clear();
        }
    }

    pub(super) fn set_lookup(&self, names: Vec<String>, lookup: Lookup) {
        let names = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let _ = self.lookup.set((names, lookup));
    }

    fn own(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.own.read().ok()?.get(name).cloned()
    }

    /// The proof for `name` (lowercase): this node's, else another node's, from an
    /// answer of the shared queue asked after this handshake came (the proof is there
    /// before the CA is told to check).
    pub(super) async fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(cert) = self.own(name) {
            return Some(cert);
        }
        let (names, lookup) = self.lookup.get()?;
        if !names.iter().any(|n| n == name) {
            return None;
        }
        let came = Instant::now();
        let mut others = self.others.lock().await;
        if let Some(asked) = others.get(name) {
            if asked.at >= came {
                return asked.proof.as_ref().map(|(_, cert)| cert.clone());
            }
            tokio::time::sleep_until(asked.at + LOOKUP_PACE).await;
        }
        let at = Instant::now();
        let found = tokio::time::timeout(LOOKUP_WAIT, lookup(name.to_owned()))
            .await
            .ok()
            .flatten();
        let kept = others.remove(name).and_then(|asked| asked.proof);
        let proof = match (found, kept) {
            (Some(digest), Some((same, cert))) if same == digest => Some((digest, cert)),
            (Some(digest), _) => certificate(name, &digest).ok().map(|cert| (digest, cert)),
            (None, _) => None,
        };
        let cert = proof.as_ref().map(|(_, cert)| cert.clone());
        others.insert(name.to_owned(), Asked { at, proof });
        cert
    }
}

/// Serves one certificate to every handshake (a proof found for this connection).
#[derive(Debug)]
pub(super) struct Proof(pub(super) Arc<CertifiedKey>);

impl ResolvesServerCert for Proof {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The self-signed certificate that proves `name` (RFC 8737 §3): the name as its only
/// SAN and the SHA-256 of the key authorization in the critical acmeIdentifier extension.
pub fn certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let fail = |e: rcgen::Error| format!("cannot make the TLS-ALPN-01 certificate for {name}: {e}");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with WebPKI,
    // which refuses the critical acmeIdentifier extension it does not know.
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("cannot serve the TLS-ALPN-01 certificate for {name}: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_certificate_carries_the_proof_for_its_name_only() {
        crate::http_client::install_crypto_provider();
        let digest = [7u8; 32];
        let cert = certificate("fb.example.com", &digest).unwrap();
        use x509_cert::der::Decode;
        let parsed = x509_cert::Certificate::from_der(cert.cert[0].as_ref()).unwrap();
        let acme_identifier =
            x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.31");
        let extension = parsed
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == acme_identifier)
            .expect("acmeIdentifier extension");
        assert!(extension.critical, "RFC 8737: the extension is critical");
        // An OCTET STRING of the 32-byte SHA-256.
        let value = extension.extn_value.as_bytes();
        assert_eq!(&value[..2], &[0x04, 0x20]);
        assert_eq!(&value[2..], &digest);
        let facts = super::super::tls::leaf_facts(&cert.cert[0]).unwrap();
        assert_eq!(facts.names, ["fb.example.com"]);
    }

    /// Anyone can open `acme-tls/1` handshakes: 500 for a configured name within half a
    /// second ask the shared queue once per 100 ms at most, for another name never; and a
    /// check that comes after the proof was shown finds it.
    #[tokio::test]
    async fn a_flood_of_checks_asks_the_shared_queue_at_a_bounded_pace() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let asked = Arc::new(AtomicUsize::new(0));
        let shown = Arc::new(AtomicBool::new(false));
        let challenges = Arc::new(Challenges::default());
        let (count, proof) = (asked.clone(), shown.clone());
        challenges.set_lookup(
            vec!["FB.example.com".into()],
            Arc::new(move |_name: String| {
                count.fetch_add(1, Ordering::SeqCst);
                let proof = proof.clone();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    proof.load(Ordering::SeqCst).then_some([7u8; 32])
                })
            }),
        );
        assert!(challenges.find("other.example.com").await.is_none());
        assert_eq!(asked.load(Ordering::SeqCst), 0);

        let started = Instant::now();
        let mut checks = tokio::task::JoinSet::new();
        for i in 0..500 {
            let challenges = challenges.clone();
            checks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(i)).await;
                challenges.find("fb.example.com").await.is_some()
            });
        }
        while let Some(found) = checks.join_next().await {
            assert!(!found.unwrap(), "no proof shown");
        }
        let flood = asked.load(Ordering::SeqCst);
        let paced = started.elapsed().as_millis() as usize / 100 + 1;
        assert!(
            (1..=paced).contains(&flood),
            "asked {flood} times in {:?}",
            started.elapsed()
        );

        shown.store(true, Ordering::SeqCst);
        let cert = challenges.find("fb.example.com").await.expect("shown now");
        let again = challenges.find("fb.example.com").await.unwrap();
        assert!(Arc::ptr_eq(&cert, &again), "made once for one proof");
    }
}
