#!/usr/bin/env bash
# The GPU code path on this machine (issue #31): a device other than Flex, i.e. one of burn's
# CubeCL backends, run through iddpm's commands at tiny sizes and compared with Flex running
# the same commands in the same binary.
#
#   IDDPM=target/cuda/release/iddpm scripts/device_check.sh wgpu:cpu      (about 2 minutes)
#   IDDPM=target/cuda/release/iddpm scripts/device_check.sh cubecl-cpu    (about 4 minutes)
#
# wgpu:cpu is Mesa's lavapipe (Debian's mesa-vulkan-drivers), a software Vulkan device: the
# same kernels a GPU runs, as WGSL, compiled by LLVM for this CPU. cubecl-cpu is CubeCL's CPU
# runtime, which compiles them from CubeCL's IR through LLVM (its matrix products run as a
# product and a sum: see iddpm_kernels::ops::matmul). Checks, each against Flex:
#   1. check_device: the reference vectors at the GPU tolerances;
#   2. 50 training steps of a one-channel 8x8 network from the same seed: every logged loss
#      within 1e-3 (relative) of Flex's, and the loss falls;
#   3. DDIM and ancestral samples (10 steps each) from the device's checkpoint, same seed (so
#      the same x_T and noise: iddpm draws them on the host): uint8 values at most 1 apart;
#   4. nll on 4 images: bits/dim within 1e-4 (relative);
#   5. super_res_train (5 steps) and super_res_sample: losses within 1e-3, samples at most
#      1 apart;
#   6. 5 steps with --use_fp16 True on the device: lg_loss_scale starts at 20 and grows by
#      1e-3 a step (or falls by 1 on an overflow), and the losses stay finite.
# Why those tolerances: both sides compute in f32 and differ only in summation order and in
# exp/log implementations (about 1e-6 relative per op). Over 50 Adam steps the measured
# difference stays near 5e-5; a wrong op or an f16/TF32 stand-in shows as 1e-3 or more.
# One grey level is a rounding boundary crossed by such an error.
#
# Prints a Markdown table; exits non-zero when a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."

device=${1:?usage: IDDPM=BINARY scripts/device_check.sh DEVICE}
iddpm=${IDDPM:-target/release/iddpm}
[ -x "$iddpm" ] || { echo "no iddpm binary at $iddpm" >&2; exit 1; }
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
work=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")
compare=scripts/device_compare.py
started=$SECONDS
failed=0
rows=()

# check NAME CMD...: runs CMD (a function of this script, or a command), records its last line
# as the detail and pass/FAIL from its status.
check() {
  local name=$1; shift
  local output status
  output=$("$@" 2>&1); status=$?
  rows+=("| $name | $([ $status = 0 ] && echo pass || echo FAIL) | $(tail -1 <<< "$output") |")
  [ $status = 0 ] || failed=1
}
# The folder of output TAG on device D.
out() { echo "$work/$2-${1//:/_}"; }
# run D TAG COMMAND ARGS...: `iddpm COMMAND ARGS... --device D`, its output in $(out D TAG).log.
run() {
  local d=$1 tag=$2; shift 2
  "$iddpm" "$@" --device "$d" > "$(out "$d" "$tag").log" 2>&1 ||
    { echo "iddpm $1 failed on $d: $(grep -m1 -i error "$(out "$d" "$tag").log")"; return 1; }
}
# on_both FN CHECK ARGS...: FN flex, then FN $device, then `device_compare.py CHECK ARGS...`.
on_both() {
  local fn=$1; shift
  "$fn" flex && "$fn" "$device" && python3 "$compare" "$@"
}

NET=(--image_channels 1 --image_size 8 --num_channels 32 --channel_mult 1,2 --num_res_blocks 1
  --attention_resolutions 2 --num_heads 1 --learn_sigma True --diffusion_steps 20
  --noise_schedule cosine)
TRAIN=(--batch_size 4 --lr 1e-3 --log_interval 1 --save_interval 100000 --preview_samples 0
  --heldout_bpd 0)
"$iddpm" data fashion-mnist --input data/fashion-mnist/t10k-images-idx3-ubyte.gz \
  --output "$work/data8" --image_size 8 > /dev/null || exit 1

# 1. parity
parity() { "$iddpm" check_device --reference_dir tests/reference --device "$device" | tail -1; }
check "check_device (reference vectors, GPU tolerances)" parity

# 2. training
train() {
  run "$1" train train --data_dir "$work/data8" "${NET[@]}" "${TRAIN[@]}" --max_steps 50 \
    --log_dir "$(out "$1" train)"
}
check "50 training steps against Flex's" on_both train losses \
  "$(out flex train)/progress.csv" "$(out "$device" train)/progress.csv" 1e-3

# 3. sampling from the device's checkpoint
model=$(out "$device" train)/model000050.safetensors
sample_ddim() {
  run "$1" ddim sample --model_path "$model" --num_samples 16 --batch_size 16 --use_ddim True \
    --timestep_respacing ddim10 --output_dir "$(out "$1" ddim)"
}
sample_ancestral() {
  run "$1" ancestral sample --model_path "$model" --num_samples 16 --batch_size 16 \
    --timestep_respacing 10 --output_dir "$(out "$1" ancestral)"
}
check "DDIM samples (10 steps) against Flex's" on_both sample_ddim npz \
  "$(out flex ddim)" "$(out "$device" ddim)" 1
check "ancestral samples (10 steps) against Flex's" on_both sample_ancestral npz \
  "$(out flex ancestral)" "$(out "$device" ancestral)" 1

# 4. likelihood
nll() {
  run "$1" nll nll --model_path "$model" --data_dir "$work/data8" --num_samples 4 --batch_size 4 \
    --output_dir "$(out "$1" nll)"
}
check "nll (4 images) against Flex's" on_both nll bpd \
  "$(out flex nll)/nll_results.json" "$(out "$device" nll)/nll_results.json" 1e-4

# 5. super-resolution (one channel, 4x4 to 8x8)
SR=(--large_size 8 --small_size 4 --image_channels 1 --num_channels 32 --channel_mult 1,2
  --num_res_blocks 1 --attention_resolutions 2 --num_heads 1 --learn_sigma True
  --diffusion_steps 20 --noise_schedule cosine)
python3 "$compare" make_npz "$work/base4.npz" 4 4 1 > /dev/null
super_res() {
  run "$1" sr-train super_res_train --data_dir "$work/data8" "${SR[@]}" "${TRAIN[@]}" \
    --max_steps 5 --log_dir "$(out "$1" sr-train)" &&
  run "$1" sr-sample super_res_sample --model_path "$(out "$1" sr-train)/model000005.safetensors" \
    --base_samples "$work/base4.npz" --num_samples 4 --batch_size 4 --timestep_respacing 10 \
    --output_dir "$(out "$1" sr-sample)"
}
check "super_res_train (5 steps) against Flex's" on_both super_res losses \
  "$(out flex sr-train)/progress.csv" "$(out "$device" sr-train)/progress.csv" 1e-3
check "super_res_sample against Flex's" python3 "$compare" npz \
  "$(out flex sr-sample)" "$(out "$device" sr-sample)" 1

# 6. mixed precision on the device
fp16() {
  run "$device" fp16 train --data_dir "$work/data8" "${NET[@]}" "${TRAIN[@]}" --max_steps 5 \
    --use_fp16 True --log_dir "$(out "$device" fp16)" &&
  python3 "$compare" fp16 "$(out "$device" fp16)/progress.csv"
}
check "5 steps with --use_fp16 True" fp16

echo "## Device check: $device against Flex, $(date -u +%F)"
echo
echo "| check | result | detail |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "$((SECONDS - started)) s in all; logs in $work"
exit $failed
