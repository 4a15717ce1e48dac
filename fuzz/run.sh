#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), seeded with fuzz/seeds/ (the
# Facebook fixtures, the example config, sample Reply URL bodies). A crash stops the run
# with a non-zero status; its input is in fuzz/artifacts/<target>/ — copy it to
# fuzz/regressions/<target>/ so the test suite replays it, then fix the cause.
# Needs cargo-fuzz; works on stable Rust through RUSTC_BOOTSTRAP (cargo fuzz uses -Z flags).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
targets=${2:-"webhook reply config graph"}
export RUSTC_BOOTSTRAP=1
for target in $targets; do
    mkdir -p "corpus/$target"
    cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    if [ -d "regressions/$target" ]; then cp -n regressions/"$target"/* "corpus/$target/" 2>/dev/null || true; fi
    echo "==> fuzz $target for ${seconds}s"
    mkdir -p logs
    set +e
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$target.log" 2>&1
    rc=$?
    set -e
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)" "logs/$target.log" || true
    if [ $rc -ne 0 ]; then
        tail -n 40 "logs/$target.log" >&2
        echo "✗ fuzz $target failed (exit $rc); a failing input is in fuzz/artifacts/$target/ if one was found" >&2
        exit 1
    fi
done
echo "fuzzing OK"
