//! GroupNorm fused with the ResBlock's FiLM (scale-shift) and SiLU, forward and backward.
//!
//! With x̂ the group-normalised input, z = γ·x̂ + β, u = z·(1 + scale) + shift and
//! y = silu(u) (or u). In NCHW every (image, group) is one contiguous block of
//! `C/G · H·W` values, so the blocks are the parallel tasks. Backward recomputes the
//! statistics from x rather than storing them.

use rayon::prelude::*;

use crate::activation::{sigmoid_into, silu_in_place};
use crate::buffer::zeros;
use crate::simd::multiversion;

/// GroupNorm's ε (PyTorch's default, the reference's `GroupNorm32`).
pub const EPS: f64 = 1e-5;

/// The sizes of one GroupNorm: `[batch, channels, positions]` in `groups` groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormGeometry {
    /// Batch size.
    pub batch: usize,
    /// Channels (a multiple of `groups`).
    pub channels: usize,
    /// Positions per channel (H·W).
    pub positions: usize,
    /// Number of groups.
    pub groups: usize,
}

impl NormGeometry {
    /// Whether the sizes are ones this module computes.
    pub fn is_supported(&self) -> bool {
        self.groups > 0
            && self.channels.is_multiple_of(self.groups)
            && self.batch * self.channels * self.positions > 0
    }

    fn per_group(&self) -> usize {
        self.channels / self.groups
    }

    fn block(&self) -> usize {
        self.per_group() * self.positions
    }
}

/// The parameters that follow the normalisation.
#[derive(Clone, Copy)]
pub struct NormAffine<'a> {
    /// γ, `[C]`.
    pub gamma: &'a [f32],
    /// β, `[C]`.
    pub beta: &'a [f32],
    /// FiLM `(scale, shift)`, each `[B, C]`; the output is `z·(1 + scale) + shift`.
    pub film: Option<(&'a [f32], &'a [f32])>,
    /// Whether SiLU follows.
    pub silu: bool,
}

/// The gradients of every input of the fused norm.
pub struct NormGrads {
    /// `[B, C, S]`.
    pub x: Vec<f32>,
    /// `[C]`.
    pub gamma: Vec<f32>,
    /// `[C]`.
    pub beta: Vec<f32>,
    /// `[B, C]` each, when FiLM was applied.
    pub film: Option<(Vec<f32>, Vec<f32>)>,
}

/// Independent partial sums per reduction. One running f64 sum waits on the previous add
/// for every value; sixteen lanes let the compiler keep two SIMD registers of sums in flight.
/// The lanes are added in a fixed order, so results do not depend on the CPU.
const LANES: usize = 16;

/// `Σ f(a_i, b_i)` in f64, lane by lane, then over the lanes in order.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let (mut a_chunks, mut b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (a, b) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((lane, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
            *lane += f(a, b);
        }
    }
    let rest = a_chunks.remainder().iter().zip(b_chunks.remainder());
    for (lane, (&a, &b)) in lanes.iter_mut().zip(rest) {
        *lane += f(a, b);
    }
    lanes.iter().sum()
}

/// Mean and 1/√(var + ε) of one block, as burn's composed GroupNorm computes them (mean,
/// then the mean of squared deviations), accumulated in f64.
#[inline(always)]
fn statistics(block: &[f32]) -> (f32, f32) {
    let n = block.len() as f64;
    let mean = lane_sum(block, block, |v, _| v as f64) / n;
    let var = lane_sum(block, block, |v, _| {
        let d = v as f64 - mean;
        d * d
    }) / n;
    (mean as f32, (1.0 / (var + EPS).sqrt()) as f32)
}

/// The per-(image, channel) affine map `x ↦ a·x + c` equal to the whole chain up to the
/// activation, and the factor `1 + scale` that backward needs.
struct ChannelMap {
    gamma: f32,
    beta: f32,
    film_scale: f32,
    film_shift: f32,
}

impl ChannelMap {
    fn new(p: &NormAffine, b: usize, c: usize, channels: usize) -> Self {
        let (film_scale, film_shift) = match p.film {
            Some((scale, shift)) => (1.0 + scale[b * channels + c], shift[b * channels + c]),
            None => (1.0, 0.0),
        };
        Self {
            gamma: p.gamma[c],
            beta: p.beta[c],
            film_scale,
            film_shift,
        }
    }

    /// `z = γ·x̂ + β`.
    #[inline]
    fn z(&self, xn: f32) -> f32 {
        xn * self.gamma + self.beta
    }

    /// `u = z·(1 + scale) + shift`.
    #[inline]
    fn u(&self, z: f32) -> f32 {
        z * self.film_scale + self.film_shift
    }
}

/// The fused forward pass: x `[B, C, S]` → y `[B, C, S]`.
pub fn group_norm_forward(g: &NormGeometry, x: &[f32], p: &NormAffine) -> Vec<f32> {
    let mut y = zeros(x.len());
    y.par_chunks_mut(g.block())
        .zip(x.par_chunks(g.block()))
        .enumerate()
        .for_each(|(block, (y_blk, x_blk))| forward_block(g, p, block, x_blk, y_blk));
    y
}

/// The forward pass of one (image, group) block.
#[inline(always)]
fn forward_block_generic(
    g: &NormGeometry,
    p: &NormAffine,
    block: usize,
    x_blk: &[f32],
    y_blk: &mut [f32],
) {
    let (cpg, s) = (g.per_group(), g.positions);
    let (b, group) = (block / g.groups, block % g.groups);
    let (mean, rstd) = statistics(x_blk);
    for ch in 0..cpg {
        let map = ChannelMap::new(p, b, group * cpg + ch, g.channels);
        let range = ch * s..(ch + 1) * s;
        let out = &mut y_blk[range.clone()];
        for (o, &v) in out.iter_mut().zip(&x_blk[range]) {
            *o = map.u(map.z((v - mean) * rstd));
        }
        if p.silu {
            silu_in_place(out);
        }
    }
}

multiversion!(
    /// [`forward_block_generic`] for the widest SIMD this CPU has.
    forward_block => forward_block_generic(g: &NormGeometry, p: &NormAffine, block: usize, x_blk: &[f32], y_blk: &mut [f32])
);

/// The fused backward pass from `dy`.
pub fn group_norm_backward(g: &NormGeometry, x: &[f32], p: &NormAffine, dy: &[f32]) -> NormGrads {
    let c = g.channels;
    let mut dx = zeros(x.len());
    // Per (image, channel): Σ dz·x̂, Σ dz, Σ du·z, Σ du.
    let mut sums = vec![[0.0f64; 4]; g.batch * c];
    dx.par_chunks_mut(g.block())
        .zip(sums.par_chunks_mut(g.per_group()))
        .enumerate()
        .for_each(|(block, (dx_blk, sums_blk))| {
            let base = block * g.block();
            let x_blk = &x[base..base + g.block()];
            let dy_blk = &dy[base..base + g.block()];
            backward_block(g, p, block, x_blk, dy_blk, dx_blk, sums_blk);
        });
    let over_batch = |k: usize| -> Vec<f32> {
        (0..c)
            .map(|ch| (0..g.batch).map(|b| sums[b * c + ch][k]).sum::<f64>() as f32)
            .collect()
    };
    let film = p.film.map(|_| {
        let pick = |k: usize| sums.iter().map(|v| v[k] as f32).collect::<Vec<f32>>();
        (pick(2), pick(3))
    });
    NormGrads {
        x: dx,
        gamma: over_batch(0),
        beta: over_batch(1),
        film,
    }
}

/// One channel's per-position values in backward, each computed in f32 as the chain rule
/// gives it, before they are summed.
struct ChannelTerms {
    /// x̂.
    xn: Vec<f32>,
    /// z = γ·x̂ + β.
    z: Vec<f32>,
    /// u = z·(1 + scale) + shift, then ∂L/∂u.
    u_then_du: Vec<f32>,
    /// σ(u), then ∂L/∂z.
    sig_then_dz: Vec<f32>,
}

/// The backward pass of one (image, group) block: dx̂ and then dx into `dx_blk`, and the
/// block's channels' sums for γ, β and FiLM into `sums_blk`.
#[inline(always)]
fn backward_block_generic(
    g: &NormGeometry,
    p: &NormAffine,
    block: usize,
    x_blk: &[f32],
    dy_blk: &[f32],
    dx_blk: &mut [f32],
    sums_blk: &mut [[f64; 4]],
) {
    let (cpg, s, c) = (g.per_group(), g.positions, g.channels);
    let (b, group) = (block / g.groups, block % g.groups);
    let (mean, rstd) = statistics(x_blk);
    let mut t = ChannelTerms {
        xn: vec![0.0; s],
        z: vec![0.0; s],
        u_then_du: vec![0.0; s],
        sig_then_dz: vec![0.0; s],
    };
    // First pass: dx̂ into dx_blk, and the group sums of dx̂ and dx̂·x̂.
    let (mut sum_dxn, mut sum_dxn_xn) = (0.0f64, 0.0f64);
    for (ch, acc) in sums_blk.iter_mut().enumerate() {
        let map = ChannelMap::new(p, b, group * cpg + ch, c);
        let range = ch * s..(ch + 1) * s;
        for (((xn, z), u), &v) in
            t.xn.iter_mut()
                .zip(&mut t.z)
                .zip(&mut t.u_then_du)
                .zip(&x_blk[range.clone()])
        {
            *xn = (v - mean) * rstd;
            *z = map.z(*xn);
            *u = map.u(*z);
        }
        if p.silu {
            sigmoid_into(&t.u_then_du, &mut t.sig_then_dz);
        }
        let dxn_out = &mut dx_blk[range.clone()];
        for (((du, dz), &grad), d) in t
            .u_then_du
            .iter_mut()
            .zip(&mut t.sig_then_dz)
            .zip(&dy_blk[range])
            .zip(dxn_out.iter_mut())
        {
            // d silu(u)/du = σ(u)·(1 + u·(1 − σ(u))).
            let grad_u = if p.silu {
                grad * *dz * (1.0 + *du * (1.0 - *dz))
            } else {
                grad
            };
            *du = grad_u;
            *dz = grad_u * map.film_scale;
            *d = *dz * map.gamma;
        }
        let (du, dz, dxn) = (&t.u_then_du, &t.sig_then_dz, &dx_blk[ch * s..(ch + 1) * s]);
        acc[0] = lane_sum(dz, &t.xn, |dz, xn| (dz * xn) as f64);
        acc[1] = lane_sum(dz, dz, |dz, _| dz as f64);
        acc[2] = lane_sum(du, &t.z, |du, z| (du * z) as f64);
        acc[3] = lane_sum(du, du, |du, _| du as f64);
        sum_dxn += lane_sum(dxn, dxn, |d, _| d as f64);
        sum_dxn_xn += lane_sum(dxn, &t.xn, |d, xn| (d * xn) as f64);
    }
    // Second pass: dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂·x̂)).
    let n = g.block() as f64;
    let (m1, m2) = ((sum_dxn / n) as f32, (sum_dxn_xn / n) as f32);
    for (d, &v) in dx_blk.iter_mut().zip(x_blk) {
        let xn = (v - mean) * rstd;
        *d = rstd * (*d - m1 - xn * m2);
    }
}

multiversion!(
    /// [`backward_block_generic`] for the widest SIMD this CPU has.
    backward_block => backward_block_generic(g: &NormGeometry, p: &NormAffine, block: usize, x_blk: &[f32], dy_blk: &[f32], dx_blk: &mut [f32], sums_blk: &mut [[f64; 4]])
);
