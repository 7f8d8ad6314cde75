#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 3600) of wall time under the limits of issue #12,
# one after another, and appends one line per run to fuzz/results.csv:
#   finished (UTC), target, wall seconds, executions, exit status (0: no crash), artifacts so
#   far, CPU seconds the fuzzer used (user + system; less than the wall time when the
#   machine is shared, and what the issue's "CPU-hours" counts).
# The corpus grows in fuzz/corpus/TARGET (ignored by git) from fuzz/seeds/TARGET, so runs
# resume where the last one stopped. Crashing inputs land in fuzz/artifacts/TARGET; copy each
# into fuzz/regressions/TARGET once fixed, where `cargo test` replays it.
# Usage: fuzz/run_all.sh [SECONDS] ; TARGETS="pickle npy" fuzz/run_all.sh 600
set -u
cd "$(dirname "$0")"
seconds=${1:-3600}
targets=${TARGETS:-"pickle torch_archive safetensors npy npz idx cifar image"}
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t-$(date -u +%Y%m%dT%H%M%S).log"
    cpu_file=$(mktemp)
    RUSTC_BOOTSTRAP=1 /usr/bin/time -f "%U %S" -o "$cpu_file" cargo fuzz run "$t" -s none \
        -O "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" > "$log" 2>&1
    status=$?
    cpu=$(awk 'END { printf "%.0f", $1 + $2 }' "$cpu_file")
    rm -f "$cpu_file"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    artifacts=$(find "artifacts/$t" -type f | wc -l)
    echo "$(date -u +%FT%TZ),$t,$seconds,${execs:-0},$status,$artifacts,$cpu" >> results.csv
    echo "$t: ${execs:-0} executions in ${seconds} s (${cpu} CPU s), exit $status, $artifacts artifacts ($log)"
done
