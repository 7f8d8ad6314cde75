"""pytorch-fid's FID Inception, timed for the side-by-side benchmark with iddpm.

Usage: python torch_inception.py REFERENCE_DIR BATCH REPS  -> prints "ms_per_batch"
Loads the reference set's seeded random weights (no download) and first checks the features
against the reference's inception.pool3.
"""
import sys
import time

import torch
import pytorch_fid.inception as pi
from safetensors.torch import load_file


def build(reference_dir):
    """pytorch-fid's network with the reference's seeded random weights, without any download."""
    ours = {k: v.float() for k, v in load_file(f"{reference_dir}/fid_inception_random_f16.safetensors").items()}
    # The full key set (fc, counters) from torchvision's skeleton, overwritten by ours.
    state = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
    for key in state:
        if key in ours:
            state[key] = ours[key]
    original = pi.load_state_dict_from_url
    pi.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        model = pi.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)
    finally:
        pi.load_state_dict_from_url = original
    return model.eval()


def main():
    reference_dir, batch, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(2)
    model = build(reference_dir)
    ref = load_file(f"{reference_dir}/fid.safetensors")
    with torch.no_grad():
        got = model(ref["inception.images"])[0].squeeze(3).squeeze(2)
    diff = (got - ref["inception.pool3"]).abs().max().item()
    assert diff < 1e-3, f"pytorch-fid does not reproduce the reference: {diff}"
    x = torch.rand(batch, 3, 32, 32)
    times = []
    with torch.no_grad():
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    times = sorted(times[1:] if len(times) > 1 else times)
    print(times[len(times) // 2])


if __name__ == "__main__":
    main()
