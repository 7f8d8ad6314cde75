//! Reading a file of reference vectors: a `.safetensors` file whose tensors are converted to
//! f64, in which every stored dtype (f64, f32, f16, i64, u8) is exact.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// One reference `.safetensors` file, every tensor as f64 with its shape.
pub struct VectorFile {
    /// The file's name, for messages.
    pub name: String,
    tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
}

impl VectorFile {
    /// Reads `dir/file`.
    pub fn open(dir: &Path, file: &str) -> Result<Self> {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::Invalid(format!("{} is not a safetensors file: {e}", path.display()))
        })?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let values = to_f64(view.data(), view.dtype()).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: tensor {name} has unsupported dtype {:?}",
                    path.display(),
                    view.dtype()
                ))
            })?;
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self {
            name: file.to_string(),
            tensors,
        })
    }

    /// Whether the file holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The values of `name`, flattened.
    pub fn get(&self, name: &str) -> Result<&[f64]> {
        Ok(&self.entry(name)?.1)
    }

    /// The shape of `name`.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.0)
    }

    /// The values of `name` rounded to f32.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.get(name)?.iter().map(|&v| v as f32).collect())
    }

    /// The values of `name` as indices (timesteps, labels).
    pub fn usize(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.get(name)?.iter().map(|&v| v as usize).collect())
    }

    fn entry(&self, name: &str) -> Result<&(Vec<usize>, Vec<f64>)> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("{}: missing tensor {name}", self.name)))
    }
}

/// The little-endian values of `data` stored as `dtype`, or `None` for a dtype references
/// do not use.
fn to_f64(data: &[u8], dtype: Dtype) -> Option<Vec<f64>> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks of N bytes")))
            .collect()
    }
    Some(match dtype {
        Dtype::F64 => each(data, f64::from_le_bytes),
        Dtype::F32 => each(data, |b| f32::from_le_bytes(b) as f64),
        Dtype::F16 => each(data, |b| half::f16::from_le_bytes(b).to_f64()),
        Dtype::I64 => each(data, |b| i64::from_le_bytes(b) as f64),
        Dtype::U8 => data.iter().map(|&b| b as f64).collect(),
        _ => return None,
    })
}
