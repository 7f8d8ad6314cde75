//! **iddpm**: Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021) in
//! Rust, on burn.
//!
//! This crate gathers the project's parts under one roof:
//! - [`diffusion`]: the Gaussian diffusion process, respacing, losses, samplers.
//! - [`nn`]: the networks.
//!
//! Tensors live on any burn device; [`default_device`] is the pure-Rust CPU device (Flex).

pub use iddpm_diffusion as diffusion;
pub use iddpm_nn as nn;

/// The device iddpm uses unless told otherwise: burn's pure-Rust CPU backend.
pub fn default_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
