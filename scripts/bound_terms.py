#!/usr/bin/env python3
"""Where each model's bound comes from: the per-timestep terms of the reproduction study's
cosine models (docs/reproduction.md, "Where the bound and the samples part").

Runs `iddpm nll` on the first IMAGES test images for each model (skipped when its output
exists), then writes the terms as CSV and draws two plots into docs/reproduction/: the bound's
term L_t in bits/dim, and each model's error of the predicted x_0 relative to L_hybrid's, both
against the timestep t.
Standard library only; run from the repository root after the study's arms are trained.

    scripts/bound_terms.py [IMAGES]        (default 50)
"""

import ast
import csv
import io
import json
import os
import struct
import subprocess
import sys
import zipfile

from reproduction_report import plot

IDDPM = os.environ.get("IDDPM", "target/release/iddpm")
WORK = os.environ.get("REPRO_WORK", "runs/reproduction")
OUT = "docs/reproduction"
NET = ["--image_size", "32", "--num_channels", "64", "--channel_mult", "1,1,1",
       "--num_res_blocks", "1", "--attention_resolutions", "8", "--num_heads", "2",
       "--dropout", "0", "--diffusion_steps", "100", "--noise_schedule", "cosine"]

# (name, label, checkpoint, flags): the cosine models whose samples and bounds disagree most.
MODELS = [
    ("hybrid_cosine", "L_hybrid, learned Σ", "models/fashion_mnist_32.safetensors",
     ["--learn_sigma", "True"]),
    ("vlb_cosine_is", "L_vlb, learned Σ, importance sampling",
     f"{WORK}/vlb_cosine_is/ema_0.999_004000.safetensors",
     ["--learn_sigma", "True", "--use_kl", "True"]),
    ("simple_cosine_small", "L_simple, Σ = posterior variance",
     f"{WORK}/simple_cosine/ema_0.999_004000.safetensors",
     ["--learn_sigma", "False", "--sigma_small", "True"]),
]


def read_npz_vector(path):
    """The 1-D little-endian float32 `arr_0` of an .npz that `iddpm nll` wrote."""
    with zipfile.ZipFile(path) as z:
        raw = z.read("arr_0.npy")
    f = io.BytesIO(raw)
    if f.read(6) != b"\x93NUMPY":
        raise ValueError(f"{path}: arr_0 is not an .npy array")
    major = f.read(2)[0]
    (header_len,) = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))
    header = ast.literal_eval(f.read(header_len).decode("latin1"))
    if header["descr"] != "<f4" or len(header["shape"]) != 1:
        raise ValueError(f"{path}: expected a 1-D <f4 array, found {header}")
    (n,) = header["shape"]
    return list(struct.unpack(f"<{n}f", f.read(4 * n)))


def measure(name, checkpoint, flags, images):
    out = f"{WORK}/terms/{name}"
    if not os.path.exists(f"{out}/nll_results.json"):
        subprocess.run([IDDPM, "nll", "--data_dir", f"{WORK}/data/test32",
                        "--num_samples", str(images), "--batch_size", str(min(images, 50)),
                        "--model_path", checkpoint, *NET, *flags, "--output_dir", out],
                       check=True)
    with open(f"{out}/nll_results.json") as f:
        summary = json.load(f)
    # Column j holds timestep T-1-j (the reference's order); put t in ascending order.
    terms = {k: read_npz_vector(f"{out}/{k}_terms.npz")[::-1] for k in ("vb", "xstart_mse")}
    return summary, terms


def write_terms(name, terms, reference):
    """One model's terms as CSV, its x_0 error also as a ratio to the reference model's."""
    path = f"{OUT}/bound_terms_{name}.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "vb_bits_per_dim", "xstart_mse", "xstart_mse_ratio"])
        for t, (vb, x0) in enumerate(zip(terms["vb"], terms["xstart_mse"])):
            ratio = x0 / reference["xstart_mse"][t]
            w.writerow([t, f"{vb:.6g}", f"{x0:.6g}", f"{ratio:.6g}"])
    return path


def main():
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    measured = {name: measure(name, checkpoint, flags, images)
                for name, _, checkpoint, flags in MODELS}
    reference = measured[MODELS[0][0]][1]
    # L_hybrid's own ratio is the line at 1; drawing it keeps each model's colour in both plots.
    vb_series, ratio_series = [], []
    for name, label, _, _ in MODELS:
        path = write_terms(name, measured[name][1], reference)
        vb_series.append(f"{label}={path}:t:vb_bits_per_dim")
        ratio_series.append(f"{label}={path}:t:xstart_mse_ratio")
    plot(f"{OUT}/bound_terms.png", f"Bound term L_t per timestep ({images} test images)",
         "timestep t", "L_t (bits per dimension, log scale)", vb_series, "--log_y")
    plot(f"{OUT}/xstart_error_ratio.png",
         f"Error of the predicted x_0 relative to L_hybrid's ({images} test images)",
         "timestep t", "x_0 mean squared error / L_hybrid's", ratio_series)
    with open(f"{OUT}/bound_terms.json", "w") as f:
        json.dump({name: m[0] for name, m in measured.items()}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
