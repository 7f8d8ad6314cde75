//! Data errors; each names the file or directory.

use std::path::PathBuf;

use thiserror::Error;

/// Why data could not be read or written.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file or directory could not be accessed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is unusable.
    #[error("{path}: {message}")]
    Bad {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A zip archive (`.npz`) could not be read, or a file not written.
    #[error(transparent)]
    Archive(#[from] iddpm_checkpoint::CheckpointError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn bad(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Bad {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, DataError>;
