//! Vectorised SiLU and sigmoid for the fused kernels.
//!
//! `exp` is evaluated as `2ⁿ · p(r)` (Cephes' single-precision polynomial after reducing by
//! ln 2, relative error ≈ 1e-7), written without branches so that the compiler turns each loop
//! into SIMD code. The loops are compiled for AVX-512, AVX2+FMA and the baseline, and the
//! widest the CPU has is chosen at run time; all three do the same f32 operations (Rust never
//! contracts a·b + c into an FMA on its own), so results do not depend on the machine.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n · ln 2` is subtracted without rounding error.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` for any finite x (clamped to [−87, 88], which the callers' 1/(1 + e^x) tolerates).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    y * two_to_the(n)
}

/// `2ⁿ` for an integer-valued `n` in [−126, 127], built from its exponent bits.
///
/// Adding 1.5·2²³ puts the integer `n + 127` in the low mantissa bits exactly, so the bits are
/// read off with integer arithmetic. `(n as i32)` would give the same value, but Rust's
/// saturating float-to-int cast is compiled lane by lane, which made the SiLU loop scalar.
#[inline(always)]
fn two_to_the(n: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2²³: its ulp is 1
    let biased = (n + (127.0 + SHIFTER))
        .to_bits()
        .wrapping_sub(SHIFTER.to_bits());
    f32::from_bits(biased << 23)
}

/// The logistic function `1 / (1 + e^(−v))`.
#[inline(always)]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

#[inline(always)]
fn silu_loop(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x *= sigmoid(*x);
    }
}

#[inline(always)]
fn sigmoid_loop(u: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(u) {
        *o = sigmoid(x);
    }
}

/// One row of a softmax in place: `e^(v − max) / Σ e^(v − max)`.
#[inline(always)]
fn softmax_loop(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

use crate::simd::multiversion;

multiversion!(
    /// In place: `v ← v · σ(v)`.
    pub silu_in_place => silu_loop(v: &mut [f32])
);

multiversion!(
    /// A softmax of `row` in place.
    pub softmax_in_place => softmax_loop(row: &mut [f32])
);

multiversion!(
    /// `out ← σ(u)`.
    pub sigmoid_into => sigmoid_loop(u: &[f32], out: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polynomial_exp_is_within_two_ulps_of_libm_where_sigmoid_needs_it() {
        let mut worst = 0.0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-3;
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst:e}");
    }

    #[test]
    fn powers_of_two_come_out_exact_over_the_range_exp_uses() {
        for n in -126..=127 {
            assert_eq!(two_to_the(n as f32), 2f32.powi(n), "2^{n}");
        }
    }

    #[test]
    fn simd_and_scalar_silu_agree_exactly() {
        let v: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let mut simd = v.clone();
        silu_in_place(&mut simd);
        let scalar: Vec<f32> = v.iter().map(|&x| x * sigmoid(x)).collect();
        assert_eq!(simd, scalar);
        let mut sig = vec![0.0; v.len()];
        sigmoid_into(&v, &mut sig);
        assert!(sig.iter().zip(&v).all(|(s, &x)| *s == sigmoid(x)));
    }
}
