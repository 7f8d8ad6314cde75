//! Errors raised while configuring a diffusion process.

use thiserror::Error;

/// Why a diffusion configuration was rejected. Every variant names the offending value and
/// says what would have been accepted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DiffusionError {
    /// The beta schedule name is not one of the known schedules.
    #[error("unknown noise schedule {0:?}: expected \"linear\" or \"cosine\"")]
    UnknownSchedule(String),
    /// The number of diffusion steps is unusable.
    #[error("invalid number of diffusion steps {0}: it must be at least 1")]
    InvalidStepCount(usize),
    /// The linear schedule leaves (0, 1] for this many steps.
    #[error(
        "the linear schedule needs at least 20 diffusion steps (its last beta is 20/T, which must be <= 1); got {0}"
    )]
    LinearScheduleTooShort(usize),
    /// A timestep respacing specification could not be satisfied or parsed.
    #[error("invalid timestep respacing {spec:?} for {num_timesteps} diffusion steps: {reason}")]
    InvalidRespacing {
        /// The specification as given.
        spec: String,
        /// The number of steps of the diffusion being respaced.
        num_timesteps: usize,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A model mean, variance or loss type name is not known.
    #[error("unknown {kind} {value:?}: expected one of {allowed}")]
    UnknownOption {
        /// Which option (e.g. "model mean type").
        kind: &'static str,
        /// The value as given.
        value: String,
        /// The accepted spellings.
        allowed: &'static str,
    },
    /// `--sampler` names no solver of the registry.
    #[error("unknown sampler {name:?}: expected one of {known}")]
    UnknownSampler {
        /// The name as given.
        name: String,
        /// The registry's names.
        known: String,
    },
    /// A beta outside (0, 1].
    #[error("beta {index} is {value}; every beta must lie in (0, 1]")]
    InvalidBeta {
        /// Position in the schedule.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// `--lambda_min_clipped` is NaN or removes every timestep.
    #[error("invalid --lambda_min_clipped {value}: {reason}")]
    InvalidLambdaClip {
        /// The value as given.
        value: f64,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A noise source could not deliver the requested draw.
    #[error("noise source: {0}")]
    Noise(String),
    /// A tensor passed to the diffusion has a shape it cannot work with.
    #[error("{0}")]
    Shape(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, DiffusionError>;
