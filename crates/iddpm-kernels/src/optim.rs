//! AdamW and the EMAs as one pass over each parameter tensor, with exactly the f32 operations
//! (and their order) of the tensor-op formulation, so results are bit-identical to it.

use rayon::prelude::*;

/// The per-step constants of one AdamW update, rounded to f32 as the tensor ops use them.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// `1 − lr · weight_decay`.
    pub decay: f32,
    /// `1 − β₁`.
    pub one_minus_beta1: f32,
    /// `β₂`.
    pub beta2: f32,
    /// `1 − β₂`.
    pub one_minus_beta2: f32,
    /// `√(1 − β₂ᵗ)`.
    pub sqrt_bias_correction2: f32,
    /// `ε`.
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
}

const CHUNK: usize = 1 << 14;

/// In place: `θ ← θ·decay − step_size · m / (√v / √bc₂ + ε)` with
/// `m ← m + (g − m)(1 − β₁)` and `v ← v·β₂ + g²(1 − β₂)`.
pub fn adamw_update(s: &AdamWStep, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    assert!(grad.len() == param.len() && m.len() == param.len() && v.len() == param.len());
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let (gi, pi) = (g[i], p[i] * s.decay);
                let mi = m[i] + (gi - m[i]) * s.one_minus_beta1;
                let vi = v[i] * s.beta2 + (gi * gi) * s.one_minus_beta2;
                let denom = vi.sqrt() / s.sqrt_bias_correction2 + s.eps;
                p[i] = pi - (mi / denom) * s.step_size;
                m[i] = mi;
                v[i] = vi;
            }
        });
}

/// The two f32 factors of an EMA update at `rate`, rounded as PyTorch rounds the reference's
/// `ema.mul_(rate).add_(θ, alpha=1 − rate)`: `1 − rate` is taken in f64, then each factor is
/// rounded to f32. (`1 − (rate as f32)` differs: 1.66e-5 relative at rate 0.9999.)
pub fn ema_factors(rate: f64) -> (f32, f32) {
    (rate as f32, (1.0 - rate) as f32)
}

/// In place: `ema ← ema·rate + θ·(1 − rate)`, with the factors of [`ema_factors`].
pub fn ema_update(rate: f64, ema: &mut [f32], param: &[f32]) {
    assert_eq!(ema.len(), param.len());
    let (rate, keep) = ema_factors(rate);
    ema.par_chunks_mut(CHUNK)
        .zip(param.par_chunks(CHUNK))
        .for_each(|(e, p)| {
            e.iter_mut()
                .zip(p)
                .for_each(|(e, &p)| *e = *e * rate + p * keep)
        });
}
