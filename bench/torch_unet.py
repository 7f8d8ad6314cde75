"""The Improved-DDPM UNet in PyTorch, written for side-by-side benchmarks with iddpm.

Usage:
  python torch_unet.py check REFERENCE_DIR      # equals the reference on model A
  python torch_unet.py bench CONFIG BATCH REPS  # prints "forward_ms train_ms peak_mib"
  python torch_unet.py flops CONFIG BATCH       # prints "forward_flops train_flops sgemm_gflops"
  python torch_unet.py sample CONFIG BATCH REPS # prints "ddim_step_ms 0 peak_mib"

The architecture follows the description in shared/reference/README.md (head-major QKV,
scale-shift norm, zero-padded skip concatenation); state-dict names match the reference's.
"""
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm(c):
    return nn.GroupNorm(32, c)


class Res(nn.Module):
    def __init__(self, cin, emb, cout, dropout, ssn):
        super().__init__()
        self.in_layers = nn.Sequential(norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout if ssn else cout))
        self.out_layers = nn.Sequential(norm(cout), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.ssn = ssn

    def forward(self, x, emb):
        h = self.in_layers(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.ssn:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class Attn(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.norm = norm(c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = nn.Conv1d(c, c, 1)
        self.heads = heads

    def forward(self, x):
        b, c, hh, ww = x.shape
        flat = x.reshape(b, c, hh * ww)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.heads, -1, hh * ww)
        d = c // self.heads
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        s = d ** -0.25
        w = torch.softmax((q * s).transpose(1, 2) @ (k * s), dim=-1)
        out = (v @ w.transpose(1, 2)).reshape(b, c, hh * ww)
        return (flat + self.proj_out(out)).reshape(b, c, hh, ww)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Step(nn.ModuleList):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, Res) else layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, mc, nrb, attn_ds, mult, heads, out_ch, dropout, ssn=True):
        super().__init__()
        temb = 4 * mc
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.input_blocks = nn.ModuleList([Step([nn.Conv2d(3, mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [Res(ch, temb, m * mc, dropout, ssn)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(Attn(ch, heads))
                self.input_blocks.append(Step(layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(Step([Down(ch)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Step([Res(ch, temb, ch, dropout, ssn), Attn(ch, heads), Res(ch, temb, ch, dropout, ssn)])
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb + 1):
                layers = [Res(ch + chans.pop(), temb, m * mc, dropout, ssn)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(Attn(ch, heads))
                if level and i == nrb:
                    layers.append(Up(ch))
                    ds //= 2
                self.output_blocks.append(Step(layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(mc, out_ch, 3, padding=1))

    def forward(self, x, t):
        half = self.mc // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=1))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


CONFIGS = {
    # image 32: channel_mult (1,2,2,2); attention at 16 and 8 -> downsample rates 2 and 4
    "demo": dict(mc=32, nrb=1, attn_ds={2, 4}, mult=(1, 2, 2, 2), heads=2, out_ch=6, dropout=0.0),
    "cifar10": dict(mc=128, nrb=3, attn_ds={2, 4}, mult=(1, 2, 2, 2), heads=4, out_ch=6, dropout=0.3),
}


def check(reference_dir):
    from safetensors.torch import load_file
    net = UNet(**CONFIGS["demo"])
    state = torch.load(f"{reference_dir}/model_a.pt", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    f = load_file(f"{reference_dir}/model_a_forward.safetensors")
    with torch.no_grad():
        out = net(f["forward.x"], f["forward.t_model"])
    diff = (out - f["forward.out"]).abs().max().item()
    print(f"model A through this PyTorch UNet: max abs difference {diff:.3e}")
    assert diff < 1e-4, diff


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def bench(name, batch, reps):
    torch.manual_seed(0)
    net = UNet(**CONFIGS[name])
    x = torch.randn(batch, 3, 32, 32)
    t = torch.tensor([(i * 997) % 1000 for i in range(batch)], dtype=torch.float32)
    net.eval()
    forward = []
    with torch.no_grad():
        for _ in range(reps):
            start = time.perf_counter()
            net(x, t)
            forward.append((time.perf_counter() - start) * 1e3)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
    ema = [p.detach().clone() for p in net.parameters()]
    data = torch.randn(64, 3, 32, 32).clamp(-1, 1)
    train = []
    for _ in range(reps):
        # A full step as the reference's TrainLoop: batch, forward, backward, AdamW, EMA.
        start = time.perf_counter()
        xb = data[torch.randint(0, 64, (batch,))]
        tb = torch.randint(0, 1000, (batch,)).float()
        eps = torch.randn_like(xb)
        out = net(xb, tb)
        loss = ((out[:, :3] - eps) ** 2).mean() + 1e-3 * (out[:, 3:] ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.mul_(0.9999).add_(p, alpha=1 - 0.9999)
        train.append((time.perf_counter() - start) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    skip = lambda v: v[1:] if len(v) > 1 else v
    print(f"{median(skip(forward))} {median(skip(train))} {peak}")


def cosine_alphas_cumprod(steps):
    """The cosine schedule's ᾱ_t (betas clipped at 0.999), as the reference builds it."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)]
    out, acc = [], 1.0
    for b in betas:
        acc *= 1 - b
        out.append(acc)
    return out


def sample(name, batch, reps):
    """Times whole DDIM steps (η = 0) of a 50-step respacing as the reference takes them:
    the network, p_mean_variance with the learned range variance and clipped x̂₀, then the DDIM
    update."""
    torch.manual_seed(0)
    net = UNet(**CONFIGS[name]).eval()
    base = cosine_alphas_cumprod(1000)
    keep = list(range(0, 1000, 20))
    ac = torch.tensor([base[k] for k in keep], dtype=torch.float64)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    betas = 1 - ac / ac_prev
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    c1 = betas * ac_prev.sqrt() / (1 - ac)
    c2 = (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)
    f32 = lambda v, t: v[t].float()[:, None, None, None]
    x = torch.randn(batch, 3, 32, 32)
    times = []
    with torch.no_grad():
        for i, step in enumerate(reversed(range(len(keep)))):
            if i > reps:
                break
            start = time.perf_counter()
            t = torch.full((batch,), step, dtype=torch.long)
            # The network sees the original timestep (the respacing's timestep_map).
            out = net(x, torch.tensor(keep)[t].float())
            eps, v = out[:, :3], out[:, 3:]
            min_log, max_log = f32(post_log_var, t), f32(torch.log(betas), t)
            frac = (v + 1) / 2
            _log_var = frac * max_log + (1 - frac) * min_log
            x0 = (f32(1 / ac.sqrt(), t) * x - f32((1 / ac - 1).sqrt(), t) * eps).clamp(-1, 1)
            _mean = f32(c1, t) * x0 + f32(c2, t) * x
            eps = (f32(1 / ac.sqrt(), t) * x - x0) / f32((1 / ac - 1).sqrt(), t)
            x = x0 * f32(ac_prev.sqrt(), t) + f32((1 - ac_prev).sqrt(), t) * eps
            if i > 0:
                times.append((time.perf_counter() - start) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{median(times)} 0 {peak}")


def flops(name, batch):
    """FLOPs of one forward pass and one forward+backward, counted by PyTorch, and the rate of
    a 1024³ sgemm on the same threads."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = UNet(**CONFIGS[name])
    x = torch.randn(batch, 3, 32, 32)
    t = torch.tensor([(i * 997) % 1000 for i in range(batch)], dtype=torch.float32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        (net(x, t) ** 2).mean().backward()
    train = counter.get_total_flops()
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    print(f"{forward} {train} {2 * 1024**3 / median(times) / 1e9}")


if __name__ == "__main__":
    torch.set_num_threads(int(__import__("os").environ.get("TORCH_THREADS", "2")))
    if sys.argv[1] == "check":
        check(sys.argv[2])
    elif sys.argv[1] == "flops":
        flops(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "sample":
        sample(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        bench(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
