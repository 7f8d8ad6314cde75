//! Dropout masks from a counter-based generator, made on all cores.
//!
//! Element `i` of the mask keyed by `key` is a pure function of `(key, i)`: a splitmix64 hash,
//! whose top 24 bits give a uniform number in [0, 1). The mask is then the same whatever the
//! number of threads or the order they run in, and a resumed run replays it exactly.

use rayon::prelude::*;

/// Values per task: enough to amortise the fork-join.
const CHUNK: usize = 1 << 15;

/// splitmix64's finaliser (Steele, Lea & Flood 2014): a bijective mix of 64 bits.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` mask values for dropping with probability `p`: `1/(1 − p)` where kept, `0` where
/// dropped, so that `x · mask` is inverted dropout in one product.
pub fn mask(key: u64, n: usize, p: f64) -> Vec<f32> {
    let scale = (1.0 / (1.0 - p)) as f32;
    // Kept iff u ≥ p with u = h / 2²⁴, i.e. h ≥ ⌈p · 2²⁴⌉.
    let threshold = (p * (1u64 << 24) as f64).ceil() as u64;
    let base = mix(key);
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first = (c * CHUNK) as u64;
            for (i, v) in chunk.iter_mut().enumerate() {
                let h = mix(base ^ (first + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40;
                *v = if h >= threshold { scale } else { 0.0 };
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_keeps_the_right_share_and_scales_it() {
        let p = 0.3;
        let m = mask(7, 1 << 20, p);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        // Binomial s.d. √(p(1−p)/n) ≈ 4.5e-4: six of them.
        assert!((kept - (1.0 - p)).abs() < 3e-3, "kept {kept}");
        assert!(m.iter().all(|&v| v == 0.0 || v == (1.0 / (1.0 - p)) as f32));
    }

    #[test]
    fn the_mask_depends_on_the_key_and_nothing_else() {
        assert_eq!(mask(3, 100_000, 0.5), mask(3, 100_000, 0.5));
        assert_ne!(mask(3, 100_000, 0.5), mask(4, 100_000, 0.5));
        // A prefix of a longer mask is the shorter mask: no dependence on the chunking.
        assert_eq!(mask(3, 100_000, 0.5)[..40_000], mask(3, 40_000, 0.5)[..]);
    }
}
