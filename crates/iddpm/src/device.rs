//! Choosing where tensors live.
//!
//! Flex, burn's pure-Rust CPU backend, is always built. The other devices run burn's CubeCL
//! backends, the same kernels a GPU runs, and each needs its cargo feature:
//! - `cuda` / `cuda:N`: NVIDIA GPUs (feature `cuda`);
//! - `wgpu`, `wgpu:N`, `wgpu:integrated[:N]`, `wgpu:cpu`: any Vulkan, Metal or DirectX device
//!   through wgpu (feature `wgpu`); `wgpu:cpu` is a software adapter such as Mesa's lavapipe,
//!   which runs the GPU code path on a machine without a GPU;
//! - `cubecl-cpu`: CubeCL's own CPU runtime, the same kernels compiled for the host through
//!   LLVM (feature `cubecl-cpu`).

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The `--device` name of [`default_device`].
pub const DEFAULT_DEVICE_NAME: &str = "flex";

/// The `--device` names, written once for [`DEVICE_NAMES`] and [`DEVICE_HELP`].
macro_rules! device_names {
    () => {
        "flex (or cpu), cuda[:N], wgpu[:N | :integrated[:N] | :cpu] or cubecl-cpu"
    };
}

/// What `--device` accepts, for error messages.
pub const DEVICE_NAMES: &str = device_names!();

/// The help text of every command's `--device` flag.
pub const DEVICE_HELP: &str = concat!(
    "Where tensors live: ",
    device_names!(),
    " (all but flex need their cargo feature)"
);

/// The device iddpm uses unless told otherwise: burn's pure-Rust CPU backend.
pub fn default_device() -> Device {
    Device::flex()
}

/// Parses `--device` (see [`DEVICE_NAMES`]). A device whose feature this build lacks is
/// refused with the cargo command that adds it.
pub fn parse_device(name: &str) -> Result<Device> {
    match name.to_ascii_lowercase().as_str() {
        "flex" | "cpu" => Ok(Device::flex()),
        s if s == "cuda" || s.starts_with("cuda:") => cuda_device(s),
        s if s == "wgpu" || s.starts_with("wgpu:") => wgpu_device(s),
        "cubecl-cpu" => cubecl_cpu_device(),
        other => Err(Error::Invalid(format!(
            "device {other:?}: expected {DEVICE_NAMES}"
        ))),
    }
}

/// The error for a device whose cargo feature this build lacks.
#[allow(dead_code)] // unused when every device feature is on
fn not_built(device: &str, feature: &str) -> Error {
    Error::Invalid(format!(
        "device {device}: this build has no {feature} support; rebuild with \
         `cargo build --release --features {feature}`"
    ))
}

/// Parses the index of `cuda:N`, `wgpu:N` and the like.
#[allow(dead_code)] // unused when no GPU feature is on
fn device_index(s: &str, index: &str) -> Result<usize> {
    index
        .parse::<usize>()
        .map_err(|_| Error::Invalid(format!("device {s:?}: bad device index {index:?}")))
}

#[cfg(feature = "cuda")]
fn cuda_device(s: &str) -> Result<Device> {
    let index = match s.strip_prefix("cuda:") {
        Some(i) => device_index(s, i)?,
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
    Err(not_built(s, "cuda"))
}

#[cfg(feature = "wgpu")]
fn wgpu_device(s: &str) -> Result<Device> {
    use burn::tensor::DeviceKind;
    let kind = match s.strip_prefix("wgpu").unwrap_or_default() {
        "" => DeviceKind::DefaultDevice,
        ":cpu" => DeviceKind::Cpu,
        ":integrated" => DeviceKind::IntegratedGpu(0),
        rest => match rest.strip_prefix(":integrated:") {
            Some(i) => DeviceKind::IntegratedGpu(device_index(s, i)?),
            None => DeviceKind::DiscreteGpu(device_index(s, &rest[1..])?),
        },
    };
    Ok(Device::wgpu(kind))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(s: &str) -> Result<Device> {
    Err(not_built(s, "wgpu"))
}

#[cfg(feature = "cubecl-cpu")]
fn cubecl_cpu_device() -> Result<Device> {
    Ok(Device::cpu())
}

#[cfg(not(feature = "cubecl-cpu"))]
fn cubecl_cpu_device() -> Result<Device> {
    Err(not_built("cubecl-cpu", "cubecl-cpu"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_the_default_and_unknown_names_are_refused() {
        assert!(parse_device(DEFAULT_DEVICE_NAME).is_ok());
        assert!(parse_device("CPU").is_ok());
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("wgpu"), "{err}");
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn a_device_without_its_feature_names_the_feature() {
        let err = parse_device("wgpu:cpu").unwrap_err().to_string();
        assert!(err.contains("--features wgpu"), "{err}");
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu_indices_are_checked() {
        assert!(parse_device("wgpu:1").is_ok());
        assert!(parse_device("wgpu:integrated:2").is_ok());
        let err = parse_device("wgpu:x").unwrap_err().to_string();
        assert!(err.contains("\"x\""), "{err}");
    }
}
