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
    /// `--lambda_min_clipped` (diffusers' name): the respaced grid keeps only timesteps whose
    /// log-SNR λ_t = ½ log(ᾱ_t / (1 − ᾱ_t)) is at least this, so sampling starts below the
    /// last, nearly signal-free steps of a cosine schedule (ᾱ = 2.4e-7 at t = 99 of 100). The
    /// start noise is then taken as x at the highest kept t. −∞ (the default) keeps all.
    pub lambda_min_clipped: f64,
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
            lambda_min_clipped: f64::NEG_INFINITY,
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
        // The grid is laid over the steps up to the last one with λ ≥ lambda_min_clipped.
        let steps = self.unclipped_steps(&betas)?;
        let keep = match respacing.trim().strip_prefix("logsnr") {
            Some(count) => self.logsnr_grid(&betas[..steps], count, respacing)?,
            None => respacing_timesteps(steps, respacing)?,
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
    /// How many of the first timesteps have λ_t ≥ `lambda_min_clipped` (all of them at −∞;
    /// λ falls with t).
    fn unclipped_steps(&self, betas: &[f64]) -> Result<usize> {
        let min = self.lambda_min_clipped;
        if min == f64::NEG_INFINITY {
            return Ok(betas.len());
        }
        if min.is_nan() {
            return Err(DiffusionError::InvalidLambdaClip {
                value: min,
                reason: "give a log-SNR such as -5.1".into(),
            });
        }
        let mut acc = 1.0;
        let steps = betas
            .iter()
            .take_while(|b| {
                acc *= 1.0 - *b;
                0.5 * (acc / (1.0 - acc)).ln() >= min
            })
            .count();
        if steps == 0 {
            return Err(DiffusionError::InvalidLambdaClip {
                value: min,
                reason: format!(
                    "it removes every timestep: the schedule's largest log-SNR is {:.2}",
                    0.5 * ((1.0 - betas[0]) / betas[0]).ln()
                ),
            });
        }
        Ok(steps)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine_100(respacing: &str, lambda_min_clipped: f64) -> Result<GaussianDiffusion> {
        DiffusionConfig {
            diffusion_steps: 100,
            noise_schedule: BetaSchedule::Cosine,
            learn_sigma: true,
            timestep_respacing: respacing.into(),
            lambda_min_clipped,
            ..DiffusionConfig::default()
        }
        .build()
    }

    #[test]
    fn lambda_min_clipped_lays_the_grid_below_the_signal_free_steps() {
        // λ(99) = ½ ln(2.4e-7) ≈ −7.6 and λ(98) ≈ −4.2 on the 100-step cosine schedule.
        let all = cosine_100("10", f64::NEG_INFINITY).unwrap();
        assert_eq!(all.timestep_map().last(), Some(&99));
        let clipped = cosine_100("10", -5.1).unwrap();
        assert_eq!(clipped.timestep_map().len(), 10);
        assert_eq!(clipped.timestep_map().last(), Some(&98));
        assert_eq!(clipped.timestep_map().first(), Some(&0));
        // A tighter clip starts lower still, and the log-SNR grid obeys it too.
        let lower = cosine_100("logsnr10", -2.0).unwrap();
        assert!(*lower.timestep_map().last().unwrap() < 98);
    }

    #[test]
    fn lambda_min_clipped_refuses_nan_and_a_clip_that_leaves_nothing() {
        let nan = cosine_100("10", f64::NAN).unwrap_err();
        assert!(nan.to_string().contains("lambda_min_clipped"), "{nan}");
        let all_gone = cosine_100("10", 50.0).unwrap_err();
        assert!(
            all_gone.to_string().contains("removes every timestep"),
            "{all_gone}"
        );
    }
}
