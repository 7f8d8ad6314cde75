//! Scalar activations shared by the fused kernels.

/// The logistic function `1 / (1 + e^(−v))`.
#[inline]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}
