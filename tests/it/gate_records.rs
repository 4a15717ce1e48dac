//! The benchmark's record for its regression gate (benches/relay/records.rs): one
//! 16-connection ratio per CPU model in docs/benchmark.md, and a short run judged against
//! its own model's.

use crate::records::{HEADING, Record, judge, parse, render, with};

fn record(cpu: &str, ratio: f64, disk_ms: Option<f64>) -> Record {
    Record {
        cpu: cpu.into(),
        ratio,
        disk_ms,
        when: "2026-12-05 03:15".into(),
    }
}

const AMD: &str = "AMD EPYC";
const INTEL: &str = "Intel(R) Xeon(R) Processor";

#[test]
fn the_records_round_trip_through_the_benchmark_file_and_a_run_replaces_its_own_model() {
    let before = vec![record(INTEL, 0.134, Some(0.13))];
    let after = with(before.clone(), record(AMD, 0.157, None));
    assert_eq!(
        after.iter().map(|r| r.cpu.as_str()).collect::<Vec<_>>(),
        [AMD, INTEL]
    );
    let file = format!(
        "# Benchmark\n\n| measure | result | target |\n|---|---|---|\n| intake | 0.1 | |\n{}\n![chart](benchmark.svg)\n",
        render(&after)
    );
    assert_eq!(parse(&file), after);

    let again = with(parse(&file), record(INTEL, 0.128, Some(0.14)));
    assert_eq!(again.len(), 2);
    assert_eq!(again[1], record(INTEL, 0.128, Some(0.14)));
    assert_eq!(again[0], after[0], "the other model's row is kept");
}

#[test]
fn a_file_without_the_table_or_with_rows_that_do_not_read_has_no_records() {
    assert!(
        parse("# Benchmark\n\n| intake, 16 connections: ratio to the anchor | 0.134 | ≥ 0.15 |\n")
            .is_empty()
    );
    let broken = format!(
        "{HEADING}\n\ntext\n\n| CPU model | ratio | disk | when |\n|---|---|---|---|\n| {INTEL} | fast | 0.13 ms | x |\n| {AMD} | -1 | | x |\n| | 0.2 | | x |\n| {AMD} | 0.157 |\n"
    );
    assert!(parse(&broken).is_empty(), "{:?}", parse(&broken));
}

#[test]
fn a_run_is_judged_against_its_own_cpu_model() {
    let records = vec![
        record(AMD, 0.157, Some(0.11)),
        record(INTEL, 0.134, Some(0.13)),
    ];
    // 0.070 passes on Intel (half of 0.134 is 0.067) and fails on AMD (0.0785).
    let pass = judge(&records, INTEL, 0.070, Some(0.13)).unwrap();
    assert!(
        pass.contains("against 0.134") && pass.contains("fails under 0.067"),
        "{pass}"
    );
    let fail = judge(&records, AMD, 0.070, Some(0.11)).unwrap_err();
    assert!(
        fail.starts_with("REGRESSION") && fail.contains("0.157"),
        "{fail}"
    );
}

#[test]
fn a_new_cpu_model_is_judged_against_the_lowest_record_and_told_so() {
    let records = vec![record(AMD, 0.157, None), record(INTEL, 0.134, None)];
    let pass = judge(&records, "Ampere Altra", 0.070, None).unwrap();
    assert!(
        pass.contains("0.134")
            && pass.contains("no full run is recorded on this CPU model (Ampere Altra)"),
        "{pass}"
    );
    assert!(
        judge(&records, "Ampere Altra", 0.060, None)
            .unwrap_err()
            .starts_with("REGRESSION")
    );
    assert!(judge(&[], INTEL, 0.2, None).unwrap_err().contains("has no"));
}

#[test]
fn a_disk_twice_as_slow_as_recorded_leaves_a_low_ratio_undecided() {
    let records = vec![record(INTEL, 0.134, Some(0.13))];
    let undecided = judge(&records, INTEL, 0.05, Some(0.30)).unwrap();
    assert!(undecided.contains("NOT DECIDED"), "{undecided}");
    let fail = judge(&records, INTEL, 0.05, Some(0.20)).unwrap_err();
    assert!(
        fail.contains("disk anchor 0.20 ms, recorded 0.13 ms"),
        "{fail}"
    );
}

#[test]
fn a_cpu_model_with_a_bar_in_its_name_finds_its_own_row() {
    let odd = "Vendor | Model 9";
    let records = with(
        vec![record(INTEL, 0.134, None)],
        record(odd, 0.2, Some(0.1)),
    );
    let file = format!("# Benchmark\n{}", render(&records));
    assert!(file.contains(r"| Vendor \| Model 9 | 0.200 |"), "{file}");
    assert_eq!(parse(&file), records);
    // Judged against its own 0.2 (fails under 0.1), not Intel's 0.134.
    assert!(judge(&parse(&file), odd, 0.09, None).is_err());
}
