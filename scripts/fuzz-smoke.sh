#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 10) from the seed corpus in fuzz/corpus,
# and prints the executions per target. A crash fails the run; libFuzzer writes the input to
# fuzz/artifacts/TARGET/, which then becomes a regression test. By hand, for longer:
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
# cargo-fuzz needs the nightly sanitizer flags; RUSTC_BOOTSTRAP=1 allows them on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-10}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# Sanitizer builds of the fuzz targets: their own target folder, so the main one stays warm.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/tally/fuzz-target}"
cd fuzz
cargo fuzz build -O
for target in $(cargo fuzz list); do
    # A scratch copy of the seeds: what a run discovers does not land in the repository.
    work=$(mktemp -d)
    cp -r "corpus/$target/." "$work/"
    log="$work/fuzz.log"
    if ! cargo fuzz run -O "$target" "$work" -- -max_total_time="$seconds" \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $target FAILED (the input is in fuzz/artifacts/$target/)"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$')
    echo "fuzz: $target: $runs executions in $seconds s, no crash"
    rm -rf "$work"
done
