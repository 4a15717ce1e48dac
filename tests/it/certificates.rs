//! The public certificate from ACME, against a real ACME server: pebble (Debian's
//! package, Let's Encrypt's test CA), which checks each name with a real TLS-ALPN-01
//! handshake on the daemon's public listener. Ordered at start, served, renewed before
//! it expires, kept while a renewal fails, and back once the CA is.
//!
//! Without pebble installed the test says so and passes (`apt-get install pebble`;
//! `.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Bench, Peers, VERIFY_TOKEN, free_port};

/// The name the certificate is for; pebble's DNS (pebble-challtestsrv) sends every
/// name to 127.0.0.1.
const DOMAIN: &str = "fb.acme.test";

/// Life of pebble's certificates in these tests: renewed a third of it before the end.
const VALIDITY_S: u64 = 18;

/// Long enough for an order on a loaded machine plus a renewal period.
const ACME_WAIT: Duration = Duration::from_secs(90);

fn pebble_installed() -> bool {
    ["pebble", "pebble-challtestsrv"].iter().all(|tool| {
        Command::new(tool)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// pebble and its DNS server, on free loopback ports.
struct Pebble {
    dir: PathBuf,
    config: PathBuf,
    dns_port: u16,
    port: u16,
    management: u16,
    pebble: Option<Child>,
    dns: Child,
}

impl Pebble {
    /// Starts pebble, checking names on `tls_port`, with its HTTPS certificate from
    /// `cert`/`key` (for `localhost`).
    async fn start(dir: &Path, cert: &Path, key: &Path, tls_port: u16, validity_s: u64) -> Pebble {
        let dns_port = free_port();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(log_file(dir, "challtestsrv.log"))
            .stderr(log_file(dir, "challtestsrv.log"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let (port, management) = (free_port(), free_port());
        let config = dir.join("pebble.json");
        let json = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_s,
        }});
        std::fs::write(&config, json.to_string()).unwrap();
        let mut pebble = Pebble {
            dir: dir.to_owned(),
            config,
            dns_port,
            port,
            management,
            pebble: None,
            dns,
        };
        pebble.run().await;
        pebble
    }

    /// (Re)starts the CA itself: a new one each time, with a new root and no accounts.
    async fn run(&mut self) {
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&self.config)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            // Real checks, without pebble's random 0–15 s pause before each.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log_file(&self.dir, "pebble.log"))
            .stderr(log_file(&self.dir, "pebble.log"))
            .spawn()
            .expect("start pebble");
        self.pebble = Some(child);
        // Its ACME and management listeners open one after the other: the root is read
        // from the second (a test once asked it while only the first was up).
        let (port, management) = (self.port, self.management);
        crate::wait_until("pebble answers", ACME_WAIT, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", management))
                    .await
                    .is_ok()
        })
        .await;
    }

    /// SIGKILLs the CA (its DNS stays).
    fn kill(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// The root of this run's chains (pebble makes a new one at each start).
    async fn root(&self) -> String {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap()
}

/// The leaf the daemon serves for [`DOMAIN`] on `port`, after a webhook verification
/// handshake over it answered; verified against `root` when given.
async fn served(port: u16, root: Option<&str>) -> Result<Vec<u8>, String> {
    let mut builder = reqwest::Client::builder()
        .resolve(DOMAIN, ([127, 0, 0, 1], port).into())
        .tls_info(true)
        .timeout(Duration::from_secs(5));
    builder = match root {
        Some(pem) => {
            builder.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        }
        None => builder.danger_accept_invalid_certs(true),
    };
    let response = builder
        .build()
        .unwrap()
        .get(format!(
            "https://{DOMAIN}:{port}/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=77"
        ))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let leaf = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no certificate")?;
    let body = response.text().await.map_err(|e| e.to_string())?;
    if body != "77" {
        return Err(format!("the verification handshake answered {body:?}"));
    }
    Ok(leaf)
}

/// Waits until the daemon serves a leaf that verifies against `root` and satisfies
/// `accept`; returns it.
async fn wait_for_leaf(
    what: &str,
    port: u16,
    root: &str,
    accept: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + ACME_WAIT;
    loop {
        if let Ok(leaf) = served(port, Some(root)).await
            && accept(&leaf)
        {
            return leaf;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {ACME_WAIT:?} waiting until {what}; last: {:?}",
                served(port, Some(root)).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bench config without `tls_cert` / `tls_key` (which `acme` excludes).
pub fn without_certificate_files(text: &str) -> String {
    text.lines()
        .filter(|line| !line.starts_with("tls_cert") && !line.starts_with("tls_key"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// pebble checking names on `tls_port`, its certificates valid `validity_s`; `None`
/// (the test `what` said to be skipped) where it is not installed.
async fn pebble_for(peers: &Peers, what: &str, tls_port: u16, validity_s: u64) -> Option<Pebble> {
    if !pebble_installed() {
        eprintln!(
            "SKIPPED {what}: pebble is not installed. Run `apt-get install pebble` (Debian's package), then `cargo test certificates`; .ci/run installs it."
        );
        return None;
    }
    let (cert, key) = (&peers.certs.cert_path, &peers.certs.key_path);
    Some(Pebble::start(peers.dir.path(), cert, key, tls_port, validity_s).await)
}

/// The bench's config with the certificate from ACME at `directory` (pebble's HTTPS
/// trusted), `acme_keys` more keys of `acme`, `public` more keys of `[public]`.
fn acme_config(peers: &Peers, directory: &str, acme_keys: &str, public: &str) -> String {
    let text = peers.config_toml_with(
        &format!(
            "acme = {{ domains = [\"{DOMAIN}\"], directory = \"{directory}\", directory_ca = \"{}\"{acme_keys} }}\n{public}",
            peers.dir.path().join("ca.pem").display()
        ),
        "",
        "",
    );
    without_certificate_files(&text)
}

/// `doctor`'s line about the certificate.
fn doctor_certificate_line(config_path: &Path) -> String {
    let (_, out, _) = crate::harness::cli(&["doctor", "--config", config_path.to_str().unwrap()]);
    out.lines()
        .find(|l| l.contains("certificate"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned()
}

/// Serial and notAfter of a leaf.
fn identity(der: &[u8]) -> (String, i64) {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let tbs = &cert.tbs_certificate;
    (
        tbs.serial_number.to_string(),
        tbs.validity.not_after.to_unix_duration().as_secs() as i64,
    )
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn readyz(bench: &Bench) -> (u16, String) {
    local_get(bench, "/readyz").await
}

async fn local_get(bench: &Bench, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", bench.daemon().local_addr))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acme_certificate_is_obtained_served_renewed_and_kept_through_a_failed_renewal() {
    let peers = Peers::start().await;
    let port = free_port();
    let Some(mut pebble) = pebble_for(&peers, "the ACME test", port, VALIDITY_S).await else {
        return;
    };
    let text = acme_config(
        &peers,
        &pebble.directory(),
        ", email = \"ops@example.com\"",
        &format!("name = \"{DOMAIN}\""),
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let bench = Bench::start_on(peers, &text).await;
    let store = bench.peers.store_path();
    let acme_dir = store.parent().unwrap().join("acme");

    // Ordered at start: the CA checks the name on the listener, the daemon serves the
    // chain, and Facebook's verification handshake is answered over it.
    let root = pebble.root().await;
    let first = wait_for_leaf(
        "the daemon serves pebble's certificate",
        port,
        &root,
        |_| true,
    )
    .await;
    let (first_serial, first_not_after) = identity(&first);
    assert_eq!(mode(&acme_dir), 0o700);
    for file in ["certificate.pem", "account.json", "status.json"] {
        assert_eq!(mode(&acme_dir.join(file)), 0o600, "{file}");
    }
    // The attempt is recorded (status file, then the gauges) just after the certificate
    // is served: a handshake can win that race (CI once read the expiry gauge at 0).
    let expiry =
        format!("fb_openchannel_tls_certificate_expiry_timestamp_seconds {first_not_after}");
    crate::wait_until(
        "the expiry gauge shows the served certificate",
        ACME_WAIT,
        || {
            let daemon = bench.daemon();
            let expiry = expiry.clone();
            async move {
                daemon
                    .shared
                    .metrics_text()
                    .await
                    .is_ok_and(|m| m.contains(&expiry))
            }
        },
    )
    .await;
    let metrics = bench.daemon().shared.metrics_text().await.unwrap();
    assert!(metrics.contains(&expiry), "{metrics}");
    assert!(
        metrics.contains("fb_openchannel_acme_attempts_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    let config_path = bench.peers.dir.path().join("config.toml");
    let line = doctor_certificate_line(&config_path);
    assert!(line.contains("✓"), "{line}");
    assert!(line.contains("from ACME"), "{line}");
    assert!(line.contains("443 must be forwarded"), "{line}");

    // Renewed before it expires: a new certificate is served while the first is valid.
    let second = wait_for_leaf(
        "the daemon serves a renewed certificate",
        port,
        &root,
        |leaf| identity(leaf).0 != first_serial,
    )
    .await;
    assert!(
        now_s() < first_not_after,
        "renewed only after the first certificate expired"
    );
    let (second_serial, second_not_after) = identity(&second);
    assert!(second_not_after > first_not_after);

    // The CA goes away: the renewal fails, the current certificate stays served, and
    // /readyz and doctor say so.
    pebble.kill();
    let acme = bench.daemon().acme.clone().unwrap();
    crate::wait_until("a renewal failed", ACME_WAIT, || {
        let acme = acme.clone();
        async move { acme.status().failures >= 1 }
    })
    .await;
    let still = served(port, None).await.unwrap();
    assert_eq!(
        identity(&still).0,
        second_serial,
        "the old certificate is served until a new one is valid"
    );
    let (status, body) = readyz(&bench).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("its renewal fails"), "{body}");
    assert!(body.contains("cannot talk to the ACME directory"), "{body}");
    // The node still serves a valid certificate: no reason to move a floating IP.
    assert_eq!(
        local_get(&bench, "/readyz/node").await,
        (200, "ready\n".into())
    );
    let line = doctor_certificate_line(&config_path);
    assert!(line.contains("✗") && line.contains("FAILED"), "{line}");

    // A restart while the CA is still away serves the stored certificate at once.
    let bench = bench.restart().await;
    let after_restart = served(port, None).await.unwrap();
    assert_eq!(identity(&after_restart).0, second_serial);

    // The CA is back (a new one: new root, our account unknown to it): the daemon
    // registers again by itself and serves the new certificate.
    pebble.run().await;
    let new_root = pebble.root().await;
    assert_ne!(new_root, root);
    wait_for_leaf(
        "the daemon serves the new CA's certificate",
        port,
        &new_root,
        |_| true,
    )
    .await;
    let acme = bench.daemon().acme.clone().unwrap();
    assert_eq!(acme.status().failures, 0);
    assert!(acme.status().last_error.is_none());
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(text.contains("acme = "));
    bench.stop().await;
}

/// A certificate from another directory (Let's Encrypt's staging while trying things
/// out, then production) is replaced at once after the change, not at its renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_directory_gets_a_certificate_from_the_new_one_at_once() {
    let peers = Peers::start().await;
    let port = free_port();
    let Some(pebble) = pebble_for(&peers, "the ACME directory test", port, 3600).await else {
        return;
    };
    // The same CA under two names: two directories to the daemon.
    let first_directory = pebble.directory();
    let second_directory = first_directory.replacen("localhost", "127.0.0.1", 1);
    let text = acme_config(&peers, &first_directory, "", "").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let bench = Bench::start_on(peers, &text).await;
    let root = pebble.root().await;
    let first = wait_for_leaf("the first directory's certificate", port, &root, |_| true).await;
    let acme = bench.daemon().acme.clone().unwrap();
    assert_eq!(
        acme.status().served_from.as_deref(),
        Some(first_directory.as_str())
    );

    let config_path = bench.peers.dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        text.replace(&first_directory, &second_directory),
    )
    .unwrap();
    let bench = bench.restart().await;
    wait_for_leaf("the new directory's certificate", port, &root, |leaf| {
        identity(leaf).0 != identity(&first).0
    })
    .await;
    let acme = bench.daemon().acme.clone().unwrap();
    assert_eq!(
        acme.status().served_from.as_deref(),
        Some(second_directory.as_str())
    );
    bench.stop().await;
}

/// Accepts any server certificate: the test looks at what is served, not whether it
/// is trusted (a TLS-ALPN-01 certificate is self-signed by design).
#[derive(Debug)]
struct AnyServer(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake as the ACME CA makes it (RFC 8737: SNI the name, ALPN `acme-tls/1`
/// only): the leaf shown and the protocol agreed.
async fn acme_handshake(port: u16, name: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let provider = rustls::crypto::ring::default_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    Ok((leaf, session.alpn_protocol().unwrap_or_default().to_vec()))
}

#[tokio::test]
async fn the_cas_check_gets_the_challenge_certificate_even_with_mtls_and_nobody_else_does() {
    use fb_openchannel::sim::tls::ClientCa;
    let peers = Peers::start().await;
    let meta = ClientCa::new("Meta outbound API test CA").unwrap();
    let ca_path = peers.dir.path().join("meta-ca.pem");
    std::fs::write(&ca_path, &meta.pem).unwrap();
    // Meta's client certificate required, and a CA that is not there (port 9 is
    // closed): no certificate comes, the listener still answers the CA's handshakes.
    let text = peers
        .config_toml_with(
            &format!(
                "client_ca = \"{}\"\nacme = {{ domains = [\"{DOMAIN}\"], directory = \"https://127.0.0.1:9/dir\" }}",
                ca_path.display()
            ),
            "",
            "",
        );
    let text = without_certificate_files(&text);
    let bench = Bench::start_on(peers, &text).await;
    let port = bench.daemon().public_addr.port();
    assert!(served(port, None).await.is_err(), "no certificate yet");
    assert!(
        acme_handshake(port, DOMAIN).await.is_err(),
        "no order in progress"
    );

    // An order in progress: the CA's handshake gets the challenge certificate without
    // a client certificate, and is closed after it — never reaching HTTP.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        ))
        .unwrap();
    let certs = bench.daemon().certs.clone().unwrap();
    certs.set_challenge(
        DOMAIN,
        std::sync::Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert.der().clone()],
            signing,
        )),
    );
    let (leaf, protocol) = acme_handshake(port, DOMAIN).await.unwrap();
    assert_eq!(leaf, cert.der().to_vec());
    assert_eq!(protocol, b"acme-tls/1");
    // Not for another name, and not for a client that does not speak acme-tls/1.
    assert!(acme_handshake(port, "other.acme.test").await.is_err());
    assert!(served(port, None).await.is_err());
    let (status, body) = readyz(&bench).await;
    assert_eq!(status, 503);
    assert!(body.contains("certificate: none yet from ACME"), "{body}");
    let (status, body) = local_get(&bench, "/readyz/node").await;
    assert_eq!(status, 503, "Facebook cannot connect to this node: {body}");
    assert!(body.contains("certificate: none yet from ACME"), "{body}");
    certs.clear_challenges();
    assert!(acme_handshake(port, DOMAIN).await.is_err());
    // A reload leaves the ACME certificate to its renewal task (no file to re-read yet).
    let summary = bench
        .daemon()
        .reload(&bench.peers.dir.path().join("config.toml"))
        .await
        .unwrap();
    assert!(!summary.contains("certificate"), "{summary}");
    bench.stop().await;
}

/// Two nodes on one queue in PostgreSQL, ACME on both. One orders; the CA's check goes to
/// the other (as the floating IP on the standby would send it) and finds the proof there,
/// through the shared queue; both serve the one certificate, and a node started afresh
/// serves it too without ordering one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_share_one_acme_certificate_proved_on_either() {
    use fb_openchannel::sim::postgres::{PrivatePostgres, SKIPPED};
    let Some(pg) = PrivatePostgres::start().unwrap() else {
        eprintln!("{SKIPPED}");
        return;
    };
    pg.create_database("acme").unwrap();
    let url = pg.url("acme");
    fb_openchannel::http_client::install_crypto_provider();
    let peers = Peers::start().await;
    // Where the CA checks the name: the floating IP, in front of both nodes.
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    let Some(pebble) = pebble_for(&peers, "the shared ACME test", front_port, 3600).await else {
        return;
    };
    let text = acme_config(
        &peers,
        &pebble.directory(),
        "",
        &format!("name = \"{DOMAIN}\""),
    );
    let config = |name| crate::shared_queue::on_postgres(&peers, &text, &url, name);
    let (config_a, config_b) = (config("a"), config("b"));

    // Each check goes to the node that is not ordering, as the shared queue says.
    let (nodes_tx, nodes) = tokio::sync::watch::channel(Vec::<(u32, u16)>::new());
    let checks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let proxy_checks = checks.clone();
    let proxy_url = url.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = front.accept().await.unwrap();
            let (mut nodes, url) = (nodes.clone(), proxy_url.clone());
            let checks = proxy_checks.clone();
            tokio::spawn(async move {
                let nodes = nodes.wait_for(|n| n.len() == 2).await.unwrap().clone();
                let holder: String = tokio::task::spawn_blocking(move || {
                    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    client
                        .query_one("SELECT holder FROM acme WHERE name = 'order'", &[])
                        .unwrap()
                        .get(0)
                })
                .await
                .unwrap();
                // A node's name is host/pid/random.
                let pid: u32 = holder.split('/').nth(1).unwrap().parse().unwrap();
                let (_, port) = nodes.iter().find(|(p, _)| *p != pid).unwrap();
                checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut outbound = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let a = crate::harness::Process::start(&config_a);
    let mut b = crate::harness::Process::start(&config_b);
    nodes_tx.send_replace(vec![
        (a.child.id(), a.public_port),
        (b.child.id(), b.public_port),
    ]);

    let root = pebble.root().await;
    let on_a = wait_for_leaf(
        "node a serves the certificate",
        a.public_port,
        &root,
        |_| true,
    )
    .await;
    let on_b = wait_for_leaf("node b serves it too", b.public_port, &root, |_| true).await;
    assert_eq!(on_a, on_b, "one certificate for both nodes");
    assert!(
        checks.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the CA checked the name"
    );
    let ordered =
        |p: &crate::harness::Process| p.log_text().matches("ACME: ordering a certificate").count();
    assert_eq!(
        ordered(&a) + ordered(&b),
        1,
        "one order:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    let (orderer, other) = if ordered(&a) == 1 { (&a, &b) } else { (&b, &a) };
    assert!(
        orderer
            .log_text()
            .contains("ACME: new certificate for fb.acme.test served")
    );
    assert!(
        other
            .log_text()
            .contains("that another node of the shared queue obtained"),
        "{}",
        other.log_text()
    );

    // doctor on either node tells what the nodes share.
    let line = doctor_certificate_line(&config_b);
    println!("{line}");
    assert!(
        line.contains("the nodes' shared certificate is valid until"),
        "{line}"
    );
    assert!(line.contains(", the last ordered by node "), "{line}");

    // A node started afresh (a new standby, its state directory empty) serves the
    // shared certificate at once and orders none.
    b.kill();
    std::fs::remove_dir_all(peers.dir.path().join("b")).unwrap();
    let b = crate::harness::Process::start(&config_b);
    let again = wait_for_leaf(
        "the new node serves the certificate",
        b.public_port,
        &root,
        |_| true,
    )
    .await;
    assert_eq!(again, on_a);
    assert_eq!(ordered(&b), 0, "{}", b.log_text());
}

/// The daemon ordering from a CA that `handler` plays (its directory at `/dir`), once
/// its first order failed: the bench, the order's error, and the CA (kept running).
async fn first_failed_order(
    handler: fb_openchannel::sim::http::Handler,
) -> (
    Bench,
    String,
    std::sync::Arc<fb_openchannel::sim::http::SimServer>,
) {
    let peers = Peers::start().await;
    let acceptor = fb_openchannel::sim::tls::acceptor(&peers.certs).unwrap();
    let ca = fb_openchannel::sim::http::SimServer::start(handler, Some(acceptor))
        .await
        .unwrap();
    let directory = format!("https://127.0.0.1:{}/dir", ca.addr.port());
    let text = acme_config(&peers, &directory, "", "");
    let bench = Bench::start_on(peers, &text).await;
    let acme = bench.daemon().acme.clone().unwrap();
    crate::wait_until("the order failed", ACME_WAIT, || {
        let acme = acme.clone();
        async move { acme.status().failures >= 1 }
    })
    .await;
    let error = acme.status().last_error.unwrap_or_default();
    (bench, error, ca)
}

/// An ACME directory that answers far more than a CA ever sends (DESIGN §4 rule 15): the
/// order fails with the bound named, the rest of the answer unread, and the daemon goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_directory_answering_without_end_fails_the_order_naming_the_bound() {
    use fb_openchannel::sim::http::{Handler, respond};
    let huge = bytes::Bytes::from(vec![b' '; 16 * 1024 * 1024]);
    let handler: Handler = std::sync::Arc::new(move |_| {
        let huge = huge.clone();
        Box::pin(async move { respond(200, "application/json", huge) })
    });
    let (bench, error, _ca) = first_failed_order(handler).await;
    assert!(error.contains("over the 1048576 bytes"), "{error}");
    let (status, body) = readyz(&bench).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("over the 1048576 bytes"), "{body}");
    assert_eq!(local_get(&bench, "/healthz").await.0, 200);
    bench.stop().await;
}

/// A CA that answers the order's poll with a `Retry-After` of 2^64 − 1 seconds:
/// instant-acme adds it to the clock unchecked, which panicked, and the renewal task
/// with it: no order was ever tried again, and the certificate would have run out. The
/// order now fails saying the CA asked to come back later than an order waits, and is
/// tried again on the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_asking_to_come_back_in_2_pow_64_seconds_fails_the_order_not_the_daemon() {
    use fb_openchannel::sim::http::{Handler, json};
    let handler: Handler = std::sync::Arc::new(|req| {
        Box::pin(async move {
            let host = req.headers()["host"].to_str().unwrap().to_owned();
            let url = |path: &str| format!("https://{host}/{path}");
            let order = serde_json::json!({
                "status": "pending",
                "identifiers": [{"type": "dns", "value": DOMAIN}],
                "authorizations": [],
                "finalize": url("finalize/1"),
            });
            let (mut response, location) = match req.uri().path() {
                "/dir" => (
                    json(
                        200,
                        serde_json::json!({
                            "newNonce": url("nonce"),
                            "newAccount": url("account"),
                            "newOrder": url("order"),
                        }),
                    ),
                    None,
                ),
                "/nonce" => (json(200, serde_json::json!({})), None),
                "/account" => (
                    json(201, serde_json::json!({"status": "valid"})),
                    Some(url("account/1")),
                ),
                "/order" => (json(201, order), Some(url("order/1"))),
                "/order/1" => {
                    let mut r = json(200, order);
                    r.headers_mut()
                        .insert("retry-after", u64::MAX.to_string().parse().unwrap());
                    (r, None)
                }
                _ => (json(404, serde_json::json!({})), None),
            };
            let headers = response.headers_mut();
            headers.insert("replay-nonce", "bm9uY2U".parse().unwrap());
            if let Some(location) = location {
                headers.insert("location", location.parse().unwrap());
            }
            response
        })
    });
    let (bench, error, _ca) = first_failed_order(handler).await;
    assert!(error.contains("Retry-After"), "{error}");
    assert_eq!(local_get(&bench, "/healthz").await.0, 200);
    bench.stop().await;
}
