//! The noise level at a point of the time grid, in the variables the ODE solvers use:
//! x_t = α_t x_0 + σ_t ε with α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), and the half log-SNR
//! λ_t = log(α_t/σ_t).

use crate::gaussian_diffusion::GaussianDiffusion;

/// α, σ and λ at one timestep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// √ᾱ.
    pub alpha: f64,
    /// √(1 − ᾱ).
    pub sigma: f64,
    /// log(α/σ): +∞ at the clean end of the grid.
    pub lambda: f64,
}

impl NoiseLevel {
    /// The level of ᾱ.
    pub fn from_alpha_bar(alpha_bar: f64) -> Self {
        let alpha = alpha_bar.sqrt();
        let sigma = (1.0 - alpha_bar).max(0.0).sqrt();
        Self {
            alpha,
            sigma,
            lambda: alpha.ln() - sigma.ln(),
        }
    }

    /// The level at timestep `t` of `diffusion` (its own, possibly respaced, steps).
    pub fn at(diffusion: &GaussianDiffusion, t: usize) -> Self {
        Self::from_alpha_bar(diffusion.coefficients().alphas_cumprod[t])
    }

    /// The level a step from `t` lands on: timestep t − 1, or the data (σ = 0) after t = 0
    /// (diffusers' `final_sigmas_type="zero"`).
    pub fn after(diffusion: &GaussianDiffusion, t: usize) -> Self {
        Self::from_alpha_bar(diffusion.coefficients().alphas_cumprod_prev[t])
    }
}
