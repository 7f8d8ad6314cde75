#!/usr/bin/env bash
# FID against network evaluations for the solvers of `--sampler` (issue #28), on the shipped
# model: 2,000 samples per cell with the study's flags and seed, evaluated against the 10,000
# Fashion-MNIST test images with the FID bootstrap, as scripts/reproduce.sh measures its cells.
#
#   scripts/sampler_study.sh [SAMPLER:NFE[:LAMBDA[:noclip]] ...]
#                                                default: every cell, the targets' first;
#                                                LAMBDA adds --lambda_min_clipped LAMBDA (the
#                                                grid starts below the signal-free last steps);
#                                                noclip samples with --clip_denoised False
#                                                (x̂_0 not clipped to [-1, 1])
#   STUDY_GREY=1 scripts/sampler_study.sh [...]  the same on a one-channel model trained like
#                                                the shipped one (trained first, resumably,
#                                                into models/fashion_mnist_32_grey.safetensors;
#                                                48 minutes on two idle cores), with its own
#                                                ancestral 50-step cell
#   STUDY_GREY=1 STUDY_GREY_STEPS=N scripts/sampler_study.sh [...]
#                                                the one-channel model trained on to N steps
#                                                (resuming the 4,000-step run; its own model
#                                                file, results folder and ancestral cell), to
#                                                see whether longer training calibrates ε
#                                                enough for the ODE solvers
#
# Each cell writes docs/reproduction/results/samplers/<sampler>_<nfe>.json (FID, its bootstrap
# s.d., precision, recall, sampling seconds and seconds per 1,000 images) and its 64-sample
# grid; a cell whose JSON exists is skipped, and samples already drawn are not drawn again,
# so the script resumes where it stopped. With STUDY_COMMIT=1 each finished cell is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

IDDPM=${IDDPM:-target/release/iddpm}
MODEL=${STUDY_MODEL:-models/fashion_mnist_32.safetensors}
RESULTS=${STUDY_RESULTS:-docs/reproduction/results/samplers}
WORK=${STUDY_WORK:-runs/sampler_study}
CHANNELS=()
if [ "${STUDY_GREY:-0}" = 1 ]; then
  GREY_STEPS=${STUDY_GREY_STEPS:-4000}
  MODEL=models/fashion_mnist_32_grey.safetensors
  RESULTS=docs/reproduction/results/samplers_grey
  WORK=runs/sampler_study_grey
  if [ "$GREY_STEPS" != 4000 ]; then
    MODEL=models/fashion_mnist_32_grey_${GREY_STEPS}_steps.safetensors
    RESULTS=docs/reproduction/results/samplers_grey_${GREY_STEPS}_steps
    WORK=runs/sampler_study_grey_${GREY_STEPS}_steps
  fi
  # Every length trains in one run folder, so a longer model resumes a shorter one.
  GREY_TRAIN=runs/sampler_study_grey/train
  CHANNELS=(--image_channels 1)
fi
REF=${REPRO_FID_REF:-runs/reproduction/data/test32}
FMNIST=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
# The shipped model's network and diffusion (models/README.md).
NET=(--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1
  --attention_resolutions 8 --num_heads 2 --dropout 0 --diffusion_steps 100
  --learn_sigma True --noise_schedule cosine)
GREY_CELLS="ancestral:50 dpm++2m:10 dpm++2m:20 unipc:10 unipc:20 sde-dpm++2m:10
  sde-dpm++2m:20 ddim:10 ddim:20"
DEFAULT_CELLS="sde-dpm++2m:10 sde-dpm++2m:20 unipc:10 unipc:20 dpm++2m:10 dpm++2m:20
  dpm++3m:10 dpm++3m:20 sde-dpm++2m:5 sde-dpm++2m:15 sde-dpm++2m:25 unipc:5 unipc:15
  unipc:25 dpm++2m:5 dpm++2m:15 dpm++2m:25 dpm++3m:5 dpm++3m:15 dpm++3m:25"

[ -x "$IDDPM" ] || { echo "$IDDPM not found: cargo build --release -p iddpm-cli" >&2; exit 1; }
if [ ! -d "$REF" ]; then
  [ -f "$FMNIST/t10k-images-idx3-ubyte.gz" ] ||
    { echo "Fashion-MNIST not found in $FMNIST: apt-get install dataset-fashion-mnist" >&2; exit 1; }
  "$IDDPM" data fashion-mnist --input "$FMNIST/t10k-images-idx3-ubyte.gz" --output "$REF" \
    --image_size 32
fi
if [ -z "${IDDPM_INCEPTION_WEIGHTS:-}" ]; then
  IDDPM_INCEPTION_WEIGHTS="$(scripts/fetch-inception-weights.sh)"
  export IDDPM_INCEPTION_WEIGHTS
fi
mkdir -p "$RESULTS"

# The one-channel model: the shipped model's recipe (models/README.md) on one grey channel.
train_grey() {
  [ -f "$MODEL" ] && return
  local train=runs/reproduction/data/train32 log=$GREY_TRAIN
  [ -d "$train" ] || "$IDDPM" data fashion-mnist --input "$FMNIST/train-images-idx3-ubyte.gz" \
    --output "$train" --image_size 32
  local resume=()
  local newest
  newest=$(ls "$log"/model*.safetensors 2>/dev/null | sort | tail -1 || true)
  [ -n "$newest" ] && resume=(--resume_checkpoint "$newest")
  "$IDDPM" train --data_dir "$train" "${NET[@]}" "${CHANNELS[@]}" --batch_size 16 --lr 1e-3 \
    --ema_rate 0.999 --max_steps "$GREY_STEPS" --save_interval 500 --log_interval 100 --seed 1 \
    --preview_samples 0 --log_dir "$log" "${resume[@]}"
  cp "$log/ema_0.999_$(printf %06d "$GREY_STEPS").safetensors" "$MODEL.tmp"
  mv "$MODEL.tmp" "$MODEL"
}
if [ "${STUDY_GREY:-0}" = 1 ]; then
  train_grey
  DEFAULT_CELLS=$GREY_CELLS
fi

cell() {
  local sampler nfe lambda noclip flags=() denoised=True
  IFS=: read -r sampler nfe lambda noclip <<<"$1"
  local name=${sampler}_$nfe
  if [ -n "$lambda" ]; then
    name=${name}_lambda$lambda
    flags=(--lambda_min_clipped "$lambda")
  fi
  if [ "$noclip" = noclip ]; then
    # Only such cells name the flag: the others keep the command line their drawn batches
    # were keyed by, so an interrupted cell still resumes.
    name=${name}_noclip
    denoised=False
    flags+=(--clip_denoised False)
  elif [ -n "$noclip" ]; then
    echo "cell $1: the fourth field can only be noclip" >&2
    exit 2
  fi
  local dir=$WORK/$name out=$RESULTS/$name.json
  [ -f "$out" ] && { echo "$name: done"; return; }
  mkdir -p "$dir"
  if [ ! -f "$dir/sampling_seconds" ]; then
    local start=$SECONDS
    "$IDDPM" sample --num_samples 2000 --batch_size 250 --seed 1 --model_path "$MODEL" \
      "${NET[@]}" "${CHANNELS[@]}" --sampler "$sampler" --timestep_respacing "$nfe" \
      "${flags[@]}" --output_dir "$dir"
    echo $((SECONDS - start)) >"$dir/sampling_seconds"
  fi
  if [ ! -f "$dir/eval.json" ]; then
    "$IDDPM" eval --ref_batch "$REF" --sample_batch "$dir"/samples_*.npz --fid_bootstrap 20 \
      --output "$dir/eval.json.tmp"
    mv "$dir/eval.json.tmp" "$dir/eval.json"
  fi
  "$IDDPM" npz2png "$dir"/samples_*.npz --grid "$RESULTS/${name}.png" --max_images 64 >/dev/null
  python3 - "$dir" "$out" "$sampler" "$nfe" "$lambda" "$denoised" <<'EOF'
import json, os, sys

dir, out, sampler, nfe, lam, denoised = sys.argv[1:]
result = json.load(open(os.path.join(dir, "eval.json")))
seconds = int(open(os.path.join(dir, "sampling_seconds")).read())
if lam:
    result.update(lambda_min_clipped=float(lam))
result.update(sampler=sampler, nfe=int(nfe), clip_denoised=denoised == "True", samples=2000,
              sampling_seconds=seconds, seconds_per_1000_images=seconds / 2.0,
              machine=os.uname().nodename)
with open(out + ".tmp", "w") as f:
    f.write(json.dumps(result) + "\n")
os.replace(out + ".tmp", out)
print(f"{sampler} at {nfe} evaluations: FID {result['fid']:.2f}")
EOF
  if [ "${STUDY_COMMIT:-0}" = 1 ]; then
    # Retried: another git command in the same checkout may hold the index lock for a moment.
    local try
    for try in 1 2 3 4 5 6 7 8 9 10; do
      git add "$out" "$RESULTS/${name}.png" &&
        git commit -q -m "Sampler study: $sampler at $nfe network evaluations" -- "$out" \
          "$RESULTS/${name}.png" && break
      sleep 10
    done
  fi
}

for c in ${@:-$DEFAULT_CELLS}; do
  cell "$c"
done
