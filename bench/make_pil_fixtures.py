"""Writes the image-loading fixtures of crates/iddpm-data/tests/fixtures/pil.

Source images in several PIL modes and sizes, and, for each, what the reference's ImageDataset
produces at a few resolutions (halve with BOX while the short side is >= 2x the target, BICUBIC
to the target short side, convert to RGB, centre crop), saved as RGB PNGs. Run with Pillow:

    python3 bench/make_pil_fixtures.py
"""

import json
import pathlib

import numpy as np
from PIL import Image
import PIL

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/iddpm-data/tests/fixtures/pil"
RESOLUTIONS = (8, 16, 32)


def pattern(rng, w, h, channels):
    """Smooth structure plus noise: edges and gradients exercise every filter tap."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 127.5 + 100 * np.sin(x / (2.5 + c) + y / (3.7 + 2 * c))
        base += 60 * ((x // 5 + y // 7 + c) % 2) - 30
        base += rng.normal(0, 25, size=(h, w))
        planes.append(np.clip(np.round(base), 0, 255).astype(np.uint8))
    return np.stack(planes, axis=-1)


def reference_load(img, resolution):
    """The reference's ImageDataset.__getitem__, up to the uint8 crop."""
    while min(*img.size) >= 2 * resolution:
        img = img.resize(tuple(s // 2 for s in img.size), resample=Image.BOX)
    scale = resolution / min(*img.size)
    img = img.resize(tuple(round(s * scale) for s in img.size), resample=Image.BICUBIC)
    arr = np.array(img.convert("RGB"))
    cy = (arr.shape[0] - resolution) // 2
    cx = (arr.shape[1] - resolution) // 2
    return arr[cy : cy + resolution, cx : cx + resolution]


def main():
    rng = np.random.default_rng(20261129)
    OUT.mkdir(parents=True, exist_ok=True)
    sources = {}
    sources["rgb_odd.png"] = Image.fromarray(pattern(rng, 67, 45, 3), "RGB")
    sources["rgb_large.png"] = Image.fromarray(pattern(rng, 151, 97, 3), "RGB")
    sources["rgb_tall.png"] = Image.fromarray(pattern(rng, 33, 80, 3), "RGB")
    sources["rgb_tiny.png"] = Image.fromarray(pattern(rng, 5, 7, 3), "RGB")
    sources["grey.png"] = Image.fromarray(pattern(rng, 70, 41, 1)[:, :, 0], "L")
    grey_alpha = pattern(rng, 39, 50, 2)
    sources["grey_alpha.png"] = Image.fromarray(grey_alpha, "LA")
    rgba = pattern(rng, 90, 70, 4)
    rgba[:10, :, 3] = 0  # fully transparent rows
    rgba[10:20, :, 3] = 255
    sources["rgba.png"] = Image.fromarray(rgba, "RGBA")
    palette = Image.fromarray(pattern(rng, 80, 61, 3), "RGB").quantize(colors=37)
    sources["palette.png"] = palette
    sources["palette.gif"] = Image.fromarray(pattern(rng, 45, 52, 3), "RGB").quantize(colors=64)
    sources["palette_tiny.png"] = Image.fromarray(pattern(rng, 6, 5, 3), "RGB").quantize(colors=8)
    sources["rgba_wide.png"] = Image.fromarray(pattern(rng, 140, 37, 4), "RGBA")
    sources["photo.jpg"] = Image.fromarray(pattern(rng, 77, 58, 3), "RGB")
    bits = pattern(rng, 50, 35, 1)[:, :, 0] > 127
    sources["bilevel.png"] = Image.fromarray(bits)
    cases = []
    for name, img in sources.items():
        img.save(OUT / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        reopened = Image.open(OUT / name)
        reopened.load()
        for res in RESOLUTIONS:
            out = reference_load(reopened, res)
            expected = f"{pathlib.Path(name).stem}_{pathlib.Path(name).suffix[1:]}_{res}.png"
            Image.fromarray(out, "RGB").save(OUT / expected)
            cases.append({"source": name, "mode": reopened.mode, "resolution": res,
                          "expected": expected})
    (OUT / "cases.json").write_text(json.dumps(
        {"pillow": PIL.__version__, "numpy": np.__version__, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
