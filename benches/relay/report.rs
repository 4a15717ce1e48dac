//! What the run found: the table printed and written (docs/benchmark.md, or target/ for
//! a short run), the chart, the audit of Motion's record, and the regression gate.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use fb_openchannel::sim::motion::SimMotion;

use crate::Plan;
use crate::load::DAEMON_ACKED;
use crate::records::{self, Record};

/// The row of the regression gate's figure (recorded by CPU model: see [`crate::records`]).
pub const GATE_ROW: &str = "intake, 16 connections: ratio to the anchor";
/// The disk's anchor beside the gate's figure.
pub const DISK_ROW: &str =
    "disk anchor: 32 KiB written and fsynced beside the database, middle of 64 (16-conn. rounds)";

/// A webhook's mean round trip at 16 connections (the gate's median round) and the
/// share of it each stage of the store took, as the daemon's `/metrics` count them.
pub const BREAKDOWN_ROW: &str = "webhook round trip, 16 conn.: share in each store stage";

pub struct Results {
    pub rows: Vec<(String, String, String, Option<bool>)>,
    /// Connections, daemon and anchor events/s.
    pub intake: Vec<(usize, f64, f64)>,
    /// Targets that were not met.
    pub missed: Vec<String>,
    /// The disk anchor of the 16-connection rounds (their middle).
    pub disk: Option<std::time::Duration>,
}

impl Results {
    pub fn new() -> Results {
        Results {
            rows: Vec::new(),
            intake: Vec::new(),
            missed: Vec::new(),
            disk: None,
        }
    }

    pub fn add(&mut self, what: &str, value: String, target: &str, met: Option<bool>) {
        println!(
            "{what:<62} {value:>26}   {target}{}",
            match met {
                Some(true) => "  ✓",
                Some(false) => "  ✗",
                None => "",
            }
        );
        if met == Some(false) {
            self.missed.push(what.to_owned());
        }
        self.rows.push((what.into(), value, target.into(), met));
    }

    /// The daemon's intake at `conns` connections as a share of the anchor's.
    pub fn ratio(&self, conns: usize) -> Option<f64> {
        self.intake
            .iter()
            .find(|(c, _, _)| *c == conns)
            .map(|(_, d, a)| d / a)
    }

    pub fn intake(&self, conns: usize) -> Option<f64> {
        self.intake
            .iter()
            .find(|(c, _, _)| *c == conns)
            .map(|(_, d, _)| *d)
    }
}

pub fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Motion's record against what the daemons acknowledged: every message once (its
/// number after `#` never twice, and as many as were acknowledged), and each Messenger
/// customer's messages in the order they were sent. Returns what is wrong, if anything.
pub fn audit(motion: &SimMotion) -> Result<usize, String> {
    let notifies = motion.notifies();
    let mut seen = HashSet::new();
    let mut twice = Vec::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut out_of_order = Vec::new();
    for note in &notifies {
        let Some(n) = note
            .notify
            .body
            .rsplit_once('#')
            .and_then(|(_, n)| n.parse::<u64>().ok())
        else {
            continue;
        };
        if !seen.insert(n) {
            twice.push(n);
        }
        if note.account == "1" {
            let from = note.notify.from.as_str();
            if last.get(from).is_some_and(|prev| *prev > n) {
                out_of_order.push((from.to_owned(), n));
            }
            last.insert(from, n);
        }
    }
    let acked = DAEMON_ACKED.load(Ordering::Relaxed) as usize;
    let mut wrong = Vec::new();
    if !twice.is_empty() {
        wrong.push(format!(
            "{} message(s) delivered twice, e.g. #{}",
            twice.len(),
            twice[0]
        ));
    }
    if seen.len() != acked {
        wrong.push(format!(
            "{} messages acknowledged, {} delivered",
            acked,
            seen.len()
        ));
    }
    if let Some((from, n)) = out_of_order.first() {
        wrong.push(format!(
            "{} message(s) out of order, e.g. #{n} of customer {from}",
            out_of_order.len()
        ));
    }
    if wrong.is_empty() {
        Ok(seen.len())
    } else {
        Err(wrong.join("; "))
    }
}

/// The records of the last full run on each CPU model, in docs/benchmark.md.
pub fn recorded() -> Vec<Record> {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmark.md"))
        .map(|text| records::parse(&text))
        .unwrap_or_default()
}

/// This machine's CPU model, as /proc/cpuinfo names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

pub fn write_reports(plan: &Plan, r: &Results) {
    let out = if plan.short {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    };
    std::fs::create_dir_all(&out).unwrap();
    let cpu = cpu_model();
    let mut md = String::new();
    md.push_str("# Benchmark\n\n");
    md.push_str(&format!(
        "`cargo bench --bench relay`{} on {} core(s) ({cpu}); the load generator, the anchor and the simulated Facebook and Motion share the machine with the daemon. Real TLS (rustls), real HMAC signatures, real fsync. Every figure is read beside another of the same run: the daemon's intake as a share of the **anchor** (the same TLS and HTTP stack, checking the signature and storing nothing), the burst's last seconds against its first, the drain against the intake — so that a slower machine and a slower daemon are told apart. The simulated Graph refuses the new customers' names, as Graph does for an app without Business Asset User Profile Access: after ten refusals in a row the daemon stops asking for a while (`cargo bench --bench relay -- --drain --named` reads the drain with names given).\n\n",
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
    // A full run replaces its CPU model's record for the gate and keeps the others'.
    let kept = recorded();
    let table = match (plan.short, r.ratio(16)) {
        (false, Some(ratio)) => records::with(
            kept,
            Record {
                cpu,
                ratio,
                disk_ms: r.disk.map(|d| d.as_secs_f64() * 1000.0),
                when: fb_openchannel::time::timestamp(fb_openchannel::time::now_ms())
                    .chars()
                    .take(16)
                    .collect(),
            },
        ),
        _ => kept,
    };
    md.push_str(&records::render(&table));
    std::fs::write(out.join("benchmark.md"), md).unwrap();
    std::fs::write(out.join("benchmark.svg"), svg(&r.intake)).unwrap();
    println!("\nwritten: {}", out.join("benchmark.md").display());
}

/// A grouped bar chart of intake throughput, daemon vs anchor.
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
        r##"<rect x="{left}" y="{}" width="10" height="10" fill="#2b6cb0"/><text x="{}" y="{}">fb-openchannel (stores, fsyncs, delivers)</text>
<rect x="{}" y="{}" width="10" height="10" fill="#a0aec0"/><text x="{}" y="{}">anchor (verifies, stores nothing)</text>
</svg>
"##,
        h - 14.0,
        left + 14.0,
        h - 5.0,
        left + 270.0,
        h - 14.0,
        left + 284.0,
        h - 5.0
    ));
    s
}
