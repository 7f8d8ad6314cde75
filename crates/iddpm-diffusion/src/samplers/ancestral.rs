//! Ancestral sampling: x_{t−1} drawn from p(x_{t−1} | x_t), with the network's (learned or
//! fixed) variance. The reference's `p_sample`; diffusers' `DDPMScheduler` with
//! `variance_type="learned_range"` on learned-Σ models.

use burn::tensor::Tensor;

use super::{ReverseSolver, SamplerEntry, SolverInput};
use crate::error::Result;
use crate::gaussian_diffusion::{GaussianDiffusion, PMeanVariance};
use crate::noise::NoiseSource;

pub(super) const ENTRY: SamplerEntry = SamplerEntry {
    name: "ancestral",
    about: "ancestral sampling from p(x_{t-1}|x_t) with the model's variance (the paper's sampler)",
    build: |_| Ok(Box::new(Ancestral)),
};

struct Ancestral;

impl ReverseSolver for Ancestral {
    fn step(&mut self, input: SolverInput<'_>) -> Result<Tensor<4>> {
        input
            .diffusion
            .ancestral_update(input.t, input.prediction, input.noise)
    }
}

impl GaussianDiffusion {
    /// x_{t−1} = mean + σ z with z fresh noise (none added where t = 0), from p's mean and
    /// variance at x_t.
    pub fn ancestral_update(
        &self,
        t: &[usize],
        prediction: &PMeanVariance,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<4>> {
        let device = prediction.mean.device();
        let z = noise.sample(prediction.mean.dims(), &device)?;
        let std = prediction.log_variance.clone().mul_scalar(0.5).exp();
        Ok(prediction.mean.clone() + Self::nonzero_mask(t, &device) * std * z)
    }
}
