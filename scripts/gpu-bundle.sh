#!/usr/bin/env bash
# Packs what a GPU machine needs into one ignored folder, small enough to carry (< 60 MiB):
# the stripped cuda build of the binary, libdevice.10.bc, and the reference vectors that
# `iddpm check_device` replays (model A, diffusion A and, while the size allows, the training
# step train_step_a; from $IDDPM_REFERENCE_DIR or tests/reference), xz-compressed. bench/gpu_check.sh unpacks and runs it.
# Build first: scripts/setup-cuda-build.sh, then
#   CUDARC_CUDA_VERSION=12040 cargo build --release --features cuda -p iddpm-cli [--target-dir D]
# Usage: scripts/gpu-bundle.sh [PATH/TO/CUDA/iddpm]   (default: target/cuda/release/iddpm)
# On the GPU machine: bench/gpu_check.sh, or by hand:
#   tar -xJf iddpm-gpu.tar.xz && CUDA_PATH=$PWD/cuda ./iddpm ... --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/cuda/release/iddpm}
libdevice=.cache/cuda/nvvm/libdevice/libdevice.10.bc
reference=${IDDPM_REFERENCE_DIR:-tests/reference}
vectors="model_a.json model_a.safetensors model_a_forward.safetensors diffusion_a.json diffusion_a.safetensors"
out=.cache/gpu-bundle
[ -x "$binary" ] || { echo "no cuda build at $binary" >&2; exit 1; }
[ -f "$libdevice" ] || { echo "no $libdevice: run scripts/setup-cuda-build.sh" >&2; exit 1; }
stage=$(mktemp -d)
for f in $vectors; do
  [ -f "$reference/$f" ] || { echo "no $reference/$f: set IDDPM_REFERENCE_DIR" >&2; exit 1; }
done
mkdir -p "$stage/cuda/nvvm/libdevice" "$stage/reference" "$out"
cp "$binary" "$stage/iddpm"
strip "$stage/iddpm"
cp "$libdevice" "$stage/cuda/nvvm/libdevice/"
for f in $vectors; do cp "$reference/$f" "$stage/reference/"; done
# The recorded training step (gradients, AdamW, EMA) travels too while the bundle stays
# under its limit; without it check_device replays the forward checks alone.
optional="train_step_a.json train_step_a.safetensors"
limit=$((60 * 1024 * 1024))
for f in $optional; do [ -f "$reference/$f" ] && cp "$reference/$f" "$stage/reference/"; done
tar -C "$stage" -cJf "$out/iddpm-gpu.tar.xz" iddpm cuda reference
if [ "$(stat -c %s "$out/iddpm-gpu.tar.xz")" -ge "$limit" ]; then
  echo "the training-step vectors would take the bundle over its limit: left out" >&2
  for f in $optional; do rm -f "$stage/reference/$f"; done
  tar -C "$stage" -cJf "$out/iddpm-gpu.tar.xz" iddpm cuda reference
fi
echo "reference vectors in the bundle: $(ls "$stage/reference" | tr '\n' ' ')"
rm -rf "$stage"
size=$(stat -c %s "$out/iddpm-gpu.tar.xz")
echo "$out/iddpm-gpu.tar.xz: $((size / 1024 / 1024)) MiB ($size bytes)"
[ "$size" -lt "$limit" ] || { echo "over the 60 MiB limit" >&2; exit 1; }
