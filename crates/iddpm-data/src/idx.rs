//! The IDX format of MNIST and Fashion-MNIST (gzipped or not).

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// A decoded unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, e.g. `[10000, 28, 28]`.
    pub dims: Vec<usize>,
    /// The bytes, row-major.
    pub data: Vec<u8>,
}

/// Parses IDX bytes (gunzipping first if they are gzipped); `path` names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| DataError::bad(path, format!("corrupt gzip data: {e}")))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(DataError::bad(path, "not an unsigned-byte IDX file"));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(DataError::bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    let data = bytes
        .get(header..header + n)
        .ok_or_else(|| DataError::bad(path, format!("truncated IDX data: {n} bytes expected")))?
        .to_vec();
    Ok(IdxArray { dims, data })
}

/// Reads an IDX file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_idx(&bytes, path)
}
