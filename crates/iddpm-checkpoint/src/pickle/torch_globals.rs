//! The Python callables a tensor checkpoint may name, and what "calling" each one builds.
//! Nothing else can be named, so no code from the file is ever run.

use super::{StorageDtype, StorageRef, TensorRef, Value, describe};

/// The globals a tensor checkpoint may name. Anything else is refused.
pub(super) fn global(module: String, name: String) -> Result<Value, String> {
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

/// `BINPERSID` of `("storage", <dtype>Storage, key, location, numel)`.
pub(super) fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("persistent id is {}, not a tuple", describe(&pid)));
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
            let numel = usize::try_from(*numel)
                .map_err(|_| format!("storage {key} declares {numel} elements"))?;
            Ok(Value::Storage(StorageRef {
                key: key.clone(),
                dtype,
                numel,
            }))
        }
        _ => Err(format!(
            "unrecognised persistent id ({} items)",
            items.len()
        )),
    }
}

/// `NEWOBJ`: `cls.__new__(cls, *args)`, for TorchScript classes only.
pub(super) fn new_object(cls: Value) -> Result<Value, String> {
    match cls {
        Value::Global(m, n) if m.starts_with("__torch__") => Ok(Value::Object {
            class: format!("{m}.{n}"),
            state: Box::new(Value::None),
        }),
        other => Err(format!("NEWOBJ of {} is not allowed", describe(&other))),
    }
}

/// `REDUCE`: what calling an allowed global with `args` builds.
pub(super) fn call(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = func else {
        return Err(format!("REDUCE on {}, not a callable", describe(&func)));
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") => rebuild_tensor(&args),
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

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: a view, checked for sign here
/// and against the storage's bytes when its values are read.
fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let [storage, offset, size, stride, ..] = args else {
        return Err("_rebuild_tensor_v2 with too few arguments".into());
    };
    let Value::Storage(storage) = storage else {
        return Err("_rebuild_tensor_v2 without a storage".into());
    };
    let Value::Int(offset) = offset else {
        return Err("_rebuild_tensor_v2: offset is not an integer".into());
    };
    let offset = usize::try_from(*offset)
        .map_err(|_| format!("tensor of storage {} has offset {offset}", storage.key))?;
    Ok(Value::Tensor(TensorRef {
        storage: storage.clone(),
        offset,
        shape: as_usizes(size, "tensor size")?,
        stride: as_usizes(stride, "tensor stride")?,
    }))
}

/// A tuple or list of non-negative integers.
pub(super) fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} holds {i}")),
                other => Err(format!("{what} holds {}", describe(other))),
            })
            .collect(),
        other => Err(format!("{what} is {}, not a tuple", describe(other))),
    }
}
