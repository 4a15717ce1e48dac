//! The benchmark: the release daemon between simulated Facebook and Motion on loopback
//! (real TLS, real signatures, real fsync), driven by a load generator in this process,
//! every figure read beside an anchor measured in the same run.
//!
//!     cargo bench --bench relay             # full run (minutes); writes docs/benchmark.md and .svg
//!     cargo bench --bench relay -- --short  # for CI; writes target/tmp/bench/, and fails when the
//!                                           # 16-connection ratio is under half of the one
//!                                           # docs/benchmark.md records for this CPU model
//!     cargo bench --bench relay -- --intake 64   # only intake at 64 connections, 20 s:
//!                                                # prints the daemon's pid to profile
//!     cargo bench --bench relay -- --drain [--after-burst] [--named]
//!                                    # only the backlog and its drain (after the full
//!                                    # burst's history; with Graph giving the backlog's
//!                                    # customers names): prints the daemon's pid to profile
//!
//! Phases, each against the daemon with an instant Motion: webhook intake at 1/16/64
//! keep-alive connections from 1,000 customers, beside the **anchor** (`load::Anchor`, a
//! process of its own: hyper + rustls, the HMAC checked, 200, nothing stored) at the same
//! connections; the Instagram mix; ack latency at a fixed 1,000 events/s; end to end
//! (webhook → notify, Reply URL → Graph) at 100/s; a **burst** of new conversations for
//! 30 s (3 s in a short run) whatever the machine's speed (intake per window, its last
//! against its first); a **backlog** of new conversations queued while Motion is down,
//! then drained (against the 16-connection intake) while webhooks keep coming (their
//! p99); footprint. Then the same on PostgreSQL when it is
//! installed. At the end Motion's record is audited: every acknowledged message delivered
//! once, each customer's in order.

mod daemon;
mod load;
mod nginx;
mod records;
mod report;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fb_openchannel::sim::facebook::SimGraph;
use fb_openchannel::sim::motion::{Mode, SimMotion, reply_body};
use fb_openchannel::sim::{rundirs, tls};

use daemon::{Daemon, write_config};
use load::{DAEMON_ACKED, acked, connect, load, percentiles, post};
use report::{Results, ms};

/// How the benchmark's working directories begin, in the system's temporary directory: a
/// run keeps its databases there, and removes those that interrupted runs left.
const BENCH_DIRS: &str = "fbo-bench";
const SECRET: &str = "bench-app-secret";
const PAGE: &str = "1234567890";
const TOKEN: &str = "bench-page-token";
const REPLY_TOKEN: &str = "bench-reply-token";
/// The Instagram account linked to the page, for the Instagram mix.
const IG: &str = "17841400000000000";
const IG_REPLY_TOKEN: &str = "bench-ig-reply-token";

/// `--drain`'s options.
#[derive(Clone, Copy)]
struct DrainOnly {
    /// `--after-burst`: on the history of a burst first, as in a full run.
    after_burst: bool,
    /// `--named`: Graph gives the backlog's customers names (else it refuses them, as
    /// for every customer of the run).
    named: bool,
}

/// Sizes of one run.
pub struct Plan {
    short: bool,
    /// `--intake N`: only the intake phase at N connections, long enough to profile.
    intake_only: Option<usize>,
    /// `--burst`: only the burst of new conversations, twice (the second on the first's
    /// history), to compare two binaries' bursts without the rest of the run.
    burst_only: bool,
    /// `--drain`: only the backlog and its drain.
    drain_only: Option<DrainOnly>,
    throughput_secs: f64,
    fixed_rate_secs: f64,
    e2e_secs: f64,
    /// New conversations in the burst (at least), how long it lasts (at least), and the
    /// windows it is read in.
    burst: u64,
    burst_lasting: Duration,
    burst_window: Duration,
    /// New conversations queued while Motion is down, then drained.
    backlog: u64,
}

fn main() {
    if let (Some(cert), Some(key)) = (
        std::env::var_os(load::ANCHOR_CERT),
        std::env::var_os(load::ANCHOR_KEY),
    ) {
        load::run_anchor(Path::new(&cert), Path::new(&key));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let short = args.iter().any(|a| a == "--short");
    let intake_only = args
        .iter()
        .position(|a| a == "--intake")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(64));
    let burst_only = args.iter().any(|a| a == "--burst");
    let drain_only = args.iter().any(|a| a == "--drain").then(|| DrainOnly {
        after_burst: args.iter().any(|a| a == "--after-burst"),
        named: args.iter().any(|a| a == "--named"),
    });
    let plan = if short {
        Plan {
            short,
            intake_only,
            burst_only,
            drain_only,
            throughput_secs: 2.0,
            fixed_rate_secs: 1.0,
            e2e_secs: 1.0,
            burst: 10_000,
            burst_lasting: Duration::from_secs(3),
            burst_window: Duration::from_secs(1),
            backlog: 10_000,
        }
    } else {
        Plan {
            short,
            intake_only,
            burst_only,
            drain_only,
            throughput_secs: if intake_only.is_some() { 20.0 } else { 5.0 },
            fixed_rate_secs: 10.0,
            e2e_secs: 10.0,
            burst: 100_000,
            burst_lasting: Duration::from_secs(30),
            burst_window: Duration::from_secs(5),
            backlog: 30_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let missed = runtime.block_on(run(plan));
    if let Some(failure) = missed {
        eprintln!("\n{failure}");
        std::process::exit(1);
    }
}

/// Waits until Motion has every message the daemons acknowledged so far.
async fn drained(motion: &SimMotion) {
    let acked = DAEMON_ACKED.load(Ordering::Relaxed) as usize;
    motion
        .wait_for_count(acked, Duration::from_secs(600))
        .await
        .unwrap();
}

/// Runs every phase; returns why the run must fail (a regression against the recorded
/// ratio, or a message lost, doubled or out of order), if it must.
async fn run(plan: Plan) -> Option<String> {
    let (dir, removed) = rundirs::create(&std::env::temp_dir(), BENCH_DIRS).unwrap();
    for gone in removed {
        println!(
            "removed {}, left by a run that was interrupted",
            gone.display()
        );
    }
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
    let tls = load::connector(&certs.ca_pem);
    let mut r = Results::new();
    let _ = std::fs::remove_file(daemon::log_path());
    println!(
        "fb-openchannel benchmark ({} run) on {} core(s); the daemons' errors go to {}\n",
        if plan.short { "short" } else { "full" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        daemon::log_path().display()
    );

    let daemon = Daemon::start(&config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.add(
        "RSS idle",
        format!("{:.1} MiB", daemon.rss_mib()),
        "≤ 25 MiB",
        Some(daemon.rss_mib() <= 25.0),
    );
    if plan.burst_only {
        for _ in 0..2 {
            drained(&motion).await;
            burst(&plan, &mut r, &daemon, &tls, "").await;
        }
        return None;
    }
    if let Some(only) = plan.drain_only {
        if only.after_burst {
            burst(&plan, &mut r, &daemon, &tls, "").await;
            drained(&motion).await;
        }
        if only.named {
            // The customers `backlog` takes next.
            let first = load::new_customers(0);
            for customer in first..first + plan.backlog {
                graph.add_profile(
                    &customer.to_string(),
                    "Bench",
                    &format!("Customer {customer}"),
                );
            }
        }
        // No intake was measured: the drain's figure is its rate.
        let daemon = backlog(&plan, &mut r, &config, daemon, &motion, &tls, ("", 0.0)).await;
        daemon.stop();
        return None;
    }
    let anchor_process = load::Anchor::start(&certs);
    let anchor = anchor_process.addr;

    // Intake, beside the anchor at the same connections.
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
        // The gate's figure is the median of three rounds, each the daemon then the anchor
        // back to back: one round can be hit by something else on the machine.
        let rounds = if conns == 16 && plan.intake_only.is_none() {
            3
        } else {
            1
        };
        let mut measured = Vec::new();
        for _ in 0..rounds {
            // Each phase starts with an empty queue: delivery left over from the previous
            // phase would otherwise compete with this one's intake.
            drained(&motion).await;
            let disk = load::disk_anchor(dir.path()).await;
            let cpu_before = daemon.cpu_time();
            let written_before = daemon.disk_written();
            let times_before = daemon.store_times().await;
            let taken = load(
                daemon.public,
                &tls,
                conns,
                plan.throughput_secs,
                None,
                load::messenger,
            )
            .await;
            acked(taken.latencies.len());
            let (stages, handler) = times_before.mean_since(&daemon.store_times().await);
            let round_trip = taken.latencies.iter().sum::<Duration>().as_secs_f64()
                / taken.latencies.len().max(1) as f64;
            // The anchor runs alone too: not beside the daemon delivering what it took.
            drained(&motion).await;
            let events = taken.latencies.len().max(1) as f64;
            let cpu = (daemon.cpu_time() - cpu_before).as_secs_f64() * 1e6 / events;
            let written = (daemon.disk_written() - written_before) as f64 / 1024.0 / events;
            let a = load(
                anchor,
                &tls,
                conns,
                plan.throughput_secs,
                None,
                load::messenger,
            )
            .await;
            measured.push((
                taken.rate,
                a.rate,
                cpu,
                written,
                disk,
                (round_trip, stages, handler),
            ));
        }
        measured.sort_by(|x, y| (x.0 / x.1).total_cmp(&(y.0 / y.1)));
        let (d, a, cpu, written, _, (round_trip, stages, handler)) = measured[measured.len() / 2];
        let mut disks: Vec<Duration> = measured.iter().map(|m| m.4).collect();
        disks.sort();
        let disk = disks[disks.len() / 2];
        if conns == 16 {
            r.disk = Some(disk);
        }
        r.intake.push((conns, d, a));
        let (target, met) = match conns {
            16 => ("≥ 0.15", Some(d / a >= 0.15)),
            _ => ("", None),
        };
        let what = if conns == 16 {
            report::GATE_ROW.to_owned()
        } else {
            format!("intake, {conns} connection(s): ratio to the anchor")
        };
        let value = if rounds > 1 {
            let all: Vec<String> = measured
                .iter()
                .map(|(d, a, ..)| format!("{:.3}", d / a))
                .collect();
            format!("{:.3} (median of {})", d / a, all.join(", "))
        } else {
            format!("{:.3}", d / a)
        };
        r.add(&what, value, target, met);
        r.add(
            &format!("intake, {conns} connection(s): daemon / anchor, events/s"),
            format!("{d:.0} / {a:.0}"),
            "",
            None,
        );
        r.add(
            &format!("daemon CPU per event taken and delivered, {conns} conn."),
            format!("{cpu:.0} µs"),
            "",
            None,
        );
        r.add(
            &format!("daemon disk writes per event taken and delivered, {conns} conn."),
            format!("{written:.1} KiB"),
            "",
            None,
        );
        if conns == 16 {
            // Where a webhook's round trip went: the store's stages as it counts them,
            // the rest of the handler (reading and checking the body, waking once the
            // fsync is done), and what is outside the handler (TLS, HTTP, the kernel's
            // loopback, the load's own client).
            let share = |s: f64| s / round_trip.max(f64::EPSILON);
            let store = stages.iter().map(|s| share(*s)).sum::<f64>();
            r.add(
                report::BREAKDOWN_ROW,
                format!(
                    "{:.2} ms: queue {:.2}, commit {:.2}, fsync wait {:.2}, fsync {:.2}, rest of the handler {:.2}, outside it {:.2}",
                    round_trip * 1000.0,
                    share(stages[0]),
                    share(stages[1]),
                    share(stages[2]),
                    share(stages[3]),
                    share(handler) - store,
                    1.0 - share(handler)
                ),
                "",
                None,
            );
            r.add(
                report::DISK_ROW,
                format!("{:.2} ms", disk.as_secs_f64() * 1000.0),
                "",
                None,
            );
        }
    }
    if plan.intake_only.is_some() {
        return None;
    }
    // nginx beside the anchor where it is installed: issue 25 first measured against it.
    match nginx::start(&certs, dir.path()) {
        Some(server) => {
            let n = load(
                server.addr,
                &tls,
                16,
                plan.throughput_secs,
                None,
                load::messenger,
            )
            .await;
            drop(server);
            let (d, a) = r
                .intake
                .iter()
                .find(|(c, _, _)| *c == 16)
                .map(|(_, d, a)| (*d, *a))
                .unwrap_or_default();
            r.add(
                "nginx answering 200 over TLS, 16 conn.: requests/s; the anchor's rate / nginx's; the daemon's / nginx's",
                format!("{:.0}; {:.2}; {:.3}", n.rate, a / n.rate, d / n.rate),
                "",
                None,
            );
        }
        None => println!(
            "(no nginx on this machine: the comparison with it is skipped; `apt install nginx` to run it)"
        ),
    }
    // The same at 16 connections with Instagram in the mix: a third Messenger, a third
    // Instagram direct messages (names from Instagram's profile API), a third comments
    // on four media items (their links asked once each).
    drained(&motion).await;
    let cpu_before = daemon.cpu_time();
    let mixed = load(
        daemon.public,
        &tls,
        16,
        plan.throughput_secs,
        None,
        load::mixed_webhook,
    )
    .await;
    acked(mixed.latencies.len());
    drained(&motion).await;
    let cpu =
        (daemon.cpu_time() - cpu_before).as_secs_f64() * 1e6 / mixed.latencies.len().max(1) as f64;
    r.add(
        "intake, 16 conn., Messenger + Instagram DMs + comments: ratio to Messenger alone",
        format!("{:.2}", mixed.rate / r.intake(16).unwrap_or(1.0).max(1.0)),
        "",
        None,
    );
    r.add(
        "daemon CPU per event taken and delivered, Instagram mix, 16 conn.",
        format!("{cpu:.0} µs"),
        "",
        None,
    );
    drained(&motion).await;
    let (lat, n) = load::fixed_rate(daemon.public, &tls, 1000.0, plan.fixed_rate_secs).await;
    acked(n);
    let (p50, p99, max) = percentiles(lat);
    let (alat, _) = load::fixed_rate(anchor, &tls, 1000.0, plan.fixed_rate_secs).await;
    let (_, ap99, _) = percentiles(alat);
    r.add(
        "ack latency at 1,000 events/s: p50 / p99 / max",
        format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
        "",
        None,
    );
    r.add(
        "ack latency at 1,000 events/s: p99, anchor",
        ms(ap99),
        "",
        None,
    );

    end_to_end(&plan, &mut r, &daemon, &motion, &graph, &tls).await;

    // A burst of new conversations, delivered as they come.
    drained(&motion).await;
    burst(&plan, &mut r, &daemon, &tls, "").await;
    let peak = daemon.peak_rss_mib();
    r.add(
        "RSS at peak (all the load above, the burst included)",
        format!("{peak:.1} MiB"),
        "≤ 150 MiB",
        Some(peak <= 150.0),
    );
    drained(&motion).await;

    // A backlog: Motion down while new conversations pile up, a restart, then the drain.
    let versus = r.intake(16).unwrap_or(0.0);
    let daemon = backlog(&plan, &mut r, &config, daemon, &motion, &tls, ("", versus)).await;
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

    let mut failures = Vec::new();
    match report::audit(&motion) {
        Ok(n) => r.add(
            "Motion's record: every acknowledged message once, each customer's in order",
            format!("{n} messages, held"),
            "held",
            Some(true),
        ),
        Err(e) => {
            r.add(
                "Motion's record: every acknowledged message once, each customer's in order",
                e.clone(),
                "held",
                Some(false),
            );
            failures.push(format!("Motion's record is wrong: {e}"));
        }
    }
    if plan.short {
        let disk_ms = r.disk.map(|d| d.as_secs_f64() * 1000.0);
        match r
            .ratio(16)
            .map(|ratio| records::judge(&report::recorded(), &report::cpu_model(), ratio, disk_ms))
        {
            Some(Ok(line)) => println!("\n{line}"),
            Some(Err(failure)) => failures.push(failure),
            None => failures.push("the 16-connection intake was not measured".into()),
        }
    }
    report::write_reports(&plan, &r);
    if !r.missed.is_empty() {
        println!("\ntargets not met: {}", r.missed.join("; "));
    }
    (!failures.is_empty()).then(|| failures.join("\n"))
}

/// End to end at 100/s: webhook → Motion's notify, Reply URL → Graph's Send API.
async fn end_to_end(
    plan: &Plan,
    r: &mut Results,
    daemon: &Daemon,
    motion: &SimMotion,
    graph: &SimGraph,
    tls: &tokio_rustls::TlsConnector,
) {
    drained(motion).await;
    let before = motion.count();
    let n = (100.0 * plan.e2e_secs) as usize;
    let mut sender = connect(daemon.public, tls).await;
    let mut sent_at = Vec::new();
    for i in 0..n {
        let due = Instant::now() + Duration::from_millis(10);
        let (body, sig) = load::webhook(5000 + (i % 10) as u64, &format!("e2e{i}"));
        sent_at.push(Instant::now());
        assert_eq!(post(&mut sender, body, &sig).await, 200);
        acked(1);
        tokio::time::sleep_until(due.into()).await;
    }
    motion
        .wait_for_count(before + n, Duration::from_secs(60))
        .await
        .unwrap();
    let notes = motion.notifies_from(before);
    let mut e2e = Vec::new();
    for note in &notes {
        if let Some(i) = note
            .notify
            .body
            .strip_prefix("e2e")
            .and_then(|s| s.split('#').next())
            .and_then(|s| s.parse::<usize>().ok())
        {
            e2e.push(note.received_at.duration_since(sent_at[i]));
        }
    }
    let (p50, p99, _) = percentiles(e2e);
    r.add(
        "webhook → Motion notify at 100/s: p50 / p99",
        format!("{} / {}", ms(p50), ms(p99)),
        "",
        None,
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
}

/// A burst of new conversations at 64 connections: intake per window, the last window
/// against the first, the acknowledgements' p99.
async fn burst(
    plan: &Plan,
    r: &mut Results,
    daemon: &Daemon,
    tls: &tokio_rustls::TlsConnector,
    column: &str,
) {
    let total = if column.is_empty() {
        plan.burst
    } else {
        plan.burst / 2
    };
    let b = load::burst(
        daemon.public,
        tls,
        64,
        total,
        plan.burst_lasting,
        plan.burst_window,
    )
    .await;
    let taken = b.latencies.len();
    let windows: Vec<String> = b.windows.iter().map(|w| format!("{w:.0}")).collect();
    let first = b.windows.first().copied().unwrap_or(0.0);
    // The last window, unless it is under half a window long (a short tail says little).
    let tail = b.elapsed.as_secs_f64() % b.window.as_secs_f64();
    let last = if b.windows.len() > 2 && tail > 0.0 && tail < b.window.as_secs_f64() / 2.0 {
        b.windows[b.windows.len() - 2]
    } else {
        b.windows.last().copied().unwrap_or(0.0)
    };
    r.add(
        &format!(
            "{column}burst of {taken} new conversations in {:.0} s, 64 conn.: events/s per {} s",
            b.elapsed.as_secs_f64(),
            b.window.as_secs()
        ),
        windows.join(" → "),
        "",
        None,
    );
    let (target, met) = if column.is_empty() {
        ("≥ 0.7", Some(last / first.max(1.0) >= 0.7))
    } else {
        ("", None)
    };
    r.add(
        &format!("{column}burst: last window / first"),
        format!("{:.2}", last / first.max(1.0)),
        target,
        met,
    );
    let (p50, p99, _) = percentiles(b.latencies);
    r.add(
        &format!("{column}burst: ack latency p50 / p99"),
        format!("{} / {}", ms(p50), ms(p99)),
        "",
        None,
    );
}

/// Motion down while `plan.backlog` new conversations are queued (by batches of 100, as
/// Facebook redelivers), the daemon restarted, Motion back: the drain rate against the
/// 16-connection intake, and webhooks' p99 at 64 connections while it drains.
async fn backlog(
    plan: &Plan,
    r: &mut Results,
    config: &Path,
    daemon: Daemon,
    motion: &SimMotion,
    tls: &tokio_rustls::TlsConnector,
    (column, versus): (&str, f64),
) -> Daemon {
    let queued = if column.is_empty() {
        plan.backlog
    } else {
        plan.backlog / 2
    };
    motion.down().await;
    let mut sender = connect(daemon.public, tls).await;
    let first = load::new_customers(queued);
    let started = Instant::now();
    for at in (0..queued).step_by(100) {
        let (body, sig) = load::batch_webhook(first + at, 100.min(queued - at));
        assert_eq!(post(&mut sender, body, &sig).await, 200);
    }
    acked(queued as usize);
    r.add(
        &format!("{column}backlog: {queued} new conversations queued while Motion is down"),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
        "",
        None,
    );
    daemon.stop();
    let daemon = Daemon::start(config);
    if plan.drain_only.is_some() {
        println!(
            "daemon pid {} (e.g. perf record -g -p {} -- sleep 3)",
            daemon.child.id(),
            daemon.child.id()
        );
    }
    if column.is_empty() {
        r.add(
            &format!("start → ready with {queued} pending"),
            ms(daemon.ready_after),
            "≤ 500 ms",
            Some(daemon.ready_after <= Duration::from_millis(500)),
        );
        r.add(
            &format!("RSS with {queued} pending"),
            format!("{:.1} MiB", daemon.rss_mib()),
            "",
            None,
        );
    }

    // The first half drains alone; during the second, 64 connections keep sending.
    let before = motion.count();
    motion.set_mode(Mode::Accept);
    motion.up().await;
    let drain_started = Instant::now();
    motion
        .wait_for_count(before + queued as usize / 2, Duration::from_secs(600))
        .await
        .unwrap();
    let half = drain_started.elapsed();
    let rate = (queued / 2) as f64 / half.as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let mut count = motion.count_watch();
        let target = before + queued as usize;
        tokio::spawn(async move {
            let _ = count.wait_for(|c| *c >= target).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    // A site's monitoring meanwhile: a probe of /readyz every second, Prometheus every
    // 5 s. Each reads the queue on the store thread, between the webhooks' commits.
    let monitor = tokio::spawn(monitor(daemon.local, stop.clone()));
    let during = load(
        daemon.public,
        tls,
        64,
        if plan.short { 3.0 } else { 10.0 },
        Some(stop.clone()),
        load::messenger,
    )
    .await;
    acked(during.latencies.len());
    stop.store(true, Ordering::Relaxed);
    watcher.abort();
    let probes = monitor.await.unwrap();
    drained(motion).await;
    if versus > 0.0 {
        let (target, met) = if column.is_empty() {
            ("≥ 0.5", Some(rate / versus >= 0.5))
        } else {
            ("", None)
        };
        r.add(
            &format!("{column}drain of {queued} pending conversations: events/s, and its ratio to the 16-conn. intake"),
            format!("{rate:.0}, {:.2}", rate / versus),
            target,
            met,
        );
    } else {
        // `--drain` alone: no intake to compare with.
        r.add(
            &format!("{column}drain of {queued} pending conversations alone: events/s"),
            format!("{rate:.0}"),
            "",
            None,
        );
    }
    let (_, p99, max) = percentiles(during.latencies);
    let (target, met) = if column.is_empty() {
        ("p99 ≤ 50 ms", Some(p99 <= Duration::from_millis(50)))
    } else {
        ("", None)
    };
    r.add(
        &format!("{column}webhooks during the drain, 64 conn., /readyz probed every 1 s and /metrics every 5 s: events/s, ack p99 / max"),
        format!("{:.0}, {} / {}", during.rate, ms(p99), ms(max)),
        target,
        met,
    );
    let (_, _, slowest) = percentiles(probes);
    r.add(
        &format!("{column}monitoring during the drain: slowest /readyz or /metrics answer"),
        ms(slowest),
        "",
        None,
    );
    daemon
}

/// Probes `/readyz` every second and reads `/metrics` every fifth, as a site's monitoring
/// does, until `stop`; returns how long each answer took.
async fn monitor(local: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut took = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for n in 0u64.. {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = if n % 5 == 4 { "metrics" } else { "readyz" };
        let started = Instant::now();
        // Timed whatever it says: a 503 (a page not ready) costs the store the same read.
        if let Ok(r) = client.get(format!("http://{local}/{path}")).send().await {
            let _ = r.bytes().await;
            took.push(started.elapsed());
        }
    }
    took
}

/// The same intake, burst and drain with the queue in PostgreSQL (a private server on
/// this machine, as a site's would be on its own): the figures beside SQLite's, from the
/// same run. Skipped, and said, when PostgreSQL is not installed.
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
    let mut at_16 = 0.0;
    for (conns, on_sqlite) in sqlite {
        drained(motion).await;
        let cpu_before = daemon.cpu_time();
        let taken = load(
            daemon.public,
            tls,
            conns,
            plan.throughput_secs,
            None,
            load::messenger,
        )
        .await;
        acked(taken.latencies.len());
        if conns == 16 {
            at_16 = taken.rate;
        }
        drained(motion).await;
        let cpu = (daemon.cpu_time() - cpu_before).as_secs_f64() * 1e6
            / taken.latencies.len().max(1) as f64;
        r.add(
            &format!("PostgreSQL: intake, {conns} connection(s): ratio to SQLite's"),
            format!("{:.2}", taken.rate / on_sqlite.max(1.0)),
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
    drained(motion).await;
    burst(plan, r, &daemon, tls, "PostgreSQL: ").await;
    drained(motion).await;
    let daemon = backlog(
        plan,
        r,
        &config,
        daemon,
        motion,
        tls,
        ("PostgreSQL: ", at_16),
    )
    .await;
    r.add(
        "PostgreSQL: daemon RSS at peak",
        format!("{:.1} MiB", daemon.peak_rss_mib()),
        "",
        None,
    );
    daemon.stop();
}
