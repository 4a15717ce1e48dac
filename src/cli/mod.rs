//! The command line: `fb-openchannel <command> [--config PATH]`.

mod capture;
mod demo;
mod doctor;
#[cfg(test)]
mod documented;
pub mod output;
mod queue;
mod reconcile;
mod setup;
mod simulate;
mod subscribe;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, DEFAULT_PATH};
use crate::daemon::Daemon;

#[derive(Debug, Parser)]
#[command(
    name = "fb-openchannel",
    version,
    about = "Connects a Facebook Page to XCALLY Motion's Openchannel"
)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "FB_OPENCHANNEL_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (systemd Type=notify; SIGTERM stops it cleanly).
    Run,
    /// Validate the config and print it with every secret masked; exit 1 on error.
    CheckConfig {
        /// Print nothing when the config is valid (for systemd's ExecStartPre/ExecReload).
        #[arg(long, short)]
        quiet: bool,
    },
    /// The whole loop on this machine: simulated Facebook and Motion, the real daemon,
    /// a readable transcript. Needs no config, network or root; exit 0 if every step happened.
    Demo,
    /// Check every page and the daemon: token, subscription, Motion, certificate,
    /// listeners, store. One line each, ✓ or ✗ with the fix; exit 0 only if all pass.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Connect a Facebook Page (and its Instagram account) through a Facebook Login link
    /// (or a user token of this app): checks the app and the permissions, writes the page's table with a Page token that
    /// does not expire (comments kept, a backup beside), subscribes the app, reloads the
    /// daemon and prints the Reply URL for Motion. Again for a configured page: only its
    /// token is replaced.
    Setup {
        /// A Facebook user access token for this app (Graph API Explorer) instead of the
        /// Facebook Login link; `-` reads it from stdin. The environment variable keeps
        /// it off the process list.
        #[arg(long, env = "FB_OPENCHANNEL_USER_TOKEN", hide_env_values = true)]
        user_token: Option<String>,
        /// The Page to connect (default: the only one the user manages, or asked).
        #[arg(long)]
        page: Option<String>,
        /// The Receive URL of the page's Motion Openchannel account (else asked).
        #[arg(long)]
        receive_url: Option<String>,
        /// Also connect the Instagram account linked to the page, to the Motion
        /// Openchannel account with this Receive URL.
        #[arg(long)]
        instagram_receive_url: Option<String>,
        /// Ask nothing: what is missing is an error (for automation).
        #[arg(long)]
        yes: bool,
        /// Do not register the app's webhook (Callback URL and verify token) with Meta;
        /// leave it to the App Dashboard.
        #[arg(long)]
        no_webhook: bool,
    },
    /// Compare an account's inbox (Meta's Conversations API) with the queue, and store
    /// the messages no webhook brought: the running daemon delivers them in order.
    Reconcile {
        /// The Page whose Messenger inbox to compare.
        #[arg(
            long,
            conflicts_with = "instagram",
            required_unless_present = "instagram"
        )]
        page: Option<String>,
        /// The Instagram account whose direct messages to compare.
        #[arg(long)]
        instagram: Option<String>,
        /// How far back, e.g. "24h", "3d" (at most 7 days).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Only list what is missing; store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Subscribe every page to this app's webhooks with the fields it needs.
    Subscribe {
        #[arg(long)]
        json: bool,
    },
    /// Inspect the queue; retry or drop items (safe while the daemon runs).
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Send a signed test message (or wall post) to this host's running daemon, from a
    /// simulated customer whose replies are acknowledged without calling Facebook.
    Simulate {
        /// Send a wall post instead of a Messenger message.
        #[arg(long, conflicts_with = "instagram")]
        wall: bool,
        /// Send an Instagram direct message to an [[instagram]] account.
        #[arg(long)]
        instagram: bool,
        /// The page (with --instagram: the Instagram account) to simulate for (default:
        /// the first).
        #[arg(long)]
        page: Option<String>,
        /// The message text.
        #[arg(long)]
        text: Option<String>,
        /// Send to this URL instead of the one public.listen gives.
        #[arg(long)]
        url: Option<String>,
    },
    /// Record every exchange of the running daemon with Facebook and Motion, secrets
    /// masked, to capture/ beside the state database — for the first real install.
    Capture {
        /// How long (e.g. "2h"); the daemon starts within a second.
        #[arg(long = "for", value_name = "DURATION", conflicts_with_all = ["off", "check"])]
        length: Option<humantime::Duration>,
        /// End the capture now.
        #[arg(long, conflicts_with = "check")]
        off: bool,
        /// Compare a capture with the shapes the daemon expects; name every field that
        /// differs (default: this config's capture directory).
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
        check: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Manpage,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { quiet } => check_config(&cli.config, quiet),
        Command::Run => run(&cli.config),
        Command::Demo => demo::main(),
        Command::Doctor { json } => doctor::main(&cli.config, json),
        Command::Subscribe { json } => subscribe::main(&cli.config, json),
        Command::Reconcile {
            page,
            instagram,
            since,
            dry_run,
            json,
        } => reconcile::main(
            &cli.config,
            reconcile::Options {
                page,
                instagram,
                since,
                dry_run,
            },
            json,
        ),
        Command::Setup {
            user_token,
            page,
            receive_url,
            instagram_receive_url,
            yes,
            no_webhook,
        } => setup::main(
            &cli.config,
            setup::Options {
                user_token,
                page,
                receive_url,
                instagram_receive_url,
                yes,
                no_webhook,
            },
        ),
        Command::Queue { command, json } => queue::main(&cli.config, command, json),
        Command::Simulate {
            wall,
            instagram,
            page,
            text,
            url,
        } => simulate::main(
            &cli.config,
            simulate::Options {
                page,
                kind: match (wall, instagram) {
                    (true, _) => simulate::Kind::Wall,
                    (_, true) => simulate::Kind::Instagram,
                    _ => simulate::Kind::Messenger,
                },
                text,
                url,
            },
        ),
        Command::Capture { length, off, check } => {
            capture::main(&cli.config, length.map(Into::into), off, check)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "fb-openchannel",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Manpage => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the man page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The config of a one-shot command; when it is broken, its errors are on stderr and
/// the command ends with this exit code.
fn config_for_command(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

/// The runtime of a one-shot command: one thread is plenty.
fn command_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn check_config(path: &std::path::Path, quiet: bool) -> ExitCode {
    match Config::load(path) {
        Ok(_) if quiet => ExitCode::SUCCESS,
        Ok(config) => {
            print!("# {}: valid\n{}", path.display(), config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} problem(s); nothing was started",
                path.display(),
                errors.0.len()
            );
            ExitCode::FAILURE
        }
    }
}

/// The daemon's async runtime threads on `cores` cores: one per core but one, which the
/// store's writer thread has to itself (at least one), unless `TOKIO_WORKER_THREADS`
/// (`asked`) says how many. With one per core, as tokio does by default, the writer and
/// the runtime took turns on the same cores: on 2 cores one runtime thread took 3–7 %
/// more webhooks at 16 and at 64 connections than two (alternated benchmark rounds,
/// 2026-12-05).
fn runtime_workers(cores: usize, asked: Option<&str>) -> Result<usize, String> {
    const MOST: usize = 512;
    match asked {
        None => Ok(cores.saturating_sub(1).max(1)),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MOST).contains(&n) => Ok(n),
            _ => Err(format!(
                "TOKIO_WORKER_THREADS is not a number of threads from 1 to {MOST}"
            )),
        },
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    crate::logging::init();
    keep_freed_memory();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("config: {e}");
            }
            tracing::error!(
                "{} problem(s) in {}; not starting",
                errors.0.len(),
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let asked = std::env::var("TOKIO_WORKER_THREADS").ok();
    let workers = runtime_workers(cores, asked.as_deref()).unwrap_or_else(|e| {
        let workers = runtime_workers(cores, None).unwrap_or(1);
        tracing::warn!("{e}; using {workers} runtime thread(s)");
        workers
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(workers)
        // Blocking work (spooling unverified bodies, DNS lookups) waits its turn in a
        // small pool: with tokio's default of 512 threads, a flood of large bodies made
        // hundreds of threads, each with its stack and malloc arena (~75 KiB per
        // connection measured, against ~25 KiB with this).
        .max_blocking_threads(16)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Before anything can announce readiness: a SIGTERM sent as soon as the daemon
        // says it is ready must stop it cleanly, not kill it with the default action.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut daemon = match Daemon::start(config).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("cannot start: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        spawn_watchdog(daemon.shared.clone());
        spawn_memory_trim();
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    match daemon.reload(path).await {
                        Ok(summary) => tracing::info!("SIGHUP: config reloaded from {}: {summary}", path.display()),
                        Err(e) => tracing::error!("SIGHUP: the new config was NOT applied, the running one is kept:\n{e}"),
                    }
                }
                problem = daemon.failure() => {
                    tracing::error!("{problem}; exiting so that systemd restarts the service (nothing acknowledged is lost)");
                    return ExitCode::FAILURE;
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        daemon.stop().await;
        ExitCode::SUCCESS
    })
}

/// Lets glibc keep up to 1 MiB of freed memory per arena instead of 128 KiB. With the
/// default, the store thread gave its page cache back to the kernel and faulted it in
/// again at every batch: madvise, TLB shootdowns and page faults were ~12% of its time
/// under `cargo bench --bench relay -- --intake 64` (perf). Costs at most 1 MiB of RSS
/// per thread arena.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Gives memory back to the kernel after a burst. glibc keeps what a flood of
/// connections freed in its arenas (the process stayed at its peak after the flood
/// closed); every 10 s, when more than 8 MiB lie free there, `malloc_trim` returns it.
/// Cheap when there is nothing to trim, and never inside a busy store batch.
fn spawn_memory_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        const FREE_HELD: usize = 8 * 1024 * 1024;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            // SAFETY: mallinfo2 only reads glibc's allocator statistics.
            let free = unsafe { libc::mallinfo2() }.fordblks;
            if free > FREE_HELD {
                let _ = tokio::task::spawn_blocking(|| {
                    // SAFETY: malloc_trim releases free memory; it touches no live block.
                    unsafe { libc::malloc_trim(0) }
                })
                .await;
            }
        }
    });
}

/// Pings systemd's watchdog at half its period when `WatchdogSec=` is set — but only
/// while the store answers: a daemon whose store thread hangs should be restarted.
fn spawn_watchdog(shared: std::sync::Arc<crate::relay::Shared>) {
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        let period = timeout / 2;
        tokio::spawn(async move {
            loop {
                let alive = tokio::time::timeout(period, shared.store.ping()).await;
                // On PostgreSQL an answer that the server is unreachable is an answer:
                // the workers are alive, a restart would not bring the server back (and
                // would turn Facebook's 503s into refused connections).
                let answered = match &alive {
                    Ok(Ok(())) => true,
                    Ok(Err(_)) => shared.store.shared().is_some(),
                    Err(_) => false,
                };
                if answered {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        "the state database does not answer; not telling systemd's watchdog we are alive"
                    );
                }
                tokio::time::sleep(period).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::runtime_workers;

    /// One runtime thread per core but the writer's; what the environment asks for
    /// instead when it is a sane number, and an error (the default then) when not.
    #[test]
    fn the_runtime_leaves_a_core_to_the_writer() {
        assert_eq!(runtime_workers(1, None), Ok(1));
        assert_eq!(runtime_workers(2, None), Ok(1));
        assert_eq!(runtime_workers(8, None), Ok(7));
        assert_eq!(runtime_workers(2, Some(" 3 ")), Ok(3));
        for wrong in ["0", "-1", "two", "", "100000"] {
            assert!(runtime_workers(2, Some(wrong)).is_err(), "{wrong:?}");
        }
    }
}
