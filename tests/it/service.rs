//! Running as a service: reload without downtime, certificate renewal, metrics, health.

use std::sync::Arc;

use fb_openchannel::facebook::signature;
use fb_openchannel::sim::facebook::messenger_text;
use fb_openchannel::sim::motion::Mode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::wait_until;

const PAGE_C: &str = "4455667788";
const TOKEN_C: &str = "EAAG-page-token-c-19bd";

fn page_c(peers: &Peers) -> String {
    format!(
        "\n[[page]]\nid = \"{PAGE_C}\"\naccess_token = \"{TOKEN_C}\"\nreceive_url = \"{}\"\nreply_token = \"reply-token-c-55aa90\"\n",
        peers.motion.receive_url(3)
    )
}

/// A TLS client trusting the given CA certificates (PEM).
fn tls_connector(ca_pems: &[&str]) -> tokio_rustls::TlsConnector {
    fb_openchannel::http_client::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session reports the certificate of the session it resumes: always do a
    // full handshake, to see what is served now.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// Sends one signed webhook on an open connection and reads the status line.
async fn post_on(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    body: &str,
) -> String {
    let sig = signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
    let request = format!(
        "POST /webhook HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-hub-signature-256: {sig}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_keeps_the_old_one_when_broken() {
    let peers = Peers::start().await;
    peers.graph.add_page(PAGE_C, TOKEN_C);
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, peers.config_toml("")).unwrap();
    let mut daemon = Process::start(&path);
    let connector = tls_connector(&[&peers.certs.ca_pem]);
    // A keep-alive connection opened before the reload must survive it.
    let mut tls = connect(&connector, daemon.public_port).await;
    assert!(
        post_on(&mut tls, &messenger_text(PAGE_C, PSID, "c.1", 1, "before"))
            .await
            .contains("200")
    );

    // A new page is added.
    std::fs::write(&path, peers.config_toml(&page_c(&peers))).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("config reloaded").await;
    assert!(
        daemon.log_text().contains("added 4455667788"),
        "{}",
        daemon.log_text()
    );
    assert!(
        post_on(&mut tls, &messenger_text(PAGE_C, PSID, "c.2", 2, "after"))
            .await
            .contains("200"),
        "same connection"
    );
    let notes = peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(
        (notes[0].account.as_str(), notes[0].notify.body.as_str()),
        ("3", "after")
    );

    // A broken config is refused; the running one stays.
    std::fs::write(
        &path,
        peers
            .config_toml(&page_c(&peers))
            .replace("[storage]", "[storage]\nbogus = 1"),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("NOT applied").await;
    assert!(
        daemon.log_text().contains("bogus"),
        "the reason is named: {}",
        daemon.log_text()
    );
    assert!(
        post_on(&mut tls, &messenger_text(PAGE_C, PSID, "c.3", 3, "still"))
            .await
            .contains("200")
    );
    let notes = peers.motion.wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[1].notify.body, "still");
    assert!(daemon.terminate().success());
}

#[tokio::test]
async fn a_renewed_certificate_on_disk_is_served_without_a_signal() {
    let bench = Bench::start_with_public("tls_watch_interval = \"50ms\"").await;
    let port = bench.daemon().public_addr.port();
    let old_ca = bench.peers.certs.ca_pem.clone();
    // The renewal comes from another CA; the client trusts both and looks at what it gets.
    let renewal_dir = tempfile::tempdir().unwrap();
    let renewed = fb_openchannel::sim::tls::generate(renewal_dir.path()).unwrap();
    let connector = tls_connector(&[&old_ca, &renewed.ca_pem]);
    let served = |connector: tokio_rustls::TlsConnector| async move {
        let tls = connect(&connector, port).await;
        tls.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let first = served(connector.clone()).await;
    let mut tls = connect(&connector, port).await;

    // certbot-style: new files replace the old ones.
    let new_leaf = CertificateDer::pem_file_iter(&renewed.cert_path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::copy(&renewed.key_path, &bench.peers.certs.key_path).unwrap();
    std::fs::copy(&renewed.cert_path, &bench.peers.certs.cert_path).unwrap();
    wait_until("the new certificate is served", WAIT, || {
        let c = connector.clone();
        let want = new_leaf.as_ref().to_vec();
        async move { served(c).await == want }
    })
    .await;
    assert_ne!(first, new_leaf.as_ref().to_vec());
    // The connection opened before still works.
    assert!(
        post_on(&mut tls, &messenger_text(PAGE_A, PSID, "r.1", 1, "hi"))
            .await
            .contains("200")
    );

    // A broken renewal keeps the good certificate.
    let shared = bench.daemon().shared.clone();
    let errors = || {
        let shared = shared.clone();
        async move {
            metric(
                &shared,
                "fb_openchannel_tls_certificate_reloads_total",
                &[("result", "error")],
            )
            .await
        }
    };
    let errors_before = errors().await;
    std::fs::write(
        &bench.peers.certs.cert_path,
        "-----BEGIN CERTIFICATE-----\nnot a cert\n",
    )
    .unwrap();
    wait_until("the broken renewal is noticed", WAIT, || async {
        errors().await > errors_before
    })
    .await;
    assert_eq!(served(connector.clone()).await, new_leaf.as_ref().to_vec());
    bench.stop().await;
}

/// The value of one sample of the daemon's /metrics, 0 when absent.
async fn metric(
    shared: &fb_openchannel::relay::Shared,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let text = shared.metrics_text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let bench = Bench::start().await;
    let url = format!("http://{}/metrics", bench.daemon().local_addr);
    let client = reqwest::Client::new();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "fb_openchannel_tls_certificate_expiry_timestamp_seconds"),
        "{text}"
    );

    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.1", 1, "one"))
        .await;
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.2", 2, "two"))
        .await;
    assert_eq!(
        bench
            .sender
            .send_with_signature(b"{}", Some("sha256=00"))
            .await
            .unwrap()
            .0,
        403
    );
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let shared = bench.daemon().shared.clone();
    wait_until("two deliveries are counted", WAIT, || {
        let shared = shared.clone();
        async move {
            metric(
                &shared,
                "fb_openchannel_inbound_deliveries_total",
                &[("page_id", PAGE_A), ("outcome", "delivered")],
            )
            .await
                == 2.0
        }
    })
    .await;
    let m = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let shared = shared.clone();
        async move { metric(&shared, name, labels).await }
    };
    assert_eq!(
        m("fb_openchannel_webhooks_total", &[("result", "stored")]).await,
        2.0
    );
    assert_eq!(
        m(
            "fb_openchannel_webhooks_total",
            &[("result", "bad_signature")]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "fb_openchannel_events_stored_total",
            &[("kind", "message"), ("state", "pending")]
        )
        .await,
        2.0
    );
    assert_eq!(
        m(
            "fb_openchannel_graph_calls_total",
            &[("call", "profile"), ("outcome", "ok")]
        )
        .await,
        1.0
    );
    assert_eq!(m("fb_openchannel_items", &[("state", "done")]).await, 2.0);
    assert!(m("fb_openchannel_store_write_commits", &[]).await >= 2.0);
    // The two deliveries were recorded without an fsync of their own.
    assert!(m("fb_openchannel_store_relaxed_commits", &[]).await >= 1.0);
    assert!(m("fb_openchannel_store_wal_syncs", &[]).await >= 1.0);
    // An idle store has (next to) nothing in line.
    assert!(m("fb_openchannel_store_waiting_requests", &[]).await < 10.0);
    // Where the webhooks waited in the store: two taken, each commit timed; the other
    // stages are there for a dashboard to divide by the requests.
    assert!(m("fb_openchannel_store_durable_requests", &[]).await >= 2.0);
    assert!(
        m(
            "fb_openchannel_store_durable_seconds",
            &[("stage", "commit")]
        )
        .await
            > 0.0
    );
    let text = shared.metrics_text().await.unwrap();
    for stage in ["queue", "commit", "sync_wait", "sync"] {
        let series = format!("fb_openchannel_store_durable_seconds{{stage=\"{stage}\"}} ");
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }
    for series in ["store_tail_checkpoints ", "store_tail_checkpoint_seconds "] {
        assert!(
            text.contains(&format!("fb_openchannel_{series}")),
            "{series}"
        );
    }
    assert!(
        m(
            "fb_openchannel_last_delivery_timestamp_seconds",
            &[("page_id", PAGE_A)]
        )
        .await
            > 1.7e9
    );
    assert!(
        m(
            "fb_openchannel_request_duration_seconds_count",
            &[("listener", "public"), ("route", "webhook")]
        )
        .await
            >= 3.0
    );

    // A backlog shows as queue depth.
    bench.motion().set_mode(Mode::Status(503));
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.3", 3, "three"))
        .await;
    assert_eq!(
        m(
            "fb_openchannel_queue_pending",
            &[("page_id", PAGE_A), ("direction", "in")]
        )
        .await,
        1.0
    );
    bench.stop().await;
}

#[tokio::test]
async fn readyz_names_a_page_whose_backlog_is_too_old() {
    let bench = Bench::start_with_local("ready_max_pending_age = \"300ms\"").await;
    let url = format!("http://{}/readyz", bench.daemon().local_addr);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    bench.motion().down().await;
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.old", 1, "waiting"))
        .await;
    let (c, u) = (client.clone(), url.clone());
    wait_until("readyz reports the backlog", WAIT, || {
        let (c, u) = (c.clone(), u.clone());
        async move { c.get(&u).send().await.unwrap().status() == 503 }
    })
    .await;
    let text = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains(&format!("page {PAGE_A}")) && text.contains("Motion is not taking them"),
        "{text}"
    );
    bench.motion().up().await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    wait_until("readyz is ready again", WAIT, || {
        let (c, u) = (client.clone(), url.clone());
        async move { c.get(&u).send().await.unwrap().status() == 200 }
    })
    .await;
    bench.stop().await;
}

/// Every family of series `/metrics` serves is named in the README (a name, or a
/// `prefix_*` written there), so that an operator can look up what a figure means.
#[tokio::test]
async fn every_metric_the_daemon_serves_is_named_in_the_readme() {
    let bench = Bench::start().await;
    // Families of labelled series show once they have one: some traffic first.
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.doc", 1, "hello"))
        .await;
    bench
        .sender
        .send_with_signature(b"{}", Some("sha256=00"))
        .await
        .unwrap();
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let text = bench.metrics().await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let prefixes: Vec<&str> = readme
        .match_indices("fb_openchannel_")
        .filter_map(|(at, _)| {
            let name = &readme[at..];
            let end = name
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(name.len());
            name[end..].starts_with('*').then(|| &name[..end])
        })
        .collect();
    let mut families: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(families.len() > 20, "{text}");
    // And those that show only in other settings (ACME, Instagram, a throttle…): every
    // name the registry is given.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"))
        .expect("the metrics' source");
    let registered: Vec<String> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|rest| Some(format!("fb_openchannel_{}", rest.split('"').nth(1)?)))
        .collect();
    assert!(
        registered.len() > 30,
        "only {} registered",
        registered.len()
    );
    families.extend(registered);
    let unnamed: Vec<&String> = families
        .iter()
        .filter(|f| !readme.contains(f.as_str()) && !prefixes.iter().any(|p| f.starts_with(p)))
        .collect();
    assert!(
        unnamed.is_empty(),
        "/metrics serves families the README does not name: {unnamed:?}"
    );
    bench.stop().await;
}
