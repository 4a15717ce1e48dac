//! The public certificate from an ACME CA (RFC 8555), Let's Encrypt by default: the
//! daemon orders it, proves each name with the TLS-ALPN-01 challenge (RFC 8737) on the
//! public listener it already has, and renews it ahead of expiry — no port 80, no
//! certbot, no other process.
//!
//! [`run`] is the one task: it sleeps until the certificate is due (a third of its life
//! before it ends, at most 30 days: Let's Encrypt's 90-day certificates at 60 days, its
//! 6-day ones at 4), orders a new one ([`order::obtain`]), writes it and serves it from
//! the next handshake on. A failed order leaves the old certificate served and is tried
//! again after a delay that doubles (with jitter) between bounds scaled to the
//! certificate's life, so that a short-lived one still gets several tries before it ends.
//!
//! Files, in `<state directory>/acme/` (0700; files 0600, each written whole, synced and
//! renamed into place, so a crash leaves the old file or the new one):
//! `account.json` (the ACME account's key and URL, for the directory it belongs to),
//! `certificate.pem` (the private key and the chain in one file, so that they are only
//! ever replaced together), `status.json` (the last attempt and its failure, for
//! `doctor`, which runs as another process). On a shared queue (PostgreSQL) the account
//! and the newest certificate are kept in the queue's database instead, for every node
//! ([`shared`]); each node still serves its own copy of the certificate from the file.

pub mod order;
mod shared;

pub use shared::certificate_row;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::AcmeConfig;
use crate::metrics::{Metrics, ResultLabels};
use crate::relay::retry::RetryPolicy;
use crate::server::tls::{CertStore, Facts};

/// The longest the task sleeps without looking again (the clock may have jumped, the
/// certificate file may have been replaced by hand).
const RECHECK: Duration = Duration::from_secs(3600);

/// Renewal happens at most this long before expiry (Let's Encrypt's advice for its
/// 90-day certificates: renew with 30 days left).
const RENEW_BEFORE_MAX: i64 = 30 * 86_400;

pub use crate::config::Domain;

/// `public.acme`, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub domains: Vec<Domain>,
    pub email: Option<String>,
    pub directory: String,
    pub directory_ca: Option<PathBuf>,
}

impl Settings {
    pub fn from_config(config: &AcmeConfig) -> Result<Settings, String> {
        Ok(Settings {
            domains: config
                .domains
                .iter()
                .map(|d| Domain::parse(d))
                .collect::<Result<_, _>>()?,
            email: config.email.clone(),
            directory: config.directory.clone(),
            directory_ca: config.directory_ca.clone(),
        })
    }
}

/// What `doctor` and `/readyz` tell of the ACME side, kept in `status.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The directory these facts are about.
    pub directory: String,
    /// When an order was last tried, Unix seconds.
    pub last_attempt: Option<i64>,
    /// When an order last succeeded, Unix seconds.
    pub last_success: Option<i64>,
    /// Why the last order failed (`None` once one succeeds).
    pub last_error: Option<String>,
    /// Orders failed in a row.
    pub failures: u32,
    /// When the daemon asks the CA next, Unix seconds.
    pub next_attempt: Option<i64>,
    /// The directory the certificate served came from (`None`: obtained before this was
    /// kept). Another than the configured one (staging while trying things out, then
    /// production) makes the certificate due at once.
    #[serde(default)]
    pub served_from: Option<String>,
}

/// Where the ACME files live for a state database at `store_path`.
pub fn dir(store_path: &Path) -> PathBuf {
    crate::statedir::of_store(store_path).join("acme")
}

/// The key and chain the daemon serves, in [`dir`].
pub fn certificate_file(store_path: &Path) -> PathBuf {
    dir(store_path).join("certificate.pem")
}

/// The last status the daemon wrote, if any (for `doctor`).
pub fn read_status(store_path: &Path) -> Option<Status> {
    // Read by `doctor` as root in the daemon's directory: bounded, never a symlink.
    let acme = crate::statedir::existing_subdir(store_path, "acme").ok()??;
    let text = acme.read("status.json", 64 * 1024).ok()??;
    serde_json::from_slice(&text).ok()
}

/// The key and chain the daemon serves (`certificate.pem` in [`dir`]), read as `doctor`
/// reads it as root in the daemon's directory: a regular file of at most 1 MiB, never
/// through a symlink, a FIFO or a device. `None` when there is none yet.
pub fn read_certificate(store_path: &Path) -> Result<Option<Vec<u8>>, String> {
    let Some(acme) =
        crate::statedir::existing_subdir(store_path, "acme").map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    acme.read("certificate.pem", 1024 * 1024)
        .map_err(|e| e.to_string())
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is due for
/// renewal: a third of its life before it ends, at most [`RENEW_BEFORE_MAX`].
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = (not_after - not_before).max(0);
    not_after - (life / 3).min(RENEW_BEFORE_MAX)
}

/// The bounds of the delays between failed orders. Without a certificate nothing is
/// served, so from a minute up to an hour (Let's Encrypt allows 5 failed checks per name
/// an hour). With one, scaled to its life: from 1/1000 of it (2 s to 10 min) up to 1/30
/// (at most 6 h) — a 90-day certificate is tried again after 10 min, then up to every
/// 6 h through its 30-day window; a 6-day one up to every 4.8 h through its 2 days.
pub fn retry_bounds(life: Option<Duration>) -> (Duration, Duration) {
    match life {
        None => (Duration::from_secs(60), RECHECK),
        Some(life) => {
            let first = (life / 1000).clamp(Duration::from_secs(2), Duration::from_secs(600));
            let most = (life / 30).clamp(first, Duration::from_secs(6 * 3600));
            (first, most)
        }
    }
}

/// The certificate's keeper: settings, files and what happened last.
pub struct Acme {
    settings: Settings,
    dir: PathBuf,
    /// Where the account and the proofs are kept: files, or the shared queue.
    keeper: order::Keeper,
    certs: Arc<CertStore>,
    status: Mutex<Status>,
}

impl Acme {
    /// Makes the ACME directory (0700) beside the state database and reads the last
    /// status; `certs` serves [`certificate_file`]. On a shared queue (`store` on
    /// PostgreSQL) the nodes share the account, the certificate and the proofs through
    /// it, and one orders at a time.
    pub fn new(
        config: &AcmeConfig,
        store_path: &Path,
        certs: Arc<CertStore>,
        store: &crate::store::Store,
    ) -> Result<Acme, String> {
        let settings = Settings::from_config(config)?;
        let dir = dir(store_path);
        make_private_dir(&dir)?;
        let saved = read_status(store_path);
        let served_from = saved.as_ref().and_then(|s| s.served_from.clone());
        let mut status = saved
            .filter(|s| s.directory == settings.directory)
            .unwrap_or_default();
        status.directory = settings.directory.clone();
        status.next_attempt = None;
        if let Some(other) = served_from.as_ref().filter(|d| **d != settings.directory)
            && certs.not_after() > 0
        {
            info!(
                "ACME: the certificate served came from {other}, not from public.acme.directory {}: ordering one from there at once; the old one is served until it comes",
                settings.directory
            );
        }
        status.served_from = served_from;
        let keeper = match store.acme_node() {
            Some(_) => {
                certs.set_challenge_lookup(
                    settings
                        .domains
                        .iter()
                        .map(|d| d.as_str().to_owned())
                        .collect(),
                    shared::proof_lookup(store.clone()),
                );
                order::Keeper::Shared(store.clone())
            }
            None => order::Keeper::Files(dir.clone()),
        };
        Ok(Acme {
            settings,
            dir,
            keeper,
            certs,
            status: Mutex::new(status),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// The certificate served.
    pub fn facts(&self) -> Arc<Facts> {
        self.certs.facts()
    }

    /// How long until the served certificate is due: zero when there is none, when it
    /// does not cover every configured name, or when its renewal time has come.
    pub fn due_in(&self, now: i64) -> Duration {
        let facts = self.certs.facts();
        if facts.not_after == 0 || !self.covers(&facts) || self.served_from_elsewhere() {
            return Duration::ZERO;
        }
        Duration::from_secs(
            u64::try_from(renew_at(facts.not_before, facts.not_after) - now).unwrap_or(0),
        )
    }

    /// Whether the certificate served came from another directory than the configured.
    fn served_from_elsewhere(&self) -> bool {
        self.status()
            .served_from
            .is_some_and(|d| d != self.settings.directory)
    }

    /// The certificate served now comes from the configured directory (recorded).
    fn served_from_here(&self) {
        let status = {
            let mut status = self.status.lock().expect("status lock");
            status.served_from = Some(self.settings.directory.clone());
            status.clone()
        };
        self.write_status(&status);
    }

    /// Whether a certificate is for every configured name.
    fn covers(&self, facts: &Facts) -> bool {
        self.settings.domains.iter().all(|d| {
            facts
                .names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(d.as_str()))
        })
    }

    fn life(&self) -> Option<Duration> {
        let facts = self.certs.facts();
        (facts.not_after > 0).then(|| {
            Duration::from_secs(u64::try_from(facts.not_after - facts.not_before).unwrap_or(0))
        })
    }

    /// One order: a new certificate written and served, or why not (the old one stays).
    async fn renew(&self) -> Result<Facts, String> {
        let issued = order::obtain(&self.settings, &self.keeper, &self.certs).await;
        self.certs.clear_challenges();
        let issued = issued?;
        let file = self.dir.join("certificate.pem");
        let text = format!("{}{}", issued.key_pem, issued.chain_pem);
        write_private(&file, text.as_bytes())?;
        self.certs
            .reload()
            .map_err(|e| format!("the CA's certificate cannot be served: {e}"))?;
        Ok(self.certs.facts().as_ref().clone())
    }

    /// Records an attempt's outcome in memory, in `status.json` and in the metrics.
    fn record(&self, result: &Result<Facts, String>, next: i64, metrics: &Metrics) {
        let now = crate::time::now_ms() / 1000;
        let status = {
            let mut status = self.status.lock().expect("status lock");
            status.last_attempt = Some(now);
            match result {
                Ok(_) => {
                    status.last_success = Some(now);
                    status.last_error = None;
                    status.failures = 0;
                    status.served_from = Some(self.settings.directory.clone());
                }
                Err(e) => {
                    status.last_error = Some(e.clone());
                    status.failures += 1;
                }
            }
            status.next_attempt = Some(next);
            status.clone()
        };
        self.write_status(&status);
        metrics
            .acme_attempts
            .get_or_create(&ResultLabels {
                result: if result.is_ok() { "ok" } else { "error" }.into(),
            })
            .inc();
        metrics.acme_last_attempt.set(now as f64);
        metrics.acme_next_attempt.set(next as f64);
        metrics.cert_expiry.set(self.certs.not_after() as f64);
    }

    fn set_next(&self, next: i64, metrics: &Metrics) {
        let status = {
            let mut status = self.status.lock().expect("status lock");
            if status.next_attempt == Some(next) {
                return;
            }
            status.next_attempt = Some(next);
            status.clone()
        };
        self.write_status(&status);
        metrics.acme_next_attempt.set(next as f64);
    }

    fn write_status(&self, status: &Status) {
        let text = serde_json::to_vec_pretty(status).expect("status serializes");
        if let Err(e) = write_private(&self.dir.join("status.json"), &text) {
            warn!("ACME: cannot record the renewal status for doctor: {e}");
        }
    }
}

/// Keeps the certificate fresh until `shutdown` turns true (see the module comment).
pub async fn run(
    acme: Arc<Acme>,
    shared: Arc<crate::relay::Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics = &shared.metrics;
    let names = acme
        .settings
        .domains
        .iter()
        .map(Domain::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut failures = 0u32;
    // After a failure: when to try again (Unix seconds), whatever the certificate says.
    let mut retry_at: Option<i64> = None;
    let mut told = shared::Told::default();
    // On a shared queue the nodes' certificates are compared at every pass.
    let recheck = match acme.shared_store() {
        Some(_) => shared::RECHECK,
        None => RECHECK,
    };
    loop {
        if let Some(store) = acme.shared_store()
            && let Some(facts) = acme.look_shared(store, &names, &mut told).await
        {
            failures = 0;
            retry_at = None;
            info!(
                domains = %names,
                not_after = facts.not_after,
                "ACME: serving the certificate for {names} that another node of the shared queue obtained, valid until {}",
                when(facts.not_after)
            );
            metrics.cert_expiry.set(facts.not_after as f64);
        }
        let now = crate::time::now_ms() / 1000;
        let at = retry_at.unwrap_or_else(|| now + acme.due_in(now).as_secs() as i64);
        // Due on a shared queue: this node's turn, or another node's until a time.
        let held = match acme.shared_store() {
            Some(store) if at <= now => acme.take_order(store, &names, &mut told).await,
            _ => None,
        };
        acme.set_next(held.unwrap_or(at), metrics);
        if at > now || held.is_some() {
            // Not yet due, or due while another node orders (or none can be asked).
            let wait = match at > now {
                true => Duration::from_secs((at - now) as u64).min(recheck),
                false => shared::RECHECK,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            // Look again: the time may have come, or the clock jumped.
            continue;
        }
        info!(domains = %names, directory = %acme.settings.directory, "ACME: ordering a certificate for {names}");
        // In a task of its own: a panic in the ACME client (instant-acme, on what a CA
        // sends) is a failed order, tried again on the schedule, not the end of renewals.
        let mut attempt = tokio::spawn({
            let acme = acme.clone();
            async move { acme.renew().await }
        });
        let result = tokio::select! {
            r = &mut attempt => r.unwrap_or_else(|e| {
                // What the crashed order left to show the CA goes with it.
                acme.certs.clear_challenges();
                Err(format!(
                    "the ACME client crashed ({e}), a bug worth reporting with the journal's lines before this one"
                ))
            }),
            _ = shutdown.changed() => {
                attempt.abort();
                acme.certs.clear_challenges();
                return;
            }
        };
        let now = crate::time::now_ms() / 1000;
        match &result {
            Ok(facts) => {
                failures = 0;
                retry_at = None;
                let next = renew_at(facts.not_before, facts.not_after);
                info!(
                    domains = %names,
                    not_after = facts.not_after,
                    "ACME: new certificate for {names} served from now on, valid until {}; renewed from {}",
                    when(facts.not_after),
                    when(next)
                );
                acme.record(&result, next, metrics);
                acme.hand_on(&result, now, &names).await;
            }
            Err(e) => {
                failures += 1;
                let (first, most) = retry_bounds(acme.life());
                let next = now
                    + RetryPolicy {
                        initial: first,
                        max: most,
                        give_up_after: Duration::MAX,
                    }
                    .delay(failures, None)
                    .as_secs() as i64;
                retry_at = Some(next);
                let served = acme.certs.not_after();
                let serving = if served == 0 {
                    "nothing is served on the public listener until a certificate is obtained"
                        .to_owned()
                } else if served <= now {
                    format!(
                        "the certificate served EXPIRED at {}: Facebook cannot deliver",
                        when(served)
                    )
                } else {
                    format!(
                        "still serving the current certificate, valid until {}",
                        when(served)
                    )
                };
                error!(
                    domains = %names,
                    failures,
                    "ACME: could not get a certificate for {names} ({e}); {serving}; tried again by itself (attempt {} about {})",
                    failures + 1,
                    when(next)
                );
                acme.record(&result, next, metrics);
                acme.hand_on(&result, next, &names).await;
            }
        }
    }
}

pub use crate::time::when;

/// Creates `dir` (and its parents) with mode 0700, or tightens it to 0700.
pub(crate) fn make_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private: {e}", dir.display()))
}

/// Writes `bytes` to `path` with mode 0600: a new file beside it, synced, renamed over
/// it, and the directory synced — a crash leaves either the old file or the new one.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    // tempfile creates the file 0600.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// The served certificate and, with ACME, its keeper: what `/readyz` reports on.
pub struct Served {
    pub store: Arc<CertStore>,
    pub acme: Option<Arc<Acme>>,
}

/// A certificate from files is a problem this close to its end (the operator's renewal
/// has not happened); one from ACME once its renewal is due and failing.
const FILE_EXPIRY_WARNING: i64 = 7 * 86_400;

impl crate::relay::CertificateWatch for Served {
    fn unusable(&self, now: i64) -> Option<String> {
        let not_after = self.store.facts().not_after;
        if not_after <= now {
            self.problem(now)
        } else {
            None
        }
    }

    /// What is wrong with the certificate at `now` (Unix seconds), for `/readyz`.
    fn problem(&self, now: i64) -> Option<String> {
        let facts = self.store.facts();
        let Some(acme) = &self.acme else {
            return if facts.not_after <= now {
                Some(format!(
                    "certificate: {} EXPIRED at {}: Facebook cannot connect; renew it (e.g. certbot renew), the daemon picks it up by itself",
                    self.store.path().display(),
                    when(facts.not_after)
                ))
            } else if facts.not_after - now < FILE_EXPIRY_WARNING {
                Some(format!(
                    "certificate: {} expires at {}: renew it now (e.g. certbot renew), the daemon picks it up by itself",
                    self.store.path().display(),
                    when(facts.not_after)
                ))
            } else {
                None
            };
        };
        let status = acme.status();
        let last = match (&status.last_error, status.last_attempt) {
            (Some(e), Some(at)) => format!(
                "the last order, {}, failed ({} in a row): {e}",
                when(at),
                status.failures
            ),
            _ => "the first order is under way".into(),
        };
        let next = status
            .next_attempt
            .map(|t| format!("; next try {}", when(t)))
            .unwrap_or_default();
        if facts.not_after == 0 {
            return Some(format!(
                "certificate: none yet from ACME, so Facebook cannot connect — {last}{next}"
            ));
        }
        if facts.not_after <= now {
            return Some(format!(
                "certificate: the ACME certificate EXPIRED at {}, so Facebook cannot connect — {last}{next}",
                when(facts.not_after)
            ));
        }
        let due = renew_at(facts.not_before, facts.not_after);
        if now >= due && status.last_error.is_some() {
            return Some(format!(
                "certificate: the ACME certificate expires at {} and its renewal fails — {last}{next}",
                when(facts.not_after)
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_host_names() {
        assert_eq!(
            Domain::parse("FB.Example.com.").unwrap().as_str(),
            "fb.example.com"
        );
        for bad in [
            "*.example.com",
            "192.0.2.1",
            "::1",
            "localhost",
            "fb..example.com",
            "-a.example.com",
            "fb_x.example.com",
            "fb.example.com/x",
            "",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renewal_comes_a_third_of_the_life_early_at_most_thirty_days() {
        const DAY: i64 = 86_400;
        // Let's Encrypt's 90-day certificate: renewed with 30 days left.
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
        // Its 6-day certificate: with 2 days left.
        assert_eq!(renew_at(0, 6 * DAY), 4 * DAY);
        // A year-long one: still 30 days ahead, not four months.
        assert_eq!(renew_at(0, 365 * DAY), 335 * DAY);
        // A 30-second test certificate: 10 s ahead.
        assert_eq!(renew_at(100, 130), 120);
    }

    #[test]
    fn retries_are_scaled_to_the_certificate_life() {
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        assert_eq!(
            retry_bounds(None),
            (Duration::from_secs(60), Duration::from_secs(3600))
        );
        assert_eq!(
            retry_bounds(days(90)),
            (Duration::from_secs(600), Duration::from_secs(6 * 3600))
        );
        let (first, most) = retry_bounds(days(6));
        assert_eq!(first, Duration::from_millis(518_400));
        assert_eq!(most, Duration::from_secs(17_280));
        assert_eq!(
            retry_bounds(Some(Duration::from_secs(30))),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
    }
}
