//! Writing files so that a crash, a kill or a full disk never leaves a partial file under the
//! final name, nor costs the file that was there before.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::Path;

use crate::error::{CheckpointError, Result};

/// What marks [`write_atomic`]'s temporary files, for [`remove_stale_temporaries`].
const TEMP_MARK: &str = ".iddpm-tmp-";

/// Writes `bytes` to `path`: into a new temporary file beside it (created exclusively, under
/// an unpredictable name), flushed to disk, renamed over `path`, and the directory flushed so
/// that the rename itself survives a power cut. On any failure the temporary file is removed
/// and whatever `path` held before is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| CheckpointError::format(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}{TEMP_MARK}{:016x}",
        name.to_string_lossy(),
        random_u64()
    ));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CheckpointError::io(path, e));
    }
    sync_dir(dir).map_err(|e| CheckpointError::io(dir, e))
}

/// Removes the temporary files a killed [`write_atomic`] left in `dir`; returns how many.
/// Call it only where no other process is writing into `dir` at the same time.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CheckpointError::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry.map_err(|e| CheckpointError::io(dir, e))?.path();
        if is_temporary(&path) {
            std::fs::remove_file(&path).map_err(|e| CheckpointError::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `path` is one of [`write_atomic`]'s temporary files.
pub fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with('.') && n.contains(TEMP_MARK))
}

/// The size and FNV-1a hash of a file's bytes: what a checkpoint records of its companions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// Length in bytes.
    pub size: u64,
    /// 64-bit FNV-1a of the bytes.
    pub fnv1a: u64,
}

impl FileDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let fnv1a = bytes
            .iter()
            .fold(OFFSET, |h, &b| (h ^ b as u64).wrapping_mul(PRIME));
        Self {
            size: bytes.len() as u64,
            fnv1a,
        }
    }

    /// The digest of the file at `path`.
    pub fn of_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
        Ok(Self::of(&bytes))
    }

    /// As text: `<size>:<hash in hex>`.
    pub fn to_text(self) -> String {
        format!("{}:{:016x}", self.size, self.fnv1a)
    }

    /// Parses [`to_text`](Self::to_text)'s form.
    pub fn from_text(text: &str) -> Option<Self> {
        let (size, hash) = text.split_once(':')?;
        Some(Self {
            size: size.parse().ok()?,
            fnv1a: u64::from_str_radix(hash, 16).ok()?,
        })
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Flushes a directory's entries (the rename) to disk; a no-op where directories cannot be
/// opened as files.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

/// 64 random bits from the standard library's per-process random hash keys.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A fresh run id: 16 hex digits, unpredictable.
pub fn new_run_id() -> String {
    format!("{:016x}", random_u64())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("iddpm-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let d = dir("replace");
        let path = d.join("model.safetensors");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let d = dir("fail");
        let path = d.join("model.safetensors");
        write_atomic(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the data was written.
        let blocked = d.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomic(&blocked, b"data").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 2, "the temporary file was removed");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn stale_temporaries_are_found_and_removed() {
        let d = dir("stale");
        std::fs::write(
            d.join(".model000010.safetensors.iddpm-tmp-0123456789abcdef"),
            b"x",
        )
        .unwrap();
        std::fs::write(d.join("model000010.safetensors"), b"keep").unwrap();
        std::fs::write(d.join(".hidden"), b"keep").unwrap();
        assert_eq!(remove_stale_temporaries(&d).unwrap(), 1);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
        assert_eq!(remove_stale_temporaries(&d.join("absent")).unwrap(), 0);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn digests_round_trip_as_text() {
        let d = FileDigest::of(b"abc");
        assert_eq!(d.size, 3);
        assert_eq!(d.fnv1a, 0xe71f_a219_0541_574b, "FNV-1a 64 of \"abc\"");
        assert_eq!(FileDigest::from_text(&d.to_text()), Some(d));
        assert_ne!(FileDigest::of(b"abd"), d);
    }
}
