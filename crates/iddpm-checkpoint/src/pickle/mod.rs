//! A pickle reader for PyTorch checkpoints that never runs code.
//!
//! Pickles are programs for a stack machine whose `GLOBAL` + `REDUCE` opcodes would call
//! arbitrary Python functions. This reader interprets the opcodes PyTorch emits into a value
//! tree instead, and accepts only the globals that rebuild tensors and containers; anything
//! else is an error naming the global.

mod machine;
mod opcode;
mod torch_globals;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (or OrderedDict), in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to tensor storage (`data/<key>` in the archive).
    Storage(StorageRef),
    /// A tensor view of a storage.
    Tensor(TensorRef),
    /// An allowed global, not yet called.
    Global(String, String),
    /// An object of a TorchScript class (`__torch__.*`) with its attribute state.
    Object {
        /// The class, e.g. `__torch__.inceptionv3.InceptionV3`.
        class: String,
        /// The state set by BUILD (usually a dict of attributes).
        state: Box<Value>,
    },
}

/// Element types of PyTorch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
    /// float64.
    F64,
    /// int64.
    I64,
    /// int32.
    I32,
    /// uint8.
    U8,
}

impl StorageDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F64 | Self::I64 => 8,
            Self::U8 => 1,
        }
    }

    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "DoubleStorage" => Self::F64,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ByteStorage" => Self::U8,
            _ => return None,
        })
    }
}

/// A storage in the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Entry name under `data/`.
    pub key: String,
    /// Element type.
    pub dtype: StorageDtype,
    /// Number of elements.
    pub numel: usize,
}

/// A strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage.
    pub storage: StorageRef,
    /// Offset in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// Bounds on what a pickle may make the reader do, so that a small hostile file cannot
/// exhaust the stack or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How deeply values may nest (a leaf is 1 deep). Tensor checkpoints need under 20;
    /// dropping or printing a value recurses this deep.
    pub max_depth: u32,
    /// The bytes the decoded values may take in all: a `Value` per value plus its text. The
    /// memo shares values as Python does, but the result is a tree, so a value fetched many
    /// times is built many times: this bounds that.
    pub value_budget: usize,
}

/// The default nesting limit of [`Limits`].
pub const MAX_DEPTH: u32 = 100;

impl Limits {
    /// The limits for a pickle of `len` bytes: values may take 32 MiB plus 8 bytes per byte
    /// of pickle, which no checkpoint written by PyTorch or NumPy comes near.
    pub fn for_input(len: usize) -> Self {
        Self {
            max_depth: MAX_DEPTH,
            value_budget: (32 << 20) + len.saturating_mul(8),
        }
    }
}

/// Decodes a pickle within [`Limits::for_input`]. `Err` carries a message (the caller adds
/// the file name).
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    parse_with_limits(bytes, Limits::for_input(bytes.len()))
}

/// Decodes a pickle within `limits`.
pub fn parse_with_limits(bytes: &[u8], limits: Limits) -> Result<Value, String> {
    machine::Machine::new(bytes, limits).run()
}

/// A short description of a value for error messages: never the whole value, which may be
/// huge or deeply nested.
pub fn describe(value: &Value) -> String {
    match value {
        Value::None => "None".into(),
        Value::Bool(b) => format!("the bool {b}"),
        Value::Int(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the float {f}"),
        Value::Str(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::Str(s) => format!("a string of {} bytes", s.len()),
        Value::Bytes(b) => format!("{} raw bytes", b.len()),
        Value::Tuple(items) => format!("a tuple of {} items", items.len()),
        Value::List(items) => format!("a list of {} items", items.len()),
        Value::Dict(items) => format!("a dict of {} items", items.len()),
        Value::Storage(s) => format!("the storage {}", s.key),
        Value::Tensor(t) => format!("a tensor of shape {:?}", t.shape),
        Value::Global(m, n) => format!("the global {m}.{n}"),
        Value::Object { class, .. } => format!("an object of {class}"),
    }
}

/// A NumPy array decoded from a pickle (`ndarray` state), as raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NumpyArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// NumPy type string without byte order, e.g. `u1`, `f4`.
    pub dtype: String,
    /// The raw data, C order.
    pub data: Vec<u8>,
}

impl Value {
    /// This value as a NumPy array, if it is one.
    pub fn as_numpy(&self) -> Option<NumpyArray> {
        let Value::Object { class, state } = self else {
            return None;
        };
        if class != "numpy.ndarray" {
            return None;
        }
        let Value::Tuple(items) = state.as_ref() else {
            return None;
        };
        let [_, shape, dtype, Value::Bool(false), data] = items.as_slice() else {
            return None;
        };
        let shape = torch_globals::as_usizes(shape, "shape").ok()?;
        let Value::Object { class: dclass, .. } = dtype else {
            return None;
        };
        let dtype = dclass.strip_prefix("numpy.dtype:")?.to_string();
        let data = match data {
            Value::Bytes(b) => b.clone(),
            Value::Str(s) => s.as_bytes().to_vec(),
            _ => return None,
        };
        Some(NumpyArray { shape, dtype, data })
    }

    /// The value stored under `key` in a dict, matching string or byte keys.
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items) = self else {
            return None;
        };
        items.iter().find_map(|(k, v)| match k {
            Value::Str(s) if s == key => Some(v),
            Value::Bytes(b) if b == key.as_bytes() => Some(v),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests;
