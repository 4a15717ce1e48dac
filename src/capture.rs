//! A capture of what the real peers send, for the first real install.
//!
//! Everything the daemon knows of Facebook and Motion comes from documentation and other
//! projects' code. `fb-openchannel capture --for 2h` makes the running daemon write every
//! exchange with the real peers, as it was on the wire, to `capture/` beside the state
//! database: webhook bodies with their headers, Motion's Reply URL calls with theirs,
//! Motion's and Graph's answers to our calls. One JSON file per exchange; every token,
//! key and secret of the config masked (and every `Authorization` header, and every
//! query value of a URL); at most [`MAX_BYTES`] in all. `capture --off` ends it early.
//! `capture --check DIR` then compares what was captured with the shapes the daemon
//! expects (see [`check`]) and names every field that differed.
//!
//! The CLI and the daemon share no socket for this: the CLI writes the end time to
//! `capture/until` (in the state directory, writable by root and the service user only)
//! and the daemon looks at it every second.

pub mod check;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::statedir::{Dir, DirError};
use crate::time::now_ms;

/// Most bytes one capture writes; then it stops, and says so once.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Longest body kept in one file (the rest is cut, with its length noted).
const MAX_BODY: usize = 1024 * 1024;
/// Largest capture file read back (a request and an answer of [`MAX_BODY`] each, as
/// escaped JSON, with their headers).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
const MASK: &str = "********";

/// The capture directory beside the state database.
pub fn dir(store_path: &Path) -> PathBuf {
    crate::statedir::of_store(store_path).join("capture")
}

/// The file in the capture directory whose content (an end time, ms) turns a capture on.
const CONTROL: &str = "until";
/// Largest control file read (a number).
const MAX_CONTROL: u64 = 64;

/// The capture directory, opened by descriptor: the CLI runs as root in a directory the
/// daemon's user can write (see `statedir`).
fn control_dir(store_path: &Path) -> Result<Dir, DirError> {
    Dir::state(crate::statedir::of_store(store_path))?.private_subdir("capture")
}

/// Asks the running daemon to capture until `now + length` (the CLI side).
pub fn start(store_path: &Path, length: Duration) -> Result<i64, String> {
    let dir = control_dir(store_path).map_err(|e| e.to_string())?;
    let until = now_ms().saturating_add(crate::time::duration_ms(length));
    dir.write(CONTROL, until.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(until)
}

/// Ends a capture (the CLI side).
pub fn stop(store_path: &Path) -> Result<(), String> {
    let dir = Dir::state(crate::statedir::of_store(store_path))
        .and_then(|state| state.existing_subdir("capture"))
        .map_err(|e| e.to_string())?;
    match dir {
        Some(dir) => dir
            .remove(CONTROL)
            .map_err(|e| format!("cannot remove {}: {e}", dir.path().join(CONTROL).display())),
        None => Ok(()),
    }
}

/// Whether a capture runs, and until when (ms), as the control file says.
pub fn running_until(store_path: &Path) -> Option<i64> {
    let until = read_control(store_path)?;
    (until > now_ms()).then_some(until)
}

/// The control file's end time, if there is a capture directory with a readable one.
fn read_control(store_path: &Path) -> Option<i64> {
    let dir = open_dir(store_path).ok()??;
    let bytes = dir.read(CONTROL, MAX_CONTROL).ok()??;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// The capture directory of the state database at `store_path`, opened as root may
/// open it (see statedir: never through a symlink, only root's or the daemon's user's);
/// `None` when there is none.
pub fn open_dir(store_path: &Path) -> Result<Option<Dir>, DirError> {
    crate::statedir::existing_subdir(store_path, "capture")
}

/// The capture files written so far: how many, and their bytes.
pub fn files(store_path: &Path) -> (usize, u64) {
    let Ok(Some(dir)) = open_dir(store_path) else {
        return (0, 0);
    };
    dir.names()
        .unwrap_or_default()
        .iter()
        .filter_map(|name| name.ends_with(".json").then(|| dir.file_size(name))?)
        .fold((0, 0), |(n, bytes), size| (n + 1, bytes + size))
}

/// A file to write: its path and bytes.
type Pending = (PathBuf, Vec<u8>);

/// The daemon's side: whether to record, and the recording itself.
pub struct Capture {
    store_path: PathBuf,
    /// Record until this time (ms); 0 when no capture runs.
    until: AtomicI64,
    /// Values of the config that never reach a file.
    secrets: RwLock<Vec<String>>,
    written: AtomicU64,
    seq: AtomicU64,
    /// Said once that the size cap was reached.
    full: AtomicBool,
    writer: Mutex<Option<std::sync::mpsc::SyncSender<Pending>>>,
}

impl Capture {
    pub fn new(store_path: &Path) -> Arc<Capture> {
        Arc::new(Capture {
            store_path: store_path.to_owned(),
            until: AtomicI64::new(0),
            secrets: RwLock::new(Vec::new()),
            written: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            full: AtomicBool::new(false),
            writer: Mutex::new(None),
        })
    }

    /// The secrets of `config`, to mask (called at start and at every reload).
    pub fn set_secrets(&self, config: &Config) {
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = config.secret_values();
    }

    /// Whether exchanges are recorded now.
    pub fn on(&self) -> bool {
        now_ms() < self.until.load(Ordering::Relaxed)
    }

    /// Records one exchange of `kind` (webhook, reply, motion, graph): a JSON object
    /// with `request` and `response`. Masked, then written by the writer thread; never
    /// waits.
    pub fn record(&self, kind: &str, mut exchange: Value) {
        if !self.on() {
            return;
        }
        exchange["kind"] = json!(kind);
        exchange["at"] = json!(now_ms());
        let mut text = serde_json::to_string_pretty(&exchange).unwrap_or_default();
        for secret in self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        let bytes = text.into_bytes();
        let total = self
            .written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed)
            .saturating_add(bytes.len() as u64);
        if total > MAX_BYTES {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "capture: {} MiB written, the limit; nothing more is captured. End it with `fb-openchannel capture --off`",
                    MAX_BYTES / (1024 * 1024)
                );
            }
            return;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = dir(&self.store_path).join(format!("{}-{n:06}-{kind}.json", now_ms()));
        if let Some(tx) = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.try_send((path, bytes));
        }
    }

    /// Follows the control file every second until `shutdown`; starts the writer
    /// thread (files are written off the runtime).
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(1024);
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let _ = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                use std::os::unix::fs::OpenOptionsExt;
                for (path, bytes) in rx {
                    let written = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes));
                    if let Err(e) = written {
                        tracing::warn!("capture: cannot write {}: {e}", path.display());
                    }
                }
            });
        loop {
            let store_path = self.store_path.clone();
            let until = tokio::task::spawn_blocking(move || read_control(&store_path))
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            let was = self.until.swap(until, Ordering::Relaxed);
            let now = now_ms();
            if until > now && was <= now {
                self.written.store(0, Ordering::Relaxed);
                self.full.store(false, Ordering::Relaxed);
                tracing::info!(
                    "capture started: every exchange with Facebook and Motion is written to {} (secrets masked) for {}; end it with `fb-openchannel capture --off`",
                    dir(&self.store_path).display(),
                    humantime::format_duration(Duration::from_secs(
                        u64::try_from((until - now) / 1000).unwrap_or(0)
                    ))
                );
            } else if was > now && until <= now {
                tracing::info!(
                    "capture ended; check it with `fb-openchannel capture --check {}`",
                    dir(&self.store_path).display()
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The daemon's clients record through this (they know only the seam).
impl crate::http_client::Recorder for Capture {
    fn recording(&self) -> bool {
        self.on()
    }

    fn request(&self, request: &reqwest::Request) -> Option<Value> {
        self.on().then(|| request_json(request))
    }

    fn answer(
        &self,
        kind: &'static str,
        request: Value,
        status: u16,
        headers: &http::HeaderMap,
        body: &[u8],
    ) {
        self.record(
            kind,
            json!({
                "request": request,
                "response": {"status": status, "headers": headers_json(headers), "body": body_json(body)},
            }),
        );
    }
}

/// Headers as JSON, `Authorization` masked.
pub fn headers_json(headers: &http::HeaderMap) -> Value {
    let mut out = serde_json::Map::new();
    for (name, value) in headers {
        let value = if name == http::header::AUTHORIZATION {
            format!("(masked) {MASK}")
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.insert(name.as_str().to_owned(), json!(value));
    }
    Value::Object(out)
}

/// A body as JSON when it is JSON, else as text (cut at [`MAX_BODY`]).
pub fn body_json(bytes: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    let cut = bytes.len().min(MAX_BODY);
    let text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        json!({"text": text, "cut_at": cut, "length": bytes.len()})
    } else {
        json!(text)
    }
}

/// An outgoing call as JSON: method, URL (query values masked), headers, body — or a
/// note of its size when it is a stream or multipart.
pub fn request_json(request: &reqwest::Request) -> Value {
    let body = match request.body().and_then(|b| b.as_bytes()) {
        Some(bytes) => body_json(bytes),
        None if request.body().is_some() => json!("(multipart or stream: not captured)"),
        None => Value::Null,
    };
    json!({
        "method": request.method().as_str(),
        "url": crate::config::redact_url(request.url().as_str()),
        "headers": headers_json(request.headers()),
        "body": body,
    })
}
