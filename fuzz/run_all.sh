#!/usr/bin/env bash
# Runs each fuzz target under the limits of issue #12, one after another, and appends one line
# per run to fuzz/results.csv:
#   finished (UTC), target, wall seconds, executions, exit status (0: no crash), artifacts so
#   far, CPU seconds the fuzzer used (user + system; less than the wall time when the
#   machine is shared, and what the issue's "CPU-hours" counts).
# Without CPU_GOAL, each target runs once for SECONDS of wall time (default 3600). With
# CPU_GOAL=N, each target runs in slices of at most SECONDS of wall time until the CPU seconds
# recorded for it in results.csv since its last failure add up to N, so a stopped campaign
# resumes where it was and a shared machine still gives every target its CPU time.
# The corpus grows in fuzz/corpus/TARGET (ignored by git) from fuzz/seeds/TARGET, so runs
# resume where the last one stopped. Crashing inputs land in fuzz/artifacts/TARGET; copy each
# into fuzz/regressions/TARGET once fixed, where `cargo test` replays it.
# DEADLINE=EPOCH_SECONDS shortens the slices so that none runs past it (a working session's
# end, say), and stops there: every slice still records its line.
# Usage: fuzz/run_all.sh [SECONDS] ; TARGETS="pickle npy" fuzz/run_all.sh 600
#        CPU_GOAL=3600 DEADLINE=$(date -d 'today 18:00' +%s) fuzz/run_all.sh 900
set -u
cd "$(dirname "$0")"
seconds=${1:-3600}
targets=${TARGETS:-"pickle torch_archive safetensors npy npz idx cifar image"}
cpu_goal=${CPU_GOAL:-}
deadline=${DEADLINE:-}
mkdir -p logs

# The CPU seconds results.csv records for target $1 since its last run that exited non-zero
# (a crash, an out-of-memory or a timeout starts the count again; runs from before the column
# existed count as 0).
recorded_cpu() {
    awk -F, -v t="$1" '$2 == t { s = ($5 == "0") ? s + $7 : 0 } END { printf "%.0f", s }' \
        results.csv
}

# One libFuzzer run of target $1 for $2 wall seconds; appends its line to results.csv.
fuzz_once() {
    local t=$1 wall=$2 log cpu_file status cpu execs artifacts
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t-$(date -u +%Y%m%dT%H%M%S).log"
    cpu_file=$(mktemp)
    RUSTC_BOOTSTRAP=1 /usr/bin/time -f "%U %S" -o "$cpu_file" cargo fuzz run "$t" -s none \
        -O "corpus/$t" "seeds/$t" -- \
        -max_total_time="$wall" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" > "$log" 2>&1
    status=$?
    cpu=$(awk 'END { printf "%.0f", $1 + $2 }' "$cpu_file")
    rm -f "$cpu_file"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    artifacts=$(find "artifacts/$t" -type f | wc -l)
    echo "$(date -u +%FT%TZ),$t,$wall,${execs:-0},$status,$artifacts,$cpu" >> results.csv
    echo "$t: ${execs:-0} executions in ${wall} s (${cpu} CPU s), exit $status, $artifacts artifacts ($log)"
}

# Prints $1 seconds, or fewer to end by the deadline; fails once fewer than 60 are left.
within_deadline() {
    [ -z "$deadline" ] && { echo "$1"; return 0; }
    local left=$((deadline - $(date +%s)))
    [ "$left" -lt 60 ] && { echo "deadline reached" >&2; return 1; }
    echo $(($1 < left ? $1 : left))
}

# Build every target first, so that compiling is not counted as fuzzing CPU time.
for t in $targets; do
    RUSTC_BOOTSTRAP=1 cargo fuzz build -s none "$t" || exit 1
done

for t in $targets; do
    if [ -z "$cpu_goal" ]; then
        slice=$(within_deadline "$seconds") || exit 0
        fuzz_once "$t" "$slice"
        continue
    fi
    while :; do
        done_cpu=$(recorded_cpu "$t")
        [ "$done_cpu" -ge "$cpu_goal" ] && break
        left=$((cpu_goal - done_cpu))
        slice=$(within_deadline $((left < seconds ? (left < 60 ? 60 : left) : seconds))) || exit 0
        fuzz_once "$t" "$slice"
    done
    echo "$t: $(recorded_cpu "$t") CPU s recorded (goal $cpu_goal)"
done
