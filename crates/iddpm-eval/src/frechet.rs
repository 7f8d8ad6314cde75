//! The Fréchet distance between two Gaussians fitted to features (FID).
//!
//! d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½. The trace of the matrix square root is
//! computed from the symmetric matrix Σ₁^½ Σ₂ Σ₁^½, which has the same eigenvalues as Σ₁Σ₂:
//! two symmetric eigendecompositions, stable for the nearly singular covariances of few
//! samples (round-off eigenvalues are treated as zero).

use nalgebra::{DMatrix, DVector};

use crate::stats::FeatureStats;

/// Eigenvalues below this (relative to the largest) are round-off of a rank-deficient matrix
/// (e.g. a covariance of fewer samples than dimensions): their square roots would add a
/// spurious positive bias, so they count as zero.
pub(crate) fn noise_floor(eigenvalues: &DVector<f64>) -> f64 {
    let max = eigenvalues.iter().cloned().fold(0.0, f64::max);
    max * eigenvalues.len() as f64 * f64::EPSILON * 10.0
}

fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let floor = noise_floor(&eig.eigenvalues);
    let roots = eig
        .eigenvalues
        .map(|l| if l > floor { l.sqrt() } else { 0.0 });
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// tr (Σ₁Σ₂)^½ for symmetric positive semi-definite Σ₁, Σ₂.
pub fn trace_sqrt_product(sigma1: &DMatrix<f64>, sigma2: &DMatrix<f64>) -> f64 {
    let s1 = sqrt_psd(sigma1);
    let m = &s1 * sigma2 * &s1;
    let m = (&m + m.transpose()) * 0.5;
    sum_of_roots(&m.symmetric_eigenvalues())
}

/// Σ √λ over the eigenvalues above the noise floor: the trace of a PSD matrix's square root.
pub(crate) fn sum_of_roots(eigenvalues: &DVector<f64>) -> f64 {
    let floor = noise_floor(eigenvalues);
    eigenvalues
        .iter()
        .filter(|&&l| l > floor)
        .map(|l| l.sqrt())
        .sum()
}

/// The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).
pub fn frechet_distance(
    mu1: &DVector<f64>,
    sigma1: &DMatrix<f64>,
    mu2: &DVector<f64>,
    sigma2: &DMatrix<f64>,
) -> f64 {
    let diff = mu1 - mu2;
    diff.dot(&diff) + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt_product(sigma1, sigma2)
}

/// The Fréchet distance between two feature sets' statistics.
pub fn fid(a: &FeatureStats, b: &FeatureStats) -> f64 {
    frechet_distance(&a.mu, &a.sigma, &b.mu, &b.sigma)
}
