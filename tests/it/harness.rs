//! The test bench: simulated Facebook and Motion on loopback, a throwaway CA, and the
//! real daemon — in this process ([`Bench::start`]) or as a child process
//! ([`Process`], for SIGKILL and log tests).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fb_openchannel::config::Config;
use fb_openchannel::daemon::Daemon;
use fb_openchannel::sim::facebook::{SimGraph, WebhookSender};
use fb_openchannel::sim::motion::SimMotion;
use fb_openchannel::sim::tls::{self, TestCerts};
use fb_openchannel::store::ItemSummary;
use tempfile::TempDir;

pub const APP_SECRET: &str = "test-app-secret-7c1f0e";
pub const VERIFY_TOKEN: &str = "test-verify-token-93ab";
pub const API_KEY: &str = "test-motion-apikey-5d2e";
pub const PAGE_A: &str = "12345654332";
pub const TOKEN_A: &str = "EAAG-page-token-a-0f9d";
pub const REPLY_TOKEN_A: &str = "reply-token-a-66c1";
pub const RECEIVE_TOKEN_A: &str = "receive-query-token-a-4b7e";
pub const PAGE_B: &str = "1234567890321";
pub const TOKEN_B: &str = "EAAG-page-token-b-77aa";
pub const REPLY_TOKEN_B: &str = "reply-token-b-3e90";
/// The PSID of the fixtures' customer.
pub const PSID: &str = "987654321432";
/// The Instagram account of the Instagram fixtures, linked to page A (Openchannel
/// account 8 in Motion).
pub const IG_ACCOUNT: &str = "17841400000000000";
pub const REPLY_TOKEN_IG: &str = "reply-token-ig-5a1c";
/// The Instagram-scoped id of the Instagram fixtures' customer.
pub const IGSID: &str = "1254001234567890";

/// Long enough for anything on a loaded 2-core machine; waits end as soon as the
/// awaited event happens, so this is never spent on a passing run.
pub const WAIT: Duration = Duration::from_secs(20);

/// Every secret the daemon knows in the bench, to check none reaches a log.
pub const SECRETS: &[&str] = &[
    APP_SECRET,
    VERIFY_TOKEN,
    API_KEY,
    TOKEN_A,
    REPLY_TOKEN_A,
    RECEIVE_TOKEN_A,
    TOKEN_B,
    REPLY_TOKEN_B,
    REPLY_TOKEN_IG,
];

pub struct Peers {
    pub graph: SimGraph,
    pub motion: SimMotion,
    pub certs: TestCerts,
    pub dir: TempDir,
}

impl Peers {
    pub async fn start() -> Peers {
        let dir = tempfile::Builder::new()
            .prefix("fbo-test")
            .tempdir()
            .unwrap();
        let certs = tls::generate(dir.path()).unwrap();
        let graph = SimGraph::start().await.unwrap();
        graph.add_page(PAGE_A, TOKEN_A);
        graph.add_page(PAGE_B, TOKEN_B);
        graph.add_profile(PSID, "Ada", "Lovelace");
        let motion = SimMotion::start(API_KEY).await.unwrap();
        Peers {
            graph,
            motion,
            certs,
            dir,
        }
    }

    /// An `[[instagram]]` table for account `id`, linked to page A, delivering to
    /// Motion's account 8.
    pub fn instagram_table(&self, id: &str) -> String {
        format!(
            "\n[[instagram]]\nid = \"{id}\"\npage = \"{PAGE_A}\"\nreceive_url = \"{}\"\nreply_token = \"{REPLY_TOKEN_IG}\"\n",
            self.motion.receive_url(8)
        )
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// The bench's config; `extra` is appended (more tables or keys at the end).
    pub fn config_toml(&self, extra: &str) -> String {
        self.config_toml_with("", "", extra)
    }

    /// The bench's config with extra keys in `[public]` and `[local]`, and `extra` at the end.
    pub fn config_toml_with(&self, public: &str, local: &str, extra: &str) -> String {
        format!(
            r#"
[public]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
request_timeout = "2s"
{public}

[local]
listen = "127.0.0.1:0"
{local}

[storage]
path = "{store}"

[facebook]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
graph_url = "{graph}"
media_hosts = ["{media}"]

[motion]
api_key = "{API_KEY}"
timeout = "5s"

[delivery]
retry_initial = "20ms"
retry_max = "200ms"
give_up_after = "1h"
{reconcile}
[[page]]
id = "{PAGE_A}"
access_token = "{TOKEN_A}"
receive_url = "{receive_a}?token={RECEIVE_TOKEN_A}"
reply_token = "{REPLY_TOKEN_A}"

[[page]]
id = "{PAGE_B}"
access_token = "{TOKEN_B}"
receive_url = "{receive_b}"
reply_token = "{REPLY_TOKEN_B}"
{extra}
"#,
            cert = self.certs.cert_path.display(),
            key = self.certs.key_path.display(),
            store = self.store_path().display(),
            graph = self.graph.url(),
            media = self.graph.server.addr,
            receive_a = self.motion.receive_url(1),
            receive_b = self.motion.receive_url(2),
            // Inbox comparisons only where a test asks for them (they call the
            // simulated Graph at start).
            reconcile = if extra.contains("[reconcile]") {
                ""
            } else {
                "\n[reconcile]\nevery = \"0s\"\npace = \"1ms\"\npause = \"50ms\"\n"
            },
        )
    }

    pub fn config(&self, text: &str) -> Config {
        Config::from_toml(Path::new("bench.toml"), text)
            .unwrap_or_else(|e| panic!("bench config: {e}"))
    }
}

/// The daemon running in this process beside the simulated peers.
pub struct Bench {
    pub peers: Peers,
    pub daemon: Option<Daemon>,
    pub sender: WebhookSender,
}

impl Bench {
    pub async fn start() -> Bench {
        Self::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Bench {
        Self::start_configured("", "", extra).await
    }

    /// With extra keys in the `[public]` table.
    pub async fn start_with_public(keys: &str) -> Bench {
        Self::start_configured(keys, "", "").await
    }

    /// With extra keys in the `[local]` table.
    pub async fn start_with_local(keys: &str) -> Bench {
        Self::start_configured("", keys, "").await
    }

    async fn start_configured(public: &str, local: &str, extra: &str) -> Bench {
        let peers = Peers::start().await;
        let text = peers.config_toml_with(public, local, extra);
        Self::start_on(peers, &text).await
    }

    /// With the Instagram account `id` linked to page A (see [`Peers::instagram_table`]).
    pub async fn start_with_instagram(id: &str) -> Bench {
        Self::start_with_instagram_keys(id, "").await
    }

    /// The same, with more keys in the account's `[[instagram]]` table.
    pub async fn start_with_instagram_keys(id: &str, keys: &str) -> Bench {
        let peers = Peers::start().await;
        let text = peers.config_toml(&format!("{}{keys}\n", peers.instagram_table(id)));
        Self::start_on(peers, &text).await
    }

    /// With the bench config changed by `edit` (e.g. a key added to `[facebook]`).
    pub async fn start_edited(edit: impl FnOnce(String) -> String) -> Bench {
        let peers = Peers::start().await;
        let text = edit(peers.config_toml(""));
        Self::start_on(peers, &text).await
    }

    /// On a copy of the state database at `db` (one an earlier release wrote).
    pub async fn start_on_database(db: &Path) -> Bench {
        let peers = Peers::start().await;
        std::fs::copy(db, peers.store_path()).unwrap();
        let text = peers.config_toml("");
        Self::start_on(peers, &text).await
    }

    /// The daemon stopped and started again on the same config, state and peers.
    pub async fn restart(mut self) -> Bench {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
        let text = std::fs::read_to_string(self.peers.dir.path().join("config.toml")).unwrap();
        Self::start_on(self.peers, &text).await
    }

    /// With this config text on these peers.
    pub async fn start_on(peers: Peers, text: &str) -> Bench {
        std::fs::write(peers.dir.path().join("config.toml"), text).unwrap();
        let config = peers.config(text);
        let daemon = Daemon::start(config).await.unwrap();
        let url = format!("https://127.0.0.1:{}/webhook", daemon.public_addr.port());
        let sender = WebhookSender::new(&url, APP_SECRET, Some(&peers.certs.ca_pem));
        Bench {
            peers,
            daemon: Some(daemon),
            sender,
        }
    }

    pub fn motion(&self) -> &SimMotion {
        &self.peers.motion
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    pub fn webhook_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/webhook",
            self.daemon().public_addr.port()
        )
    }

    /// Sends a signed webhook and asserts it was acknowledged.
    /// Sends a signed webhook whatever its field (one an admin subscribed by hand in the
    /// App Dashboard) and asserts it was acknowledged.
    pub async fn deliver_any_field(&self, body: &str) {
        let (status, text) = self.sender.send(body.as_bytes()).await.unwrap();
        assert_eq!(status, 200, "webhook not acknowledged: {text}");
    }

    /// Meta sends only the fields our app is subscribed to: a test that delivers another
    /// fails here, as the field would be lost on a real Page.
    pub async fn deliver(&self, body: &str) {
        if let Err(why) = self.peers.graph.would_send(body) {
            panic!("{why}");
        }
        let (status, text) = self.sender.send(body.as_bytes()).await.unwrap();
        assert_eq!(status, 200, "webhook not acknowledged: {text}");
    }

    /// The daemon's `/metrics` text, from its local listener.
    pub async fn metrics(&self) -> String {
        get_text(format!("http://{}/metrics", self.daemon().local_addr)).await
    }

    pub async fn items(&self) -> Vec<ItemSummary> {
        self.daemon().shared.store.items().await.unwrap()
    }

    /// Waits (at most [`WAIT`]) until the queue's items satisfy `check`.
    pub async fn wait_items(&self, what: &str, check: impl Fn(&[ItemSummary]) -> bool) {
        let (bench, check) = (self, &check);
        crate::wait_until(
            what,
            WAIT,
            move || async move { check(&bench.items().await) },
        )
        .await;
    }

    pub async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }
}

/// The body of a GET that must answer (any status).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The daemon as a child process of the test, its stderr collected.
pub struct Process {
    pub child: Child,
    pub public_port: u16,
    /// The local listener's (Reply URL, `/metrics`).
    pub local_port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_fb-openchannel")
}

impl Process {
    /// Starts `fb-openchannel run --config <path>` and waits for its ready line.
    pub fn start(config_path: &Path) -> Process {
        Self::start_with_env(config_path, &[])
    }

    /// Like [`Process::start`], with extra environment variables.
    pub fn start_with_env(config_path: &Path, env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(binary());
        command
            .args(["run", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before it is announced, so a test that waited for it sees it.
                thread_log.lock().unwrap().push(line.clone());
                if line.contains("is ready")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = match ready_rx.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not become ready; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        // "… webhooks on https://127.0.0.1:P/webhook, Reply URL on http://127.0.0.1:L/reply/…"
        let port = |nth: usize| {
            ready
                .split("://127.0.0.1:")
                .nth(nth)
                .and_then(|rest| rest.split('/').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no port in ready line: {ready}"))
        };
        Process {
            child,
            public_port: port(1),
            local_port: port(2),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (at most [`WAIT`]) until a log line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let log = self.log.clone();
        crate::wait_until(&format!("the log says {needle:?}"), WAIT, || {
            let log = log.clone();
            async move { log.lock().unwrap().iter().any(|l| l.contains(needle)) }
        })
        .await;
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// Sends a signal by name (`HUP`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `fb-openchannel <args>`; returns the exit code, stdout and stderr.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    cli_with_env(args, &[])
}

/// `fb-openchannel queue export --out FILE` (or `import FILE`) with the config at
/// `config`, asserted to succeed; its stdout and stderr.
pub fn queue_transfer(verb: &str, file: &Path, config: &Path) -> (String, String) {
    let file = file.to_str().unwrap();
    let mut args = vec!["queue", verb];
    if verb == "export" {
        args.push("--out");
    }
    args.extend([file, "--config", config.to_str().unwrap()]);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "queue {verb}: {out}{err}");
    (out, err)
}

/// The bench config `text` for a new host: the same peers, its state database in a
/// folder of its own.
pub fn on_new_host(peers: &Peers, text: &str) -> String {
    let old_db = peers.store_path();
    let new_db = peers.dir.path().join("new-host").join("state.db");
    text.replace(old_db.to_str().unwrap(), new_db.to_str().unwrap())
}

/// [`cli`] with these environment variables set.
pub fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`cli`], for a command that a planted FIFO or device could make wait forever:
/// killed, and the test failed naming `what`, when it has not ended within `limit`.
pub fn cli_within(args: &[&str], limit: Duration, what: &str) -> (i32, String, String) {
    let child = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: a plain signal to our own child, not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{args:?} did not end within {limit:?}: it hung on {what}");
        }
    }
}

/// A loopback port nothing listens on right now (for configs that need a fixed port).
///
/// Taken below the kernel's ephemeral range, each at most once per run of the suite:
/// a port that `bind(0)` hands out and the test lets go of comes from the range every
/// outgoing connection takes its own port from, so with the whole suite running another
/// test's connection can take it before the daemon binds it (the daemon then says
/// "cannot listen" and never becomes ready). That is the likely cause of one "did not
/// become ready" seen in a full local run, whose log was not kept. Where that range
/// starts too low to leave room below it, `bind(0)` as before.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const ROOM: u16 = 10_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if ephemeral_start > ROOM + 1024 {
        // Another run of the suite at the same time starts elsewhere in the room.
        let offset = (std::process::id() % u32::from(ROOM)) as u16;
        for _ in 0..ROOM {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = ephemeral_start - ROOM + (offset.wrapping_add(n) % ROOM);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads a fixture copied from shared/fixtures (see tests/fixtures/facebook/SOURCES.md).
pub fn fixture(name: &str) -> String {
    fixture_in("facebook", name)
}

/// An Instagram fixture (tests/fixtures/instagram, see its SOURCES.md).
pub fn instagram_fixture(name: &str) -> String {
    fixture_in("instagram", name)
}

fn fixture_in(folder: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
