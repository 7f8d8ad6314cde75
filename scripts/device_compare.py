#!/usr/bin/env python3
"""Comparisons for scripts/device_check.sh: one device's outputs against Flex's.

Standard library only (CI has no numpy). Each subcommand prints one line of detail and exits
1 when the check fails, 2 when an input cannot be read.

    device_compare.py losses FLEX.csv DEVICE.csv REL_TOL   every logged loss within REL_TOL
                                                           (relative) of Flex's, and the loss
                                                           falling on the device
    device_compare.py npz FLEX_DIR DEVICE_DIR MAX_LEVELS   uint8 samples at most MAX_LEVELS
                                                           apart
    device_compare.py bpd FLEX.json DEVICE.json REL_TOL    nll's bits/dim
    device_compare.py fp16 DEVICE.csv                      lg_loss_scale from 20, +1e-3 a step
                                                           (or -1 on an overflow), finite losses
    device_compare.py make_npz OUT N SIZE CHANNELS         N seeded uint8 images, for
                                                           super_res_sample's --base_samples
"""

import csv
import glob
import json
import math
import random
import struct
import sys
import zipfile


def column(path, name):
    with open(path, newline="") as f:
        return [float(row[name]) for row in csv.DictReader(f)]


def losses(flex_csv, device_csv, rel_tol):
    a, b = column(flex_csv, "loss"), column(device_csv, "loss")
    if len(a) != len(b) or not a:
        return fail(f"{len(a)} logged losses on Flex, {len(b)} on the device")
    worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
    k = max(1, len(b) // 5)
    first, last = sum(b[:k]) / k, sum(b[-k:]) / k
    detail = (f"{len(b)} steps: worst relative difference {worst:.1e} (tolerance "
              f"{float(rel_tol):.0e}); device loss {first:.4f} (first {k}) to {last:.4f} (last {k})")
    return verdict(worst <= float(rel_tol) and last < first, detail)


def npy_bytes(directory):
    files = glob.glob(f"{directory}/samples_*.npz")
    if len(files) != 1:
        raise OSError(f"expected one samples_*.npz in {directory}, found {len(files)}")
    raw = zipfile.ZipFile(files[0]).read("arr_0.npy")
    if raw[:6] != b"\x93NUMPY" or b"'|u1'" not in raw[:128]:
        raise OSError(f"{files[0]}: arr_0 is not a uint8 .npy array")
    header_len = struct.unpack("<H", raw[8:10])[0]
    return raw[10 + header_len:]


def npz(flex_dir, device_dir, max_levels):
    a, b = npy_bytes(flex_dir), npy_bytes(device_dir)
    if len(a) != len(b) or not a:
        return fail(f"{len(a)} values on Flex, {len(b)} on the device")
    diffs = [abs(x - y) for x, y in zip(a, b)]
    worst, differ = max(diffs), sum(1 for d in diffs if d)
    detail = f"{len(a)} uint8 values: {differ} differ, by at most {worst} (tolerance {max_levels})"
    return verdict(worst <= int(max_levels), detail)


def bpd(flex_json, device_json, rel_tol):
    a = json.load(open(flex_json))["bpd"]
    b = json.load(open(device_json))["bpd"]
    rel = abs(a - b) / abs(a)
    detail = f"{b:.6f} bits/dim against Flex's {a:.6f}: relative {rel:.1e} (tolerance {float(rel_tol):.0e})"
    return verdict(rel <= float(rel_tol), detail)


def fp16(device_csv):
    scale, loss = column(device_csv, "lg_loss_scale"), column(device_csv, "loss")
    ok = bool(scale) and scale[0] == 20 and all(math.isfinite(x) for x in loss)
    drops = 0
    for prev, now in zip(scale, scale[1:]):
        step = now - prev
        drops += step < 0
        ok &= abs(step - 1e-3) < 1e-4 or abs(step + 1) < 1e-4
    detail = (f"lg_loss_scale {scale[0] if scale else '?'} to {scale[-1] if scale else '?'} over "
              f"{len(scale)} steps, {drops} overflow(s), losses finite: {all(map(math.isfinite, loss))}")
    return verdict(ok, detail)


def make_npz(out, n, size, channels):
    n, size, channels = int(n), int(size), int(channels)
    rng = random.Random(0)
    body = bytes(rng.randrange(256) for _ in range(n * size * size * channels))
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({n}, {size}, {size}, {channels}), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("arr_0.npy", npy)
    print(f"wrote {n} images of {size}x{size}x{channels} to {out}")
    return 0


def verdict(ok, detail):
    print(detail)
    return 0 if ok else 1


def fail(detail):
    print(detail)
    return 1


COMMANDS = {"losses": losses, "npz": npz, "bpd": bpd, "fp16": fp16, "make_npz": make_npz}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    try:
        sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
    except (OSError, KeyError, ValueError, TypeError) as e:
        print(f"cannot compare: {e}")
        sys.exit(2)
