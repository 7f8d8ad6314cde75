#!/usr/bin/env python3
"""The scaling model of docs/distributed.md: per training step of each released configuration,
the gradient bytes one rank moves, the compute time, and the expected data-parallel efficiency at
8, 64 and 512 GPUs over NVLink and over 100 Gb/s networks. Standard library only.

FLOPs are counted from the architecture (3x3 and 1x1 convolutions, attention's matmuls; norms and
activations are ignored), a training step being 3x a forward pass. Assumptions, stated once:
  ACHIEVED   sustained mixed-precision throughput of one GPU (H100-class: ~20% of 989 TFLOP/s)
  NVLINK     all-reduce bus bandwidth inside an 8-GPU NVSwitch node
  NET        one 100 Gb/s NIC per 8-GPU node; inter-node traffic shares it
  PCIE       host staging (device -> host -> device) as iddpm does it today
Efficiency = compute / (compute + communication): no overlap of communication with the backward
pass (iddpm reduces once per step, after it; NCCL with bucketed overlap would do better)."""

ACHIEVED = 200e12
NVLINK = 350e9
NET = 12.5e9 * 0.9
PCIE = 25e9
GPUS_PER_NODE = 8

# name: (parameters, image size, base channels, channel_mult, res blocks, attention resolutions,
#        images per GPU per step)
CONFIGS = {
    "cifar10_uncond_50M": (52_546_438, 32, 128, (1, 2, 2, 2), 3, (16, 8), 32),
    "imagenet64_uncond_100M": (121_063_942, 64, 128, (1, 2, 3, 4), 3, (16, 8), 16),
    "imagenet64_cond_270M": (273_049_350, 64, 192, (1, 2, 3, 4), 3, (16, 8), 16),
    "upsample_cond (64->256)": (279_792_390, 256, 192, (1, 1, 2, 2, 4, 4), 2, (16, 8), 2),
    "lsun_uncond_100M (256)": (113_676_678, 256, 128, (1, 1, 2, 2, 4, 4), 2, (16,), 4),
}


def conv(cin, cout, k, hw):
    return 2 * cin * cout * k * k * hw


def resblock(cin, cout, hw):
    skip = conv(cin, cout, 1, hw) if cin != cout else 0
    return conv(cin, cout, 3, hw) + conv(cout, cout, 3, hw) + skip


def attention(c, hw):
    return conv(c, 3 * c, 1, hw) + conv(c, c, 1, hw) + 2 * 2 * hw * hw * c


def forward_flops(size, ch, mult, blocks, attn):
    """One image through the UNet: input blocks, middle, output blocks (with skips)."""
    flops, chans, c = conv(3, ch, 3, size * size), [ch], ch
    res = size
    for level, m in enumerate(mult):
        for _ in range(blocks):
            flops += resblock(c, m * ch, res * res)
            c = m * ch
            if res in attn:
                flops += attention(c, res * res)
            chans.append(c)
        if level != len(mult) - 1:
            flops += conv(c, c, 3, (res // 2) ** 2)
            res //= 2
            chans.append(c)
    flops += 2 * resblock(c, c, res * res) + attention(c, res * res)
    for level, m in reversed(list(enumerate(mult))):
        for i in range(blocks + 1):
            skip = chans.pop()
            flops += resblock(c + skip, m * ch, res * res)
            c = m * ch
            if res in attn:
                flops += attention(c, res * res)
            if level and i == blocks:
                res *= 2
                flops += conv(c, c, 3, res * res)
    return flops + conv(ch, 6, 3, size * size)


def allreduce_seconds(nbytes, gpus):
    """Ring all-reduce: 2(N-1)/N of the bytes through the slowest link of the ring."""
    if gpus == 1:
        return 0.0
    moved = 2 * (gpus - 1) / gpus * nbytes
    if gpus <= GPUS_PER_NODE:
        return moved / NVLINK
    # Hierarchical: reduce-scatter inside nodes, the node's share across the network.
    nodes = gpus // GPUS_PER_NODE
    inter = 2 * (nodes - 1) / nodes * nbytes
    return moved / NVLINK + inter / NET


def main():
    print("| configuration | parameters | gradient MB | GFLOP/image (fwd) | images/GPU | compute ms/step "
          "| 8 GPUs NVLink | 64 GPUs | 512 GPUs | host staging ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (params, size, ch, mult, blocks, attn, per_gpu) in CONFIGS.items():
        fwd = forward_flops(size, ch, mult, blocks, attn)
        compute = 3 * fwd * per_gpu / ACHIEVED
        nbytes = 4 * params
        eff = []
        for gpus in (8, 64, 512):
            comm = allreduce_seconds(nbytes, gpus)
            eff.append(f"{100 * compute / (compute + comm):.0f}%")
        staging = 2 * nbytes / PCIE
        print(f"| {name} | {params / 1e6:.0f}M | {nbytes / 1e6:.0f} | {fwd / 1e9:.1f} | {per_gpu} "
              f"| {compute * 1e3:.0f} | {eff[0]} | {eff[1]} | {eff[2]} | {staging * 1e3:.0f} |")


if __name__ == "__main__":
    main()
