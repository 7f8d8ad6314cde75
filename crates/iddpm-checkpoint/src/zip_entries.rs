//! Reading every entry of a zip archive (PyTorch checkpoints, `.npz`) without trusting its
//! declared sizes: a few hostile bytes must not make the reader allocate or inflate gigabytes.

use std::io::{Read, Seek};
use std::path::Path;

use crate::error::{CheckpointError, Result};

/// How many times its own size an archive may inflate to, beyond [`INFLATE_ALLOWANCE`].
/// PyTorch and NumPy store entries uncompressed (ratio 1); deflated float data stays near 1.
pub const MAX_INFLATE_RATIO: u64 = 4;

/// Bytes any archive may inflate to whatever its size.
pub const INFLATE_ALLOWANCE: u64 = 64 << 20;

/// The file entries of the zip archive at `path`, in archive order. Each entry must inflate
/// to exactly its declared size, and all of them together to at most
/// [`MAX_INFLATE_RATIO`] × the file's size + [`INFLATE_ALLOWANCE`].
pub fn read_zip_entries(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| CheckpointError::io(path, e))?
        .len();
    zip_entries_of(file, file_len, path)
}

/// [`read_zip_entries`] of an archive in memory; `path` names it in errors.
pub fn zip_entries_from_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    zip_entries_of(std::io::Cursor::new(bytes), bytes.len() as u64, path)
}

fn zip_entries_of(
    archive: impl Read + Seek,
    file_len: u64,
    path: &Path,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut zip = zip::ZipArchive::new(archive)
        .map_err(|e| CheckpointError::format(path, format!("not a readable zip archive ({e})")))?;
    let budget = file_len
        .saturating_mul(MAX_INFLATE_RATIO)
        .saturating_add(INFLATE_ALLOWANCE);
    let mut remaining = budget;
    let mut entries = Vec::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| CheckpointError::format(path, format!("damaged zip entry {i} ({e})")))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_string();
        let declared = entry.size();
        if declared > remaining {
            return Err(CheckpointError::format(
                path,
                format!(
                    "zip entry {name} declares {declared} bytes, beyond the reader's limit of \
                     {budget} bytes for a {file_len}-byte archive"
                ),
            ));
        }
        remaining -= declared;
        let bytes = read_exactly(entry, declared)
            .map_err(|m| CheckpointError::format(path, format!("zip entry {name}: {m}")))?;
        entries.push((name, bytes));
    }
    Ok(entries)
}

/// Reads an entry that must hold exactly `declared` bytes, reading at most one byte more.
fn read_exactly(entry: impl Read, declared: u64) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(declared as usize);
    entry
        .take(declared + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e}); is the file truncated?"))?;
    if bytes.len() as u64 != declared {
        return Err(format!(
            "inflates to {} bytes where it declares {declared}",
            if bytes.len() as u64 > declared {
                "more".to_string()
            } else {
                bytes.len().to_string()
            }
        ));
    }
    Ok(bytes)
}
