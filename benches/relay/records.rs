//! What the regression gate compares with: the 16-connection ratio of the last full run on
//! each CPU model, kept in a table at the end of docs/benchmark.md.
//!
//! The machine kind lands on hosts of more than one CPU model, and the ratio differs
//! between them by more than noise (0.157 on an AMD EPYC host, 0.127–0.134 on an Intel
//! Xeon one, the same code): compared with another model's run, a run could hide a
//! regression of a third, or fail for the host alone. A full run replaces its own model's
//! row and keeps the others; a short run is judged against its own model's row, or, on a
//! model never recorded, against the lowest ratio recorded (a host cannot fail for being
//! new) and says so.
//!
//! Standalone (no use of the crate), so that the integration tests compile it too: its
//! tests are in tests/it/gate_records.rs, run by `cargo test` (a bench target's are not).

/// The heading of the table in docs/benchmark.md.
pub const HEADING: &str = "## The regression gate's record, by CPU model";

/// The last full run on one CPU model.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// As /proc/cpuinfo's `model name` gives it.
    pub cpu: String,
    /// Intake at 16 connections as a share of the anchor.
    pub ratio: f64,
    /// The disk anchor beside it (ms), if it was measured.
    pub disk_ms: Option<f64>,
    /// When it ran (UTC, as the bench wrote it).
    pub when: String,
}

/// The records in the text of a docs/benchmark.md: the rows of the table under
/// [`HEADING`]. None in a file from before the table, or when its rows do not read.
pub fn parse(text: &str) -> Vec<Record> {
    // The table's header and its separator, then its rows up to the first other line.
    let rows = text
        .lines()
        .skip_while(|l| l.trim() != HEADING)
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    rows.filter_map(|row| {
        let cells = cells(row);
        // "", cpu, ratio, disk, when, "".
        if cells.len() != 6 || cells[1].is_empty() {
            return None;
        }
        let number = |cell: &str| cell.split_whitespace().next()?.parse::<f64>().ok();
        let ratio = number(&cells[2]).filter(|r| r.is_finite() && *r > 0.0)?;
        Some(Record {
            cpu: cells[1].clone(),
            ratio,
            disk_ms: number(&cells[3]),
            when: cells[4].clone(),
        })
    })
    .collect()
}

/// A table row's cells, trimmed: split at each `|` that is not written `\|` (a `|` in
/// the text of a cell, as [`cell`] writes it), which becomes `|` again.
fn cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().expect("never empty").push('|');
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("never empty").push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

/// Text as a table cell writes it: a `|` in it as `\|`, so that it does not end the cell
/// (and a CPU model whose name has one still finds its own row).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The records with `new` in place of the one of its CPU model (or added), by model.
pub fn with(mut records: Vec<Record>, new: Record) -> Vec<Record> {
    records.retain(|r| r.cpu != new.cpu);
    records.push(new);
    records.sort_by(|a, b| a.cpu.cmp(&b.cpu));
    records
}

/// The section written at the end of docs/benchmark.md.
pub fn render(records: &[Record]) -> String {
    let mut md = format!(
        "\n{HEADING}\n\n`cargo bench --bench relay -- --short` (CI runs it) fails when its 16-connection ratio is under half of the one recorded here for its CPU model; on a model not here, under half of the lowest here. Ratios differ between CPU models by more than noise: compare within one. A full run replaces its own model's row and keeps the others.\n\n| CPU model | 16 conn.: ratio to the anchor | disk anchor | recorded (UTC) |\n|---|---|---|---|\n"
    );
    for r in records {
        let disk = r.disk_ms.map(|d| format!("{d:.2} ms")).unwrap_or_default();
        md.push_str(&format!(
            "| {} | {:.3} | {disk} | {} |\n",
            cell(&r.cpu),
            r.ratio,
            cell(&r.when)
        ));
    }
    md
}

/// The gate's verdict on a short run on `cpu` that read `ratio` at 16 connections, beside
/// a disk anchor of `disk_ms`: `Ok` with the line to print when it passes (or cannot
/// tell a slower daemon from a slower disk), `Err` with why the run fails.
pub fn judge(
    records: &[Record],
    cpu: &str,
    ratio: f64,
    disk_ms: Option<f64>,
) -> Result<String, String> {
    let own = records.iter().find(|r| r.cpu == cpu);
    let lowest = records.iter().min_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let (record, whose) = match (own, lowest) {
        (Some(own), _) => (own, format!("recorded on this CPU model ({cpu})")),
        (None, Some(lowest)) => (
            lowest,
            format!(
                "the lowest recorded ({}): no full run is recorded on this CPU model ({cpu}); run `cargo bench --bench relay` on it and commit docs/benchmark.md to compare like with like",
                lowest.cpu
            ),
        ),
        (None, None) => {
            return Err(format!(
                "docs/benchmark.md has no '{HEADING}' table to compare with: run the full benchmark (cargo bench --bench relay) and commit what it writes"
            ));
        }
    };
    let recorded = record.ratio;
    let disks = record.disk_ms.zip(disk_ms);
    let disk_note = disks
        .map(|(was, is)| format!("; disk anchor {is:.2} ms, recorded {was:.2} ms"))
        .unwrap_or_default();
    if ratio >= recorded / 2.0 {
        return Ok(format!(
            "regression gate: 16-connection ratio {ratio:.3}, against {recorded:.3}, {whose} (fails under {:.3}){disk_note}",
            recorded / 2.0
        ));
    }
    // The daemon acknowledges a webhook after its fsync and the anchor writes nothing: a
    // disk slower than at the recorded run by more than the gate's margin slows the daemon
    // alone, and the gate cannot tell that from a slower daemon.
    match disks {
        Some((was, is)) if is > was * 2.0 => Ok(format!(
            "regression gate: NOT DECIDED. 16-connection ratio {ratio:.3}, under half of {recorded:.3}, {whose}, but the disk anchor took {is:.2} ms against {was:.2} ms recorded ({:.1}x): the disk, not the daemon, may be what is slower. Run the short bench again.",
            is / was
        )),
        _ => Err(format!(
            "REGRESSION: intake at 16 connections is {ratio:.3} of the anchor, under half of {recorded:.3}, {whose}{disk_note}"
        )),
    }
}
