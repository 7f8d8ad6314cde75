#!/usr/bin/env python3
"""MKL's one-thread sgemm through torch.mm, on bench/sgemm's shapes, for the MKL column of
docs/performance.md (a Python with torch: IDDPM_TORCH_PYTHON)."""

import time

import torch

SHAPES = [(128, 1024, 128), (128, 1024, 384), (256, 1024, 512), (512, 256, 512),
          (64, 1024, 64), (32, 512, 32), (128, 1024, 1152), (1024, 1024, 1024)]

torch.set_num_threads(1)
print("| M×N×K | MKL GFLOP/s |")
print("|---|---|")
for m, n, k in SHAPES:
    a, b = torch.rand(m, k), torch.rand(k, n)
    flop = 2 * m * n * k
    calls = max(3, min(10000, int(2e10 / flop)))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        times.append((time.perf_counter() - start) / calls)
    print(f"| {m}×{n}×{k} | {flop / sorted(times)[3] / 1e9:.0f} |")
