//! Small named pieces of the diffusion equations, so that the code reads like the paper.
//!
//! Each helper performs exactly the f32 operations it replaces, in the same order, so results
//! are bit for bit what they were (the parity suite checks this).

use burn::tensor::Tensor;

/// 1 − x, elementwise.
pub fn one_minus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.neg().add_scalar(1.0)
}

/// DDIM's noise scale (Song et al., 2021, Eq. 16):
/// σ_t(η) = η · √((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) · √(1 − ᾱ_t / ᾱ_{t−1}).
///
/// η = 1 gives the ancestral sampler's posterior standard deviation, η = 0 a deterministic step.
pub fn ddim_sigma<const D: usize>(
    alpha_bar: Tensor<D>,
    alpha_bar_prev: Tensor<D>,
    eta: f64,
) -> Tensor<D> {
    let posterior_ratio = one_minus(alpha_bar_prev.clone()) / one_minus(alpha_bar.clone());
    let step_ratio = one_minus(alpha_bar / alpha_bar_prev);
    (posterior_ratio.sqrt() * step_ratio.sqrt()).mul_scalar(eta as f32)
}

/// The two halves of a learned-variance network's output, `[B, 2C, H, W]` →
/// (`[B, C, H, W]` mean part, `[B, C, H, W]` variance values v).
pub fn split_mean_and_variance(model_output: Tensor<4>, channels: usize) -> (Tensor<4>, Tensor<4>) {
    let mut halves = model_output.split(channels, 1);
    let var_values = halves
        .pop()
        .expect("split of 2C channels into C gives two halves");
    let mean_part = halves
        .pop()
        .expect("split of 2C channels into C gives two halves");
    (mean_part, var_values)
}

/// `Σ c_i·x_i` for scalar coefficients (taken in f64, applied in the tensors' precision); the
/// multistep solvers' updates are such sums of x_t and earlier predictions.
pub fn weighted_sum<const D: usize>(terms: &[(f64, &Tensor<D>)]) -> Tensor<D> {
    let mut iter = terms.iter();
    let (c, x) = iter.next().expect("a weighted sum of at least one tensor");
    iter.fold((*x).clone().mul_scalar(*c as f32), |acc, (c, x)| {
        acc + (*x).clone().mul_scalar(*c as f32)
    })
}
