//! GroupNorm fused with the ResBlock's FiLM (scale-shift) and SiLU, forward and backward.
//!
//! With x̂ the group-normalised input, z = γ·x̂ + β, u = z·(1 + scale) + shift and
//! y = silu(u) (or u). In NCHW every (image, group) is one contiguous block of
//! `C/G · H·W` values, so the blocks are the parallel tasks. Backward recomputes the
//! statistics from x rather than storing them.

use rayon::prelude::*;

use crate::activation::{sigmoid_into, silu_in_place};
use crate::buffer::zeros;

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

/// Mean and 1/√(var + ε) of one block, as burn's composed GroupNorm computes them (mean,
/// then the mean of squared deviations), accumulated in f64.
fn statistics(block: &[f32]) -> (f32, f32) {
    let n = block.len() as f64;
    let mean = block.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = block
        .iter()
        .map(|&v| {
            let d = v as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
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
    let (cpg, s) = (g.per_group(), g.positions);
    y.par_chunks_mut(g.block())
        .zip(x.par_chunks(g.block()))
        .enumerate()
        .for_each(|(block, (y_blk, x_blk))| {
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
        });
    y
}

/// The fused backward pass from `dy`.
pub fn group_norm_backward(g: &NormGeometry, x: &[f32], p: &NormAffine, dy: &[f32]) -> NormGrads {
    let (cpg, s, c) = (g.per_group(), g.positions, g.channels);
    let mut dx = zeros(x.len());
    // Per (image, channel): Σ dz·x̂, Σ dz, Σ du·z, Σ du.
    let mut sums = vec![[0.0f64; 4]; g.batch * c];
    dx.par_chunks_mut(g.block())
        .zip(sums.par_chunks_mut(cpg))
        .enumerate()
        .for_each(|(block, (dx_blk, sums_blk))| {
            let (b, group) = (block / g.groups, block % g.groups);
            let base = block * g.block();
            let x_blk = &x[base..base + g.block()];
            let dy_blk = &dy[base..base + g.block()];
            let (mean, rstd) = statistics(x_blk);
            // First pass: dx̂ into dx_blk, and the group sums of dx̂ and dx̂·x̂.
            let (mut sum_dxn, mut sum_dxn_xn) = (0.0f64, 0.0f64);
            // σ(u) of one channel, computed in one vectorised pass.
            let (mut u, mut sig) = (vec![0.0f32; s], vec![0.0f32; s]);
            for (ch, acc) in sums_blk.iter_mut().enumerate() {
                let map = ChannelMap::new(p, b, group * cpg + ch, c);
                let range = ch * s..(ch + 1) * s;
                if p.silu {
                    for (u, &v) in u.iter_mut().zip(&x_blk[range.clone()]) {
                        *u = map.u(map.z((v - mean) * rstd));
                    }
                    sigmoid_into(&u, &mut sig);
                }
                for (i, ((d, &v), &grad)) in dx_blk[range.clone()]
                    .iter_mut()
                    .zip(&x_blk[range.clone()])
                    .zip(&dy_blk[range])
                    .enumerate()
                {
                    let xn = (v - mean) * rstd;
                    let z = map.z(xn);
                    // d silu(u)/du = σ(u)·(1 + u·(1 − σ(u))).
                    let du = if p.silu {
                        grad * sig[i] * (1.0 + u[i] * (1.0 - sig[i]))
                    } else {
                        grad
                    };
                    let dz = du * map.film_scale;
                    acc[0] += (dz * xn) as f64;
                    acc[1] += dz as f64;
                    acc[2] += (du * z) as f64;
                    acc[3] += du as f64;
                    let dxn = dz * map.gamma;
                    sum_dxn += dxn as f64;
                    sum_dxn_xn += (dxn * xn) as f64;
                    *d = dxn;
                }
            }
            // Second pass: dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂·x̂)).
            let n = g.block() as f64;
            let (m1, m2) = ((sum_dxn / n) as f32, (sum_dxn_xn / n) as f32);
            for (d, &v) in dx_blk.iter_mut().zip(x_blk) {
                let xn = (v - mean) * rstd;
                *d = rstd * (*d - m1 - xn * m2);
            }
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
