//! Faults and abuse: peers misbehaving, the disk filling up, the daemon killed at random
//! moments under load, and a public port under attack — nothing acknowledged is lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fb_openchannel::facebook::signature;
use fb_openchannel::sim::facebook::{WebhookSender, messenger_text};
use fb_openchannel::sim::motion::{Mode, reply_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::wait_until;
use fb_openchannel::model::ItemState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_slow_resetting_failing_and_garbled_loses_nothing() {
    let bench = Bench::start_edited(|t| t.replace("timeout = \"5s\"", "timeout = \"300ms\"")).await;
    let motion = bench.motion();
    // Five customers, ten messages each, while Motion goes through its bad moods.
    let mut sent = 0;
    for (mode, i) in [
        (Mode::Slow(10_000), 0),
        (Mode::Reset, 1),
        (Mode::Status(500), 2),
        (Mode::Hang, 3),
        (Mode::Status(503), 4),
    ] {
        motion.set_mode(mode);
        for k in 0..10 {
            let psid = format!("{}", 3000 + k % 5);
            let n = i * 10 + k;
            bench
                .deliver(&messenger_text(
                    PAGE_A,
                    &psid,
                    &format!("mid.f{n}"),
                    1_700_000_000_000 + n,
                    &format!("{psid}:{n:02}"),
                ))
                .await;
            sent += 1;
        }
        // Let the daemon meet this mood before the next one.
        let before = motion.requests();
        wait_until("Motion is called in this mode", WAIT, || async {
            motion.requests() > before
        })
        .await;
    }
    motion.set_mode(Mode::Accept);
    let notes = motion
        .wait_for_notifies(sent, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(notes.len(), sent, "each message once");
    let mut per_customer: HashMap<String, Vec<String>> = HashMap::new();
    for n in &notes {
        per_customer
            .entry(n.notify.from.clone())
            .or_default()
            .push(n.notify.body.clone());
    }
    for (psid, bodies) in per_customer {
        let mut sorted = bodies.clone();
        sorted.sort();
        assert_eq!(bodies, sorted, "customer {psid}: in order");
    }
    // Retries are bounded by the schedule, not a storm: a handful per item at most here.
    let items = bench.items().await;
    let attempts: i64 = items.iter().map(|i| i.attempts).sum();
    assert!(
        attempts < sent as i64 * 10,
        "{attempts} attempts for {sent} items"
    );
    bench.stop().await;
}

/// Mounts a small tmpfs (root only) for a store that can run out of space.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("fbo-disk")
            .tempdir()
            .ok()?
            .keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?
            .success();
        ok.then_some(SmallDisk { path: dir })
    }

    /// Fills the disk until a write fails; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a store thread of the stopped daemon may still hold its files, and a
        // plain umount then fails and leaves the mount behind on the test machine.
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_the_daemon_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("8m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; the disk-full test did not run");
        return;
    };
    let store = disk.path.join("state.db");
    let bench = Bench::start_edited(|t| {
        let old = t
            .lines()
            .find(|l| l.starts_with("path = "))
            .unwrap()
            .to_owned();
        t.replace(&old, &format!("path = \"{}\"", store.display()))
    })
    .await;
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "d.0", 1, "before"))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    // Its completion must be on disk before the disk fills (else it is sent again: at
    // least once, as it should be, but not what this test is about).
    let store_handle = bench.daemon().shared.store.clone();
    wait_until("the first item is done", WAIT, || {
        let s = store_handle.clone();
        async move {
            s.items()
                .await
                .unwrap()
                .iter()
                .all(|i| i.state == ItemState::Done)
        }
    })
    .await;

    let filler = disk.fill();
    // A body larger than what is left: it cannot be stored, so it must not be acknowledged.
    let big_text = "x".repeat(200_000);
    let (status, answer) = bench
        .sender
        .send(messenger_text(PAGE_A, PSID, "d.1", 2, &big_text).as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 503, "{answer}");

    std::fs::remove_file(&filler).unwrap();
    // Facebook sends it again; now there is room.
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "d.1", 2, &big_text))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[1].notify.body.len(), big_text.len());
    bench.stop().await;
}

/// A GET on the daemon's local listener: status and body.
async fn local_get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of an unlabelled metric.
async fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = local_get(port, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The disk fills while a notify and an agent's reply are in flight: both peers took
/// them, but their outcomes cannot be written. Nothing may go out twice (it went out
/// ~10,000 times before the fix), the log stays short, and when space returns
/// everything resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_traffic_both_ways_never_sends_anything_twice() {
    // Room for the WAL that the 200 redeliveries below write once space returns: in a
    // release build they come faster than the 0.2-s checkpoint pass, the WAL grows to
    // about 10 MB before it starts over, and on an 8-MB disk the 163rd was refused
    // again (rightly: the disk was full again).
    let Some(disk) = SmallDisk::mount("24m") else {
        eprintln!(
            "SKIPPED: mounting a tmpfs needs root; run `cargo test` as root (CI does) for the full-disk test"
        );
        return;
    };
    let peers = Peers::start().await;
    let store = disk.path.join("state.db");
    let local_port = free_port();
    let text = peers
        .config_toml_with("", "reply_wait = \"2s\"", "")
        .replace(
            &format!("path = \"{}\"", peers.store_path().display()),
            &format!("path = \"{}\"", store.display()),
        )
        .replace(
            "[local]\nlisten = \"127.0.0.1:0\"",
            &format!("[local]\nlisten = \"127.0.0.1:{local_port}\""),
        );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let daemon = Process::start(&path);
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let (motion, graph) = (&peers.motion, &peers.graph);
    let reply_url = format!("http://127.0.0.1:{local_port}/reply/{PAGE_A}?token={REPLY_TOKEN_A}");
    let now = fb_openchannel::store::now_ms();

    // The customer writes; then a second customer's message is held by Motion, and an
    // agent's reply is held by Facebook: both are in flight.
    let webhook =
        |psid: &str, mid: &str, ts: i64, text: &str| messenger_text(PAGE_A, psid, mid, ts, text);
    let (status, _) = sender
        .send(webhook(PSID, "mid.full.0", now - 1000, "before").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    motion.wait_for_notifies(1, WAIT).await.unwrap();
    motion.hold("5551");
    let calls = motion.requests();
    let (status, _) = sender
        .send(webhook("5551", "mid.full.1", now, "in flight").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    wait_until("Motion holds the notify", WAIT, || async {
        motion.requests() > calls
    })
    .await;
    graph.hold_sends(true);
    let agent = {
        let url = reply_url.clone();
        let body = reply_body(7001, PSID, "Your parcel ships today.", None);
        tokio::spawn(async move {
            fb_openchannel::sim::motion::SimMotion::post_reply(&url, &body).await
        })
    };
    wait_until("Facebook holds the send", WAIT, || async {
        graph.send_calls() > 0
    })
    .await;

    // The disk fills. The WAL is emptied first, so that every write needs new space (a
    // reader of the daemon's may make a checkpoint give up: then it is tried again).
    {
        let side = rusqlite::Connection::open(&store).unwrap();
        let mut wal = store.as_os_str().to_owned();
        wal.push("-wal");
        wait_until("the WAL is emptied", WAIT, || {
            let busy: i64 = side
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .unwrap();
            let empty = std::fs::metadata(&wal).map_or(true, |m| m.len() == 0);
            async move { busy == 0 && empty }
        })
        .await;
    }
    let filler = disk.fill();
    let log_before = daemon.log.lock().unwrap().len();
    motion.release();
    graph.hold_sends(false);
    let (status, answer) = agent.await.unwrap().unwrap();
    assert_eq!(status, 200, "the agent hears the reply went out: {answer}");

    // While full: webhooks and replies are refused with 503 (nothing acknowledged that
    // is not stored), a flood of them too.
    let mut refused = Vec::new();
    for i in 0..200 {
        let body = webhook(
            &format!("{}", 6000 + i % 4),
            &format!("mid.full.w{i}"),
            now + 10 + i,
            &format!("w{i}"),
        );
        let (status, _) = sender.send(body.as_bytes()).await.unwrap();
        assert_eq!(status, 503, "webhook {i} while the disk is full");
        refused.push(body);
    }
    let second = reply_body(7002, PSID, "And the invoice follows.", None);
    let (status, answer) = fb_openchannel::sim::motion::SimMotion::post_reply(&reply_url, &second)
        .await
        .unwrap();
    assert_eq!(status, 503, "{answer}");
    // The daemon tries again and again to write what it learned, and hands nothing out.
    wait_until(
        "several tries to write the kept outcomes (or a doubled call)",
        WAIT,
        || async {
            metric(local_port, "fb_openchannel_delivery_outcome_write_retries").await >= 4.0
                || motion.notifies().len() > 2
                || graph.sent().len() > 1
        },
    )
    .await;
    assert_eq!(motion.notifies().len(), 2, "each notify once");
    assert_eq!(graph.sent().len(), 1, "the reply once");
    assert!(metric(local_port, "fb_openchannel_delivery_outcomes_kept").await >= 2.0);
    for path in ["/readyz", "/readyz/node"] {
        let (status, ready) = local_get(local_port, path).await;
        assert_eq!(status, 503, "{path}");
        assert!(
            ready.contains("cannot write") && ready.contains("paused"),
            "{path}: {ready}"
        );
    }
    let lines: Vec<String> = daemon.log.lock().unwrap()[log_before..].to_vec();
    assert!(
        lines.len() <= 12,
        "{} log lines while the disk was full:\n{}",
        lines.len(),
        lines.join("\n")
    );

    // Space returns: what was kept is written, Facebook's redeliveries and the agent's
    // second try go through, and still nothing is doubled.
    std::fs::remove_file(&filler).unwrap();
    wait_until("the daemon is ready again", WAIT, || async {
        local_get(local_port, "/readyz").await.0 == 200
    })
    .await;
    for body in &refused {
        let (status, _) = sender.send(body.as_bytes()).await.unwrap();
        assert_eq!(status, 200);
    }
    let (status, answer) = fb_openchannel::sim::motion::SimMotion::post_reply(&reply_url, &second)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let notes = motion.wait_for_notifies(202, WAIT).await.unwrap();
    let bodies: std::collections::HashSet<String> =
        notes.iter().map(|n| n.notify.body.clone()).collect();
    assert_eq!(bodies.len(), notes.len(), "no notify twice");
    let sent = graph.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(motion.notifies().len(), 202);
    drop(daemon);
}

/// 3,000 refused requests of each kind from one client wrote 3,000 WARN lines each; now
/// each kind writes its first line in full and is counted in metrics, and guessing the
/// verify token is cut off after a few tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_refused_requests_write_a_handful_of_lines_and_are_counted() {
    let peers = Peers::start().await;
    let local_port = free_port();
    let text = peers.config_toml("").replace(
        "[local]\nlisten = \"127.0.0.1:0\"",
        &format!("[local]\nlisten = \"127.0.0.1:{local_port}\""),
    );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let daemon = Process::start(&path);
    let url = format!("https://127.0.0.1:{}/webhook", daemon.public_port);
    let sender = WebhookSender::new(&url, APP_SECRET, Some(&peers.certs.ca_pem));
    let log_before = daemon.log.lock().unwrap().len();
    let body = messenger_text(PAGE_A, PSID, "mid.r", 1, "hi");
    let mut guesses = std::collections::BTreeMap::new();
    let local = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..3000 {
        let (status, _) = sender
            .send_with_signature(body.as_bytes(), Some("sha256=00"))
            .await
            .unwrap();
        assert_eq!(status, 403);
        let status = sender
            .client()
            .get(format!(
                "{url}?hub.mode=subscribe&hub.verify_token=guess{i}&hub.challenge=1"
            ))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        *guesses.entry(status).or_insert(0u64) += 1;
        let status = local
            .post(format!(
                "http://127.0.0.1:{local_port}/reply/{PAGE_A}?token=wrong{i}"
            ))
            .json(&reply_body(1, PSID, "x", None))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    // Ten wrong tokens are looked at, then one per 6 s; the rest are refused unseen.
    let looked_at = 10 + started.elapsed().as_secs() / 6 + 1;
    assert!(
        guesses[&403] <= looked_at,
        "{guesses:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(guesses.values().sum::<u64>(), 3000);
    let lines: Vec<String> = daemon.log.lock().unwrap()[log_before..].to_vec();
    assert!(
        lines.len() <= 6,
        "{} lines for 9,000 refusals:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let (_, metrics) = local_get(local_port, "/metrics").await;
    for want in [
        "fb_openchannel_webhooks_total{result=\"bad_signature\"} 3000",
        "fb_openchannel_handshakes_total{result=\"throttled\"}",
        "fb_openchannel_log_lines_suppressed{topic=\"webhooks refused\"} 2999",
        "fb_openchannel_log_lines_suppressed{topic=\"Reply URL calls refused\"} 2999",
    ] {
        assert!(metrics.contains(want), "{want} not in:\n{metrics}");
    }
    // The right token still gets through once the guessing stops (one token per 6 s).
    wait_until(
        "the handshake is looked at again",
        Duration::from_secs(15),
        || async {
            sender
                .client()
                .get(format!(
                    "{url}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=42"
                ))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_20_times_under_load_every_acknowledged_message_reaches_motion() {
    let peers = Peers::start().await;
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, peers.config_toml("")).unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut seq = 0u64;
    let mut rng = fastrand::Rng::with_seed(20261125);
    for _kill in 0..20 {
        let mut daemon = Process::start(&path);
        let sender = WebhookSender::new(
            &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
            APP_SECRET,
            Some(&peers.certs.ca_pem),
        );
        // Load from 4 customers until a random moment, then SIGKILL mid-flight.
        let deadline = Instant::now() + Duration::from_millis(rng.u64(30..250));
        let mut inflight = tokio::task::JoinSet::new();
        while Instant::now() < deadline {
            for _ in 0..4 {
                seq += 1;
                let body = messenger_text(
                    PAGE_A,
                    &format!("{}", 4000 + seq % 4),
                    &format!("mid.k{seq}"),
                    1_700_000_000_000 + seq as i64,
                    &format!("k{seq}"),
                );
                let s = WebhookSender::new(
                    &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
                    APP_SECRET,
                    Some(&peers.certs.ca_pem),
                );
                inflight.spawn(async move {
                    (s.send(body.as_bytes()).await.map(|r| r.0).unwrap_or(0), seq)
                });
            }
            if let Some(Ok((200, n))) = inflight.join_next().await {
                acked.push(format!("k{n}"));
            }
        }
        daemon.kill();
        while let Some(r) = inflight.join_next().await {
            if let Ok((200, n)) = r {
                acked.push(format!("k{n}"));
            }
        }
        drop(sender);
    }
    // The last start delivers whatever is left.
    let _daemon = Process::start(&path);
    let motion = &peers.motion;
    let acked_set: std::collections::HashSet<&String> = acked.iter().collect();
    wait_until(
        "every acknowledged message reached Motion",
        Duration::from_secs(60),
        || async {
            let got: std::collections::HashSet<String> = motion
                .notifies()
                .into_iter()
                .map(|n| n.notify.body)
                .collect();
            acked_set.iter().all(|a| got.contains(*a))
        },
    )
    .await;
    let bodies: Vec<String> = motion
        .notifies()
        .into_iter()
        .map(|n| n.notify.body)
        .collect();
    let unique: std::collections::HashSet<&String> = bodies.iter().collect();
    let duplicates = bodies.len() - unique.len();
    println!(
        "crash test: {} acknowledged, {} notified, {} duplicates over 20 SIGKILLs",
        acked.len(),
        bodies.len(),
        duplicates
    );
    // A duplicate can only come from a notify in flight at a kill: at most `concurrency`
    // (32 by default) per kill.
    assert!(duplicates <= 20 * 32, "{duplicates} duplicates");
    assert!(
        acked.len() >= 20,
        "the load was too light to mean anything: {}",
        acked.len()
    );
}

/// Opens a TCP connection to the public listener and sends `bytes` (maybe nothing).
async fn open_raw(port: u16, bytes: &[u8]) -> Option<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    if !bytes.is_empty() {
        s.write_all(bytes).await.ok()?;
    }
    Some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_attack_the_public_port_keeps_answering_real_webhooks() {
    let bench = Bench::start_with_public("max_connections = 16384").await;
    let port = bench.daemon().public_addr.port();
    let mut attackers = Vec::new();
    // 2,000 idle connections (the README's figure for 10,000 is measured by the benchmark).
    for _ in 0..2000 {
        if let Some(s) = open_raw(port, b"").await {
            attackers.push(s);
        }
    }
    // TLS handshakes that stop halfway: the start of a ClientHello, then nothing.
    for _ in 0..50 {
        if let Some(s) = open_raw(
            port,
            &[
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
        )
        .await
        {
            attackers.push(s);
        }
    }
    // Garbage instead of TLS.
    for _ in 0..20 {
        if let Some(mut s) = open_raw(port, b"GET / HTTP/1.0\r\n\r\n").await {
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
        }
    }
    // Slowloris over TLS: headers one byte at a time, never finished.
    let connector = {
        fb_openchannel::http_client::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in
            rustls_pki_types::CertificateDer::pem_slice_iter(bench.peers.certs.ca_pem.as_bytes())
        {
            roots.add(c.unwrap()).unwrap();
        }
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    };
    let mut slow = Vec::new();
    for _ in 0..30 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tls = connector
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        tls.write_all(b"POST /webhook HTTP/1.1\r\nHost: l")
            .await
            .unwrap();
        slow.push(tls);
    }
    let dribble = tokio::spawn(async move {
        for _ in 0..10 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"o").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // Absurd headers and a body that never finishes.
    let sender = WebhookSender::new(
        &bench.webhook_url(),
        APP_SECRET,
        Some(&bench.peers.certs.ca_pem),
    );
    let huge = "a".repeat(200_000);
    let r = sender
        .client()
        .post(bench.webhook_url())
        .header("x-junk", huge.as_str())
        .body("{}")
        .send()
        .await;
    assert!(
        r.map(|r| r.status().as_u16() >= 400).unwrap_or(true),
        "a 200 KB header must not be accepted"
    );

    // Meanwhile, Facebook's webhooks.
    let mut latencies = Vec::new();
    for i in 0..30 {
        let body = messenger_text(
            PAGE_A,
            PSID,
            &format!("mid.a{i}"),
            1_700_000_000_000 + i,
            &format!("real {i}"),
        );
        let started = Instant::now();
        let (status, _) = sender.send(body.as_bytes()).await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(status, 200);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "under attack: real webhook p50 {:?}, p99 {p99:?}",
        latencies[latencies.len() / 2]
    );
    // Debug build on a shared 2-core machine: a loose bound; the release target is in the benchmark.
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    bench.motion().wait_for_notifies(30, WAIT).await.unwrap();

    // HTTP/1.0 without keep-alive and pipelined requests are answered too.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut pipelined = Vec::new();
    for i in 0..3 {
        let body = messenger_text(
            PAGE_A,
            PSID,
            &format!("mid.p{i}"),
            1_800_000_000_000 + i,
            "piped",
        );
        let sig = signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
        pipelined.extend_from_slice(
            format!("POST /webhook HTTP/1.1\r\nhost: l\r\ncontent-length: {}\r\nx-hub-signature-256: {sig}\r\n\r\n{body}", body.len()).as_bytes(),
        );
    }
    tls.write_all(&pipelined).await.unwrap();
    let mut answers = String::new();
    let mut buf = vec![0u8; 8192];
    while answers.matches("EVENT_RECEIVED").count() < 3 {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {answers}");
        answers.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 3, "{answers}");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(
        b"GET /webhook?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1 HTTP/1.0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.0 403"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let _ = dribble.await;
    drop(attackers);
    bench.stop().await;
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
}

/// A TLS client that trusts the bench's CA.
fn tls_connector(peers: &Peers) -> tokio_rustls::TlsConnector {
    fb_openchannel::http_client::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(peers.certs.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Hundreds of connections each send nearly all of a 1 MiB body with a made-up (but
/// well-formed) signature, and hold it. Before, each body sat in memory (400 of them:
/// +400 MiB, kept after they closed). Now memory stays within the body budget, the rest
/// waits in spool files, a real webhook is answered at once, and the memory is given
/// back after the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_unverified_bodies_keeps_memory_bounded_and_webhooks_answered() {
    const ATTACKERS: usize = 300;
    const ACTIVE: usize = 100;
    const BODY: usize = 1024 * 1024;
    let peers = Peers::start().await;
    let local_port = free_port();
    let text = peers
        .config_toml("")
        .replace(
            "[local]\nlisten = \"127.0.0.1:0\"",
            &format!("[local]\nlisten = \"127.0.0.1:{local_port}\""),
        )
        // The attackers hold their bodies for as long as they may, and outnumber the
        // active slots.
        .replace(
            "request_timeout = \"2s\"",
            &format!("request_timeout = \"120s\"\nmax_active_connections = {ACTIVE}"),
        );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let daemon = Process::start(&path);
    let port = daemon.public_port;
    let pid = daemon.child.id();
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{port}/webhook"),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    // Warm up: one webhook end to end, so the baseline includes what any traffic uses.
    sender
        .send(messenger_text(PAGE_A, PSID, "mid.warm", 1, "warm").as_bytes())
        .await
        .unwrap();
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    let baseline = rss_kib(pid);

    let connector = tls_connector(&peers);
    let forged = format!("sha256={}", "ab".repeat(32));
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..ATTACKERS {
        let connector = connector.clone();
        let forged = forged.clone();
        attackers.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let mut tls = connector
                .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .ok()?;
            let head = format!(
                "POST /webhook HTTP/1.1\r\nhost: l\r\ncontent-length: {BODY}\r\nx-hub-signature-256: {forged}\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).await.ok()?;
            // All but the last KiB, then hold (unless the daemon closes the connection
            // to make room for another).
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent + chunk.len() < BODY - 1024 {
                tls.write_all(&chunk).await.ok()?;
                sent += chunk.len();
            }
            tls.flush().await.ok()?;
            Some(tls)
        });
    }
    let mut held = Vec::new();
    while let Some(conn) = attackers.join_next().await {
        held.extend(conn.unwrap());
    }
    // The daemon reads at most ACTIVE of them at once; the others were pushed out.
    wait_until("the daemon read the bodies it holds", WAIT, || async {
        let (_, m) = local_get(local_port, "/metrics").await;
        let read: f64 = m
            .lines()
            .filter(|l| l.starts_with("fb_openchannel_unverified_body_bytes{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        read >= (held.len().min(ACTIVE) * BODY / 2) as f64
    })
    .await;
    let during = rss_kib(pid);

    // A real webhook during the flood is answered at once.
    let started = Instant::now();
    let (status, _) = sender
        .send(messenger_text(PAGE_A, PSID, "mid.flood", 2, "during the flood").as_bytes())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200);
    let grew_mib = during.saturating_sub(baseline) / 1024;
    println!(
        "flood of {ATTACKERS} × 1 MiB unverified bodies, {ACTIVE} active slots: RSS {} → {} MiB (+{grew_mib} MiB), real webhook answered in {took:?}",
        baseline / 1024,
        during / 1024
    );
    // Answered, not starved: 0.3 s on an idle machine; the margin is for a loaded one
    // (it took over 3 s once beside a full build), still well within Facebook's wait.
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The 32 MiB body budget and the active connections' own buffers (TLS, HTTP: the
    // README's 160 KiB each), whatever the number of attackers, plus 8 MiB for the
    // allocator: alone this grows +44 MiB, but CI runs with the other tests loading both
    // cores saw +48 and +51 (more threads touching more malloc arenas, each keeping what
    // it freed). Without the budget the same flood grows by hundreds of MiB.
    let bound = 32 + (ACTIVE * 160 / 1024) as u64 + 8;
    assert!(
        grew_mib < bound,
        "+{grew_mib} MiB (bound {bound}) with {ATTACKERS} attackers"
    );

    // After the flood the memory goes back.
    drop(held);
    // Polled by hand, not with `wait_until`: a failure says where the memory stood.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let now = rss_kib(pid);
        if now < baseline + 16 * 1024 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "memory not given back 40 s after the flood: RSS {} MiB, {} MiB over the baseline of {} MiB (allowed: 16)",
            now / 1024,
            now.saturating_sub(baseline) / 1024,
            baseline / 1024
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peers.motion.wait_for_notifies(2, WAIT).await.unwrap();
}

/// 300 idle connections to the local listener made /healthz time out (they were held
/// 15 s each, 256 at most); now they are shed after 2 s and 1,024 fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_local_listener_do_not_starve_health_checks() {
    let bench = Bench::start().await;
    let local = bench.daemon().local_addr;
    // A new connection each time, as a monitoring probe makes.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthz = || async {
        let started = Instant::now();
        let status = client
            .get(format!("http://{local}/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        started.elapsed()
    };
    healthz().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(local).await.unwrap());
    }
    let took = healthz().await;
    assert!(
        took < Duration::from_millis(500),
        "{took:?} with 300 idle connections"
    );
    // Past the cap: the idle ones are shed after 2 s, and the check gets through.
    for _ in 0..1200 {
        idle.push(tokio::net::TcpStream::connect(local).await.unwrap());
    }
    let took = healthz().await;
    assert!(
        took < Duration::from_secs(5),
        "{took:?} with 1,500 idle connections"
    );
    drop(idle);
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_starve_real_webhooks() {
    // The daemon in its own process: it and this test each need ~10,000 descriptors.
    let peers = Peers::start().await;
    let path = peers.dir.path().join("config.toml");
    std::fs::write(
        &path,
        peers
            .config_toml_with("max_connections = 16384", "", "")
            .replace("request_timeout = \"2s\"", "request_timeout = \"5s\""),
    )
    .unwrap();
    let daemon = Process::start(&path);
    let port = daemon.public_port;
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap()
    };
    let rss_before = rss(daemon.child.id());
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused: {e}", idle.len()),
        }
    }
    let rss_kib = rss(daemon.child.id());
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{port}/webhook"),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let mut latencies = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let (status, _) = sender
            .send(
                messenger_text(
                    PAGE_A,
                    PSID,
                    &format!("mid.i{i}"),
                    1_700_000_000_000 + i,
                    "real",
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(status, 200);
    }
    latencies.sort();
    println!(
        "10,000 idle connections: daemon RSS {} MiB (was {} MiB), real webhook p50 {:?}, max {:?}",
        rss_kib / 1024,
        rss_before / 1024,
        latencies[10],
        latencies[19]
    );
    assert!(latencies[19] < Duration::from_millis(1000), "{latencies:?}");
    assert!(
        rss_kib < 200 * 1024,
        "RSS {rss_kib} KiB with 10,000 idle connections"
    );
    drop(idle);
}

/// Peak resident memory of a process, KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
}

/// A config with the local listener on a known port, written beside the peers.
fn process_config(peers: &Peers, local_port: u16) -> std::path::PathBuf {
    let text = peers.config_toml("").replace(
        "[local]\nlisten = \"127.0.0.1:0\"",
        &format!("[local]\nlisten = \"127.0.0.1:{local_port}\""),
    );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A signed feed batch as Meta sends them when a Page is busy: 1,000 comments of 6 KB
/// (6 MiB), for a Page this daemon does not serve (parsed and stored, never delivered).
fn big_feed_batch(n: usize) -> String {
    let text = "x".repeat(6000);
    let changes: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({"field": "feed", "value": {
                "item": "comment", "verb": "add", "created_time": 1_700_000_000,
                "post_id": "999_1", "parent_id": "999_1", "comment_id": format!("999_1_{n}{i:04}"),
                "from": {"id": format!("{}", 5000 + i), "name": "Ada"}, "message": text}})
        })
        .collect();
    serde_json::json!({"object": "page", "entry": [{"id": "999", "time": 1, "changes": changes}]})
        .to_string()
}

/// Signed bodies are bounded after the signature checks too (DESIGN §4 rule 15): 32
/// feed batches of 6 MiB whose last bytes arrive at the same moment were each read back
/// and parsed at once (50 × 7.3 MiB peaked at 1.5 GiB). Now each verified body holds room
/// for its parse in one budget, the others wait or are answered 503 (Meta sends them
/// again) — and every batch is stored once in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_signed_batches_at_once_are_parsed_within_a_budget_and_all_stored() {
    const BATCHES: usize = 32;
    let peers = Peers::start().await;
    let local_port = free_port();
    let path = process_config(&peers, local_port);
    // Bodies of 6 MiB take longer than the tests' usual 2 s to arrive in a debug build.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("request_timeout = \"2s\"", "request_timeout = \"60s\"");
    std::fs::write(&path, text).unwrap();
    let daemon = Process::start(&path);
    let pid = daemon.child.id();
    let port = daemon.public_port;
    let url = format!("https://127.0.0.1:{port}/webhook");
    let sender = WebhookSender::new(&url, APP_SECRET, Some(&peers.certs.ca_pem));
    sender
        .send(messenger_text(PAGE_A, PSID, "mid.warm", 1, "warm").as_bytes())
        .await
        .unwrap();
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    let baseline = peak_kib(pid);

    // Every body but its last byte, on its own connection; then the last bytes together.
    let connector = tls_connector(&peers);
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(BATCHES));
    let mut senders = tokio::task::JoinSet::new();
    for n in 0..BATCHES {
        let (connector, ready) = (connector.clone(), ready.clone());
        senders.spawn(async move {
            let body = big_feed_batch(n);
            let signature = signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut tls = connector
                .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let head = format!(
                "POST /webhook HTTP/1.1\r\nhost: l\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-hub-signature-256: {signature}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            let (most, last) = body.as_bytes().split_at(body.len() - 1);
            tls.write_all(most).await.unwrap();
            tls.flush().await.unwrap();
            ready.wait().await;
            tls.write_all(last).await.unwrap();
            tls.flush().await.unwrap();
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            let status = String::from_utf8_lossy(&answer)
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            (body, status)
        });
    }
    let mut again = Vec::new();
    while let Some(done) = senders.join_next().await {
        let (body, status) = done.unwrap();
        match status {
            200 => {}
            503 | 408 | 0 => again.push(body),
            other => panic!("a batch answered {other}"),
        }
    }
    let grew_mib = peak_kib(pid).saturating_sub(baseline) / 1024;
    println!(
        "{BATCHES} signed 6 MiB batches verified at once: peak RSS +{grew_mib} MiB, {} sent again",
        again.len()
    );
    // As Meta: what was refused is sent again, until taken.
    for body in again {
        loop {
            match sender.send(body.as_bytes()).await {
                Ok((200, _)) => break,
                Ok((503 | 408, _)) | Err(_) => continue,
                Ok((other, _)) => panic!("a batch answered {other}"),
            }
        }
    }
    // The 96 MiB parse budget, the connections' buffers and the allocator's slack;
    // without the budget the 32 parses at once took hundreds of MiB.
    assert!(grew_mib < 170, "+{grew_mib} MiB");
    let (_, metrics) = local_get(local_port, "/metrics").await;
    let stored: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("fb_openchannel_events_stored_total{page_id=\"unconfigured\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(stored as usize, BATCHES * 1000, "every comment stored once");
}

/// Agents' files are bounded too: 24 replies, each with a 10 MiB file, to 24 customers at
/// once held every file in memory before any budget (40 × 25 MiB in 512 MiB: killed, and
/// every restart sent again what was in flight). Now each file holds room in the file
/// budget before a byte of it is read; each is downloaded from Motion once and sent to
/// Graph once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_files_at_once_stay_within_the_file_budget_and_go_once() {
    const REPLIES: u64 = 24;
    const FILE: usize = 10 * 1024 * 1024;
    let peers = Peers::start().await;
    let local_port = free_port();
    let path = process_config(&peers, local_port);
    let daemon = Process::start(&path);
    let pid = daemon.child.id();
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let now = fb_openchannel::store::now_ms();
    for c in 0..REPLIES {
        let psid = format!("{}", 7_100_000 + c);
        sender
            .send(messenger_text(PAGE_A, &psid, &format!("mid.f.{c}"), now, "my file?").as_bytes())
            .await
            .unwrap();
    }
    peers
        .motion
        .wait_for_notifies(REPLIES as usize, WAIT)
        .await
        .unwrap();
    let baseline = peak_kib(pid);
    let motion_calls = peers.motion.requests();
    let reply_url = format!("http://127.0.0.1:{local_port}/reply/{PAGE_A}?token={REPLY_TOKEN_A}");
    let mut replies = tokio::task::JoinSet::new();
    for c in 0..REPLIES {
        let name = format!("scan-{c}.pdf");
        let file = peers
            .motion
            .add_file(&name, "application/pdf", vec![c as u8; FILE]);
        // The file alone: Motion puts its name in the body.
        let body = reply_body(20_000 + c, &format!("{}", 7_100_000 + c), &name, Some(file));
        let url = reply_url.clone();
        replies.spawn(async move {
            reqwest::Client::new()
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    while let Some(status) = replies.join_next().await {
        let status = status.unwrap().unwrap();
        assert!(status == 200 || status == 202, "{status}");
    }
    wait_until("every file is sent", Duration::from_secs(120), || async {
        peers.graph.sent().len() >= REPLIES as usize
    })
    .await;
    let grew_mib = peak_kib(pid).saturating_sub(baseline) / 1024;
    println!("{REPLIES} replies with 10 MiB files at once: peak RSS +{grew_mib} MiB");
    // The 64 MiB file budget and what a file costs on its way out (the multipart body,
    // the allocator); without the budget, 24 files at once were +240 MiB and more.
    assert!(grew_mib < 160, "+{grew_mib} MiB");
    assert_eq!(
        peers.graph.sent().len(),
        REPLIES as usize,
        "each file sent once"
    );
    // Each file's metadata and bytes asked once: no download again for lack of room.
    assert_eq!(peers.motion.requests() - motion_calls, 2 * REPLIES);
}

/// What a peer answers is read up to a bound (DESIGN §4 rule 15): a Motion answering
/// every notify with 50 MB took the daemon to 1.3 GiB. Now the answer past 64 KiB is not
/// read, the notify still counts as taken (a 2xx), and memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_motion_answering_with_huge_bodies_does_not_grow_memory() {
    const NOTIFIES: usize = 40;
    let peers = Peers::start().await;
    let local_port = free_port();
    let path = process_config(&peers, local_port);
    let daemon = Process::start(&path);
    let pid = daemon.child.id();
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    sender
        .send(messenger_text(PAGE_A, PSID, "mid.warm", 1, "warm").as_bytes())
        .await
        .unwrap();
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    let baseline = peak_kib(pid);
    peers.motion.set_mode(Mode::Bloated(50 * 1024 * 1024));
    for n in 0..NOTIFIES {
        let psid = format!("{}", 7_300_000 + n);
        sender
            .send(messenger_text(PAGE_A, &psid, &format!("mid.b.{n}"), 2, "hello").as_bytes())
            .await
            .unwrap();
    }
    let notes = peers
        .motion
        .wait_for_notifies(1 + NOTIFIES, WAIT)
        .await
        .unwrap();
    assert_eq!(
        notes.len(),
        1 + NOTIFIES,
        "each taken once, none sent again"
    );
    let grew_mib = peak_kib(pid).saturating_sub(baseline) / 1024;
    println!("{NOTIFIES} notifies answered with 50 MB each: peak RSS +{grew_mib} MiB");
    assert!(grew_mib < 24, "+{grew_mib} MiB");
}

/// Slow clients on the local listener cannot keep Motion out: 1,500 of them, each
/// trickling a request head, made half of Motion's Reply URL calls fail with resets (the
/// listener had room for 1,024 connections; the rest filled the kernel's backlog). Now
/// idle and slow connections have room by the thousand, a slow one is closed for a
/// newcomer, and a call being answered is never closed — every call of Motion's gets its
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_on_the_local_listener_never_cost_motion_a_reply() {
    const SLOW: usize = 1500;
    let peers = Peers::start().await;
    let local_port = free_port();
    let path = process_config(&peers, local_port);
    let daemon = Process::start(&path);
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let now = fb_openchannel::store::now_ms();
    sender
        .send(messenger_text(PAGE_A, PSID, "mid.slow", now, "hello?").as_bytes())
        .await
        .unwrap();
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();

    // The slow clients: each sends a byte of its head every 300 ms, for as long as it
    // is let, and connects again when it is closed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..SLOW {
        let stop = stop.clone();
        slow.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", local_port)).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                for b in b"POST /reply/1 HTTP/1.1\r\nhost: x\r\nx-slow: "
                    .iter()
                    .cycle()
                {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*b]).await.is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let reply_url = format!("http://127.0.0.1:{local_port}/reply/{PAGE_A}?token={REPLY_TOKEN_A}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut answered = Vec::new();
    for n in 0..20u64 {
        let result = client
            .post(&reply_url)
            .json(&reply_body(
                30_000 + n,
                PSID,
                "Your parcel ships today",
                None,
            ))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status().as_u16());
        answered.push(result.map_err(|e| e.to_string()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    slow.shutdown().await;
    assert!(
        answered.iter().all(|a| matches!(a, Ok(200 | 202))),
        "Motion's calls beside {SLOW} slow clients: {answered:?}"
    );
    wait_until("every reply is sent", WAIT, || async {
        peers.graph.sent().len() == 20
    })
    .await;
}
