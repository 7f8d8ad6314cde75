#!/usr/bin/env bash
# Sampling wall time per 1,000 images of every sampler at every step count of the sampler study
# (issue #28), measured in one run on otherwise idle cores, so that the times compare; the
# study's cells ran under whatever load the machine had.
#
#   scripts/sampler_timing.sh [IMAGES]   default 250 (one batch of the study's 250)
#
# Writes docs/reproduction/results/sampler_timing.csv (sampler, nfe, images, seconds,
# seconds_per_1000_images, machine, date); seconds are the sampling loop's own, as `iddpm
# sample` prints them (without loading the model). The network is the shipped model's (three
# channels); the one-channel model differs only in its first and last convolutions.
set -euo pipefail
cd "$(dirname "$0")/.."

IDDPM=${IDDPM:-target/release/iddpm}
IMAGES=${1:-250}
OUT=docs/reproduction/results/sampler_timing.csv
WORK=runs/sampler_timing
NET=(--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1
  --attention_resolutions 8 --num_heads 2 --dropout 0 --diffusion_steps 100
  --learn_sigma True --noise_schedule cosine)
[ -x "$IDDPM" ] || { echo "$IDDPM not found: cargo build --release -p iddpm-cli" >&2; exit 1; }

machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1 | tr , ' ')"  # a CSV field
rows=()
for nfe in 5 10 15 20 25 50; do
  for sampler in ancestral ddim sde-dpm++2m dpm++2m dpm++3m unipc; do
    rm -rf "$WORK"
    if ! log=$("$IDDPM" sample --num_samples "$IMAGES" --batch_size "$IMAGES" --seed 1 \
      --model_path models/fashion_mnist_32.safetensors "${NET[@]}" --sampler "$sampler" \
      --timestep_respacing "$nfe" --output_dir "$WORK" 2>&1); then
      printf '%s\n' "$log" >&2
      echo "$sampler at $nfe evaluations: iddpm sample failed (its output is above)" >&2
      exit 1
    fi
    line=$(grep '^sampled' <<<"$log")
    seconds=$(sed -E 's/^sampled [0-9]+ images in ([0-9.]+) s.*/\1/' <<<"$line")
    per=$(python3 -c "print(f'{$seconds * 1000 / $IMAGES:.1f}')")
    echo "$sampler at $nfe evaluations: $seconds s for $IMAGES images, $per s per 1,000"
    rows+=("$sampler,$nfe,$IMAGES,$seconds,$per,$machine,$(date -u +%F)")
  done
done
rm -rf "$WORK"
{
  echo "sampler,nfe,images,seconds,seconds_per_1000_images,machine,date"
  printf '%s\n' "${rows[@]}"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
