//! The library's error type: every failure names the file, flag or value at fault.

use std::path::PathBuf;

use thiserror::Error;

/// Anything that can go wrong in the high-level API.
#[derive(Debug, Error)]
pub enum Error {
    /// A diffusion configuration or run failed.
    #[error(transparent)]
    Diffusion(#[from] iddpm_diffusion::DiffusionError),
    /// A network configuration is invalid.
    #[error(transparent)]
    Config(#[from] iddpm_nn::ConfigError),
    /// Weights could not be loaded.
    #[error(transparent)]
    Load(#[from] iddpm_nn::LoadError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] iddpm_checkpoint::CheckpointError),
    /// Data could not be read or written.
    #[error(transparent)]
    Data(#[from] iddpm_data::DataError),
    /// Labels or low-resolution inputs do not suit the network.
    #[error(transparent)]
    Conditioning(#[from] iddpm_nn::ConditioningError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] iddpm_train::TrainError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is not what was expected.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An option has a value that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A content error in `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
