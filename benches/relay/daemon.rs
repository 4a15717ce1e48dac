//! The release daemon as a child process, its config, and what /proc says about it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fb_openchannel::sim::facebook::SimGraph;
use fb_openchannel::sim::motion::SimMotion;
use fb_openchannel::sim::tls::TestCerts;

use crate::{IG, IG_REPLY_TOKEN, PAGE, REPLY_TOKEN, SECRET, TOKEN};

/// The daemon's account of its webhooks: how many the store took and the seconds they
/// spent in each of its stages (queue, commit, fsync wait, fsync), summed; and the
/// handler's (from the request's head read to its answer made), summed and counted.
#[derive(Clone, Copy, Default)]
pub struct StoreTimes {
    pub requests: f64,
    pub stages: [f64; 4],
    pub handled: f64,
    pub handler_seconds: f64,
}

impl StoreTimes {
    /// The mean seconds per request of each store stage, then of the whole handler,
    /// between `self` and a later reading.
    pub fn mean_since(&self, later: &StoreTimes) -> ([f64; 4], f64) {
        let n = (later.requests - self.requests).max(1.0);
        let handled = (later.handled - self.handled).max(1.0);
        (
            std::array::from_fn(|i| (later.stages[i] - self.stages[i]) / n),
            (later.handler_seconds - self.handler_seconds) / handled,
        )
    }
}

pub struct Daemon {
    pub child: Child,
    pub public: SocketAddr,
    pub local: SocketAddr,
    /// Time from spawn to the "ready" line.
    pub ready_after: Duration,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fb-openchannel"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn,fb_openchannel=info")
            .env("FB_OPENCHANNEL_LOG", "error,fb_openchannel=warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the release daemon");
        // Keep the daemon's (quiet) stderr drained so it never blocks on a full pipe, and
        // kept (warnings and errors, a few dozen lines a run): a figure far off its usual
        // range is read beside what the daemon said.
        let stderr = child.stderr.take().unwrap();
        let log = log_path();
        let mut kept = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let _ = writeln!(kept, "--- daemon started with {}", config.display());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(kept, "{line}");
            }
        });
        // The daemon logs only warnings and errors here; readiness is seen by connecting:
        // the local listener is bound after the store is open and the public listener bound.
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

    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    /// CPU time used so far by all the daemon's threads (schedstat: nanoseconds, where
    /// /proc/PID/stat counts 10 ms ticks). Steadier than a rate on a shared machine.
    pub fn cpu_time(&self) -> Duration {
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

    /// Bytes the daemon had written to the disk (the WAL, the database, what the page
    /// cache flushed of them): the write amplification of the store, per event.
    pub fn disk_written(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Where the daemon says its webhooks waited, from `/metrics`.
    pub async fn store_times(&self) -> StoreTimes {
        let url = format!("http://{}/metrics", self.local);
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let stage = |name: &str| {
            value(&format!(
                "fb_openchannel_store_durable_seconds{{stage=\"{name}\"}}"
            ))
        };
        let webhook = r#"{listener="public",route="webhook"}"#;
        StoreTimes {
            handled: value(&format!(
                "fb_openchannel_request_duration_seconds_count{webhook}"
            )),
            handler_seconds: value(&format!(
                "fb_openchannel_request_duration_seconds_sum{webhook}"
            )),
            requests: value("fb_openchannel_store_durable_requests"),
            stages: [
                stage("queue"),
                stage("commit"),
                stage("sync_wait"),
                stage("sync"),
            ],
        }
    }

    pub fn stop(mut self) {
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

/// Where the daemons' warnings and errors of this run are kept (emptied at its start).
pub fn log_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("daemon.log")
}

pub fn write_config(
    dir: &Path,
    certs: &TestCerts,
    graph: &SimGraph,
    motion: &SimMotion,
) -> PathBuf {
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
