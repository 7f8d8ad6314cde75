//! Choosing where tensors live.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The `--device` name of [`default_device`].
pub const DEFAULT_DEVICE_NAME: &str = "flex";

/// The device iddpm uses unless told otherwise: burn's pure-Rust CPU backend.
pub fn default_device() -> Device {
    Device::flex()
}

/// Parses `--device`: `flex` (or `cpu`), or `cuda` / `cuda:N` when built with the `cuda`
/// feature.
pub fn parse_device(name: &str) -> Result<Device> {
    match name.to_ascii_lowercase().as_str() {
        "flex" | "cpu" => Ok(Device::flex()),
        s if s == "cuda" || s.starts_with("cuda:") => cuda_device(s),
        other => Err(Error::Invalid(format!(
            "device {other:?}: expected flex (CPU) or cuda[:N]"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(s: &str) -> Result<Device> {
    let index = match s.strip_prefix("cuda:") {
        Some(i) => i
            .parse::<usize>()
            .map_err(|_| Error::Invalid(format!("device {s:?}: bad CUDA device index")))?,
        None => 0,
    };
    // SAFETY: only tries to load the driver library (libcuda), calling nothing in it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Invalid(format!(
            "device {s}: the NVIDIA driver library (libcuda.so.1) cannot be loaded; is there an \
             NVIDIA GPU and driver on this machine (and on LD_LIBRARY_PATH)?"
        )));
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(s: &str) -> Result<Device> {
    Err(Error::Invalid(format!(
        "device {s}: this build has no CUDA support; rebuild with `cargo build --release --features cuda`"
    )))
}
