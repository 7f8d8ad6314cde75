//! A pickle reader for PyTorch checkpoints that never runs code.
//!
//! Pickles are programs for a stack machine whose `GLOBAL` + `REDUCE` opcodes would call
//! arbitrary Python functions. This reader interprets the opcodes PyTorch emits into a value
//! tree instead, and accepts only the globals that rebuild tensors and containers; anything
//! else is an error naming the global.

use std::collections::HashMap;

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

/// Decodes a pickle. `Err` carries a message (the caller adds the file name).
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    Machine::new(bytes).run()
}

enum Slot {
    Value(Value),
    Mark,
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated text line in pickle")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Value(v));
    }

    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => Err("unexpected MARK on the pickle stack".into()),
            None => Err("pickle stack underflow".into()),
        }
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Slot::Value(v)) => Ok(v),
            _ => Err("pickle stack underflow".into()),
        }
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Slot::Value(v)) => items.push(v),
                Some(Slot::Mark) => break,
                None => return Err("MARK missing on the pickle stack".into()),
            }
        }
        items.reverse();
        Ok(items)
    }

    fn memo_get(&self, key: u32) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("pickle memo key {key} is undefined"))
    }

    /// Runs the opcodes until STOP and returns the value left on the stack.
    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            if op == b'.' {
                return self.pop(); // STOP
            }
            let known = self.scalar_op(op)?
                || self.text_op(op)?
                || self.container_op(op)?
                || self.memo_op(op)?
                || self.object_op(op)?;
            if !known {
                return Err(format!(
                    "unsupported pickle opcode 0x{op:02x} at byte {}",
                    self.pos - 1
                ));
            }
        }
    }

    /// Framing, MARK, and the constants: None, booleans, integers, floats.
    /// Returns whether `op` was one of them.
    fn scalar_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            0x80 => {
                self.u8()?; // PROTO
            }
            0x95 => {
                self.take(8)?; // FRAME
            }
            b'(' => self.stack.push(Slot::Mark),
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                self.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v as i64));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                if n > 8 {
                    return Err("integer too large in pickle".into());
                }
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(b);
                if n > 0 && b[n - 1] & 0x80 != 0 {
                    buf[n..].fill(0xff);
                }
                self.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.push(Value::Float(v));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Strings (UTF-8) and byte strings, each with a 1- or 4-byte length.
    /// Returns whether `op` was one of them.
    fn text_op(&mut self, op: u8) -> Result<bool, String> {
        // SHORT_BINUNICODE, SHORT_BINSTRING and SHORT_BINBYTES have a 1-byte length; the
        // others a 4-byte one.
        let short = matches!(op, 0x8c | b'U' | b'C');
        match op {
            // BINUNICODE, SHORT_BINUNICODE.
            b'X' | 0x8c => {
                let n = self.length(short)?;
                let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                self.push(Value::Str(s));
            }
            // BINSTRING, SHORT_BINSTRING (Python 2 `str`, raw bytes such as array data),
            // BINBYTES, SHORT_BINBYTES.
            b'T' | b'U' | b'B' | b'C' => {
                let n = self.length(short)?;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A length prefix: one byte when `short`, else four (little-endian).
    fn length(&mut self, short: bool) -> Result<usize, String> {
        Ok(if short {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        })
    }

    /// Tuples, lists and dicts: empty ones, from a MARK, and items added to them.
    /// Returns whether `op` was one of them.
    fn container_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b')' => self.push(Value::Tuple(Vec::new())),
            b']' => self.push(Value::List(Vec::new())),
            b'}' => self.push(Value::Dict(Vec::new())),
            b't' => {
                let items = self.pop_to_mark()?;
                self.push(Value::Tuple(items));
            }
            b'l' => {
                let items = self.pop_to_mark()?;
                self.push(Value::List(items));
            }
            b'd' => {
                let items = self.pop_to_mark()?;
                let dict = pairs(items)?;
                self.push(Value::Dict(dict));
            }
            0x85 => {
                let a = self.pop()?;
                self.push(Value::Tuple(vec![a]));
            }
            0x86 => {
                let b = self.pop()?;
                let a = self.pop()?;
                self.push(Value::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = self.pop()?;
                let b = self.pop()?;
                let a = self.pop()?;
                self.push(Value::Tuple(vec![a, b, c]));
            }
            b'a' => {
                let v = self.pop()?;
                match self.top()? {
                    Value::List(l) => l.push(v),
                    _ => return Err("APPEND to a non-list".into()),
                }
            }
            b'e' => {
                let items = self.pop_to_mark()?;
                match self.top()? {
                    Value::List(l) => l.extend(items),
                    _ => return Err("APPENDS to a non-list".into()),
                }
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.top()? {
                    Value::Dict(d) => d.push((k, v)),
                    _ => return Err("SETITEM on a non-dict".into()),
                }
            }
            b'u' => {
                let items = self.pop_to_mark()?;
                let new = pairs(items)?;
                match self.top()? {
                    Value::Dict(d) => d.extend(new),
                    _ => return Err("SETITEMS on a non-dict".into()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The memo: storing the top of the stack, and fetching it back.
    /// Returns whether `op` was one of them.
    fn memo_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            // BINPUT, LONG_BINPUT: under a 1- or 4-byte key.
            b'q' | b'r' => {
                let k = self.length(op == b'q')? as u32;
                let v = self.top()?.clone();
                self.memo.insert(k, v);
            }
            // MEMOIZE: under the next free key.
            0x94 => {
                let k = self.memo.len() as u32;
                let v = self.top()?.clone();
                self.memo.insert(k, v);
            }
            // BINGET, LONG_BINGET.
            b'h' | b'j' => {
                let k = self.length(op == b'h')? as u32;
                let v = self.memo_get(k)?;
                self.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Globals (allow-listed), persistent storages, calls, NEWOBJ and BUILD.
    /// Returns whether `op` was one of them.
    fn object_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(global(module, name)?);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.push(global(m, n)?),
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                self.push(persistent_storage(pid)?);
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                self.push(call(func, args)?);
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args); only TorchScript classes.
                let _args = self.pop()?;
                let cls = self.pop()?;
                match cls {
                    Value::Global(m, n) if m.starts_with("__torch__") => self.push(Value::Object {
                        class: format!("{m}.{n}"),
                        state: Box::new(Value::None),
                    }),
                    other => return Err(format!("NEWOBJ of {other:?} is not allowed")),
                }
            }
            b'b' => {
                let state = self.pop()?;
                match self.top()? {
                    Value::Object { class, .. } if class.starts_with("numpy.dtype:") => {}
                    Value::Object { state: s, .. } => **s = state,
                    // OrderedDict._metadata and tensor hooks: irrelevant to the values.
                    Value::Dict(_) | Value::Tensor(_) => {}
                    other => return Err(format!("BUILD on {other:?} is not allowed")),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// The globals a tensor checkpoint may name. Anything else is refused.
fn global(module: String, name: String) -> Result<Value, String> {
    let allowed = matches!(
        (module.as_str(), name.as_str()),
        ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_tensor_v2")
            | ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch.jit._pickle", "build_intlist")
            | ("torch.jit._pickle", "build_tensorlist")
            | ("torch.jit._pickle", "build_doublelist")
            | ("torch.jit._pickle", "build_boollist")
            | ("torch", _)
            | (
                "numpy.core.multiarray" | "numpy._core.multiarray",
                "_reconstruct"
            )
            | ("numpy", "ndarray" | "dtype")
    ) || module.starts_with("__torch__");
    if !allowed || (module == "torch" && StorageDtype::from_storage_class(&name).is_none()) {
        return Err(format!(
            "the pickle names the global {module}.{name}; only PyTorch tensor checkpoints \
             are read (no code from the file is ever run)"
        ));
    }
    Ok(Value::Global(module, name))
}

fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [
            Value::Str(tag),
            Value::Global(_, class),
            Value::Str(key),
            _location,
            Value::Int(numel),
        ] if tag == "storage" => {
            let dtype = StorageDtype::from_storage_class(class)
                .ok_or_else(|| format!("unsupported storage type {class}"))?;
            Ok(Value::Storage(StorageRef {
                key: key.clone(),
                dtype,
                numel: *numel as usize,
            }))
        }
        _ => Err(format!("unrecognised persistent id {items:?}")),
    }
}

fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(format!("{what} holds a non-integer")),
            })
            .collect(),
        _ => Err(format!("{what} is not a tuple")),
    }
}

fn call(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = func else {
        return Err(format!("REDUCE on a non-callable {func:?}"));
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err("_rebuild_tensor_v2 with too few arguments".into());
            };
            let Value::Storage(storage) = storage else {
                return Err("_rebuild_tensor_v2 without a storage".into());
            };
            let Value::Int(offset) = offset else {
                return Err("_rebuild_tensor_v2: offset is not an integer".into());
            };
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: *offset as usize,
                shape: as_usizes(size, "tensor size")?,
                stride: as_usizes(stride, "tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => args
            .into_iter()
            .next()
            .ok_or_else(|| "_rebuild_parameter without a tensor".to_string()),
        // NumPy arrays: `_reconstruct(ndarray, (0,), b'b')` makes an empty array that BUILD
        // fills with `(version, shape, dtype, fortran_order, raw bytes)`.
        (_, "_reconstruct") => Ok(Value::Object {
            class: "numpy.ndarray".into(),
            state: Box::new(Value::None),
        }),
        ("numpy", "dtype") => {
            let descr = match args.first() {
                Some(Value::Str(s)) => s.clone(),
                Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => return Err("numpy.dtype without a type string".into()),
            };
            Ok(Value::Object {
                class: format!("numpy.dtype:{descr}"),
                state: Box::new(Value::None),
            })
        }
        ("torch.jit._pickle", _) => args
            .into_iter()
            .next()
            .ok_or_else(|| format!("{name} without an argument")),
        _ => Err(format!("calling {module}.{name} is not allowed")),
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
        let shape = as_usizes(shape, "shape").ok()?;
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
