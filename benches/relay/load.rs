//! The load: signed webhooks like Meta's, sent over keep-alive TLS connections, and the
//! anchor they are also sent to — a server of the same stack that stores nothing.
//!
//! Every message's text ends with `#<n>`, a number given once in the whole run, so that
//! Motion's record shows whether any message arrived twice or not at all (see
//! `report::audit`), and a customer's messages are sent by one connection only, one after
//! another, so that their order at Motion is the order they were sent in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fb_openchannel::facebook::signature;
use fb_openchannel::server::tls::CertStore;
use fb_openchannel::sim::tls::TestCerts;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;

use crate::{IG, PAGE, SECRET};

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
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

pub async fn connect(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> Sender {
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

/// The next message number (also its Facebook time, in ms past a fixed start).
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Webhooks the daemons acknowledged, each one message: what Motion must receive.
pub static DAEMON_ACKED: AtomicU64 = AtomicU64::new(0);

/// Customers of the intake phases: so many that the store has conversations to keep.
const CUSTOMERS: u64 = 1000;

/// The intake phases' Messenger events: the `n`-th request of connection `c` of `conns`
/// comes from one of 1,000 customers, each customer sending from one connection only.
pub fn messenger(c: u64, n: u64, conns: u64) -> (Bytes, String) {
    let per_connection = (CUSTOMERS / conns).max(1);
    webhook(c + conns * (n % per_connection), "t")
}

/// A signed one-event Messenger webhook from customer `psid`; its text is `tag#<n>`.
pub fn webhook(psid: u64, tag: &str) -> (Bytes, String) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let ts = 1_700_000_000_000u64 + n;
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":{ts},"messaging":[{{"sender":{{"id":"{psid}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":{ts},"message":{{"mid":"m.bench.{n}","text":"{tag}#{n}"}}}}]}}]}}"#
    );
    sign(body)
}

fn sign(body: String) -> (Bytes, String) {
    let sig = signature::sign(SECRET.as_bytes(), body.as_bytes());
    (Bytes::from(body), sig)
}

/// One event of the Instagram mix, by `i % 3`: a Messenger message, an Instagram
/// direct message, a comment on one of the account's four media items; `conv` picks the
/// customer.
pub fn mixed_webhook(conv: u64, i: u64, _: u64) -> (Bytes, String) {
    let igsid = 1_254_000_000_000_000u64 + conv;
    if i.is_multiple_of(3) {
        return webhook(conv, "mix");
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let ts = 1_700_000_000_000u64 + n;
    let body = match i % 3 {
        1 => format!(
            r#"{{"object":"instagram","entry":[{{"id":"{IG}","time":{ts},"messaging":[{{"sender":{{"id":"{igsid}"}},"recipient":{{"id":"{IG}"}},"timestamp":{ts},"message":{{"mid":"m.ig.bench.{n}","text":"mix#{n}"}}}}]}}]}}"#
        ),
        _ => format!(
            r#"{{"object":"instagram","entry":[{{"id":"{IG}","time":{},"changes":[{{"field":"comments","value":{{"id":"{}","from":{{"id":"{igsid}","username":"bench.{conv}"}},"text":"mix#{n}","media":{{"id":"{}","media_product_type":"FEED"}}}}}}]}}]}}"#,
            ts / 1000,
            18_000_000_000_000_000u64 + n,
            17_887_000_000_000_000u64 + conv % 4
        ),
    };
    sign(body)
}

/// A signed webhook carrying one message from each of `count` customers, numbered from
/// `first`: how Facebook redelivers a backlog (many events per POST).
pub fn batch_webhook(first: u64, count: u64) -> (Bytes, String) {
    let items: Vec<String> = (first..first + count)
        .map(|customer| {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let ts = 1_700_000_000_000u64 + n;
            format!(
                r#"{{"sender":{{"id":"{customer}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":{ts},"message":{{"mid":"m.bench.{n}","text":"d#{n}"}}}}"#
            )
        })
        .collect();
    sign(format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1,"messaging":[{}]}}]}}"#,
        items.join(",")
    ))
}

pub async fn post(sender: &mut Sender, body: Bytes, sig: &str) -> u16 {
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

/// Makes the `n`-th webhook of connection `c` of `conns`.
pub type Make = fn(u64, u64, u64) -> (Bytes, String);

/// What a closed-loop load measured.
pub struct Load {
    /// Webhooks acknowledged per second.
    pub rate: f64,
    /// Each acknowledgement's latency.
    pub latencies: Vec<Duration>,
}

/// `conns` connections sending back to back for `secs` (or until `stop` is set).
pub async fn load(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    conns: usize,
    secs: f64,
    stop: Option<Arc<AtomicBool>>,
    make: Make,
) -> Load {
    let mut tasks = tokio::task::JoinSet::new();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    for c in 0..conns {
        let mut sender = connect(addr, tls).await;
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until
                && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
            {
                let (body, sig) = make(c as u64, n, conns as u64);
                let sent = Instant::now();
                assert_eq!(post(&mut sender, body, &sig).await, 200);
                latencies.push(sent.elapsed());
                n += 1;
            }
            latencies
        });
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    while let Some(l) = tasks.join_next().await {
        latencies.extend(l.unwrap());
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Load { rate, latencies }
}

/// Acknowledged by the daemon: counts toward what Motion must receive.
pub fn acked(n: usize) {
    DAEMON_ACKED.fetch_add(n as u64, Ordering::Relaxed);
}

/// Ack latencies at a fixed offered rate (open loop over 16 connections): p50, p99, max.
pub async fn fixed_rate(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    rate: f64,
    secs: f64,
) -> (Vec<Duration>, usize) {
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
    let n = all.len();
    (all, n)
}

/// What a burst of new conversations did.
pub struct Burst {
    /// Webhooks acknowledged per second in each window, first to last (the last may be
    /// shorter; its rate is over its own length).
    pub windows: Vec<f64>,
    pub window: Duration,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

/// Customers never seen before, for bursts and backlogs.
static NEW_CUSTOMERS: AtomicU64 = AtomicU64::new(5_000_000);

/// Takes `count` customers never seen before.
pub fn new_customers(count: u64) -> u64 {
    NEW_CUSTOMERS.fetch_add(count, Ordering::Relaxed)
}

/// New conversations — one message each from customers never seen before — as fast as
/// `conns` connections get them acknowledged, at least `total` of them and for at least
/// `lasting`: an ad sending thousands of people to Messenger at once. Bounded by time as
/// well as by count so that a fast machine still reads it over several windows.
pub async fn burst(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    conns: usize,
    total: u64,
    lasting: Duration,
    window: Duration,
) -> Burst {
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connect(addr, tls).await);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut acks = Vec::new();
            while sent.fetch_add(1, Ordering::Relaxed) < total || started.elapsed() < lasting {
                let (body, sig) = webhook(new_customers(1), "b");
                let at = Instant::now();
                assert_eq!(post(&mut sender, body, &sig).await, 200);
                acks.push((started.elapsed(), at.elapsed()));
            }
            acks
        });
    }
    let mut acks = Vec::new();
    while let Some(a) = tasks.join_next().await {
        acks.extend(a.unwrap());
    }
    let elapsed = started.elapsed();
    acked(acks.len());
    let slots = (elapsed.as_secs_f64() / window.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut counts = vec![0usize; slots];
    for (at, _) in &acks {
        let slot = (at.as_secs_f64() / window.as_secs_f64()) as usize;
        counts[slot.min(slots - 1)] += 1;
    }
    let windows = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let begin = window.as_secs_f64() * i as f64;
            let length = (elapsed.as_secs_f64() - begin).min(window.as_secs_f64());
            *n as f64 / length.max(1e-3)
        })
        .collect();
    Burst {
        windows,
        window,
        latencies: acks.into_iter().map(|(_, l)| l).collect(),
        elapsed,
    }
}

/// p50, p99 and max.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
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

/// The anchor: the same stack with nothing behind it — rustls, hyper, the HMAC check,
/// 200. Every daemon figure is given as a ratio to it (or to another figure) measured in
/// the same run, so that a slower machine and a slower daemon are told apart.
///
/// It runs in a process of its own with a runtime of the daemon's size, as the daemon
/// and nginx do. Served from the load's own runtime, it shared two threads with its
/// client: the wake-ups between them cost no switch of process, and how well they
/// batched changed from run to run — its rate read 0.84 to 2.2 times nginx's, measured
/// beside it in the same runs, while the daemon's stayed 0.125–0.19 of nginx's.
pub struct Anchor {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Anchor {
    /// Starts this benchmark's binary again as the anchor (told so by [`ANCHOR_CERT`]
    /// and [`ANCHOR_KEY`]) and waits for its address.
    pub fn start(certs: &TestCerts) -> Anchor {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(ANCHOR_CERT, &certs.cert_path)
            .env(ANCHOR_KEY, &certs.key_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().parse().expect("the anchor prints its address");
        Anchor { addr, child }
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the anchor process finds its certificate and key; when they are set, this
/// binary is the anchor.
pub const ANCHOR_CERT: &str = "FBO_BENCH_ANCHOR_CERT";
pub const ANCHOR_KEY: &str = "FBO_BENCH_ANCHOR_KEY";

/// The anchor process: serves until the benchmark ends it, or closes its stdin.
pub fn run_anchor(cert: &std::path::Path, key: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(serve_anchor(cert, key));
    println!("{addr}");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
}

async fn serve_anchor(cert: &std::path::Path, key: &std::path::Path) -> SocketAddr {
    let store = CertStore::open(cert, key).unwrap();
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

/// The disk's anchor: the middle time of 64 writes of 32 KiB, each followed by an
/// fsync, to a file beside the daemon's database (about what one group commit of the
/// WAL costs the daemon). Webhooks are acknowledged after their fsync, so a disk that is
/// slower for a while makes the daemon slower, and only the daemon: this tells the two
/// apart.
pub async fn disk_anchor(dir: &std::path::Path) -> Duration {
    let path = dir.join("disk-anchor");
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0x5a_u8; 32 * 1024];
        let mut took = Vec::with_capacity(64);
        for n in 0..64u64 {
            let started = Instant::now();
            // Appended like WAL frames, the file started over every 16 writes.
            file.seek(SeekFrom::Start((n % 16) * block.len() as u64))
                .unwrap();
            file.write_all(&block).unwrap();
            file.sync_all().unwrap();
            took.push(started.elapsed());
        }
        drop(file);
        let _ = std::fs::remove_file(&path);
        percentiles(took).0
    })
    .await
    .unwrap()
}
