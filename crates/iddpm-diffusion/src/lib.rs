//! The Gaussian diffusion process of *Improved Denoising Diffusion Probabilistic Models*
//! (Nichol & Dhariwal, 2021), number for number with the reference implementation.
//!
//! - [`schedule`]: linear and cosine beta schedules; [`coefficients`]: everything derived from them.
//! - [`respace`]: sampling with fewer steps (`"250"`, `"10,15,20"`, `"ddim50"`).
//! - [`GaussianDiffusion`]: q, p, training losses ([`training_losses`]), the NLL loop
//!   ([`likelihood`]) and the samplers ([`sampling`]).
//! - [`resample`]: uniform and loss-second-moment timestep samplers.
//! - [`noise`]: seeded or recorded noise, so that every run can be replayed.
//! - [`tensor_math`]: named pieces of the equations (`1 − x`, DDIM's σ).

#![warn(missing_docs)]

pub mod coefficients;
pub mod config;
pub mod error;
pub mod gaussian_diffusion;
pub mod likelihood;
pub mod logsnr_grid;
pub mod losses;
pub mod model;
pub mod noise;
pub mod options;
pub mod resample;
pub mod respace;
pub mod samplers;
pub mod sampling;
pub mod schedule;
pub mod tensor_math;
pub mod thresholding;
pub mod training_losses;

pub use coefficients::DiffusionCoefficients;
pub use config::DiffusionConfig;
pub use error::{DiffusionError, Result};
pub use gaussian_diffusion::{GaussianDiffusion, PMeanVariance, PredictOptions};
pub use likelihood::BpdTerms;
pub use model::{Conditioning, DiffusionModel};
pub use noise::{GOLDEN_GAMMA, NoiseSource, RecordedNoise, SeededNoise, splitmix64_mix};
pub use options::{LossType, ModelMeanType, ModelVarType};
pub use resample::{
    LossSecondMomentResampler, ScheduleSampler, TimestepDistribution, UniformSampler,
};
pub use respace::{respaced_betas, respacing_timesteps, space_timesteps};
pub use samplers::{REGISTRY, ReverseSolver, Sampler, SamplerEntry, SolverInput};
pub use sampling::{SampleLoop, SampleRequest, SampleStep};
pub use schedule::{BetaSchedule, named_beta_schedule};
pub use thresholding::DynamicThreshold;
pub use training_losses::TrainingLosses;
