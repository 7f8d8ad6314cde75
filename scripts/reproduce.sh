#!/usr/bin/env bash
# The paper's claims at small scale (docs/reproduction.md): every arm trained, sampled and
# evaluated by iddpm on the full Fashion-MNIST at 32x32.
#
#   scripts/reproduce.sh [ARM ...]     run (or resume) the named arms, or all of them
#   scripts/reproduce.sh report        rebuild the tables in docs/reproduction.md and the plots
#
# Every stage of an arm (train, nll, one FID cell) writes its result file under
# docs/reproduction/results/ARM/ last and is skipped when that file exists, so the script can be
# stopped at any time and run again: training resumes from the arm's newest checkpoint in
# $REPRO_WORK (kept out of git). With REPRO_COMMIT=1 each finished stage is committed at once.
# REPRO_STAGES (default "train nll fid") runs only some kinds of stage, e.g. every arm's training
# and NLL before any of the long FID cells. REPRO_STEPS, REPRO_FID_SAMPLES, REPRO_FID_BOOTSTRAP, REPRO_NLL_IMAGES, REPRO_RESULTS, REPRO_REPORT and
# REPRO_FID_REF shrink or redirect a run (a quick rehearsal of every stage, say).
# Wall time is recorded per stage (seconds on this machine), so the compute each arm used is
# stated in the report.
set -euo pipefail
cd "$(dirname "$0")/.."

IDDPM=${IDDPM:-target/release/iddpm}
WORK=${REPRO_WORK:-runs/reproduction}
RESULTS=${REPRO_RESULTS:-docs/reproduction/results}
REPORT=${REPRO_REPORT:-docs/reproduction.md}
FMNIST=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
STEPS=${REPRO_STEPS:-4000}
FID_SAMPLES=${REPRO_FID_SAMPLES:-2000}
NLL_IMAGES=${REPRO_NLL_IMAGES:-200}
# Bootstrap resamples for each FID's standard deviation (a few seconds each at 2,000 samples).
FID_BOOTSTRAP=${REPRO_FID_BOOTSTRAP:-20}
SEED=${REPRO_SEED:-1}
FID_REF=${REPRO_FID_REF:-$WORK/data/test32}
STAGES=${REPRO_STAGES:-train nll fid}

# The network shared by every arm, and T. See docs/reproduction.md for why these sizes.
T=100
NET=(--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1
  --attention_resolutions 8 --num_heads 2 --dropout 0 --diffusion_steps "$T")
BATCH=16
EMA_RATE=0.999
TRAIN=(--batch_size "$BATCH" --lr 1e-3 --ema_rate "$EMA_RATE" --save_interval 500 --log_interval 50
  --preview_samples 36 --preview_steps 100 --preview_use_ddim False --seed "$SEED")

# Arm name: model/diffusion flags | training-only flags.
declare -A ARMS=(
  [hybrid_cosine]="--learn_sigma True --noise_schedule cosine|"
  [simple_cosine]="--learn_sigma False --noise_schedule cosine|"
  [vlb_cosine_is]="--learn_sigma True --use_kl True --noise_schedule cosine|--schedule_sampler loss-second-moment"
  [vlb_cosine_uniform]="--learn_sigma True --use_kl True --noise_schedule cosine|"
  [hybrid_linear]="--learn_sigma True --noise_schedule linear|"
  [simple_linear]="--learn_sigma False --noise_schedule linear|"
)
# What runs without arguments. simple_linear is extra (the schedule comparison for L_simple too)
# and runs when named: the budget holds the others.
ORDER=(hybrid_cosine simple_cosine vlb_cosine_is vlb_cosine_uniform hybrid_linear)

# Sampler variants of an arm: name and sampling flags. L_simple's fixed Σ is either β_t
# ("large") or the posterior variance β̃_t ("small"); a learned Σ needs nothing.
variants() {
  case "$1" in
    simple_*) echo "large:--sigma_small=False small:--sigma_small=True" ;;
    *) echo "learned:" ;;
  esac
}

# FID cells of an arm, in the order they run: sampling steps, "ddimN" for DDIM. The
# fewer-steps study (the paper's Figure 8) runs on the cosine L_hybrid and L_simple models, with
# DDIM on the L_hybrid one; 50 steps come first, as the shipped model samples with them.
cells() {
  case "$1" in
    hybrid_cosine) echo "50 $T 25 ddim25 ddim50" ;;
    simple_cosine) echo "50 $T 25" ;;
    *) echo "$T" ;;
  esac
}

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Commits the results so far. Someone else may hold git's index lock for a moment: retry, and
# never stop the study over a commit.
commit() {
  [ "${REPRO_COMMIT:-0}" = 1 ] || return 0
  local try
  for try in 1 2 3 4 5; do
    git add "$(dirname "$RESULTS")" "$REPORT" &&
      { git commit -q -m "Reproduction: $1" -- "$(dirname "$RESULTS")" "$REPORT" || true; } && return 0
    sleep 2
  done
  log "could not commit: $1"
}

wants() { [[ " $STAGES " == *" $1 "* ]]; }

# Writes stdin to $1 atomically.
write_result() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  mv -f "$tmp" "$1"
}

inception() {
  if [ -z "${IDDPM_INCEPTION_WEIGHTS:-}" ]; then
    IDDPM_INCEPTION_WEIGHTS="$(scripts/fetch-inception-weights.sh)"
    export IDDPM_INCEPTION_WEIGHTS
  fi
}

data() {
  for split in train:train t10k:test; do
    local src=${split%%:*} dst=$WORK/data/${split##*:}32
    if [ ! -f "$dst.done" ]; then
      [ -f "$FMNIST/$src-images-idx3-ubyte.gz" ] || {
        echo "Fashion-MNIST not found in $FMNIST: apt-get install dataset-fashion-mnist (or set FMNIST_DIR)" >&2
        exit 1
      }
      rm -rf "$dst"
      "$IDDPM" data fashion-mnist --input "$FMNIST/$src-images-idx3-ubyte.gz" --output "$dst" --image_size 32
      touch "$dst.done"
    fi
  done
}

arm_flags() { read -ra MODEL <<<"${ARMS[$1]%%|*}"; read -ra EXTRA <<<"${ARMS[$1]#*|}"; }

newest_checkpoint() { find "$1" -maxdepth 1 -name 'model*.safetensors' 2>/dev/null | sort | tail -1; }

# A training segment that was killed (e.g. at the end of a session) never recorded its time:
# count it up to the last write of its log, so that the budget includes the work it lost.
count_killed_segment() {
  local dir=$1 began last
  [ -f "$dir/segment_started" ] || return 0
  began=$(cat "$dir/segment_started")
  last=$(stat -c %Y "$dir/progress.csv" 2>/dev/null || echo "$began")
  echo $((last > began ? last - began : 0)) >>"$dir/wall_seconds"
  rm -f "$dir/segment_started"
}

# The same for a sampling segment: counted up to the last batch it kept.
count_killed_sampling() {
  local dir=$1 began last
  [ -f "$dir/segment_started" ] || return 0
  began=$(cat "$dir/segment_started")
  # No batch kept is no error (stat fails, and pipefail with set -e would end the study).
  last=$(stat -c %Y "$dir"/.batches-*/batch_*.npy 2>/dev/null | sort -n | tail -1 || true)
  last=${last:-$began}
  echo $((last > began ? last - began : 0)) >>"$dir/killed_seconds"
  rm -f "$dir/segment_started"
}

# Trains arm $1 in $WORK/$1 to step $STEPS, resuming from its newest checkpoint there; wall
# seconds go to $WORK/$1/wall_seconds, one line per segment.
train_to_end() {
  local arm=$1 dir=$WORK/$1 resume=() ckpt step
  arm_flags "$arm"
  ckpt=$(newest_checkpoint "$dir")
  [ -n "$ckpt" ] && resume=(--resume_checkpoint "$ckpt")
  log "$arm: training to step $STEPS ${ckpt:+(resuming from $ckpt)}"
  count_killed_segment "$dir"
  date +%s >"$dir/segment_started"
  local start=$SECONDS
  "$IDDPM" train --data_dir "$WORK/data/train32" "${NET[@]}" "${MODEL[@]}" "${TRAIN[@]}" "${EXTRA[@]}" \
    --max_steps "$STEPS" --log_dir "$dir" "${resume[@]}"
  echo $((SECONDS - start)) >>"$dir/wall_seconds"
  rm -f "$dir/segment_started"
  step=$(basename "$(newest_checkpoint "$dir")" .safetensors)
  [ "${step#model}" = "$(printf '%06d' "$STEPS")" ] || { log "$arm: stopped before step $STEPS"; exit 1; }
}

# The model of an arm whose training finished on another machine (checkpoints stay out of git)
# is needed again by its pending stages: train it again with the same flags and seed. The time
# goes to retrain.json, not to the arm's training budget, and the logged losses are compared
# with the first run's, which says whether the model came out the same.
ensure_model() {
  local arm=$1 dir=$WORK/$1
  [ -f "$(ema_path "$arm")" ] && return
  log "$arm: its model was trained on another machine; training it again for the stages left"
  train_to_end "$arm"
  python3 scripts/compare_training.py "$RESULTS/$arm/progress.csv" "$dir/progress.csv" \
    "$dir/wall_seconds" | write_result "$RESULTS/$arm/retrain.json"
  cp "$dir/progress.csv" "$RESULTS/$arm/retrain_progress.csv"
  commit "$arm trained again (its checkpoints stayed on another machine)"
}

train() {
  local arm=$1 out=$RESULTS/$1/train.json dir=$WORK/$1 step
  [ -f "$out" ] && return
  train_to_end "$arm"
  step=$(basename "$(newest_checkpoint "$dir")" .safetensors)
  cp "$dir/progress.csv" "$RESULTS/$arm/progress.csv"
  cp "$dir/samples_${step#model}.png" "$RESULTS/$arm/preview.png"
  printf '{"steps": %s, "batch_size": %s, "wall_seconds": %s, "flags": "%s"}\n' \
    "$STEPS" "$BATCH" "$(awk '{ s += $1 } END { print s }' "$dir/wall_seconds")" "${ARMS[$arm]}" | write_result "$out"
  commit "$arm trained"
}

ema_path() { printf '%s/%s/ema_%s_%06d.safetensors' "$WORK" "$1" "$EMA_RATE" "$STEPS"; }

nll() {
  local arm=$1 name=$2 out=$RESULTS/$1/nll_$2.json
  shift 2
  [ -f "$out" ] && return
  ensure_model "$arm"
  arm_flags "$arm"
  log "$arm/$name: NLL of $NLL_IMAGES test images over all $T steps"
  local dir=$WORK/$arm/nll_$name start=$SECONDS
  "$IDDPM" nll --data_dir "$WORK/data/test32" --num_samples "$NLL_IMAGES" --batch_size 50 \
    --model_path "$(ema_path "$arm")" "${NET[@]}" "${MODEL[@]}" "$@" --output_dir "$dir"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["wall_seconds"]=int(sys.argv[2]); print(json.dumps(r))' \
    "$dir/nll_results.json" $((SECONDS - start)) | write_result "$out"
  commit "$arm/$name NLL"
}

fid() {
  local arm=$1 name=$2 steps=$3 out=$RESULTS/$1/fid_$2_$3.json
  shift 3
  [ -f "$out" ] && return
  ensure_model "$arm"
  arm_flags "$arm"
  local sampler=(--timestep_respacing "$steps")
  [[ $steps == ddim* ]] && sampler+=(--use_ddim True)
  [ "$steps" = "$T" ] && sampler=(--timestep_respacing "")
  log "$arm/$name: $FID_SAMPLES samples with $steps steps, then FID"
  local dir=$WORK/$arm/fid_${name}_$steps start=$SECONDS
  # Samples already drawn are kept: a finished cell's file, and within an interrupted cell
  # the batches `iddpm sample` keeps in $dir/.batches-*, which the same command resumes from.
  if [ ! -f "$dir/sampling_seconds" ]; then
    mkdir -p "$dir"
    count_killed_sampling "$dir"
    date +%s >"$dir/segment_started"
    "$IDDPM" sample --num_samples "$FID_SAMPLES" --batch_size 250 --seed "$SEED" \
      --model_path "$(ema_path "$arm")" "${NET[@]}" "${MODEL[@]}" "$@" "${sampler[@]}" --output_dir "$dir"
    local earlier
    earlier=$(awk '{ s += $1 } END { print s + 0 }' "$dir/killed_seconds" 2>/dev/null || echo 0)
    echo $((SECONDS - start + earlier)) >"$dir/sampling_seconds"
    rm -f "$dir/segment_started" "$dir/killed_seconds"
  fi
  local sampled
  sampled=$(cat "$dir/sampling_seconds")
  start=$((SECONDS - sampled))
  "$IDDPM" eval --ref_batch "$FID_REF" --sample_batch "$dir"/samples_*.npz \
    --fid_bootstrap "$FID_BOOTSTRAP" --output "$dir/eval.json"
  "$IDDPM" npz2png "$dir"/samples_*.npz --grid "$RESULTS/$arm/samples_${name}_$steps.png" --max_images 64
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update(sampling_seconds=int(sys.argv[2]), wall_seconds=int(sys.argv[3]), steps=sys.argv[4]); print(json.dumps(r))' \
    "$dir/eval.json" "$sampled" $((SECONDS - start)) "$steps" | write_result "$out"
  commit "$arm/$name FID at $steps steps"
}

run_arm() {
  local arm=$1 v name flags steps first
  mkdir -p "$RESULTS/$arm" "$WORK/$arm"
  wants train && train "$arm"
  [ -f "$RESULTS/$arm/train.json" ] || { log "$arm: not trained yet, its other stages wait"; return 0; }
  first=$(variants "$arm" | cut -d' ' -f1)
  for v in $(variants "$arm"); do
    name=${v%%:*}
    read -ra flags <<<"${v#*:}"
    wants nll && nll "$arm" "$name" "${flags[@]}"
    if wants fid; then
      for steps in $(cells "$arm"); do
        # DDIM ignores Σ: one DDIM curve per model at most, with the first variant's flags.
        [[ $steps == ddim* && $v != "$first" ]] && continue
        fid "$arm" "$name" "$steps" "${flags[@]}"
      done
    fi
    # A model trained again (ensure_model, called by a pending cell above) is not the one whose
    # NLL was measured first, and the FID cells sampled it: measure its own bound too.
    if wants nll && [ -f "$RESULTS/$arm/retrain.json" ] && [ -f "$(ema_path "$arm")" ]; then
      nll "$arm" "${name}_again" "${flags[@]}"
    fi
  done
}

report() {
  IDDPM=$IDDPM python3 scripts/reproduction_report.py "$RESULTS" "$(dirname "$RESULTS")" "$REPORT"
}

main() {
  [ -x "$IDDPM" ] || { echo "no $IDDPM: cargo build --release -p iddpm-cli first" >&2; exit 1; }
  if [ "${1:-}" = report ]; then
    report
    return
  fi
  local arms=("$@")
  [ ${#arms[@]} -eq 0 ] && arms=("${ORDER[@]}")
  for arm in "${arms[@]}"; do
    [ -n "${ARMS[$arm]+x}" ] || { echo "unknown arm $arm (known: ${ORDER[*]})" >&2; exit 2; }
  done
  data
  inception
  for arm in "${arms[@]}"; do
    run_arm "$arm"
    report
    commit "$arm complete; report rebuilt"
  done
}

main "$@"; exit
