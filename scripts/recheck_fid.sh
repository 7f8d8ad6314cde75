#!/usr/bin/env bash
# Draws one of hybrid_cosine's FID cells again from the shipped model (that arm's EMA weights),
# with the study's flags and seed, and evaluates it with the FID bootstrap. The L_hybrid cells
# ran before `--fid_bootstrap` existed and their samples are gone, so this is how they get a
# standard deviation; it is also a check that the same model and seed give the same samples.
#
#   scripts/recheck_fid.sh STEPS...     e.g. scripts/recheck_fid.sh 100 50 25
#
# Writes docs/reproduction/results/hybrid_cosine/fid_learned_<STEPS>_recheck.json. When the
# recheck's FID equals the cell's (to 1e-6 relative), the cell's result gains its `fid_std`,
# with `fid_std_from` naming the recheck; otherwise it stops and prints both. `grid_identical`
# says whether the first 64 samples' grid equals the cell's byte for byte. Samples are kept
# in runs/recheck/ and not drawn again when the script runs again.
set -euo pipefail
cd "$(dirname "$0")/.."

IDDPM=${IDDPM:-target/release/iddpm}
MODEL=models/fashion_mnist_32.safetensors
RESULTS=docs/reproduction/results/hybrid_cosine
REF=${REPRO_FID_REF:-runs/reproduction/data/test32}
# The study's network and diffusion for hybrid_cosine (scripts/reproduce.sh, NET and ARMS).
NET=(--image_size 32 --num_channels 64 --channel_mult 1,1,1 --num_res_blocks 1
  --attention_resolutions 8 --num_heads 2 --dropout 0 --diffusion_steps 100
  --learn_sigma True --noise_schedule cosine)
T=100

[ $# -gt 0 ] || { echo "usage: $0 STEPS..." >&2; exit 2; }
[ -x "$IDDPM" ] || { echo "$IDDPM not found: cargo build --release -p iddpm-cli" >&2; exit 1; }
[ -d "$REF" ] || { echo "$REF not found: scripts/reproduce.sh writes it" >&2; exit 1; }
if [ -z "${IDDPM_INCEPTION_WEIGHTS:-}" ]; then
  IDDPM_INCEPTION_WEIGHTS="$(scripts/fetch-inception-weights.sh)"
  export IDDPM_INCEPTION_WEIGHTS
fi

recheck() {
  local steps=$1 dir=runs/recheck/hybrid_cosine_$1 cell=$RESULTS/fid_learned_$1.json
  local out=$RESULTS/fid_learned_$1_recheck.json respacing=$1
  # Only ancestral cells: a DDIM cell ("ddim25") would need --use_ddim, which this does not pass.
  [[ $steps =~ ^[0-9]+$ ]] || { echo "$steps: not a number of ancestral steps" >&2; exit 2; }
  [ -f "$cell" ] || { echo "$cell not found: no such cell" >&2; exit 1; }
  [ "$steps" = "$T" ] && respacing=""
  mkdir -p "$dir"
  if [ ! -f "$dir/sampling_seconds" ]; then
    local start=$SECONDS
    "$IDDPM" sample --num_samples 2000 --batch_size 250 --seed 1 --model_path "$MODEL" \
      "${NET[@]}" --timestep_respacing "$respacing" --output_dir "$dir"
    echo $((SECONDS - start)) >"$dir/sampling_seconds"
  fi
  if [ ! -f "$dir/eval.json" ]; then
    local start=$SECONDS
    "$IDDPM" eval --ref_batch "$REF" --sample_batch "$dir"/samples_*.npz --fid_bootstrap 20 \
      --output "$dir/eval.json"
    echo $((SECONDS - start)) >"$dir/eval_seconds"
  fi
  # Same model, seed and flags should give the same samples: compare the first 64 as a grid.
  "$IDDPM" npz2png "$dir"/samples_*.npz --grid "$dir/grid64.png" --max_images 64 >/dev/null
  local same_grid=false
  cmp -s "$dir/grid64.png" "$RESULTS/samples_learned_$steps.png" && same_grid=true
  python3 - "$dir" "$cell" "$out" "$same_grid" <<'EOF'
import json, os, sys

dir, cell_path, out_path, same_grid = sys.argv[1:]
recheck = json.load(open(os.path.join(dir, "eval.json")))
recheck["grid_identical"] = same_grid == "true"
for name in ("sampling_seconds", "eval_seconds"):
    path = os.path.join(dir, name)
    if os.path.exists(path):
        recheck[name] = int(open(path).read())
# The compute table adds every fid_*.json's wall_seconds, this one's included.
recheck["wall_seconds"] = recheck.get("sampling_seconds", 0) + recheck.get("eval_seconds", 0)

def write(path, value):
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(value) + "\n")
    os.replace(path + ".tmp", path)

write(out_path, recheck)
cell = json.load(open(cell_path))
if abs(recheck["fid"] - cell["fid"]) > 1e-6 * cell["fid"]:
    sys.exit(f"{cell_path}: FID {cell['fid']} but the recheck gives {recheck['fid']}; not merged")
if "fid_std" not in cell or cell.get("fid_std_from"):
    cell.update(fid_std=recheck["fid_std"], fid_bootstrap=recheck["fid_bootstrap"],
                fid_std_from=os.path.basename(out_path))
    write(cell_path, cell)
print(f"{cell_path}: FID {cell['fid']:.4f}, recheck {recheck['fid']:.4f} ± {recheck['fid_std']:.4f}")
EOF
}

for steps in "$@"; do recheck "$steps"; done
