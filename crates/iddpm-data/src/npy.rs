//! NumPy `.npy` arrays: the element types iddpm exchanges (u8 images, f32 noise, i64 labels).

use std::path::Path;

use crate::error::{DataError, Result};

/// The longest header read, as NumPy's `max_header_size` default: longer ones are refused
/// before they are parsed.
pub const MAX_HEADER_LEN: usize = 10_000;

/// A decoded array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `|u1`.
    U8(Vec<u8>),
    /// `<f4`.
    F32(Vec<f32>),
    /// `<f8`.
    F64(Vec<f64>),
    /// `<i8`.
    I64(Vec<i64>),
    /// `<i4`.
    I32(Vec<i32>),
}

/// An n-dimensional array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: NpyData,
}

impl NpyArray {
    /// The NumPy dtype string.
    pub fn descr(&self) -> &'static str {
        match self.data {
            NpyData::U8(_) => "|u1",
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I64(_) => "<i8",
            NpyData::I32(_) => "<i4",
        }
    }

    /// Values as f32 (lossy for f64 and large integers).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as f64 (exact for every stored type).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            NpyData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::F64(v) => v.clone(),
            NpyData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Integer values, if the array holds integers.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            NpyData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            NpyData::I64(v) => Some(v.clone()),
            NpyData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    /// Serialises to `.npy` bytes (format 1.0, header padded to 64 bytes as NumPy does).
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!(
                "({})",
                self.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
            self.descr()
        );
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len());
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        match &self.data {
            NpyData::U8(v) => out.extend_from_slice(v),
            NpyData::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
        out
    }

    /// Parses `.npy` bytes; `what` names the source in errors.
    pub fn from_bytes(bytes: &[u8], what: &Path) -> Result<Self> {
        let bad = |m: &str| DataError::bad(what, format!("not a readable .npy array: {m}"));
        let (start, header_len) = header_span(bytes).map_err(|m| bad(&m))?;
        let header = bytes
            .get(start..start + header_len)
            .ok_or_else(|| bad("truncated header"))?;
        let (descr, shape) = parse_header(&String::from_utf8_lossy(header)).map_err(|m| bad(&m))?;
        let data =
            decode_body(&descr, &shape, &bytes[start + header_len..]).map_err(|m| bad(&m))?;
        Ok(Self { shape, data })
    }

    /// Reads a `.npy` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }
}

/// Where the header starts and how long it is, from the magic, the version and the length
/// field; a header over [`MAX_HEADER_LEN`] is refused.
fn header_span(bytes: &[u8]) -> std::result::Result<(usize, usize), String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err("missing the NUMPY magic".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        _ => return Err("unsupported format version".into()),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!(
            "a header of {header_len} bytes (NumPy's limit is {MAX_HEADER_LEN})"
        ));
    }
    Ok((start, header_len))
}

/// The dtype (`descr`) and shape of a header such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(header: &str) -> std::result::Result<(String, Vec<usize>), String> {
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = header[i + key.len() + 2..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or("no descr")?;
    let descr = descr.split('\'').nth(1).ok_or("bad descr")?.to_string();
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_text = field("shape").ok_or("no shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("bad shape")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| "bad shape".to_string()))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    Ok((descr, shape))
}

/// The `shape`'s elements of dtype `descr` from the start of `body` (little-endian; trailing
/// bytes are ignored, missing ones are an error).
fn decode_body(descr: &str, shape: &[usize], body: &[u8]) -> std::result::Result<NpyData, String> {
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let need = |size: usize| {
        n.checked_mul(size)
            .and_then(|len| body.get(..len))
            .ok_or_else(|| format!("shape {shape:?} needs more data than the file has"))
    };
    fn words<const W: usize, T>(bytes: &[u8], from: fn([u8; W]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(W)
            .map(|c| from(c.try_into().unwrap()))
            .collect()
    }
    Ok(match descr {
        "|u1" | "<u1" | "u1" | "|b1" => NpyData::U8(need(1)?.to_vec()),
        "<f4" => NpyData::F32(words(need(4)?, f32::from_le_bytes)),
        "<f8" => NpyData::F64(words(need(8)?, f64::from_le_bytes)),
        "<i8" => NpyData::I64(words(need(8)?, i64::from_le_bytes)),
        "<i4" => NpyData::I32(words(need(4)?, i32::from_le_bytes)),
        other => return Err(format!("unsupported dtype {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn round_trips_and_refuses_hostile_headers() {
        let a = NpyArray {
            shape: vec![2, 2],
            data: NpyData::F32(vec![1.0, 2.0, 3.0, 4.0]),
        };
        let p = Path::new("a.npy");
        assert_eq!(NpyArray::from_bytes(&a.to_bytes(), p).unwrap(), a);
        let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }";
        let err = NpyArray::from_bytes(&npy(huge, &[]), p).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
        let big = "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }";
        let err = NpyArray::from_bytes(&npy(big, &[]), p).unwrap_err();
        assert!(err.to_string().contains("needs more data"), "{err}");
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = NpyArray::from_bytes(&v2, p).unwrap_err();
        assert!(err.to_string().contains("NumPy's limit"), "{err}");
    }
}
