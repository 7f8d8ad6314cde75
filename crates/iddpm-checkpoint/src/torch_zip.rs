//! PyTorch's zip checkpoint format (`torch.save` since 1.6, and TorchScript archives).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use half::{bf16, f16};

use crate::error::{CheckpointError, Result};
use crate::pickle::{self, StorageDtype, TensorRef, Value};
use crate::state_dict::StateDict;

/// An opened PyTorch zip archive: its pickle decoded, its storages readable on demand.
pub struct TorchArchive {
    path: std::path::PathBuf,
    prefix: String,
    entries: HashMap<String, Vec<u8>>,
    /// The decoded `data.pkl`.
    pub root: Value,
}

impl TorchArchive {
    /// Opens `path` and decodes its `data.pkl`, wherever its single top-level folder is.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| {
            CheckpointError::format(path, format!("not a readable zip archive ({e})"))
        })?;
        let mut entries = HashMap::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| {
                CheckpointError::format(path, format!("damaged zip entry {i} ({e})"))
            })?;
            if entry.is_dir() {
                continue;
            }
            let name = entry.name().to_string();
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut buf).map_err(|e| {
                CheckpointError::format(
                    path,
                    format!("cannot read zip entry {name} ({e}); is the file truncated?"),
                )
            })?;
            entries.insert(name, buf);
        }
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
            entries,
            root,
        })
    }

    /// The values of a tensor, converted to f32 and made contiguous.
    pub fn tensor_values(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let key = format!("{}data/{}", self.prefix, t.storage.key);
        let raw = self.entries.get(&key).ok_or_else(|| {
            CheckpointError::format(&self.path, format!("storage entry {key} is missing"))
        })?;
        let size = t.storage.dtype.size();
        let available = raw.len() / size;
        let numel: usize = t.shape.iter().product();
        if t.shape.len() != t.stride.len() {
            return Err(CheckpointError::format(
                &self.path,
                "tensor shape and stride differ in rank",
            ));
        }
        let max_index = t.offset
            + t.shape
                .iter()
                .zip(&t.stride)
                .map(|(&n, &s)| n.saturating_sub(1) * s)
                .sum::<usize>();
        if numel > 0 && max_index >= available {
            return Err(CheckpointError::format(
                &self.path,
                format!(
                    "storage {key} holds {available} values but the tensor reaches index {max_index}"
                ),
            ));
        }
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

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Dict(_) => "a dict; is this a training-state checkpoint rather than model weights?",
        Value::List(_) | Value::Tuple(_) => "a sequence",
        _ => "a plain value",
    }
}
