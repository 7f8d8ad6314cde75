#!/usr/bin/env bash
# Training and DDIM images/s of the demo network (the shipped model's: 64 channels at 32x32) on
# each device given, beside Flex in the same run, for the README's device table.
#
#   IDDPM=target/cuda/release/iddpm bench/device_speed.sh wgpu:cpu [DEVICE...]
#
# Training: batch 8, the rate after 3 warm-up steps (of 6). Sampling: 16 images in batches of
# 8 with DDIM, the rate after the first batch; software devices take 10 steps, and the 50-step
# rate is a fifth of that (every step costs one network evaluation), Flex takes 50.
set -uo pipefail
cd "$(dirname "$0")/.."

iddpm=${IDDPM:-target/release/iddpm}
[ -x "$iddpm" ] || { echo "no iddpm binary at $iddpm" >&2; exit 1; }
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
work=$(mktemp -d "${TMPDIR:-/tmp}/device-speed.XXXXXX")
NET=(--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1
  --attention_resolutions 8 --num_heads 2 --learn_sigma True --diffusion_steps 100
  --noise_schedule cosine)

number_after() { grep -o "$2 [0-9.e+-]*" "$1" | tail -1 | awk '{ print $NF }'; }

measure() { # DEVICE DDIM_STEPS: prints "train_images_per_s ddim50_images_per_s"
  local d=$1 steps=$2 dir=$work/${1//:/_}
  "$iddpm" train "${NET[@]}" --batch_size 8 --max_steps 6 --save_interval 100000 \
    --log_interval 100000 --preview_samples 0 --heldout_bpd 0 --device "$d" --log_dir "$dir" \
    > "$dir.train.log" 2>&1 || { echo "train failed on $d ($dir.train.log)" >&2; return 1; }
  "$iddpm" sample --model_path "$dir/model000006.safetensors" --num_samples 16 --batch_size 8 \
    --use_ddim True --timestep_respacing "ddim$steps" --device "$d" --output_dir "$dir.samples" \
    > "$dir.sample.log" 2>&1 || { echo "sample failed on $d ($dir.sample.log)" >&2; return 1; }
  local train sample
  train=$(grep -o "steps/s, [0-9.]* images/s" "$dir.train.log" | tail -1 | awk '{ print $2 }')
  sample=$(number_after "$dir.sample.log" "after the first batch:")
  awk -v t="$train" -v s="$sample" -v k="$steps" 'BEGIN { printf "%s %.4g\n", t, s * k / 50 }'
}

read -r flex_train flex_ddim < <(measure flex 50) || exit 1
echo "## Demo network, $(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p')"
echo
echo "| device | training images/s (batch 8) | × Flex | 50-step DDIM images/s (batch 8) | × Flex |"
echo "|---|---|---|---|---|"
echo "| flex | $flex_train | 1 | $flex_ddim | 1 |"
for d in "$@"; do
  if read -r t s < <(measure "$d" 10); then
    awk -v d="$d" -v t="$t" -v s="$s" -v ft="$flex_train" -v fs="$flex_ddim" \
      'BEGIN { printf "| %s | %s | %.4f | %s | %.4f |\n", d, t, t / ft, s, s / fs }'
  else
    echo "| $d | failed | | | |"
  fi
done
