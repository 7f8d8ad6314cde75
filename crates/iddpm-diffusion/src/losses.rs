//! Closed-form KL divergences and the discretised Gaussian likelihood of the image decoder.
//!
//! All of these run in f32 on whatever device the tensors live on, with the reference's order
//! of operations, so they match it to float rounding.

use burn::tensor::Tensor;

use crate::tensor_math::one_minus;

/// Bin half-width of 8-bit images rescaled to [−1, 1].
const HALF_BIN: f32 = 1.0 / 255.0;
/// Floor applied before every log, as the reference.
const LOG_FLOOR: f32 = 1e-12;

/// KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats. Broadcasts.
pub fn normal_kl<const D: usize>(
    mean1: Tensor<D>,
    logvar1: Tensor<D>,
    mean2: Tensor<D>,
    logvar2: Tensor<D>,
) -> Tensor<D> {
    // Summed in the reference's order: ((−1 + lv2 − lv1) + e^(lv1−lv2)) + (m1−m2)² e^(−lv2).
    let diff = mean1 - mean2;
    let term = logvar2.clone().add_scalar(-1.0) - logvar1.clone()
        + (logvar1 - logvar2.clone()).exp()
        + diff.clone() * diff * logvar2.neg().exp();
    term.mul_scalar(0.5)
}

/// KL against the standard normal N(0, I), in nats (the prior term).
pub fn normal_kl_standard<const D: usize>(mean1: Tensor<D>, logvar1: Tensor<D>) -> Tensor<D> {
    // Same formula with mean2 = logvar2 = 0; written out so no zero tensors are materialised.
    let term = logvar1.clone().neg().add_scalar(-1.0) + logvar1.exp() + mean1.clone() * mean1;
    term.mul_scalar(0.5)
}

/// The tanh approximation of the standard normal CDF used by the reference decoder.
pub fn approx_standard_normal_cdf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let cube = x.clone().powi_scalar(3);
    let inner = (x + cube.mul_scalar(0.044715f32))
        .mul_scalar((2.0f64 / std::f64::consts::PI).sqrt() as f32);
    inner.tanh().add_scalar(1.0).mul_scalar(0.5)
}

/// Log-likelihood (nats) of 8-bit images `x` in [−1, 1] under a Gaussian discretised to the
/// 256 bins, with open edge bins at −1 and 1.
pub fn discretized_gaussian_log_likelihood<const D: usize>(
    x: Tensor<D>,
    means: Tensor<D>,
    log_scales: Tensor<D>,
) -> Tensor<D> {
    let centered = x.clone() - means;
    let inv_stdv = log_scales.neg().exp();
    let cdf_plus =
        approx_standard_normal_cdf(inv_stdv.clone() * centered.clone().add_scalar(HALF_BIN));
    let cdf_min = approx_standard_normal_cdf(inv_stdv * centered.sub_scalar(HALF_BIN));
    let log_cdf_plus = cdf_plus.clone().clamp_min(LOG_FLOOR).log();
    let log_one_minus_cdf_min = one_minus(cdf_min.clone()).clamp_min(LOG_FLOOR).log();
    let log_cdf_delta = (cdf_plus - cdf_min).clamp_min(LOG_FLOOR).log();
    let low_edge = x.clone().lower_elem(-0.999f32);
    let high_edge = x.greater_elem(0.999f32);
    log_cdf_delta
        .mask_where(high_edge, log_one_minus_cdf_min)
        .mask_where(low_edge, log_cdf_plus)
}

/// Mean over every dimension but the batch: `[B, ...] -> [B]`.
pub fn mean_flat<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let batch = x.dims()[0];
    x.reshape([batch as i64, -1]).mean_dim(1).reshape([batch])
}
