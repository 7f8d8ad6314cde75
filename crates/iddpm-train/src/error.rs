//! Training errors.

use std::path::PathBuf;

use thiserror::Error;

/// Why training could not start or continue.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A configuration value cannot work.
    #[error("{0}")]
    Config(String),
    /// A file problem.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The diffusion rejected something.
    #[error(transparent)]
    Diffusion(#[from] iddpm_diffusion::DiffusionError),
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] iddpm_data::DataError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] iddpm_checkpoint::CheckpointError),
    /// Weights do not fit.
    #[error(transparent)]
    Load(#[from] iddpm_nn::LoadError),
    /// A network configuration is invalid.
    #[error(transparent)]
    NetConfig(#[from] iddpm_nn::ConfigError),
    /// The data's labels do not suit the network.
    #[error(transparent)]
    Conditioning(#[from] iddpm_nn::ConditioningError),
    /// A training step failed.
    #[error("training step {step}: {source}")]
    AtStep {
        /// The step that failed.
        step: u64,
        /// Why.
        source: Box<TrainError>,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
