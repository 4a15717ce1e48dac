//! The public listener's certificate: PEM chain and key from disk, served by rustls, and
//! replaced without a restart.
//!
//! The server config resolves its certificate through [`CertStore`], which holds the
//! current one behind an `ArcSwap`. [`CertStore::reload`] reads the files again (on
//! SIGHUP), and [`watch`] does so whenever their size or modification time changes —
//! certbot and its deploy hooks replace files, they do not signal us. A bad new pair is
//! logged and the old one kept: a broken renewal never takes the webhook down.
//!
//! With `public.acme` the file is the daemon's own (`crate::acme` writes it), and the
//! store also holds the TLS-ALPN-01 certificates of an order in progress: a handshake
//! offering only the `acme-tls/1` protocol (RFC 8737, the CA checking a name) gets one of
//! those and is closed once done; it never reaches HTTP, and no client certificate is
//! asked of it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};
use tracing::{error, info};
use x509_cert::der::Decode;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::challenges::{Challenges, Lookup, Proof};

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A loaded certificate and facts about it.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub facts: Facts,
}

/// What the daemon needs to know of the certificate it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// notBefore of the leaf, Unix seconds.
    pub not_before: i64,
    /// notAfter of the leaf, Unix seconds (0: no certificate).
    pub not_after: i64,
    /// DNS names and IPs the leaf covers.
    pub names: Vec<String>,
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Loaded, String> {
    crate::http_client::install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let certified = together(chain, private).map_err(|e| {
        format!(
            "{} and {} do not go together: {e}",
            cert.display(),
            key.display()
        )
    })?;
    loaded(certified)
}

/// A private key and its chain in one PEM text (as ACME's certificate file holds them).
pub fn parse_pem(pem: &[u8]) -> Result<Loaded, String> {
    crate::http_client::install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate does not read: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate".into());
    }
    let private = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("the private key does not read: {e}"))?;
    let certified = together(chain, private)
        .map_err(|e| format!("the key and the chain do not go together: {e}"))?;
    loaded(certified)
}

fn together(
    chain: Vec<CertificateDer<'static>>,
    private: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, private, &provider).map_err(|e| e.to_string())
}

fn loaded(certified: CertifiedKey) -> Result<Loaded, String> {
    let facts = leaf_facts(&certified.cert[0])?;
    Ok(Loaded {
        key: Arc::new(certified),
        facts,
    })
}

/// Validity and names of a leaf certificate.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<Facts, String> {
    let cert = x509_cert::Certificate::from_der(der.as_ref())
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let validity = &cert.tbs_certificate.validity;
    let seconds = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    let mut names = Vec::new();
    for name in subject_alt_names(&cert) {
        match name {
            GeneralName::DnsName(d) => names.push(d.to_string()),
            GeneralName::IpAddress(ip) => match ip.as_bytes() {
                &[a, b, c, d] => names.push(std::net::Ipv4Addr::new(a, b, c, d).to_string()),
                bytes => {
                    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
            },
            _ => {}
        }
    }
    Ok(Facts {
        not_before: seconds(validity.not_before),
        not_after: seconds(validity.not_after),
        names,
    })
}

/// The subject alternative names of `cert` (none when the extension is absent or does
/// not parse).
fn subject_alt_names(cert: &x509_cert::Certificate) -> Vec<GeneralName> {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == SubjectAltName::OID)
        .and_then(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
        .map(|san| san.0)
        .unwrap_or_default()
}

/// The certificate currently served, replaceable at any time.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Nothing only with ACME, until its first certificate: handshakes then fail.
    current: ArcSwapOption<CertifiedKey>,
    facts: ArcSwap<Facts>,
    /// With ACME: the TLS-ALPN-01 proofs, while the CA checks the names.
    challenges: Option<Challenges>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl CertStore {
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<CertStore>, String> {
        let loaded = load(cert, key)?;
        Ok(Arc::new(CertStore {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: ArcSwapOption::new(Some(loaded.key)),
            facts: ArcSwap::from_pointee(loaded.facts),
            challenges: None,
        }))
    }

    /// For ACME: serves `file` (key and chain in one file) when it is there and usable,
    /// else nothing until [`CertStore::reload`] finds one; answers TLS-ALPN-01
    /// handshakes. The error says why the file was not taken.
    pub fn open_acme(file: &Path) -> (Arc<CertStore>, Result<(), String>) {
        let store = Arc::new(CertStore {
            cert_path: file.to_owned(),
            key_path: file.to_owned(),
            current: ArcSwapOption::empty(),
            facts: ArcSwap::from_pointee(Facts::default()),
            challenges: Some(Challenges::default()),
        });
        let loaded = if file.exists() {
            store.reload().map(drop)
        } else {
            Err("no certificate yet".into())
        };
        (store, loaded)
    }

    /// Reads the files again; on success the new certificate is served from the next
    /// handshake on, on failure the old one stays.
    pub fn reload(&self) -> Result<i64, String> {
        let loaded = load(&self.cert_path, &self.key_path)?;
        let not_after = loaded.facts.not_after;
        self.current.store(Some(loaded.key));
        self.facts.store(Arc::new(loaded.facts));
        Ok(not_after)
    }

    /// notAfter of the certificate served, Unix seconds (0: none yet).
    pub fn not_after(&self) -> i64 {
        self.facts.load().not_after
    }

    /// Validity and names of the certificate served.
    pub fn facts(&self) -> Arc<Facts> {
        self.facts.load_full()
    }

    /// Where the certificate is read from.
    pub fn path(&self) -> &Path {
        &self.cert_path
    }

    /// Answers the CA's TLS-ALPN-01 handshakes for `domain` with `cert` from now on.
    pub fn set_challenge(&self, domain: &str, cert: Arc<CertifiedKey>) {
        if let Some(challenges) = &self.challenges {
            challenges.set(domain, cert);
        }
    }

    /// Forgets every TLS-ALPN-01 certificate of this node's order (the order is over).
    pub fn clear_challenges(&self) {
        if let Some(challenges) = &self.challenges {
            challenges.clear();
        }
    }

    /// On a shared queue: where to find the proof of an order another node runs for one
    /// of `names`, for a check of the CA that reaches this node (set once).
    pub fn set_challenge_lookup(&self, names: Vec<String>, lookup: Lookup) {
        if let Some(challenges) = &self.challenges {
            challenges.set_lookup(names, lookup);
        }
    }

    /// A TLS acceptor serving whatever this store holds; with `client_auth`, only to
    /// clients with a certificate from that CA and name (else the handshake fails and
    /// nothing is read). With ACME, handshakes for `acme-tls/1` get the challenge
    /// certificates, without client authentication (the CA has no certificate).
    pub fn acceptor(
        self: &Arc<Self>,
        client_auth: Option<&ClientAuth>,
    ) -> Result<Acceptor, String> {
        let (main, judge) = self.main_config(client_auth)?;
        Ok(Acceptor {
            main: Arc::new(ArcSwap::from_pointee(main)),
            judge: Arc::new(ArcSwap::from_pointee(judge)),
            store: self.clone(),
        })
    }

    /// The config of ordinary handshakes: this store's certificate, HTTP/1.1, and with
    /// `client_auth` a client certificate asked for — never required by the handshake
    /// itself: `/oauth/callback` (an admin's browser) and `/files/` (Meta's fetcher) come
    /// without one, and a certificate that is not Meta's must not cost a webhook in
    /// `report` mode. What came is judged per request ([`Acceptor::client_cert`]).
    fn main_config(
        self: &Arc<Self>,
        client_auth: Option<&ClientAuth>,
    ) -> Result<(ServerConfig, Option<Arc<NamedClient>>), String> {
        let (main, judge) = match client_auth {
            Some(auth) => {
                let judge = client_verifier(auth)?;
                let asked = Arc::new(Asked(judge.clone()));
                (
                    config_builder()?.with_client_cert_verifier(asked),
                    Some(judge),
                )
            }
            None => (config_builder()?.with_no_client_auth(), None),
        };
        let mut main = main.with_cert_resolver(self.clone());
        main.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((main, judge))
    }

    /// Size and modification time of both files (through symlinks), to notice a renewal.
    fn fingerprint(&self) -> Option<[(u64, SystemTime); 2]> {
        let meta = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        Some([meta(&self.cert_path)?, meta(&self.key_path)?])
    }
}

fn config_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, String> {
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// Accepts TLS on the public listener: the normal handshake, or with ACME a TLS-ALPN-01
/// check, told apart by the protocol the client offers.
#[derive(Clone)]
pub struct Acceptor {
    /// Replaced whole when the client CA changes (a reload): new handshakes use the new
    /// one, open connections keep theirs.
    main: Arc<ArcSwap<ServerConfig>>,
    /// What judges a client certificate (chain to the CA, the name), with `client_ca`.
    judge: Arc<ArcSwap<Option<Arc<NamedClient>>>>,
    store: Arc<CertStore>,
}

impl Acceptor {
    /// Checks client certificates per `client_auth` from the next handshake on (the CA
    /// file is read now); on error nothing changes.
    pub fn set_client_auth(&self, client_auth: Option<&ClientAuth>) -> Result<(), String> {
        let (config, judge) = self.store.main_config(client_auth)?;
        self.main.store(Arc::new(config));
        self.judge.store(Arc::new(judge));
        Ok(())
    }

    /// What client certificate a connection came with, judged against `client_ca` and
    /// `client_name` now.
    pub fn client_cert(&self, presented: Option<&[CertificateDer<'static>]>) -> ClientCert {
        let judge = self.judge.load();
        let Some(judge) = judge.as_ref() else {
            return ClientCert::NotAsked;
        };
        let Some((end_entity, intermediates)) = presented.and_then(|c| c.split_first()) else {
            return ClientCert::None;
        };
        let now = rustls::pki_types::UnixTime::now();
        use rustls::server::danger::ClientCertVerifier;
        match judge.verify_client_cert(end_entity, intermediates, now) {
            Ok(_) => ClientCert::Meta,
            Err(e) => ClientCert::Other(e.to_string()),
        }
    }

    /// The TLS stream to serve HTTP on, or `None` when the connection was an ACME
    /// validation (answered and closed here).
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<Option<TlsStream<TcpStream>>> {
        let main = self.main.load_full();
        let Some(challenges) = &self.store.challenges else {
            return TlsAcceptor::from(main).accept(stream).await.map(Some);
        };
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if validation {
            // The CA checking a name: its proof, or the connection closed.
            let name = hello.server_name().map(str::to_ascii_lowercase);
            let proof = match name {
                Some(name) => challenges.find(&name).await,
                None => None,
            };
            let Some(proof) = proof else {
                return Ok(None);
            };
            let mut config = config_builder()
                .map_err(std::io::Error::other)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Proof(proof)));
            config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
            let mut tls = start.into_stream(Arc::new(config)).await?;
            let _ = tls.shutdown().await;
            return Ok(None);
        }
        start.into_stream(main).await.map(Some)
    }
}

/// Reloads the certificate whenever its files change, checking every `every`, until
/// `shutdown` turns true. `on_change` gets the new notAfter, or the error.
pub async fn watch(
    store: Arc<CertStore>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    on_change: impl Fn(Result<i64, &str>) + Send,
) {
    let mut seen = store.fingerprint();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let now = store.fingerprint();
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        match store.reload() {
            Ok(not_after) => {
                info!(cert = %store.cert_path.display(), not_after, "certificate files changed: now serving the new certificate");
                on_change(Ok(not_after));
            }
            Err(e) => {
                on_change(Err(&e));
                error!(
                    "certificate files changed but cannot be used ({e}); still serving the previous certificate — fix the files, they are checked again when they change"
                )
            }
        }
    }
}

pub use crate::config::{ClientAuth, ClientCertMode};

/// The client certificate a connection came with, as judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No `client_ca`: none is asked for.
    NotAsked,
    /// None came.
    None,
    /// From the CA, with the name: Meta's.
    Meta,
    /// Another one, and why it is not Meta's.
    Other(String),
}

impl ClientCert {
    /// The label of metrics and captures: `meta`, `none`, `other` (or `not_asked`).
    pub fn label(&self) -> &'static str {
        match self {
            ClientCert::NotAsked => "not_asked",
            ClientCert::None => "none",
            ClientCert::Meta => "meta",
            ClientCert::Other(_) => "other",
        }
    }
}

/// The handshake's side of client certificates: one is asked for (with the CA's name
/// as a hint), none is required, and what comes is let through — only the client's
/// proof that it holds the certificate's key is checked here. Whether it is Meta's is
/// judged per request by [`NamedClient`].
#[derive(Debug)]
struct Asked(Arc<NamedClient>);

impl rustls::server::danger::ClientCertVerifier for Asked {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Checks a client's certificate chain against the CA (rustls' WebPKI verifier), then
/// that the leaf names `name` (its subject alternative names, or its common name): a
/// certificate from the same CA for anyone else is refused too.
#[derive(Debug)]
struct NamedClient {
    chain: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    name: String,
}

impl rustls::server::danger::ClientCertVerifier for NamedClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        if client_names(end_entity).iter().any(|n| n == &self.name) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The names a client certificate is for: its DNS subject alternative names when it has
/// any — then the common name does not count (RFC 6125 §6.4.4: a certificate whose SANs
/// name another host is not made ours by its CN) — else the subject's common names.
fn client_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = x509_cert::Certificate::from_der(der.as_ref()) else {
        return Vec::new();
    };
    let names: Vec<String> = subject_alt_names(&cert)
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    if !names.is_empty() {
        return names;
    }
    let common_name = x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == common_name)
        .filter_map(|atv| directory_string(&atv.value))
        .collect()
}

/// A name attribute's text, in the string types certificates use for it.
fn directory_string(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    value
        .decode_as::<Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_owned())
        .or_else(|_| {
            value
                .decode_as::<PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_owned())
        })
        .or_else(|_| {
            value
                .decode_as::<Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
        })
        .ok()
}

/// Whether `auth`'s CA file can be used: how many CA certificates it holds.
pub fn check_client_auth(auth: &ClientAuth) -> Result<usize, String> {
    client_verifier(auth)?;
    Ok(CertificateDer::pem_file_iter(&auth.ca)
        .map(|certs| certs.count())
        .unwrap_or(0))
}

/// The verifier for `auth`: the CA file read now (a file that holds no certificate, or
/// cannot be read, stops the start with the reason).
fn client_verifier(auth: &ClientAuth) -> Result<Arc<NamedClient>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&auth.ca)
        .map_err(|e| format!("cannot read public.client_ca {}: {e}", auth.ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read public.client_ca {}: {e}", auth.ca.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "public.client_ca {} holds no PEM certificate",
            auth.ca.display()
        ));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "public.client_ca {} holds a certificate rustls cannot use: {e}",
                auth.ca.display()
            )
        })?;
    }
    let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| format!("public.client_ca {}: {e}", auth.ca.display()))?;
    Ok(Arc::new(NamedClient {
        chain,
        name: auth.name.clone(),
    }))
}
