//! DDIM (Song et al., 2021, Eq. 12): x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z
//! with σ_t = η·√((1 − ᾱ_{t−1})/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t−1}). The reference's `ddim_sample`;
//! diffusers' `DDIMScheduler(eta=η)` on the same timesteps.

use burn::tensor::Tensor;

use super::{ReverseSolver, SamplerEntry, SolverInput};
use crate::error::{DiffusionError, Result};
use crate::gaussian_diffusion::{GaussianDiffusion, PMeanVariance};
use crate::noise::NoiseSource;
use crate::tensor_math::{ddim_sigma, one_minus};

pub(super) const ENTRY: SamplerEntry = SamplerEntry {
    name: "ddim",
    about: "DDIM with noise level --eta (0: deterministic), first order",
    build: |s| {
        check_eta(s.eta)?;
        Ok(Box::new(Ddim { eta: s.eta }))
    },
};

struct Ddim {
    eta: f64,
}

impl ReverseSolver for Ddim {
    fn step(&mut self, input: SolverInput<'_>) -> Result<Tensor<4>> {
        input
            .diffusion
            .ddim_update(input.x, input.t, input.prediction, self.eta, input.noise)
    }
}

/// η must lie in [0, 1].
pub(crate) fn check_eta(eta: f64) -> Result<()> {
    if (0.0..=1.0).contains(&eta) {
        Ok(())
    } else {
        Err(DiffusionError::Shape(format!(
            "DDIM eta must lie in [0, 1]; got {eta}"
        )))
    }
}

impl GaussianDiffusion {
    /// One DDIM step from x_t and the prediction there. Fresh noise is drawn only when η > 0
    /// (with η = 0 it would be multiplied by zero).
    pub fn ddim_update(
        &self,
        x: Tensor<4>,
        t: &[usize],
        prediction: &PMeanVariance,
        eta: f64,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor<4>> {
        check_eta(eta)?;
        let device = x.device();
        let dims = x.dims();
        let pred_xstart = prediction.pred_xstart.clone();
        let eps = self.predict_eps_from_xstart(x, t, pred_xstart.clone());
        let c = self.coefficients();
        let alpha_bar = Self::extract(&c.alphas_cumprod, t, &device);
        let alpha_bar_prev = Self::extract(&c.alphas_cumprod_prev, t, &device);
        let mut mean = pred_xstart * alpha_bar_prev.clone().sqrt();
        if eta == 0.0 {
            return Ok(mean + one_minus(alpha_bar_prev).sqrt() * eps);
        }
        let sigma = ddim_sigma(alpha_bar, alpha_bar_prev.clone(), eta);
        let z = noise.sample(dims, &device)?;
        mean = mean + (one_minus(alpha_bar_prev) - sigma.clone() * sigma.clone()).sqrt() * eps;
        Ok(mean + Self::nonzero_mask(t, &device) * sigma * z)
    }
}
