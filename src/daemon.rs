//! The running daemon: where the process starts its parts and where it stops them.
//!
//! [`Daemon::start`] opens the store, binds the listeners and starts the workers; it
//! returns only when everything is ready to serve (that is when systemd is told
//! `READY=1`). [`Daemon::stop`] stops intake first, lets in-flight work finish, and
//! returns when every task has ended. Tests and `demo` drive the same two calls.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigDiff};
use crate::metrics::{ResultLabels, TaskLabels};
use crate::relay::{Live, Shared, inbound, outbound, retention, subscription};
use crate::server::tls::CertStore;
use crate::server::{self, Limits, local, public};
use crate::store::Store;

/// What each task in `Daemon::tasks` is, in order, for error messages.
const TASK_NAMES: [&str; 9] = [
    "the public listener",
    "the local listener",
    "the inbound worker",
    "the outbound worker",
    "the subscription checker",
    "the Instagram Login token refresher",
    "the retention pass (storage.keep)",
    "the daily token check",
    "the inbox reconciliation",
];

/// The local listener's time for a request head (and idle keep-alive).
const LOCAL_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How long open HTTP requests may take to finish at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// How long deliveries in flight may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub struct Daemon {
    /// Where Facebook's webhooks are served (useful when the config asked for port 0).
    pub public_addr: SocketAddr,
    /// Where Motion's Reply URL, `/healthz` and `/readyz` are served.
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// The public certificate, when TLS is on: reloaded on SIGHUP and when its files change.
    pub certs: Option<Arc<CertStore>>,
    /// The ACME renewal, when the certificate is ACME's.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// The public listener's TLS, for a reload to put a new client CA in force.
    tls: Option<crate::server::tls::Acceptor>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Daemon {
    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        let store_path = config.storage.path.clone();
        let capture = crate::capture::Capture::new(&store_path);
        let live = Live::new(config, Some(capture.clone())).map_err(anyhow::Error::msg)?;
        let config = live.config.clone();
        let spool = crate::store::spool_dir(&store_path);
        let storage = config.storage.clone();
        let store = tokio::task::spawn_blocking(move || {
            if storage.is_postgres() {
                Store::open_postgres(&storage)
            } else {
                Store::open(&store_path)
            }
        })
        .await??;
        let bodies = crate::budget::BodyBudget::new(
            config.public.body_memory,
            config.public.body_spool,
            spool,
        );
        let shared = Shared::new(live, store, bodies, capture.clone());

        let public_cfg = &config.public;
        let mut acme = None;
        let certs = match (&public_cfg.acme, public_cfg.tls) {
            (_, false) => None,
            (Some(acme_cfg), true) => {
                let file = crate::acme::certificate_file(&config.storage.path);
                let (certs, loaded) = CertStore::open_acme(&file);
                let keeper = crate::acme::Acme::new(
                    acme_cfg.get_ref(),
                    &config.storage.path,
                    certs.clone(),
                    &shared.store,
                )
                .map_err(anyhow::Error::msg)?;
                match loaded {
                    Ok(()) => info!(
                        "ACME: serving the certificate in {}, valid until {}",
                        file.display(),
                        crate::acme::when(certs.not_after())
                    ),
                    Err(e) if file.exists() => warn!(
                        "ACME: the certificate in {} cannot be used ({e}); ordering a new one, nothing is served until it comes",
                        file.display()
                    ),
                    Err(_) => info!(
                        "ACME: no certificate yet; ordering one from {} — nothing is served on the public listener until it comes",
                        keeper.settings().directory
                    ),
                }
                acme = Some(Arc::new(keeper));
                Some(certs)
            }
            (None, true) => Some(
                CertStore::open(public_cfg.tls_cert.get_ref(), public_cfg.tls_key.get_ref())
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        if let Some(certs) = &certs {
            shared.metrics.cert_expiry.set(certs.not_after() as f64);
            let _ = shared.certificate.set(Box::new(crate::acme::Served {
                store: certs.clone(),
                acme: acme.clone(),
            }));
        }
        let tls = match &certs {
            Some(c) => Some(
                c.acceptor(config.client_auth().as_ref())
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(public_cfg.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (public.listen): {e}{}",
                public_cfg.listen,
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " — ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)"
                } else {
                    ""
                }
            )
        })?;
        let public_addr = listener.local_addr()?;
        let local_listener = TcpListener::bind(config.local.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (local.listen): {e}",
                config.local.listen
            )
        })?;
        let local_addr = local_listener.local_addr()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let handler_shared = shared.clone();
        // Wrong verify tokens, counted for the public listener's life (not across reloads).
        let guesses = Arc::new(std::sync::Mutex::new(public::GuessLimit::default()));
        tasks.push(tokio::spawn(server::serve(
            "public",
            listener,
            tls.clone(),
            Limits {
                request_timeout: public_cfg.request_timeout,
                max_connections: public_cfg.max_connections,
                max_active: public_cfg.max_active_connections,
            },
            move |req, remote| public::handle(handler_shared.clone(), guesses.clone(), req, remote),
            shutdown_rx.clone(),
            HTTP_GRACE,
        )));
        let handler_shared = shared.clone();
        tasks.push(tokio::spawn(server::serve(
            "local",
            local_listener,
            None,
            Limits {
                // For a request head to arrive, and the idle time of a kept-alive
                // connection: short, so that idle connections cannot crowd out
                // /healthz. (Motion's call waiting for Facebook is not bounded by it.)
                request_timeout: LOCAL_HEAD_TIMEOUT,
                // Idle connections cost ~1.2 KiB: room for thousands, so that slow
                // clients cannot fill the kernel's backlog and get Motion's calls reset
                // (1,500 did, with room for 1,024). Active ones are bounded, and a slow
                // one is closed for a newcomer.
                max_connections: 8192,
                max_active: 256,
            },
            move |req, remote| local::handle(handler_shared.clone(), req, remote),
            shutdown_rx.clone(),
            HTTP_GRACE,
        )));
        tasks.push(tokio::spawn(inbound::run(
            shared.clone(),
            shutdown_rx.clone(),
            DRAIN,
        )));
        tasks.push(tokio::spawn(outbound::run(
            shared.clone(),
            shutdown_rx.clone(),
            DRAIN,
        )));
        tasks.push(tokio::spawn(subscription::run(
            shared.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::relay::instagram_login::run(
            shared.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(retention::run(
            shared.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::relay::token_health::run(
            shared.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::relay::reconcile::run(
            shared.clone(),
            shutdown_rx.clone(),
        )));

        // Not in `tasks` either, each kept running (a crash is logged, counted and the
        // task started again): the other nodes' pauses and work (which end at once on
        // one host), summaries of flooding log lines, the capture, the certificate's
        // renewal or its files' watch.
        let keep = |task: &'static str, stalls: &'static str| Keeper {
            task,
            stalls,
            restarts: shared
                .metrics
                .task_restarts
                .get_or_create(&TaskLabels { task: task.into() })
                .clone(),
            backoff: RESTARTS,
            shutdown: shutdown_rx.clone(),
        };
        if shared.store.shared().is_some() {
            let (s, rx) = (shared.clone(), shutdown_rx.clone());
            tokio::spawn(
                keep(
                    "hear_other_nodes",
                    "pauses that other nodes of the shared queue meet are not shared with this one",
                )
                .run(move || crate::relay::nodes::hear_other_nodes(s.clone(), rx.clone())),
            );
            let (store, rx) = (shared.store.clone(), shutdown_rx.clone());
            tokio::spawn(keep("wake_other_nodes", "the other nodes of the shared queue find new work at their next look, within a second").run(
                move || store.clone().wake_other_nodes(rx.clone()),
            ));
        }
        let rx = shutdown_rx.clone();
        tokio::spawn(
            keep("log_summaries", "flooding log lines are not summarised")
                .run(move || crate::logging::summarise(rx.clone())),
        );
        let rx = shutdown_rx.clone();
        tokio::spawn(
            keep("capture", "`capture` starts and ends up to a second late")
                .run(move || capture.clone().watch(rx.clone())),
        );
        if let Some(acme) = &acme {
            // A renewal task that ended is no reason to stop serving.
            let (acme, s, rx) = (acme.clone(), shared.clone(), shutdown_rx.clone());
            tokio::spawn(
                keep("acme", "the certificate is not renewed")
                    .run(move || crate::acme::run(acme.clone(), s.clone(), rx.clone())),
            );
        }
        if let Some(certs) = certs.as_ref().filter(|_| acme.is_none()) {
            let metrics_shared = shared.clone();
            let on_change = move |reloaded: Result<i64, &str>| match reloaded {
                Ok(not_after) => {
                    metrics_shared.metrics.cert_expiry.set(not_after as f64);
                    metrics_shared
                        .metrics
                        .cert_reloads
                        .get_or_create(&ResultLabels {
                            result: "ok".into(),
                        })
                        .inc();
                }
                Err(_) => {
                    metrics_shared
                        .metrics
                        .cert_reloads
                        .get_or_create(&ResultLabels {
                            result: "error".into(),
                        })
                        .inc();
                }
            };
            let (certs, every, rx) = (
                certs.clone(),
                public_cfg.tls_watch_interval,
                shutdown_rx.clone(),
            );
            // It ends with the others but is no reason to exit if it does.
            tokio::spawn(
                keep(
                    "tls_watch",
                    "new certificate files are not picked up until a reload (SIGHUP)",
                )
                .run(move || {
                    server::tls::watch(certs.clone(), every, rx.clone(), on_change.clone())
                }),
            );
        }

        let store_place = match shared.store.shared() {
            Some(node) => format!("PostgreSQL at {} (this node: {})", node.server, node.node),
            None => config.storage.path.display().to_string(),
        };
        info!(
            public = %public_addr,
            local = %local_addr,
            tls = public_cfg.tls,
            pages = config.pages.len(),
            store = %store_place,
            "fb-openchannel is ready: webhooks on {}://{public_addr}/webhook, Reply URL on http://{local_addr}/reply/<page id>?token=…",
            if public_cfg.tls { "https" } else { "http" }
        );
        Ok(Daemon {
            public_addr,
            local_addr,
            certs,
            acme,
            tls,
            shared,
            shutdown,
            tasks,
        })
    }

    /// Stops intake, finishes in-flight work, and waits for every task to end.
    /// Returns only if one of the daemon's tasks ends while it should be running (a bug:
    /// a panic). The caller then exits non-zero so that systemd restarts the service;
    /// nothing acknowledged is lost, since it is all in the store.
    pub async fn failure(&mut self) -> String {
        let (result, index, _) = futures_util::future::select_all(self.tasks.iter_mut()).await;
        let name = TASK_NAMES.get(index).copied().unwrap_or("a task");
        match result {
            Err(e) if e.is_panic() => format!("{name} crashed: {e}"),
            _ => format!("{name} stopped unexpectedly"),
        }
    }

    /// Reads the config file again and puts it in force; an invalid file changes
    /// nothing. Returns a summary of what changed, or why nothing did.
    pub async fn reload(&self, path: &Path) -> Result<String, String> {
        let file = path.to_owned();
        let config = tokio::task::spawn_blocking(move || Config::load(&file))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let old = self.shared.live();
        let before = &old.config;
        let mut notes = Vec::new();
        let diff = before.diff(&config);
        for (key, was, now) in &diff.at_restart {
            warn!(
                "config reload: {key} changed ({was} → {now}); it takes effect at the next restart"
            );
            notes.push(format!("{key} needs a restart"));
        }
        if !diff.now.is_empty() {
            info!("config reload: changed {}", diff.now.join(", "));
        }
        let accounts = match config.instagram.len() {
            0 => format!("{} page(s)", config.pages.len()),
            n => format!("{} page(s), {n} Instagram account(s)", config.pages.len()),
        };
        let ConfigDiff {
            accounts_added: added,
            accounts_removed: removed,
            ..
        } = diff;
        // The client CA is read again even when its path is the same: Meta's CA is
        // rotated by replacing the file.
        if let Some(tls) = &self.tls
            && let Err(e) = tls.set_client_auth(config.client_auth().as_ref())
        {
            error!(
                "config reload: public.client_ca cannot be used ({e}); client certificates are checked as before — fix the file and reload again"
            );
            notes.push("client certificates checked as before (new CA unusable)".into());
        }
        let live = Live::new(config, Some(self.shared.capture.clone()))?;
        self.shared.replace_live(live);
        // With ACME the certificate is the renewal task's to replace, not the operator's.
        if let Some(certs) = self.certs.as_ref().filter(|_| self.acme.is_none()) {
            match certs.reload() {
                Ok(not_after) => {
                    self.shared.metrics.cert_expiry.set(not_after as f64);
                }
                Err(e) => {
                    error!(
                        "config reload: the certificate cannot be used ({e}); still serving the previous one"
                    );
                    notes.push("certificate kept (new one unusable)".into());
                }
            }
        }
        let mut summary = accounts;
        if !added.is_empty() {
            summary.push_str(&format!(", added {}", added.join(", ")));
        }
        if !removed.is_empty() {
            summary.push_str(&format!(", removed {}", removed.join(", ")));
        }
        for n in notes {
            summary.push_str(&format!("; {n}"));
        }
        Ok(summary)
    }

    pub async fn stop(self) {
        info!("stopping: no new webhooks are accepted");
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // On a shared queue, what this node still leases would wait out its leases.
        match self.shared.store.end_leases().await {
            Ok(0) => {}
            Ok(n) => info!(
                leases = n,
                "stopping: ended this node's {n} lease(s) on the shared queue; the other nodes (or this one started again) take those conversations at once"
            ),
            Err(e) => warn!(
                "stopping: cannot end this node's leases on the shared queue ({e}); the other nodes take those conversations when the leases run out (storage.lease)"
            ),
        }
        info!("stopped cleanly");
    }
}

/// How a background task that crashed is started again: after `first`, then twice as
/// long at each crash up to `most`; back to `first` once it has run for `most`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    most: Duration,
}

const RESTARTS: Backoff = Backoff {
    first: Duration::from_secs(1),
    most: Duration::from_secs(300),
};

/// Keeps a background task running: one whose end is no reason to stop the daemon (so
/// it is not in `Daemon::tasks`), but whose crash, a bug, must not end it in silence
/// either, as a panic in the ACME client once ended renewals.
struct Keeper {
    /// The task's name, as the journal and `fb_openchannel_task_restarts_total` give it.
    task: &'static str,
    /// What does not happen while it is down, for the journal.
    stalls: &'static str,
    restarts: prometheus_client::metrics::counter::Counter,
    backoff: Backoff,
    shutdown: watch::Receiver<bool>,
}

impl Keeper {
    /// Runs the task `start` makes; after a crash logs it, counts it and starts a new
    /// one. Returns when a run ends by itself, or at shutdown.
    async fn run<F, T>(mut self, mut start: F)
    where
        F: FnMut() -> T,
        T: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut pause = self.backoff.first;
        loop {
            let began = tokio::time::Instant::now();
            let crash = match tokio::spawn(start()).await {
                Err(e) if e.is_panic() => panic_text(e.into_panic()),
                _ => return,
            };
            if began.elapsed() >= self.backoff.most {
                pause = self.backoff.first;
            }
            self.restarts.inc();
            error!(
                task = self.task,
                "the background task {} crashed ({crash}): {} until it starts again in {}. This is a bug in fb-openchannel: please report it with this line; the daemon goes on serving",
                self.task,
                self.stalls,
                humantime::format_duration(pause)
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => return,
            }
            pause = (pause * 2).min(self.backoff.most);
        }
    }
}

/// What a panic said, when it said it with a message.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "a panic without a message".to_owned(),
            |t| (*t).to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;
    use tokio::sync::watch;

    use super::{Backoff, Keeper};

    fn keeper(restarts: &Counter, shutdown: watch::Receiver<bool>) -> Keeper {
        Keeper {
            task: "test",
            stalls: "nothing happens",
            restarts: restarts.clone(),
            backoff: Backoff {
                first: Duration::from_millis(5),
                most: Duration::from_millis(20),
            },
            shutdown,
        }
    }

    #[tokio::test]
    async fn a_task_that_crashes_is_started_again_until_it_ends_by_itself() {
        let restarts = Counter::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (_stop, shutdown) = watch::channel(false);
        let counted = runs.clone();
        keeper(&restarts, shutdown)
            .run(move || {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run < 3 {
                        panic!("run {run} crashed");
                    }
                }
            })
            .await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three crashes, then a run to its end"
        );
        assert_eq!(restarts.get(), 3);
    }

    #[tokio::test]
    async fn a_task_that_keeps_crashing_ends_at_shutdown() {
        let restarts = Counter::default();
        let (stop, shutdown) = watch::channel(false);
        let watched = restarts.clone();
        let kept = tokio::spawn(
            keeper(&restarts, shutdown).run(|| async { panic!("{}", String::from("always")) }),
        );
        // Crashes go on, each after a pause, while the daemon runs.
        while watched.get() < 5 {
            tokio::task::yield_now().await;
        }
        assert!(!kept.is_finished());
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), kept)
            .await
            .expect("the keeper stops at shutdown")
            .unwrap();
    }

    #[test]
    fn a_panic_is_told_by_its_message() {
        assert_eq!(super::panic_text(Box::new("static text")), "static text");
        assert_eq!(super::panic_text(Box::new(String::from("made"))), "made");
        assert_eq!(super::panic_text(Box::new(7)), "a panic without a message");
    }
}
