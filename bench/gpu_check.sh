#!/usr/bin/env bash
# The GPU check (issue #13): everything a lent GPU should tell, in one run of at most 8 minutes.
#
#   bench/gpu_check.sh [BUNDLE]    on a machine with an NVIDIA GPU. Unpacks BUNDLE (default
#                                  .cache/gpu-bundle/iddpm-gpu.tar.xz, made by
#                                  scripts/gpu-bundle.sh) and runs on --device cuda.
#   bench/gpu_check.sh --dry-run   the same steps on the CPU (target/release/iddpm, or $IDDPM)
#                                  at tiny sizes, so that CI keeps the script working.
#   bench/gpu_check.sh --dry-run --device NAME
#                                  the dry run on another device of the binary's, e.g. wgpu:cpu
#                                  (Mesa's lavapipe) with IDDPM=target/cuda/release/iddpm: the
#                                  GPU code path (burn's CubeCL ops) on this machine's CPU.
#
# On a GPU, steps 1 and 3 run on CUDA and again on wgpu (Vulkan on the same GPU, when the
# bundle's binary has the wgpu feature and the machine a Vulkan driver): two code paths of
# burn's CubeCL backends measured in one run.
#
# Steps:
#   1. `iddpm check_device`: model A's forward pass, diffusion A's training losses,
#      p_mean_variance and DDIM loop, and one training step's gradients, AdamW update and EMA
#      (train_step_a, when the bundle carries it) against the reference vectors (the bundle carries them;
#      else $IDDPM_REFERENCE_DIR or tests/reference).
#   2. 200 steps of the README's demo (100 in a dry run); the mean loss of the last 10 (25)
#      steps must be under half that of the first 10 (25).
#   3. Throughput of the demo and CIFAR-10 networks at batch 32 and 128, in f32 and with
#      --use_fp16: training images/s and 50-step DDIM images/s after warm-up, peak device
#      memory, and achieved TFLOP/s (model FLOPs: 3x the forward pass per trained image, one
#      forward per image and step when sampling) against the device's peak.
#   4. 20 steps with --use_fp16 True (the first network above, batch 32): lg_loss_scale starts at 20 and grows by 1e-3 a step, or
#      falls by 1 on an overflow; the losses stay finite.
#
# Prints one Markdown table (also written to $OUT/gpu_check.md when $OUT is set, else to the
# work folder it names); the logs of every step lie beside it. Exits non-zero when a check
# fails or a measurement could not be made.
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
bundle=.cache/gpu-bundle/iddpm-gpu.tar.xz
dry_device=flex
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --device) dry_device=${2:?--device needs a name}; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) bundle=$1 ;;
  esac
  shift
done

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
report_dir=${OUT:-$work}
mkdir -p "$report_dir"
started=$SECONDS
failed=0

# ---- what runs where -----------------------------------------------------------------------
also_devices=""
if [ "$dry_run" = 1 ]; then
  device=$dry_device
  iddpm=${IDDPM:-target/release/iddpm}
  reference=${IDDPM_REFERENCE_DIR:-tests/reference}
  demo_steps=100 demo_log=25
  configs="tiny" batches="2 4" ddim=ddim5 warm_train=3 measure_train=3
  fp16_steps=5 cell_timeout=300 demo_timeout=300 deadline=1500
else
  device=cuda
  also_devices=wgpu
  [ -f "$bundle" ] || { echo "no bundle at $bundle (scripts/gpu-bundle.sh makes it)" >&2; exit 1; }
  tar -C "$work" -xJf "$bundle"
  iddpm=$work/iddpm
  export CUDA_PATH=$work/cuda
  reference=$work/reference
  [ -d "$reference" ] || reference=${IDDPM_REFERENCE_DIR:-tests/reference}
  demo_steps=200 demo_log=10
  configs="demo cifar10" batches="32 128" ddim=ddim50 warm_train=3 measure_train=10
  # The demo may run 2 minutes and every other command 1; new cells start only in the first
  # 4 minutes: with the last cell and the fp16 run, 7 minutes at most, plus the unpacking.
  fp16_steps=20 cell_timeout=60 demo_timeout=120 deadline=240
fi
[ -x "$iddpm" ] || { echo "no iddpm binary at $iddpm" >&2; exit 1; }

config_flags() {
  case "$1" in
    demo) echo "--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1 --attention_resolutions 8 --num_heads 2 --learn_sigma True --diffusion_steps 100 --noise_schedule cosine" ;;
    cifar10) echo "--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3 --diffusion_steps 4000 --noise_schedule cosine" ;;
    tiny) echo "--image_size 32 --num_channels 32 --channel_mult 1,2 --num_res_blocks 1 --attention_resolutions 2 --num_heads 1 --learn_sigma True --diffusion_steps 20 --noise_schedule cosine" ;;
  esac
}

# The device's name and its peak TFLOP/s for f32 (CUDA cores) and f16 (tensor cores, dense).
gpu_name=cpu peak_f32="" peak_f16=""
on_gpu=$([ "$dry_run" = 0 ] && command -v nvidia-smi > /dev/null && echo 1 || echo 0)
if [ "$on_gpu" = 1 ]; then
  gpu_name=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
  case "$gpu_name" in
    *H200*|*H100*SXM*|*"H100 80GB HBM3"*) peak_f32=67 peak_f16=989 ;;
    *H100*) peak_f32=51 peak_f16=756 ;;
    *A100*) peak_f32=19.5 peak_f16=312 ;;
    *L40S*) peak_f32=91.6 peak_f16=362 ;;
    *A10*) peak_f32=31.2 peak_f16=125 ;;
  esac
fi

# ---- running one measured command ----------------------------------------------------------
# run_measured LOG CMD...: runs CMD (timeout ${LIMIT:-$cell_timeout} s) with its output in LOG, and sets
# $peak_mib: the device memory it held at most (nvidia-smi, polled), or on the CPU its peak
# resident memory. Returns CMD's status.
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2> /dev/null | head -1; }

run_measured() {
  local log=$1; shift
  local baseline=0
  [ "$on_gpu" = 1 ] && baseline=$(gpu_used)
  timeout "${LIMIT:-$cell_timeout}" "$@" > "$log" 2>&1 &
  local pid=$! peak=0 now child
  while kill -0 "$pid" 2> /dev/null; do
    child=$(pgrep -P "$pid" | head -1)
    if [ -n "$child" ]; then
      if [ "$on_gpu" = 1 ]; then
        # The process's own memory; in a container nvidia-smi may not know its pid, and then
        # the device's use above what it used before the command started.
        now=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2> /dev/null \
          | awk -F', ' -v p="$child" '$1 == p { print $2 }')
        [ -n "$now" ] || now=$(( $(gpu_used) - ${baseline:-0} ))
      else
        now=$(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$child/status" 2> /dev/null)
      fi
      [ -n "$now" ] && [ "$now" -gt "$peak" ] && peak=$now
    fi
    sleep 0.2
  done
  wait "$pid"
  local status=$?
  peak_mib=$peak
  return $status
}

# The number after PATTERN in LOG's last matching line.
number_after() { grep -o "$2 [0-9.e+-]*" "$1" | tail -1 | awk '{ print $NF }'; }

# Column COL of a progress.csv, one value a line.
csv_column() {
  awk -F, -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next } k { print $k }' "$1"
}

out_of_time() { [ $((SECONDS - started)) -gt "$deadline" ]; }

checks=()
note() { checks+=("| $1 | $2 | $3 |"); [ "$2" = pass ] || failed=1; }

# ---- 1. parity on the device --------------------------------------------------------------
for dev in $device $also_devices; do
  what="reference parity on $dev (check_device: forward, losses, p_mean_variance, DDIM, train step)"
  if "$iddpm" check_device --reference_dir "$reference" --device "$dev" > "$work/check_device-$dev.log" 2>&1; then
    worst=$(grep -o '[0-9.]*% of tolerance' "$work/check_device-$dev.log" | sort -n | tail -1)
    note "$what" pass "worst value at $worst"
  else
    note "$what" FAIL "$(grep -m1 -i 'fail\|error' "$work/check_device-$dev.log")"
  fi
done

# ---- 2. the demo trains --------------------------------------------------------------------
# shellcheck disable=SC2046
if LIMIT=$demo_timeout run_measured "$work/demo.log" "$iddpm" train $(config_flags demo) --batch_size 8 --lr 1e-3 \
    --ema_rate 0.995 --max_steps "$demo_steps" --save_interval 100000 --log_interval "$demo_log" \
    --preview_samples 0 --heldout_bpd 0 --device "$device" --log_dir "$work/demo"; then
  first=$(csv_column "$work/demo/progress.csv" loss | head -1 | xargs printf '%.4f')
  last=$(csv_column "$work/demo/progress.csv" loss | tail -1 | xargs printf '%.4f')
  verdict=$(awk -v a="$first" -v b="$last" 'BEGIN { print (b < a / 2) ? "pass" : "FAIL" }')
  note "$demo_steps demo steps: the loss falls to under half" "$verdict" "loss $first (first $demo_log steps) to $last (last $demo_log)"
else
  note "$demo_steps demo steps: the loss falls to under half" FAIL "train failed ($work/demo.log)"
fi

# ---- 3. throughput -------------------------------------------------------------------------
rows=()
tflops() { awk -v r="$1" -v g="$2" -v k="$3" 'BEGIN { if (r == "") print ""; else printf "%.2f", r * g * k / 1000 }'; }
of_peak() { awk -v t="$1" -v p="$2" 'BEGIN { if (t == "" || p == "") print "?"; else printf "%.1f%%", 100 * t / p }'; }
for dev in $device $also_devices; do
  # The other devices measure at the first batch size only, to stay in the time budget.
  dev_batches=$([ "$dev" = "$device" ] && echo "$batches" || echo "${batches%% *}")
  for config in $configs; do
    for batch in $dev_batches; do
      for precision in f32 fp16; do
        fp16_flag=$([ "$precision" = fp16 ] && echo True || echo False)
        peak=$([ "$precision" = fp16 ] && echo "$peak_f16" || echo "$peak_f32")
        cell="$dev-$config-b$batch-$precision"
        if out_of_time; then
          rows+=("| $dev | $config | $batch | $precision | skipped: past the time budget | | | | | | |")
          failed=1
          continue
        fi
        # shellcheck disable=SC2046
        if run_measured "$work/train-$cell.log" "$iddpm" train $(config_flags "$config") \
            --batch_size "$batch" --max_steps $((warm_train + measure_train)) --save_interval 100000 \
            --log_interval 100000 --preview_samples 0 --heldout_bpd 0 --use_fp16 "$fp16_flag" \
            --device "$dev" --log_dir "$work/$cell"; then
          train_ips=$(number_after "$work/train-$cell.log" "steps/s,")
          gflop=$(number_after "$work/train-$cell.log" "parameters,")
          train_peak=$peak_mib
        else
          train_ips="" gflop="" train_peak=""
          failed=1
        fi
        model=$(ls "$work/$cell"/model*.safetensors 2> /dev/null | tail -1)
        ddim_ips="" sample_peak=""
        # shellcheck disable=SC2046
        if [ -n "$model" ] && run_measured "$work/sample-$cell.log" "$iddpm" sample $(config_flags "$config") \
            --model_path "$model" --num_samples $((2 * batch)) --batch_size "$batch" --use_ddim True \
            --timestep_respacing "$ddim" --use_fp16 "$fp16_flag" --device "$dev" \
            --output_dir "$work/samples-$cell"; then
          ddim_ips=$(number_after "$work/sample-$cell.log" "after the first batch:")
          sample_peak=$peak_mib
        else
          failed=1
        fi
        steps=${ddim#ddim}
        train_tf=$(tflops "$train_ips" "$gflop" 3)
        ddim_tf=$(tflops "$ddim_ips" "$gflop" "$steps")
        rows+=("| $dev | $config | $batch | $precision | ${train_ips:-error} | ${train_tf:-} ($(of_peak "$train_tf" "$peak")) | ${train_peak:-} | ${ddim_ips:-error} | ${ddim_tf:-} ($(of_peak "$ddim_tf" "$peak")) | ${sample_peak:-} | ${gflop:-} |")
      done
    done
  done
done

# ---- 4. the loss scale of mixed precision --------------------------------------------------
# shellcheck disable=SC2046
if run_measured "$work/fp16.log" "$iddpm" train $(config_flags "${configs%% *}") --batch_size 32 \
    --max_steps "$fp16_steps" --log_interval 1 --save_interval 100000 --preview_samples 0 \
    --heldout_bpd 0 --use_fp16 True --device "$device" --log_dir "$work/fp16"; then
  verdict=$(paste -d, <(csv_column "$work/fp16/progress.csv" lg_loss_scale) \
      <(csv_column "$work/fp16/progress.csv" loss) | awk -F, '
    NR == 1 { ok = ($1 == 20); first = $1 }
    NR > 1 { d = $1 - prev; if (!((d > 0.0009 && d < 0.0011) || (d > -1.0001 && d < -0.9999))) ok = 0; if (d < 0) drops++ }
    { if ($2 != $2 + 0 || $2 == "nan" || $2 == "inf") ok = 0; prev = $1 }
    END { printf "%s|lg_loss_scale %.3f to %.3f over %d steps, %d overflow(s)\n", (ok && NR > 1) ? "pass" : "FAIL", first, prev, NR, drops + 0 }')
  note "$fp16_steps steps with --use_fp16: lg_loss_scale behaves" "${verdict%%|*}" "${verdict#*|}"
else
  note "$fp16_steps steps with --use_fp16: lg_loss_scale behaves" FAIL "train failed ($work/fp16.log)"
fi

# ---- the report ----------------------------------------------------------------------------
{
  echo "## GPU check: $(date -u +%F), $gpu_name, device $device$([ "$dry_run" = 1 ] && echo ' (dry run: tiny sizes on the CPU)')"
  echo
  echo "| check | result | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${checks[@]}"
  echo
  echo "Peak TFLOP/s taken as ${peak_f32:-?} (f32) and ${peak_f16:-?} (f16 tensor cores, dense). Rates after warm-up ($warm_train training steps, one sampling batch); $ddim sampling."
  echo
  echo "| device | config | batch | precision | train images/s | train TFLOP/s (of peak) | train peak MiB | DDIM images/s | DDIM TFLOP/s (of peak) | sample peak MiB | GFLOP/image |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "$((SECONDS - started)) s in all; logs in $work"
} | tee "$report_dir/gpu_check.md"
exit $failed
