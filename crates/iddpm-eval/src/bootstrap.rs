//! How far an FID would move if the same model were sampled again: the spread of FIDs over
//! bootstrap resamples of the sample features, the reference statistics held fixed.
//!
//! A resample draws n of the n feature rows with replacement. Recomputing a d × d covariance
//! and its eigendecomposition per resample would cost minutes each at d = 2048, so the trace
//! term is taken through the n × n Gram matrix instead: with Y the resample's centred rows,
//! Σ₂ = YᵀY / (n − 1), and the nonzero eigenvalues of Σ₁^½ Σ₂ Σ₁^½ are those of
//! Y Σ₁ Yᵀ / (n − 1). With A = X Σ₁ Xᵀ formed once for the n original rows, Y Σ₁ Yᵀ is A's
//! rows and columns picked by the resample, then double-centred. Each resample then costs one
//! n × n symmetric eigenvalue problem.

use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::frechet::sum_of_roots;
use crate::stats::FeatureStats;

/// Sample features prepared for repeated FIDs of row subsets against one reference.
pub struct ResampledFid<'a> {
    reference: &'a FeatureStats,
    /// The sample rows minus their mean, `[n, d]` (centring first keeps the Gram matrix free
    /// of the large common offset, so the double centring below cancels nothing big).
    rows: DMatrix<f64>,
    /// The mean that was subtracted, `[d]`.
    offset: DVector<f64>,
    /// `rows Σ₁ rowsᵀ`, `[n, n]`.
    gram: DMatrix<f64>,
}

impl<'a> ResampledFid<'a> {
    /// Prepares `n` rows of `d` features (row-major) against `reference`. Returns None when the
    /// shapes disagree or there are fewer than two rows.
    pub fn new(reference: &'a FeatureStats, features: &[f64], n: usize, d: usize) -> Option<Self> {
        if n < 2 || features.len() != n * d || reference.mu.len() != d {
            return None;
        }
        let x = DMatrix::from_row_slice(n, d, features);
        let offset = DVector::from_iterator(d, (0..d).map(|j| x.column(j).mean()));
        let mut rows = x;
        for mut row in rows.row_iter_mut() {
            row -= offset.transpose();
        }
        let gram = &rows * (&reference.sigma * rows.transpose()); // [n, d] [d, n] -> [n, n]
        Some(Self {
            reference,
            rows,
            offset,
            gram,
        })
    }

    /// The FID of the rows `picks` (indices into the original rows, repeats allowed).
    pub fn fid_of(&self, picks: &[usize]) -> f64 {
        let m = picks.len();
        let d = self.rows.ncols();
        // Mean and per-feature variance of the picked rows (on the centred rows).
        let mut mean = DVector::<f64>::zeros(d);
        for &i in picks {
            mean += self.rows.row(i).transpose();
        }
        mean /= m as f64;
        let mut sum_sq = 0.0;
        for &i in picks {
            sum_sq += (self.rows.row(i).transpose() - &mean).norm_squared();
        }
        let trace_sigma2 = sum_sq / (m as f64 - 1.0);
        let diff = &self.reference.mu - (&mean + &self.offset);
        // The picked Gram block, double-centred: (C B C) with C = I − 11ᵀ/m.
        let mut block = DMatrix::from_fn(m, m, |r, c| self.gram[(picks[r], picks[c])]);
        let row_means: Vec<f64> = (0..m).map(|r| block.row(r).mean()).collect();
        let grand = row_means.iter().sum::<f64>() / m as f64;
        for r in 0..m {
            for c in 0..m {
                block[(r, c)] += grand - row_means[r] - row_means[c];
            }
        }
        block /= m as f64 - 1.0;
        // Centring leaves at least one zero eigenvalue; its round-off must not add a root.
        let trace_sqrt = sum_of_roots(&block.symmetric_eigenvalues());
        diff.norm_squared() + self.reference.sigma.trace() + trace_sigma2 - 2.0 * trace_sqrt
    }

    /// The FID of one bootstrap resample (n rows drawn with replacement), seeded.
    pub fn resample(&self, seed: u64) -> f64 {
        let n = self.rows.nrows();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let picks: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        self.fid_of(&picks)
    }

    /// FIDs of `count` resamples, seeded `seed`, `seed + 1`, …
    pub fn bootstrap(&self, count: usize, seed: u64) -> Vec<f64> {
        self.bootstrap_with_progress(count, seed, &mut |_| {})
    }

    /// [`Self::bootstrap`], reporting the resamples done after each round. The resamples of a
    /// round run on all cores (each is one n × n eigenvalue problem, which runs on one), as
    /// many at a time as fit in [`ROUND_MEMORY`]; each is seeded by its own index, so the
    /// values do not depend on the number of cores.
    pub fn bootstrap_with_progress(
        &self,
        count: usize,
        seed: u64,
        progress: &mut dyn FnMut(usize),
    ) -> Vec<f64> {
        let width = round_width(self.rows.nrows(), rayon::current_num_threads());
        let mut fids = Vec::with_capacity(count);
        while fids.len() < count {
            let first = fids.len();
            let round = first..(first + width).min(count);
            let mut done: Vec<f64> = round
                .into_par_iter()
                .map(|i| self.resample(seed.wrapping_add(i as u64)))
                .collect();
            fids.append(&mut done);
            progress(fids.len());
        }
        fids
    }
}

/// Memory that the Gram blocks of one round of resamples may take together; a round has at
/// least one resample, however large.
pub const ROUND_MEMORY: usize = 1 << 30;

/// Resamples of `n` rows per round on `threads` cores: as many n × n f64 Gram blocks as fit
/// in [`ROUND_MEMORY`], at least one.
fn round_width(n: usize, threads: usize) -> usize {
    let per_resample = n * n * std::mem::size_of::<f64>();
    (ROUND_MEMORY / per_resample.max(1)).clamp(1, threads.max(1))
}

/// The sample standard deviation of `values` (ddof = 1); 0 for fewer than two.
pub fn standard_deviation(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frechet::fid;

    /// Deterministic pseudo-random features with a common offset, like Inception's
    /// non-negative pool features.
    fn features(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * d)
            .map(|i| 3.0 + (i % d) as f64 * 0.1 + rng.random_range(-1.0..1.0))
            .collect()
    }

    fn reference(d: usize) -> FeatureStats {
        FeatureStats::from_features(&features(40, d, 7), 40, d).unwrap()
    }

    #[test]
    fn all_rows_once_give_the_plain_fid_with_more_rows_than_features() {
        let (n, d) = (30, 6);
        let r = reference(d);
        let x = features(n, d, 1);
        let plain = fid(&r, &FeatureStats::from_features(&x, n, d).unwrap());
        let prepared = ResampledFid::new(&r, &x, n, d).unwrap();
        let all: Vec<usize> = (0..n).collect();
        assert!((prepared.fid_of(&all) - plain).abs() < 1e-9 * plain.abs().max(1.0));
    }

    #[test]
    fn all_rows_once_give_the_plain_fid_with_fewer_rows_than_features() {
        // n < d: the sample covariance is rank-deficient, as for 2,000 samples in 2,048 dims.
        let (n, d) = (5, 12);
        let r = reference(d);
        let x = features(n, d, 2);
        let plain = fid(&r, &FeatureStats::from_features(&x, n, d).unwrap());
        let prepared = ResampledFid::new(&r, &x, n, d).unwrap();
        let all: Vec<usize> = (0..n).collect();
        assert!((prepared.fid_of(&all) - plain).abs() < 1e-8 * plain.abs().max(1.0));
    }

    #[test]
    fn a_resample_with_repeats_gives_the_fid_of_the_repeated_rows() {
        let (n, d) = (8, 5);
        let r = reference(d);
        let x = features(n, d, 3);
        let picks = [0, 0, 3, 5, 5, 5, 7, 2];
        let repeated: Vec<f64> = picks
            .iter()
            .flat_map(|&i| x[i * d..(i + 1) * d].to_vec())
            .collect();
        let plain = fid(&r, &FeatureStats::from_features(&repeated, 8, d).unwrap());
        let prepared = ResampledFid::new(&r, &x, n, d).unwrap();
        assert!((prepared.fid_of(&picks) - plain).abs() < 1e-9 * plain.abs().max(1.0));
    }

    #[test]
    fn the_bootstrap_spread_shrinks_with_more_samples() {
        let d = 4;
        let r = reference(d);
        let spread = |n: usize| {
            let prepared = ResampledFid::new(&r, &features(n, d, 4), n, d).unwrap();
            standard_deviation(&prepared.bootstrap(40, 9))
        };
        let (few, many) = (spread(20), spread(320));
        assert!(few > 0.0 && many > 0.0);
        // The spread of a mean-like statistic falls as 1/sqrt(n): 4x here; allow for noise.
        assert!(
            few > 2.0 * many,
            "spread with 20 rows {few}, with 320 rows {many}"
        );
    }

    #[test]
    fn the_bootstrap_on_all_cores_equals_the_resamples_one_by_one() {
        let (n, d) = (24, 5);
        let r = reference(d);
        let prepared = ResampledFid::new(&r, &features(n, d, 5), n, d).unwrap();
        let one_by_one: Vec<f64> = (0..7).map(|i| prepared.resample(11 + i)).collect();
        let mut reported = Vec::new();
        let fids = prepared.bootstrap_with_progress(7, 11, &mut |done| reported.push(done));
        assert_eq!(fids, one_by_one);
        assert_eq!(reported.last(), Some(&7));
        assert!(
            reported.windows(2).all(|w| w[0] < w[1]),
            "progress {reported:?}"
        );
    }

    #[test]
    fn a_round_holds_as_many_gram_blocks_as_fit_in_its_memory() {
        assert_eq!(round_width(2_000, 2), 2); // 32 MB each
        assert_eq!(round_width(2_000, 64), 33); // 1 GiB / 32 MB
        assert_eq!(round_width(20_000, 8), 1); // 3.2 GB: one at a time
        assert_eq!(round_width(10, 0), 1);
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let r = reference(4);
        assert!(ResampledFid::new(&r, &features(10, 5, 1), 10, 5).is_none());
        assert!(ResampledFid::new(&r, &features(1, 4, 1), 1, 4).is_none());
        assert!(ResampledFid::new(&r, &[0.0; 7], 2, 4).is_none());
    }

    #[test]
    fn standard_deviation_is_the_sample_one() {
        assert_eq!(standard_deviation(&[1.0]), 0.0);
        assert!((standard_deviation(&[1.0, 2.0, 3.0, 4.0]) - 1.2909944487358056).abs() < 1e-12);
    }
}
