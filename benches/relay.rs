//! The benchmark: the release daemon between simulated Facebook and Motion on loopback
//! (real TLS, real signatures, real fsync), driven by a load generator in this process.
//!
//!     cargo bench --bench relay             # full run (a few minutes); writes docs/benchmark.md and .svg
//!     cargo bench --bench relay -- --short  # seconds, for CI; writes target/bench/
//!     cargo bench --bench relay -- --intake 64   # only intake at 64 connections, 20 s:
//!                                                # prints the daemon's pid to profile
//!
//! Phases: webhook intake (throughput at 1/16/64 keep-alive connections, and latency at a
//! fixed 1,000 events/s) against the daemon and against a *baseline* server built here
//! from the same stack (hyper + rustls, verifies the HMAC, answers 200, stores nothing);
//! end-to-end latency (webhook → notify, Reply URL → Graph) at 100/s; backlog drain
//! (events queued while Motion is down, then Motion back answering in 5 ms); footprint.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fb_openchannel::facebook::signature;
use fb_openchannel::server::tls::CertStore;
use fb_openchannel::sim::facebook::SimGraph;
use fb_openchannel::sim::motion::{Mode, SimMotion, reply_body};
use fb_openchannel::sim::tls::{self, TestCerts};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;

const SECRET: &str = "bench-app-secret";
const PAGE: &str = "1234567890";
const TOKEN: &str = "bench-page-token";
const REPLY_TOKEN: &str = "bench-reply-token";
/// The Instagram account linked to the page, for the Instagram mix.
const IG: &str = "17841400000000000";
const IG_REPLY_TOKEN: &str = "bench-ig-reply-token";

/// Sizes of one run.
struct Plan {
    short: bool,
    /// `--intake N`: only the intake phase at N connections, long enough to profile.
    intake_only: Option<usize>,
    throughput_secs: f64,
    fixed_rate_secs: f64,
    e2e_secs: f64,
    backlog_events: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let short = args.iter().any(|a| a == "--short");
    let intake_only = args
        .iter()
        .position(|a| a == "--intake")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(64));
    let plan = if short {
        Plan {
            short,
            intake_only,
            throughput_secs: 1.0,
            fixed_rate_secs: 1.0,
            e2e_secs: 1.0,
            backlog_events: 5_000,
        }
    } else {
        Plan {
            short,
            intake_only,
            throughput_secs: if intake_only.is_some() { 20.0 } else { 5.0 },
            fixed_rate_secs: 10.0,
            e2e_secs: 10.0,
            backlog_events: 100_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(plan));
}

// ---------------------------------------------------------------- the daemon ---------

struct Daemon {
    child: Child,
    public: SocketAddr,
    local: SocketAddr,
    /// Time from spawn to the "ready" line.
    ready_after: Duration,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fb-openchannel"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn,fb_openchannel=info")
            .env("FB_OPENCHANNEL_LOG", "error,fb_openchannel=error")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the release daemon");
        // Keep the daemon's (quiet) stderr drained so it never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(
            move || for _ in BufReader::new(stderr).lines().map_while(Result::ok) {},
        );
        // The daemon logs only errors here; readiness is seen by connecting: the local
        // listener is bound after the store is open and the public listener bound.
        let text = std::fs::read_to_string(config).unwrap();
        let addr = |section: &str| -> SocketAddr {
            let part = text.split(section).nth(1).unwrap();
            let line = part.lines().find(|l| l.starts_with("listen")).unwrap();
            line.split('"').nth(1).unwrap().parse().unwrap()
        };
        let (public, local) = (addr("[public]"), addr("[local]"));
        loop {
            if std::net::TcpStream::connect(local).is_ok() {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the daemon exited at start"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Daemon {
            ready_after: started.elapsed(),
            child,
            public,
            local,
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    /// CPU time used so far by all the daemon's threads (schedstat: nanoseconds, where
    /// /proc/PID/stat counts 10 ms ticks). Steadier than a rate on a shared machine.
    fn cpu_time(&self) -> Duration {
        let mut ns = 0u64;
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        for task in tasks.into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Duration::from_nanos(ns)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    /// A benchmark that stops half way must not leave its daemon running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_config(dir: &Path, certs: &TestCerts, graph: &SimGraph, motion: &SimMotion) -> PathBuf {
    let text = format!(
        r#"[public]
listen = "{public}"
tls_cert = "{cert}"
tls_key = "{key}"
max_connections = 16384

[local]
listen = "{local}"

[storage]
path = "{store}"

[facebook]
app_secret = "{SECRET}"
verify_token = "bench-verify"
graph_url = "{graph}"
media_hosts = ["{media}"]
subscription_check = "0s"

[motion]
api_key = "bench-api-key"

[delivery]
retry_initial = "50ms"
retry_max = "200ms"

[[page]]
id = "{PAGE}"
access_token = "{TOKEN}"
receive_url = "{receive}"
reply_token = "{REPLY_TOKEN}"

[[instagram]]
id = "{IG}"
page = "{PAGE}"
receive_url = "{receive_ig}"
reply_token = "{IG_REPLY_TOKEN}"
"#,
        public = free_addr(),
        local = free_addr(),
        cert = certs.cert_path.display(),
        key = certs.key_path.display(),
        store = dir.join("state.db").display(),
        graph = graph.url(),
        media = graph.server.addr,
        receive = motion.receive_url(1),
        receive_ig = motion.receive_url(8),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------- load --------------

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    fb_openchannel::http_client::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tls
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

static SEQ: AtomicU64 = AtomicU64::new(0);
/// Webhooks the daemon acknowledged (each one event, one notify to come).
static DAEMON_ACKED: AtomicU64 = AtomicU64::new(0);

/// The intake phases' Messenger events: connection `c` is one conversation.
fn messenger(c: u64, _: u64) -> (Bytes, String) {
    webhook(c, "throughput")
}

/// A signed one-event Messenger webhook; `psid` picks the conversation.
fn webhook(psid: u64, text: &str) -> (Bytes, String) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let ts = 1_700_000_000_000u64 + n;
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":{ts},"messaging":[{{"sender":{{"id":"{psid}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":{ts},"message":{{"mid":"m.bench.{n}","text":"{text}"}}}}]}}]}}"#
    );
    let sig = signature::sign(SECRET.as_bytes(), body.as_bytes());
    (Bytes::from(body), sig)
}

/// One event of the Instagram mix, by `i % 3`: a Messenger message, an Instagram
/// direct message, a comment on one of the account's four media items; `conv` picks the
/// customer.
fn mixed_webhook(conv: u64, i: u64) -> (Bytes, String) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let ts = 1_700_000_000_000u64 + n;
    let igsid = 1_254_000_000_000_000u64 + conv;
    let body = match i % 3 {
        0 => return webhook(conv, "mix"),
        1 => format!(
            r#"{{"object":"instagram","entry":[{{"id":"{IG}","time":{ts},"messaging":[{{"sender":{{"id":"{igsid}"}},"recipient":{{"id":"{IG}"}},"timestamp":{ts},"message":{{"mid":"m.ig.bench.{n}","text":"mix"}}}}]}}]}}"#
        ),
        _ => format!(
            r#"{{"object":"instagram","entry":[{{"id":"{IG}","time":{},"changes":[{{"field":"comments","value":{{"id":"{}","from":{{"id":"{igsid}","username":"bench.{conv}"}},"text":"mix","media":{{"id":"{}","media_product_type":"FEED"}}}}}}]}}]}}"#,
            ts / 1000,
            18_000_000_000_000_000u64 + n,
            17_887_000_000_000_000u64 + conv % 4
        ),
    };
    let sig = signature::sign(SECRET.as_bytes(), body.as_bytes());
    (Bytes::from(body), sig)
}

/// A signed webhook carrying `events` messages of consecutive conversations.
fn batch_webhook(first_conv: u64, convs: u64, per_conv: u64, round: u64) -> (Bytes, String) {
    let mut items = Vec::new();
    for c in 0..convs {
        let conv = first_conv + c;
        for k in 0..per_conv {
            let seq = round * per_conv + k;
            let ts = 1_800_000_000_000u64 + seq;
            items.push(format!(
                r#"{{"sender":{{"id":"{}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":{ts},"message":{{"mid":"m.b.{conv}.{seq}","text":"c{conv}:{seq:06}"}}}}"#,
                900_000 + conv
            ));
        }
    }
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1,"messaging":[{}]}}]}}"#,
        items.join(",")
    );
    let sig = signature::sign(SECRET.as_bytes(), body.as_bytes());
    (Bytes::from(body), sig)
}

async fn post(sender: &mut Sender, body: Bytes, sig: &str) -> u16 {
    let req = Request::post("/webhook")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header(signature::HEADER, sig)
        .body(Full::new(body))
        .unwrap();
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Webhooks acknowledged per second with `conns` connections sending back to back.
async fn throughput(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    conns: usize,
    secs: f64,
    daemon: bool,
    make: fn(u64, u64) -> (Bytes, String),
) -> f64 {
    let mut tasks = tokio::task::JoinSet::new();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    for c in 0..conns {
        let mut sender = connect(addr, tls).await;
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let (body, sig) = make(c as u64, n);
                assert_eq!(post(&mut sender, body, &sig).await, 200);
                n += 1;
            }
            n
        });
    }
    let started = Instant::now();
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    if daemon {
        DAEMON_ACKED.fetch_add(total, Ordering::Relaxed);
    }
    total as f64 / started.elapsed().as_secs_f64().max(secs)
}

/// Ack latencies at a fixed offered rate (open loop over 16 connections): p50, p99, max.
async fn fixed_rate(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    rate: f64,
    secs: f64,
    daemon: bool,
) -> (Duration, Duration, Duration) {
    let conns = 16;
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let mut sender = connect(addr, tls).await;
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < total {
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due).await;
                let (body, sig) = webhook(1000 + c as u64, "fixed");
                assert_eq!(post(&mut sender, body, &sig).await, 200);
                // From the scheduled time: a slow answer delays later sends, and that counts.
                lat.push(due.elapsed());
                i += conns;
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(l) = tasks.join_next().await {
        all.extend(l.unwrap());
    }
    if daemon {
        DAEMON_ACKED.fetch_add(all.len() as u64, Ordering::Relaxed);
    }
    percentiles(all)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    if v.is_empty() {
        return Default::default();
    }
    (
        v[v.len() / 2],
        v[(v.len() * 99 / 100).min(v.len() - 1)],
        *v.last().unwrap(),
    )
}

/// Waits until Motion has every event the daemon acknowledged so far.
async fn drained(motion: &SimMotion) {
    let acked = DAEMON_ACKED.load(Ordering::Relaxed) as usize;
    motion
        .wait_for_notifies(acked, Duration::from_secs(600))
        .await
        .unwrap();
}

// ---------------------------------------------------------------- baseline ----------

/// The same stack with nothing behind it: rustls, hyper, HMAC check, 200.
async fn baseline(certs: &TestCerts) -> SocketAddr {
    let store = CertStore::open(&certs.cert_path, &certs.key_path).unwrap();
    let acceptor = store.acceptor(None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Some(tls)) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let sig = req
                            .headers()
                            .get(signature::HEADER)
                            .map(|v| v.as_bytes().to_vec());
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let ok =
                            signature::verify(SECRET.as_bytes(), sig.as_deref(), &body).is_ok();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(if ok { 200 } else { 403 })
                                .body(Full::new(Bytes::from_static(b"EVENT_RECEIVED")))
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------- run ---------------

struct Results {
    rows: Vec<(String, String, String, Option<bool>)>,
    intake: Vec<(usize, f64, f64)>,
}

impl Results {
    fn add(&mut self, what: &str, value: String, target: &str, met: Option<bool>) {
        println!(
            "{what:<58} {value:>22}   {target}{}",
            match met {
                Some(true) => "  ✓",
                Some(false) => "  ✗",
                None => "",
            }
        );
        self.rows.push((what.into(), value, target.into(), met));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run(plan: Plan) {
    let dir = tempfile::Builder::new()
        .prefix("fbo-bench")
        .tempdir()
        .unwrap();
    let certs = tls::generate(dir.path()).unwrap();
    let graph = SimGraph::start().await.unwrap();
    graph.add_page(PAGE, TOKEN);
    graph.link_instagram(PAGE, IG);
    for conv in 0..64u64 {
        graph.add_instagram_profile(
            &(1_254_000_000_000_000u64 + conv).to_string(),
            Some("Bench Customer"),
            &format!("bench.{conv}"),
        );
    }
    for media in 0..4u64 {
        graph.add_instagram_media(
            &(17_887_000_000_000_000u64 + media).to_string(),
            &format!("https://www.instagram.com/p/bench{media}/"),
        );
    }
    let motion = SimMotion::start("bench-api-key").await.unwrap();
    let config = write_config(dir.path(), &certs, &graph, &motion);
    let tls = connector(&certs.ca_pem);
    let mut r = Results {
        rows: Vec::new(),
        intake: Vec::new(),
    };
    println!(
        "fb-openchannel benchmark ({} run) on {} core(s)\n",
        if plan.short { "short" } else { "full" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let daemon = Daemon::start(&config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.add(
        "RSS idle",
        format!("{:.1} MiB", daemon.rss_mib()),
        "≤ 25 MiB",
        Some(daemon.rss_mib() <= 25.0),
    );
    let base = baseline(&certs).await;

    // Intake throughput.
    let phases = match plan.intake_only {
        Some(conns) => {
            println!(
                "daemon pid {} (e.g. perf record -g -p {} -- sleep 10)",
                daemon.child.id(),
                daemon.child.id()
            );
            vec![conns]
        }
        None => vec![1usize, 16, 64],
    };
    for conns in phases {
        // Each phase starts with an empty queue: delivery left over from the previous
        // phase would otherwise compete with this one's intake.
        drained(&motion).await;
        let (cpu_before, acked_before) = (daemon.cpu_time(), DAEMON_ACKED.load(Ordering::Relaxed));
        let d = throughput(
            daemon.public,
            &tls,
            conns,
            plan.throughput_secs,
            true,
            messenger,
        )
        .await;
        // The baseline runs alone too: not beside the daemon delivering what it just took.
        drained(&motion).await;
        let events = DAEMON_ACKED.load(Ordering::Relaxed) - acked_before;
        let cpu = (daemon.cpu_time() - cpu_before).as_secs_f64() * 1e6 / events.max(1) as f64;
        let b = throughput(base, &tls, conns, plan.throughput_secs, false, messenger).await;
        r.intake.push((conns, d, b));
        r.add(
            &format!("intake, {conns} connection(s): daemon / baseline, events/s"),
            format!("{d:.0} / {b:.0}"),
            &format!("ratio {:.2} (≥ 0.5)", d / b),
            Some(d / b >= 0.5),
        );
        r.add(
            &format!("daemon CPU per event taken and delivered, {conns} conn."),
            format!("{cpu:.0} µs"),
            "",
            None,
        );
    }
    if plan.intake_only.is_some() {
        return;
    }
    // The same at 16 connections with Instagram in the mix: a third Messenger, a third
    // Instagram direct messages (names from Instagram's profile API), a third comments
    // on four media items (their links asked once each).
    drained(&motion).await;
    let (cpu_before, acked_before) = (daemon.cpu_time(), DAEMON_ACKED.load(Ordering::Relaxed));
    let mixed = throughput(
        daemon.public,
        &tls,
        16,
        plan.throughput_secs,
        true,
        mixed_webhook,
    )
    .await;
    drained(&motion).await;
    let events = DAEMON_ACKED.load(Ordering::Relaxed) - acked_before;
    let cpu = (daemon.cpu_time() - cpu_before).as_secs_f64() * 1e6 / events.max(1) as f64;
    let messenger_16 = r
        .intake
        .iter()
        .find(|(c, _, _)| *c == 16)
        .map_or(0.0, |i| i.1);
    r.add(
        "intake, 16 conn., Messenger + Instagram DMs + comments: events/s",
        format!("{mixed:.0}"),
        &format!("{:.2}× Messenger alone", mixed / messenger_16.max(1.0)),
        None,
    );
    r.add(
        "daemon CPU per event taken and delivered, Instagram mix, 16 conn.",
        format!("{cpu:.0} µs"),
        "",
        None,
    );
    drained(&motion).await;
    let (p50, p99, max) = fixed_rate(daemon.public, &tls, 1000.0, plan.fixed_rate_secs, true).await;
    r.add(
        "ack latency at 1,000 events/s: p50 / p99 / max",
        format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        "p99 ≤ 10 ms",
        Some(p99 <= Duration::from_millis(10)),
    );
    let (bp50, bp99, bmax) = fixed_rate(base, &tls, 1000.0, plan.fixed_rate_secs, false).await;
    r.add(
        "baseline at 1,000 events/s: p50 / p99 / max",
        format!("{} / {} / {}", ms(bp50), ms(bp99), ms(bmax)),
        "",
        None,
    );

    // End to end: wait until everything sent so far has reached Motion.
    let sent_so_far = DAEMON_ACKED.load(Ordering::Relaxed) as usize;
    motion
        .wait_for_notifies(sent_so_far, Duration::from_secs(300))
        .await
        .unwrap();
    let before = motion.notifies().len();
    let n = (100.0 * plan.e2e_secs) as usize;
    let mut sender = connect(daemon.public, &tls).await;
    let mut sent_at = Vec::new();
    for i in 0..n {
        let due = Instant::now() + Duration::from_millis(10);
        let (body, sig) = webhook(5000 + (i % 10) as u64, &format!("e2e-{i}"));
        sent_at.push(Instant::now());
        assert_eq!(post(&mut sender, body, &sig).await, 200);
        DAEMON_ACKED.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(due.into()).await;
    }
    let notes = motion
        .wait_for_notifies(before + n, Duration::from_secs(60))
        .await
        .unwrap();
    let mut e2e = Vec::new();
    for note in &notes[before..] {
        if let Some(i) = note
            .notify
            .body
            .strip_prefix("e2e-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            e2e.push(note.received_at.duration_since(sent_at[i]));
        }
    }
    let (p50, p99, _) = percentiles(e2e);
    r.add(
        "webhook → Motion notify at 100/s: p50 / p99",
        format!("{} / {}", ms(p50), ms(p99)),
        "p50 ≤ 5 ms",
        Some(p50 <= Duration::from_millis(5)),
    );

    let reply_url = format!("http://{}/reply/{PAGE}?token={REPLY_TOKEN}", daemon.local);
    let client = reqwest::Client::new();
    let n = (100.0 * plan.e2e_secs / 2.0) as usize;
    let mut lat = Vec::new();
    for i in 0..n {
        let due = Instant::now() + Duration::from_millis(10);
        let sent = Instant::now();
        let before = graph.sent().len();
        let status = client
            .post(&reply_url)
            .json(&reply_body(
                10_000 + i as u64,
                "777000",
                "bench reply",
                None,
            ))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        let msg = &graph.sent()[before];
        lat.push(msg.received_at.duration_since(sent));
        tokio::time::sleep_until(due.into()).await;
    }
    let (p50, p99, _) = percentiles(lat);
    r.add(
        "Reply URL → Graph Send API at 100/s: p50 / p99",
        format!("{} / {}", ms(p50), ms(p99)),
        "",
        None,
    );
    let peak = daemon.peak_rss_mib();
    r.add(
        "RSS at peak (after the load above)",
        format!("{peak:.1} MiB"),
        "≤ 100 MiB",
        Some(peak <= 100.0),
    );

    // Backlog: Motion down, events pile up.
    let everything = DAEMON_ACKED.load(Ordering::Relaxed) as usize;
    motion
        .wait_for_notifies(everything, Duration::from_secs(300))
        .await
        .unwrap();
    let baseline_notes = motion.notifies().len();
    motion.down().await;
    let convs = 1000u64.min(plan.backlog_events as u64 / 5);
    let per_conv_per_post = 1u64;
    let rounds = plan.backlog_events as u64 / convs;
    let mut sender = connect(daemon.public, &tls).await;
    let queued_started = Instant::now();
    for round in 0..rounds {
        for first in (0..convs).step_by(100) {
            let (body, sig) =
                batch_webhook(first, 100.min(convs - first), per_conv_per_post, round);
            assert_eq!(post(&mut sender, body, &sig).await, 200);
        }
    }
    let queued = (rounds * convs) as usize;
    r.add(
        &format!("backlog: {queued} events queued while Motion is down"),
        format!("{:.1} s", queued_started.elapsed().as_secs_f64()),
        "",
        None,
    );
    daemon.stop();
    let daemon = Daemon::start(&config);
    r.add(
        &format!("start → ready with {queued} pending"),
        ms(daemon.ready_after),
        "≤ 500 ms",
        Some(daemon.ready_after <= Duration::from_millis(500)),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.add(
        &format!("RSS with {queued} pending"),
        format!("{:.1} MiB", daemon.rss_mib()),
        "",
        None,
    );

    motion.set_mode(Mode::Slow(5));
    motion.up().await;
    let drain_started = Instant::now();
    let notes = motion
        .wait_for_notifies(baseline_notes + queued, Duration::from_secs(600))
        .await
        .unwrap();
    let drain = drain_started.elapsed();
    let rate = queued as f64 / drain.as_secs_f64();
    r.add(
        "backlog drain, Motion answering in 5 ms",
        format!("{rate:.0} events/s"),
        "≥ 2,000 events/s",
        Some(rate >= 2000.0),
    );
    let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut in_order = true;
    for note in &notes[baseline_notes..] {
        let body = &note.notify.body;
        if let Some((conv, _)) = body.split_once(':') {
            if let Some(prev) = last.get(conv)
                && prev > body
            {
                in_order = false;
            }
            last.insert(conv.to_owned(), body.clone());
        }
    }
    r.add(
        "per-conversation order after the drain",
        if in_order {
            "held".into()
        } else {
            "BROKEN".into()
        },
        "held",
        Some(in_order),
    );
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_fb-openchannel"))
        .map(|m| m.len())
        .unwrap_or(0);
    r.add(
        "binary size (stripped release)",
        format!("{:.1} MiB", binary as f64 / 1048576.0),
        "",
        None,
    );
    daemon.stop();

    postgres_column(&plan, &mut r, dir.path(), &config, &motion, &tls).await;
    write_reports(&plan, &r);
}

/// The same intake and drain with the queue in PostgreSQL (a private server on this
/// machine, as a site's would be on its own): the figures beside SQLite's above, from
/// the same run. Skipped, and said, when PostgreSQL is not installed.
async fn postgres_column(
    plan: &Plan,
    r: &mut Results,
    dir: &Path,
    sqlite_config: &Path,
    motion: &SimMotion,
    tls: &tokio_rustls::TlsConnector,
) {
    use fb_openchannel::sim::postgres::{PrivatePostgres, SKIPPED};
    let pg = match tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap()
    {
        Ok(Some(pg)) => pg,
        Ok(None) => {
            println!("PostgreSQL column: {SKIPPED}");
            r.add(
                "PostgreSQL column",
                "skipped: PostgreSQL not installed".into(),
                "",
                None,
            );
            return;
        }
        Err(e) => panic!("cannot start PostgreSQL: {e}"),
    };
    pg.create_database("bench").unwrap();
    let text = std::fs::read_to_string(sqlite_config).unwrap().replace(
        "[storage]\n",
        &format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            pg.url("bench")
        ),
    );
    let config = dir.join("config-postgres.toml");
    std::fs::write(&config, text).unwrap();
    motion.set_mode(Mode::Accept);
    let daemon = Daemon::start(&config);
    let sqlite: Vec<(usize, f64)> = r.intake.iter().map(|(c, d, _)| (*c, *d)).collect();
    for (conns, on_sqlite) in sqlite {
        drained(motion).await;
        let (cpu_before, acked_before) = (daemon.cpu_time(), DAEMON_ACKED.load(Ordering::Relaxed));
        let d = throughput(
            daemon.public,
            tls,
            conns,
            plan.throughput_secs,
            true,
            messenger,
        )
        .await;
        drained(motion).await;
        let events = DAEMON_ACKED.load(Ordering::Relaxed) - acked_before;
        let cpu = (daemon.cpu_time() - cpu_before).as_secs_f64() * 1e6 / events.max(1) as f64;
        r.add(
            &format!("PostgreSQL: intake, {conns} connection(s), events/s (SQLite above)"),
            format!("{d:.0} ({on_sqlite:.0})"),
            "",
            None,
        );
        r.add(
            &format!("PostgreSQL: daemon CPU per event taken and delivered, {conns} conn."),
            format!("{cpu:.0} µs"),
            "",
            None,
        );
    }
    // Backlog drain: Motion down while events pile up, then answering in 5 ms.
    drained(motion).await;
    let before = motion.notifies().len();
    motion.down().await;
    let convs = 200u64;
    let rounds = (plan.backlog_events / 5).max(1000) as u64 / convs;
    let mut sender = connect(daemon.public, tls).await;
    for round in 0..rounds {
        for first in (0..convs).step_by(100) {
            let (body, sig) = batch_webhook(first, 100.min(convs - first), 1, 1_000_000 + round);
            assert_eq!(post(&mut sender, body, &sig).await, 200);
        }
    }
    let queued = (rounds * convs) as usize;
    motion.set_mode(Mode::Slow(5));
    motion.up().await;
    let started = Instant::now();
    motion
        .wait_for_notifies(before + queued, Duration::from_secs(600))
        .await
        .unwrap();
    let rate = queued as f64 / started.elapsed().as_secs_f64();
    r.add(
        &format!("PostgreSQL: backlog drain of {queued} events, Motion answering in 5 ms"),
        format!("{rate:.0} events/s"),
        "",
        None,
    );
    r.add(
        "PostgreSQL: daemon RSS at peak",
        format!("{:.1} MiB", daemon.peak_rss_mib()),
        "",
        None,
    );
    daemon.stop();
}

fn write_reports(plan: &Plan, r: &Results) {
    let out = if plan.short {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    };
    std::fs::create_dir_all(&out).unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mut md = String::new();
    md.push_str("# Benchmark\n\n");
    md.push_str(&format!(
        "`cargo bench --bench relay`{} on {} core(s) ({cpu}); load generator, simulated Facebook and Motion share the machine with the daemon. Real TLS (rustls), real HMAC signatures, real fsync.\n\n",
        if plan.short { " -- --short" } else { "" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    md.push_str("| measure | result | target |\n|---|---|---|\n");
    for (what, value, target, met) in &r.rows {
        let mark = match met {
            Some(true) => " ✓",
            Some(false) => " ✗",
            None => "",
        };
        md.push_str(&format!("| {what} | {value} | {target}{mark} |\n"));
    }
    md.push_str("\n![intake throughput](benchmark.svg)\n");
    std::fs::write(out.join("benchmark.md"), md).unwrap();
    std::fs::write(out.join("benchmark.svg"), svg(&r.intake)).unwrap();
    println!("\nwritten: {}", out.join("benchmark.md").display());
}

/// A grouped bar chart of intake throughput, daemon vs baseline.
fn svg(intake: &[(usize, f64, f64)]) -> String {
    let max = intake.iter().map(|(_, d, b)| d.max(*b)).fold(1.0, f64::max);
    let (w, h, left, bottom) = (560.0, 300.0, 70.0, 40.0);
    let plot_h = h - bottom - 30.0;
    let group = (w - left - 20.0) / intake.len().max(1) as f64;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">Webhooks acknowledged per second (TLS, keep-alive)</text>
"#,
        w / 2.0
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = h - bottom - plot_h * i as f64 / 4.0;
        s.push_str(&format!(
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>
"##,
            w - 20.0,
            left - 6.0,
            y + 4.0
        ));
    }
    for (i, (conns, d, b)) in intake.iter().enumerate() {
        let x = left + group * i as f64 + group * 0.15;
        let bw = group * 0.33;
        for (k, (v, color)) in [(d, "#2b6cb0"), (b, "#a0aec0")].iter().enumerate() {
            let bh = plot_h * *v / max;
            s.push_str(&format!(
                r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{:.0}</text>
"#,
                x + k as f64 * bw,
                h - bottom - bh,
                x + k as f64 * bw + bw / 2.0,
                h - bottom - bh - 3.0,
                v
            ));
        }
        s.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{conns} connection{}</text>
"#,
            x + bw,
            h - bottom + 16.0,
            if *conns == 1 { "" } else { "s" }
        ));
    }
    s.push_str(&format!(
        r##"<rect x="{left}" y="{}" width="10" height="10" fill="#2b6cb0"/><text x="{}" y="{}">fb-openchannel (stores, fsyncs)</text>
<rect x="{}" y="{}" width="10" height="10" fill="#a0aec0"/><text x="{}" y="{}">baseline (verifies, stores nothing)</text>
</svg>
"##,
        h - 14.0,
        left + 14.0,
        h - 5.0,
        left + 230.0,
        h - 14.0,
        left + 244.0,
        h - 5.0
    ));
    s
}
