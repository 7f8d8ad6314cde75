//! Feature statistics: mean and covariance (ddof = 1), as `np.mean` / `np.cov(rowvar=False)`.

use nalgebra::{DMatrix, DVector};

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Mean, `[d]`.
    pub mu: DVector<f64>,
    /// Covariance, `[d, d]`.
    pub sigma: DMatrix<f64>,
}

impl FeatureStats {
    /// Statistics of `n` rows of `d` features (row-major). Needs at least two rows.
    pub fn from_features(features: &[f64], n: usize, d: usize) -> Option<Self> {
        if n < 2 || features.len() != n * d {
            return None;
        }
        let x = DMatrix::from_row_slice(n, d, features);
        let mu = DVector::from_iterator(d, (0..d).map(|j| x.column(j).sum() / n as f64));
        let mut centered = x;
        for mut row in centered.row_iter_mut() {
            for j in 0..d {
                row[j] -= mu[j];
            }
        }
        let sigma = centered.transpose() * &centered / (n as f64 - 1.0);
        Some(Self { mu, sigma })
    }
}
