//! PyTorch's zip checkpoint format (`torch.save` since 1.6, and TorchScript archives).

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};

use crate::error::{CheckpointError, Result};
use crate::pickle::{self, StorageDtype, TensorRef, Value};
use crate::state_dict::StateDict;
use crate::zip_entries::{read_zip_entries, zip_entries_from_bytes};

/// An opened PyTorch zip archive: its pickle decoded, its storages readable on demand.
pub struct TorchArchive {
    path: std::path::PathBuf,
    prefix: String,
    entries: HashMap<String, Vec<u8>>,
    /// Elements of all storage entries (counted as bytes: an upper bound for every dtype).
    stored_elements: usize,
    /// Elements read out so far.
    materialised: std::cell::Cell<usize>,
    /// The decoded `data.pkl`.
    pub root: Value,
}

impl TorchArchive {
    /// Opens `path` and decodes its `data.pkl`, wherever its single top-level folder is.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_entries(path, read_zip_entries(path)?)
    }

    /// [`open`](Self::open) of an archive in memory; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        Self::from_entries(path, zip_entries_from_bytes(bytes, path)?)
    }

    fn from_entries(path: &Path, entries: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let entries: HashMap<String, Vec<u8>> = entries.into_iter().collect();
        let pkl = entries
            .keys()
            .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
            .min_by_key(|n| n.len())
            .cloned()
            .ok_or_else(|| {
                CheckpointError::format(
                    path,
                    "zip archive without data.pkl: not a PyTorch checkpoint",
                )
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let root = pickle::parse(&entries[&pkl]).map_err(|m| CheckpointError::format(path, m))?;
        Ok(Self {
            path: path.to_path_buf(),
            prefix,
            stored_elements: entries.values().map(Vec::len).sum(),
            entries,
            root,
            materialised: std::cell::Cell::new(0),
        })
    }

    /// Counts `numel` more elements read out of the archive, refusing to read more than
    /// [`MAX_READ_FACTOR`] times what the storages hold plus [`MAX_EXPANDED_ELEMENTS`]: many
    /// views of one storage must not multiply a small file into a huge allocation.
    fn charge_materialised(&self, numel: usize) -> Result<()> {
        let limit = self
            .stored_elements
            .saturating_mul(MAX_READ_FACTOR)
            .saturating_add(MAX_EXPANDED_ELEMENTS);
        let total = self.materialised.get().saturating_add(numel);
        if total > limit {
            return Err(CheckpointError::format(
                &self.path,
                format!(
                    "its tensors would take {total} elements, more than {MAX_READ_FACTOR} times \
                     the {} its storages hold plus {MAX_EXPANDED_ELEMENTS}",
                    self.stored_elements
                ),
            ));
        }
        self.materialised.set(total);
        Ok(())
    }

    /// The values of a tensor, converted to f32 and made contiguous.
    pub fn tensor_values(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let key = format!("{}data/{}", self.prefix, t.storage.key);
        let raw = self.entries.get(&key).ok_or_else(|| {
            CheckpointError::format(&self.path, format!("storage entry {key} is missing"))
        })?;
        let size = t.storage.dtype.size();
        let bad = |m: String| CheckpointError::format(&self.path, format!("storage {key}: {m}"));
        if Some(raw.len()) != t.storage.numel.checked_mul(size) {
            return Err(bad(format!(
                "declares {} elements of {size} bytes but holds {} bytes",
                t.storage.numel,
                raw.len()
            )));
        }
        let numel = checked_view_numel(t).map_err(bad)?;
        self.charge_materialised(numel)?;
        let read = |i: usize| -> f32 {
            let b = &raw[i * size..(i + 1) * size];
            match t.storage.dtype {
                StorageDtype::F32 => f32::from_le_bytes(b.try_into().unwrap()),
                StorageDtype::F16 => f16::from_le_bytes(b.try_into().unwrap()).to_f32(),
                StorageDtype::BF16 => bf16::from_le_bytes(b.try_into().unwrap()).to_f32(),
                StorageDtype::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
                StorageDtype::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f32,
                StorageDtype::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f32,
                StorageDtype::U8 => b[0] as f32,
            }
        };
        let mut out = Vec::with_capacity(numel);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let pos = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.push(read(pos));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }

    /// Every tensor attribute of a TorchScript module tree (`torch.jit.save`), named by its
    /// attribute path (`net.layers.conv.weight`), in the order the pickle holds them.
    pub fn module_tensors(&self) -> Result<StateDict> {
        fn walk(
            archive: &TorchArchive,
            prefix: &str,
            v: &Value,
            out: &mut StateDict,
        ) -> Result<()> {
            match v {
                Value::Tensor(t) => {
                    out.insert(
                        prefix.trim_end_matches('.'),
                        t.shape.clone(),
                        archive.tensor_values(t)?,
                    );
                }
                Value::Object { state, .. } => walk(archive, prefix, state, out)?,
                Value::Dict(items) => {
                    for (k, child) in items {
                        if let Value::Str(name) = k {
                            walk(archive, &format!("{prefix}{name}."), child, out)?;
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let mut out = StateDict::new();
        walk(self, "", &self.root, &mut out)?;
        if out.is_empty() {
            return Err(CheckpointError::format(
                &self.path,
                "no tensors found in the module tree",
            ));
        }
        Ok(out)
    }

    /// The archive's root as a state dict of tensors (`torch.save(model.state_dict())`).
    pub fn state_dict(&self) -> Result<StateDict> {
        let Value::Dict(items) = &self.root else {
            return Err(CheckpointError::format(
                &self.path,
                "the pickle is not a dict of tensors (a state dict); whole pickled models are not read",
            ));
        };
        let mut dict = StateDict::new();
        for (k, v) in items {
            let Value::Str(name) = k else {
                return Err(CheckpointError::format(
                    &self.path,
                    "a state-dict key is not a string",
                ));
            };
            match v {
                Value::Tensor(t) => {
                    dict.insert(name.clone(), t.shape.clone(), self.tensor_values(t)?)
                }
                other => {
                    return Err(CheckpointError::format(
                        &self.path,
                        format!("state-dict entry {name} is not a tensor ({})", kind(other)),
                    ));
                }
            }
        }
        Ok(dict)
    }
}

/// How many elements a view may materialise beyond its storage's own count: expanded
/// (stride-0) views are legal, but a few bytes must not be able to ask for terabytes.
pub const MAX_EXPANDED_ELEMENTS: usize = 1 << 24;

/// How many times over an archive's tensors may read its stored elements (tied weights read
/// one storage twice; no real checkpoint reads one four times).
pub const MAX_READ_FACTOR: usize = 4;

/// The number of elements of view `t`, after checking its rank, its arithmetic and that it
/// stays inside its storage.
fn checked_view_numel(t: &TensorRef) -> std::result::Result<usize, String> {
    if t.shape.len() != t.stride.len() {
        return Err(format!(
            "a tensor's shape {:?} and stride {:?} differ in rank",
            t.shape, t.stride
        ));
    }
    let overflow = || format!("a tensor's shape {:?} overflows", t.shape);
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)?;
    if numel == 0 {
        return Ok(0);
    }
    let max_index = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            acc.checked_add((n - 1).checked_mul(s)?)
        })
        .ok_or_else(overflow)?;
    let stored = t.storage.numel;
    if max_index >= stored {
        return Err(format!(
            "holds {stored} elements but a tensor (offset {}, shape {:?}, stride {:?}) reaches \
             index {max_index}",
            t.offset, t.shape, t.stride
        ));
    }
    if numel > stored.max(MAX_EXPANDED_ELEMENTS) {
        return Err(format!(
            "a tensor of shape {:?} repeats its {stored} stored elements {numel} times over; \
             the limit is {MAX_EXPANDED_ELEMENTS} elements",
            t.shape
        ));
    }
    Ok(numel)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Dict(_) => "a dict; is this a training-state checkpoint rather than model weights?",
        Value::List(_) | Value::Tuple(_) => "a sequence",
        _ => "a plain value",
    }
}

#[cfg(test)]
mod tests;
