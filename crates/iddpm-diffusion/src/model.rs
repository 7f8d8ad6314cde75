//! The interface between the diffusion process and a denoising network.

use burn::tensor::{Int, Tensor};

/// Extra inputs of conditional networks, passed through to the model untouched
/// (the reference's `model_kwargs`).
#[derive(Debug, Clone, Default)]
pub struct Conditioning {
    /// Class labels `[B]` of a class-conditional model.
    pub labels: Option<Tensor<1, Int>>,
    /// Low-resolution images `[B, C, h, w]` of a super-resolution model.
    pub low_res: Option<Tensor<4>>,
}

impl Conditioning {
    /// No conditioning at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Conditioning on class labels.
    pub fn labels(labels: Tensor<1, Int>) -> Self {
        Self {
            labels: Some(labels),
            low_res: None,
        }
    }
}

/// A network that the diffusion can query: given x_t `[B, C, H, W]` and the timesteps `[B]` as
/// the network expects them (already mapped through any respacing and rescaled), it returns
/// `[B, C, H, W]`, or `[B, 2C, H, W]` when the variance is learned.
pub trait DiffusionModel {
    /// Runs the network.
    fn forward(&self, x: Tensor<4>, timesteps: Tensor<1>, cond: &Conditioning) -> Tensor<4>;
}

impl<F> DiffusionModel for F
where
    F: Fn(Tensor<4>, Tensor<1>, &Conditioning) -> Tensor<4>,
{
    fn forward(&self, x: Tensor<4>, timesteps: Tensor<1>, cond: &Conditioning) -> Tensor<4> {
        self(x, timesteps, cond)
    }
}
