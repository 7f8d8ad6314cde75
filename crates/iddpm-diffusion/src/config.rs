//! Building a diffusion from the reference's flags (`create_gaussian_diffusion`).

use crate::error::{DiffusionError, Result};
use crate::gaussian_diffusion::GaussianDiffusion;
use crate::logsnr_grid::logsnr_timesteps;
use crate::options::{LossType, ModelMeanType, ModelVarType};
use crate::respace::respacing_timesteps;
use crate::schedule::BetaSchedule;

/// The diffusion flags of the reference scripts, with their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionConfig {
    /// `--diffusion_steps`: T of training.
    pub diffusion_steps: usize,
    /// `--noise_schedule`.
    pub noise_schedule: BetaSchedule,
    /// `--learn_sigma`: learned (range) variances.
    pub learn_sigma: bool,
    /// `--sigma_small`: with fixed variances, use β̃ rather than β.
    pub sigma_small: bool,
    /// `--use_kl`: train on L_vlb.
    pub use_kl: bool,
    /// `--predict_xstart`: the network predicts x_0 rather than ε.
    pub predict_xstart: bool,
    /// `--rescale_timesteps`: feed the network timesteps in [0, 1000).
    pub rescale_timesteps: bool,
    /// `--rescale_learned_sigmas`: weight the vb term by T/1000 (RESCALED_MSE).
    pub rescale_learned_sigmas: bool,
    /// `--timestep_respacing`: "" (all steps), section counts, or "ddimN".
    pub timestep_respacing: String,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            diffusion_steps: 1000,
            noise_schedule: BetaSchedule::Linear,
            learn_sigma: false,
            sigma_small: false,
            use_kl: false,
            predict_xstart: false,
            rescale_timesteps: true,
            rescale_learned_sigmas: true,
            timestep_respacing: String::new(),
        }
    }
}

impl DiffusionConfig {
    /// The loss type these flags select.
    pub fn loss_type(&self) -> LossType {
        if self.use_kl {
            LossType::RescaledKl
        } else if self.rescale_learned_sigmas {
            LossType::RescaledMse
        } else {
            LossType::Mse
        }
    }

    /// The mean parameterisation these flags select.
    pub fn mean_type(&self) -> ModelMeanType {
        if self.predict_xstart {
            ModelMeanType::StartX
        } else {
            ModelMeanType::Epsilon
        }
    }

    /// The variance type these flags select.
    pub fn var_type(&self) -> ModelVarType {
        match (self.learn_sigma, self.sigma_small) {
            (true, _) => ModelVarType::LearnedRange,
            (false, true) => ModelVarType::FixedSmall,
            (false, false) => ModelVarType::FixedLarge,
        }
    }

    /// The diffusion with the configured respacing.
    pub fn build(&self) -> Result<GaussianDiffusion> {
        self.build_with_respacing(&self.timestep_respacing)
    }

    /// The diffusion with another respacing (e.g. training with all steps, sampling with 50).
    pub fn build_with_respacing(&self, respacing: &str) -> Result<GaussianDiffusion> {
        let betas = self.noise_schedule.betas(self.diffusion_steps)?;
        let keep = match respacing.trim().strip_prefix("logsnr") {
            Some(count) => self.logsnr_grid(&betas, count, respacing)?,
            None => respacing_timesteps(self.diffusion_steps, respacing)?,
        };
        GaussianDiffusion::spaced(
            betas,
            &keep,
            self.mean_type(),
            self.var_type(),
            self.loss_type(),
            self.rescale_timesteps,
        )
    }

    /// `logsnrN`: the timesteps of a grid uniform in log-SNR ([`crate::logsnr_grid`]).
    fn logsnr_grid(&self, betas: &[f64], count: &str, spec: &str) -> Result<Vec<usize>> {
        let err = |reason: String| DiffusionError::InvalidRespacing {
            spec: spec.to_string(),
            num_timesteps: self.diffusion_steps,
            reason,
        };
        let n: usize = count.parse().map_err(|_| {
            err(format!(
                "{count:?} is not a step count; write \"logsnrN\" with N a positive integer"
            ))
        })?;
        let mut acc = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        logsnr_timesteps(&alphas_cumprod, n).map_err(err)
    }
}
