#!/usr/bin/env bash
# Data-parallel scaling on this machine, the demo configuration (README): one process with
# all threads against N MPI ranks with one thread each, the same global batch. Prints steps/s,
# and each rank's time in collectives and bytes sent per step against the all-reduce minimum
# 2(N-1)/N x 4 bytes x parameters. Needs a build with --features mpi and an idle machine.
# Usage: bench/mpi_scaling.sh [STEPS] [RANKS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-60}
ranks=${2:-2}
bin=target/release/iddpm
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
demo=(--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1
      --attention_resolutions 8 --num_heads 2 --learn_sigma True --diffusion_steps 100
      --noise_schedule cosine --lr 1e-3 --ema_rate 0.995 --max_steps "$steps"
      --save_interval 100000 --log_interval 100000 --preview_samples 0)
global=8
timed() { # label, then the command; prints "label seconds"
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" > "$out/$label.log" 2>&1
  end=$(date +%s.%N)
  echo "$label $(echo "$end - $start" | bc)"
}
threads=$(nproc)
one=$(RAYON_NUM_THREADS=$threads timed one "$bin" train "${demo[@]}" --batch_size $global \
      --log_dir "$out/one")
many=$(timed many mpirun --oversubscribe --bind-to none -n "$ranks" -x RAYON_NUM_THREADS=1 \
      "$bin" train "${demo[@]}" --batch_size $((global / ranks)) --log_dir "$out/many")
params=$(grep -o 'model: [0-9]* parameters' "$out/one.log" | head -1 | tr -dc 0-9 || true)
echo "demo config, $steps steps at global batch $global (wall time includes start-up)"
echo "$one" | awk -v s="$steps" -v t="$threads" '{printf "1 process x %d threads: %.1f s, %.2f steps/s\n", t, $2, s/$2}'
echo "$many" | awk -v s="$steps" -v r="$ranks" '{printf "%d ranks x 1 thread:    %.1f s, %.2f steps/s\n", r, $2, s/$2}'
grep -o 'rank [0-9]*: .*per step)' "$out/many.log" | sort
if [ -n "$params" ]; then
  echo "all-reduce minimum per rank: 2(N-1)/N x 4 x $params = $(( 2 * (ranks - 1) * 4 * params / ranks )) bytes per step"
fi
rm -rf "$out"
