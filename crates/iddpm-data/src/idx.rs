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

/// The largest IDX array read (4 GiB; Fashion-MNIST's training images take 47 MB).
pub const MAX_IDX_BYTES: usize = 1 << 32;

/// Parses IDX bytes (gunzipping first if they are gzipped); `path` names the source in errors.
/// A gzipped file is inflated only as far as its header's dimensions say.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_idx_stream(flate2::read::GzDecoder::new(bytes), path)
    } else {
        read_idx_stream(bytes, path)
    }
}

/// Reads the header, then exactly the bytes it declares.
fn read_idx_stream(mut input: impl Read, path: &Path) -> Result<IdxArray> {
    let corrupt = |e: std::io::Error| DataError::bad(path, format!("truncated or corrupt: {e}"));
    let mut magic = [0u8; 4];
    input.read_exact(&mut magic).map_err(corrupt)?;
    if magic[..3] != [0, 0, 0x08] {
        return Err(DataError::bad(path, "not an unsigned-byte IDX file"));
    }
    let mut dims = Vec::with_capacity(magic[3] as usize);
    for _ in 0..magic[3] {
        let mut dim = [0u8; 4];
        input.read_exact(&mut dim).map_err(corrupt)?;
        dims.push(u32::from_be_bytes(dim) as usize);
    }
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            DataError::bad(
                path,
                format!("dimensions {dims:?} exceed the {MAX_IDX_BYTES}-byte limit"),
            )
        })?;
    let mut data = Vec::new();
    input
        .take(n as u64)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() != n {
        return Err(DataError::bad(
            path,
            format!(
                "truncated IDX data: {n} bytes expected, {} found",
                data.len()
            ),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Reads an IDX file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_idx(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_plain_and_gzipped_arrays() {
        let raw = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [&raw, &gz] {
            let a = parse_idx(bytes, Path::new("x")).unwrap();
            assert_eq!((a.dims, a.data), (vec![2, 3], vec![1, 2, 3, 4, 5, 6]));
        }
    }

    #[test]
    fn hostile_headers_are_errors() {
        let p = Path::new("hostile.idx");
        // Dimensions whose product wraps a 64-bit count.
        let err = parse_idx(&idx(&[u32::MAX; 3], &[]), p).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let err = parse_idx(&idx(&[4], &[1, 2]), p).unwrap_err();
        assert!(err.to_string().contains("4 bytes expected"), "{err}");
        assert!(parse_idx(&[0, 0, 8, 3, 0], p).is_err());
        assert!(parse_idx(&[0x1f, 0x8b, 0], p).is_err());
    }
}
