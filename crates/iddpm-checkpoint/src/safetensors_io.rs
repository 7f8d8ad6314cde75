//! safetensors files: reading (F32, F16, BF16, F64) and atomic writing (F32).

use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::atomic_write::{FileDigest, write_atomic};
use crate::error::{CheckpointError, Result};
use crate::state_dict::StateDict;

/// Reads every tensor of a safetensors file as f32, in the file's order of offsets.
pub fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<StateDict> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        CheckpointError::format(
            path,
            format!("not a valid safetensors file ({e}); is it truncated?"),
        )
    })?;
    let mut tensors: Vec<_> = st.tensors();
    tensors.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut dict = StateDict::new();
    for (name, view) in tensors {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => {
                return Err(CheckpointError::format(
                    path,
                    format!(
                        "tensor {name} has dtype {other:?}; weights must be F32, F16, BF16 or F64"
                    ),
                ));
            }
        };
        dict.insert(name, view.shape().to_vec(), values);
    }
    Ok(dict)
}

/// Writes `dict` as an F32 safetensors file with [`write_atomic`]; returns the digest of
/// what was written, so that a later file can vouch for this one.
pub fn write_safetensors(
    path: &Path,
    dict: &StateDict,
    metadata: &[(&str, &str)],
) -> Result<FileDigest> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = dict
        .iter()
        .map(|(name, e)| {
            let bytes: &[u8] = bytemuck_f32(&e.values);
            let view = safetensors::tensor::TensorView::new(Dtype::F32, e.shape.clone(), bytes)
                .map_err(|err| CheckpointError::format(path, format!("tensor {name}: {err}")))?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<_>>()?;
    let meta: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| CheckpointError::format(path, format!("cannot serialise ({e})")))?;
    write_atomic(path, &bytes)?;
    Ok(FileDigest::of(&bytes))
}

fn bytemuck_f32(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns; u8 has alignment 1; the length is
    // the byte length of the same allocation. Little-endian hosts only (checked below).
    const _: () = assert!(
        cfg!(target_endian = "little"),
        "safetensors are little-endian"
    );
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}
