#!/usr/bin/env python3
"""Writes the vectors that check iddpm's multistep samplers against diffusers' schedulers.

Each case runs one diffusers scheduler (PyPI `diffusers`, the version is recorded) over a
closed-form noise-prediction model and stores x_T, every step's sample and the noise the
stochastic solvers drew. `crates/iddpm/tests/samplers_vs_diffusers.rs` replays the same model
in Rust through iddpm's samplers and compares step by step; it does not need Python.

The model: the data are Gaussian, N(mu_c, s_c^2) independently per pixel of channel c, so the
optimal noise prediction is known in closed form,

    eps(x_t, t) = sqrt(1 - abar_t) * (x_t - sqrt(abar_t) mu) / (abar_t s^2 + 1 - abar_t),

and its data prediction x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) leaves [-1, 1] often
enough (s up to 1.2) for clipping and thresholding to matter. Learned-variance models give
six channels; the second half is v = tanh(x_t) / 2, which the ODE solvers ignore.

The time grid is iddpm's: the steps `space_timesteps(T, "N")` keeps (the reference's
respacing), passed to diffusers as custom timesteps, with final_sigmas_type="zero" (the last
step lands on x_0). diffusers' alphas_cumprod are replaced by the float64 ones of the
reference's schedule, so that both sides use the same noise levels.

Usage: python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch diffusers safetensors
       /tmp/tv/bin/python bench/make_sampler_vectors.py crates/iddpm/tests/fixtures
"""

import json
import math
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from safetensors.numpy import save_file

MU = np.array([0.3, -0.2, 0.1])
SD = np.array([0.8, 0.5, 1.2])
SHAPE = (2, 3, 8, 8)


def cosine_betas(T):
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])


def linear_betas(T):
    scale = 1000 / T
    return np.linspace(scale * 0.0001, scale * 0.02, T, dtype=np.float64)


def space_timesteps(T, n):
    """The reference's respacing of T steps into one section of n."""
    if n == 1:
        return [0]
    stride = (T - 1) / (n - 1)
    return sorted({round(i * stride) for i in range(n)})


def model(x, t, abar, learned):
    """The closed-form network: eps (and v for learned variances), float64."""
    a = abar[t]
    mu = torch.tensor(MU).view(1, 3, 1, 1)
    var = torch.tensor(SD**2).view(1, 3, 1, 1)
    eps = math.sqrt(1 - a) * (x - math.sqrt(a) * mu) / (a * var + 1 - a)
    if learned:
        return torch.cat([eps, torch.tanh(x) / 2], dim=1)
    return eps


def scheduler_for(case, betas, steps):
    T = len(betas)
    common = dict(
        num_train_timesteps=T,
        trained_betas=betas.tolist(),
        prediction_type="epsilon",
        lower_order_final=True,
        final_sigmas_type="zero",
        thresholding=case.get("thresholding", False),
        dynamic_thresholding_ratio=case.get("ratio", 0.995),
        sample_max_value=case.get("max", 1.0),
    )
    if case["class"] == "DPMSolverMultistepScheduler":
        s = DPMSolverMultistepScheduler(
            algorithm_type=case["algorithm_type"],
            solver_order=case["solver_order"],
            solver_type="midpoint",
            variance_type="learned_range" if case["learned"] else None,
            euler_at_final=False,
            **common,
        )
        s.alphas_cumprod = torch.tensor(np.cumprod(1 - betas))
        s.set_timesteps(timesteps=steps[::-1])
    else:
        s = UniPCMultistepScheduler(
            solver_order=case["solver_order"],
            solver_type="bh2",
            predict_x0=True,
            disable_corrector=[],
            **common,
        )
        s.alphas_cumprod = torch.tensor(np.cumprod(1 - betas))
        s.set_timesteps(len(steps))
        # Custom timesteps (UniPC's set_timesteps takes none): iddpm's grid, then sigma 0.
        abar = np.cumprod(1 - betas)
        sig = np.sqrt((1 - abar) / abar)[steps[::-1]]
        s.timesteps = torch.tensor(steps[::-1], dtype=torch.int64)
        s.sigmas = torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))
        s.num_inference_steps = len(steps)
    return s


def run(case):
    T, n = case["T"], case["steps"]
    betas = cosine_betas(T) if case["schedule"] == "cosine" else linear_betas(T)
    abar = np.cumprod(1 - betas)
    steps = space_timesteps(T, n)
    s = scheduler_for(case, betas, steps)
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    out = {"x_T": x.numpy().astype(np.float32)}
    samples, noises = [], []
    stochastic = case.get("algorithm_type", "").startswith("sde")
    for t in s.timesteps.tolist():
        eps = model(x, t, abar, case["learned"] and case["class"] != "UniPCMultistepScheduler")
        kwargs = {}
        if stochastic:
            z = torch.randn(SHAPE, generator=g, dtype=torch.float64)
            noises.append(z.numpy().astype(np.float32))
            kwargs["variance_noise"] = z
        x = s.step(eps, t, x, **kwargs).prev_sample.to(torch.float64)
        samples.append(x.numpy().astype(np.float32))
    out["samples"] = np.stack(samples)
    if noises:
        out["noises"] = np.stack(noises)
    return out, steps


CASES = [
    # name, diffusers configuration, diffusion
    dict(name="dpmpp_2m_cosine100_n10", sampler="dpm++2m", cls="DPMSolverMultistepScheduler",
         algorithm_type="dpmsolver++", solver_order=2, T=100, schedule="cosine", steps=10),
    dict(name="dpmpp_2m_linear1000_n20", sampler="dpm++2m", cls="DPMSolverMultistepScheduler",
         algorithm_type="dpmsolver++", solver_order=2, T=1000, schedule="linear", steps=20),
    dict(name="dpmpp_3m_cosine100_n10", sampler="dpm++3m", cls="DPMSolverMultistepScheduler",
         algorithm_type="dpmsolver++", solver_order=3, T=100, schedule="cosine", steps=10),
    dict(name="dpmpp_3m_linear1000_n20", sampler="dpm++3m", cls="DPMSolverMultistepScheduler",
         algorithm_type="dpmsolver++", solver_order=3, T=1000, schedule="linear", steps=20),
    dict(name="sde_dpmpp_2m_cosine100_n10", sampler="sde-dpm++2m",
         cls="DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++", solver_order=2,
         T=100, schedule="cosine", steps=10),
    dict(name="unipc_bh2_cosine100_n10", sampler="unipc", cls="UniPCMultistepScheduler",
         solver_order=2, T=100, schedule="cosine", steps=10),
    dict(name="unipc_bh2_linear1000_n20", sampler="unipc", cls="UniPCMultistepScheduler",
         solver_order=2, T=1000, schedule="linear", steps=20),
    # The reference's clipping of x0 to [-1, 1] is diffusers' thresholding with max 1.
    dict(name="dpmpp_2m_cosine100_n10_clip", sampler="dpm++2m",
         cls="DPMSolverMultistepScheduler", algorithm_type="dpmsolver++", solver_order=2,
         T=100, schedule="cosine", steps=10, thresholding=True, ratio=0.995, max=1.0),
    # Imagen's dynamic thresholding: s = clamp(quantile(|x0|, ratio), 1, max).
    dict(name="dpmpp_2m_cosine100_n10_dynamic", sampler="dpm++2m",
         cls="DPMSolverMultistepScheduler", algorithm_type="dpmsolver++", solver_order=2,
         T=100, schedule="cosine", steps=10, thresholding=True, ratio=0.9, max=1.5),
    dict(name="unipc_bh2_cosine100_n10_dynamic", sampler="unipc", cls="UniPCMultistepScheduler",
         solver_order=2, T=100, schedule="cosine", steps=10, thresholding=True, ratio=0.9,
         max=1.5),
]


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "crates/iddpm/tests/fixtures"
    os.makedirs(out_dir, exist_ok=True)
    tensors, meta = {}, {"diffusers": diffusers.__version__, "torch": torch.__version__,
                         "mu": MU.tolist(), "sd": SD.tolist(), "shape": list(SHAPE),
                         "cases": []}
    for seed, c in enumerate(CASES):
        case = dict(c, seed=1000 + seed, learned=True)
        case["class"] = case.pop("cls")
        vectors, steps = run(case)
        for k, v in vectors.items():
            tensors[f"{case['name']}.{k}"] = np.ascontiguousarray(v)
        case["timesteps"] = steps
        meta["cases"].append(case)
        print(case["name"], "final |x| max", float(np.abs(vectors["samples"][-1]).max()))
    save_file(tensors, os.path.join(out_dir, "diffusers_samplers.safetensors"))
    with open(os.path.join(out_dir, "diffusers_samplers.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
