#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/<target>/ (committed, and replayed by
`cargo test` through crates/iddpm-data/tests/fuzz_corpus.rs). Standard library only; real files
are used where present: the reference's model_a.pt and the Inception TorchScript archive."""

import gzip
import io
import json
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def fake_module(name, **attrs):
    """A stand-in module, so that pickle writes the globals PyTorch and NumPy files name."""
    m = types.ModuleType(name)
    for k, v in attrs.items():
        v.__module__ = name
        v.__qualname__ = k
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


def _reconstruct(*args):
    raise NotImplementedError


class FloatStorage:
    pass


class ndarray:
    pass


class dtype:
    def __init__(self, descr):
        self.descr = descr

    def __reduce__(self):
        return (dtype, (self.descr, False, True), (3, "|", None, None, None, -1, -1, 0))


fake_module("torch", FloatStorage=FloatStorage)
fake_module("torch._utils", _rebuild_tensor_v2=_rebuild_tensor_v2)
fake_module("numpy.core.multiarray", _reconstruct=_reconstruct)
fake_module("numpy", ndarray=ndarray, dtype=dtype)


class Tensor:
    def __init__(self, key, numel, offset, shape, stride):
        self.args = (Storage(key, numel), offset, shape, stride, False, OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj, protocol=2):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


class Array:
    """A NumPy array as `pickle` writes one: _reconstruct, then BUILD with its state."""

    def __init__(self, shape, descr, data):
        self.state = (1, shape, dtype(descr), False, data)

    def __reduce__(self):
        return (_reconstruct, (ndarray, (0,), b"b"), self.state)


def zip_bytes(entries, deflate=False):
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def floats(values):
    return struct.pack(f"<{len(values)}f", *values)


def npy(shape, descr, body):
    shape_text = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    pad = (64 - (10 + len(header) + 1) % 64) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def main():
    state = OrderedDict(
        [
            ("conv.weight", Tensor("0", 6, 0, (2, 3), (3, 1))),
            ("conv.bias", Tensor("1", 2, 0, (2,), (1,))),
            ("view", Tensor("0", 6, 1, (2, 2), (1, 2))),
        ]
    )
    pkl = torch_pickle(state)
    storages = [("archive/data/0", floats(range(6))), ("archive/data/1", floats([0.5, -1]))]
    put("pickle", "state_dict_protocol2.pkl", pkl)
    put("pickle", "state_dict_protocol4.pkl", torch_pickle(state, protocol=4))
    shared = OrderedDict(a=[1, -2, 300, 70000, -(2**40)], b=(1.5, None, True), c=b"xy")
    shared["rep"] = shared["a"]
    put("pickle", "shared_memo.pkl", pickle.dumps(shared, protocol=4))
    cifar = {"data": Array((2, 3072), "u1", bytes(range(256)) * 24), "labels": [3, 9]}
    put("pickle", "cifar_batch.pkl", pickle.dumps(cifar, protocol=3))
    put("cifar", "data_batch.pkl", pickle.dumps(cifar, protocol=3))
    put("cifar", "records.bin", bytes([7]) + bytes(3072) + bytes([1]) + bytes(range(256)) * 12)
    archive = [("archive/data.pkl", pkl), ("archive/version", b"3\n")] + storages
    put("torch_archive", "state_dict.pt", zip_bytes(archive))
    put("torch_archive", "state_dict_deflated.pt", zip_bytes(archive, deflate=True))
    for source, name in [
        (ROOT.parent / "shared" / "reference" / "model_a.pt", "model_a_data.pkl"),
        (ROOT / ".cache" / "default_1.pt", "inception_torchscript_data.pkl"),
    ]:
        if source.exists():
            with zipfile.ZipFile(source) as z:
                pkl_name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
                put("pickle", name, z.read(pkl_name))
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
        }
    ).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    body = floats([1, 2, 3, 4]) + struct.pack("<2e", 0.5, -2.0)
    put("safetensors", "small.safetensors", struct.pack("<Q", len(header)) + header + body)
    # The same with the model settings iddpm writes into every checkpoint's metadata.
    settings = {"image_size": 32, "num_channels": 64, "channel_mult": "1,1,1", "dropout": 0.0,
                "learn_sigma": True, "noise_schedule": "cosine", "num_heads_upsample": -1}
    header = json.dumps(
        {
            "__metadata__": {"format": "pt", "iddpm_settings": json.dumps(settings)},
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        }
    ).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    put("safetensors", "with_settings.safetensors",
        struct.pack("<Q", len(header)) + header + floats([1, 2, 3, 4]))
    put("npy", "f32.npy", npy((2, 3), "<f4", floats(range(6))))
    put("npy", "u8.npy", npy((4,), "|u1", bytes([0, 1, 254, 255])))
    put("npy", "i64.npy", npy((2,), "<i8", struct.pack("<2q", -1, 5)))
    arrays = [("arr_0.npy", npy((2, 2), "|u1", bytes(4))), ("arr_1.npy", npy((2,), "<i8", bytes(16)))]
    put("npz", "samples.npz", zip_bytes(arrays))
    put("npz", "samples_deflated.npz", zip_bytes(arrays, deflate=True))
    images = idx([2, 2, 3], bytes(range(12)))
    put("idx", "images.idx", images)
    put("idx", "images.idx.gz", gzip.compress(images, mtime=0))
    put("idx", "labels.idx", idx([3], bytes([0, 9, 4])))
    fixtures = ROOT / "crates" / "iddpm-data" / "tests" / "fixtures" / "pil"
    for f in sorted(fixtures.iterdir()):
        derived = any(f"_{kind}_" in f.name for kind in ("png", "gif", "jpg"))
        if f.suffix in (".png", ".gif", ".jpg") and not derived and f.stat().st_size <= 16384:
            put("image", f.name, f.read_bytes())


if __name__ == "__main__":
    main()
