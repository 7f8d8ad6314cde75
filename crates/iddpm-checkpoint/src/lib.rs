//! Checkpoint files of Improved DDPM models.
//!
//! Reads PyTorch `.pt` state dicts (both zip layouts `torch.save` writes) without executing any
//! pickle code, reads safetensors (F32/F16/BF16/F64), and writes safetensors atomically with
//! the same key names, so the reference loads what iddpm writes and vice versa.

#![warn(missing_docs)]

pub mod atomic_write;
pub mod error;
pub mod metadata;
pub mod pickle;
pub mod safetensors_io;
pub mod settings_json;
pub mod state_dict;
pub mod torch_zip;
pub mod zip_entries;

use std::path::Path;

pub use atomic_write::{
    FileDigest, is_temporary, new_run_id, remove_stale_temporaries, write_atomic,
};
pub use error::{CheckpointError, Result};
pub use metadata::{
    read_safetensors_metadata, replace_safetensors_metadata, safetensors_metadata_from_bytes,
};
pub use safetensors_io::{read_safetensors, write_safetensors};
pub use state_dict::{StateDict, TensorEntry};
pub use torch_zip::TorchArchive;
pub use zip_entries::{read_zip_entries, zip_entries_from_bytes};

/// Reads a state dict from a `.pt` (PyTorch zip) or `.safetensors` file, recognised by content.
pub fn load_state_dict(path: &Path) -> Result<StateDict> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
    if is_zip(&bytes) {
        // Reopened from the file so that the archive's bytes are not held twice.
        drop(bytes);
        return TorchArchive::open(path)?.state_dict();
    }
    state_dict_from_bytes(&bytes, path)
}

/// [`load_state_dict`] of a file's bytes; `path` names it in errors.
pub fn state_dict_from_bytes(bytes: &[u8], path: &Path) -> Result<StateDict> {
    if is_zip(bytes) {
        return TorchArchive::from_bytes(bytes, path)?.state_dict();
    }
    if bytes.len() >= 8 {
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        if header > 0 && header < bytes.len() as u64 && bytes.get(8) == Some(&b'{') {
            return read_safetensors(path, bytes);
        }
    }
    if bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        return Err(CheckpointError::format(
            path,
            "a legacy (pre-1.6, non-zip) PyTorch file; re-save it with a recent torch.save",
        ));
    }
    Err(CheckpointError::format(
        path,
        format!(
            "not a checkpoint: neither a PyTorch zip archive nor a safetensors file ({} bytes)",
            bytes.len()
        ),
    ))
}

fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}
