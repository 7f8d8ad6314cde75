//! **iddpm**: Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021) in
//! Rust, on burn.
//!
//! - [`diffusion`]: the Gaussian diffusion process, respacing, losses, samplers.
//! - [`nn`]: the UNet and its checkpoints (PyTorch names, `.pt` and `.safetensors`).
//! - [`ModelSpec`]: a network and its diffusion from the reference's flags.
//! - [`sample`]: batched sampling to uint8 images; [`nll`]: bits/dim of a dataset.
//! - [`train`]: the training loop; [`data`]: image folders and the embedded dataset.
//! - [`eval`]: Fréchet distance and precision/recall on features.
//! - [`io`]: `.npy`/`.npz` and PNG grids.
//!
//! Tensors live on any burn device; [`default_device`] is the pure-Rust CPU device (Flex).

#![warn(missing_docs)]

pub mod device;
pub mod error;
pub mod evaluate;
pub mod io;
pub mod model_and_diffusion;
pub mod nll;
pub mod progress;
pub mod sample;

pub use device::{default_device, parse_device};
pub use error::{Error, Result};
pub use iddpm_checkpoint as checkpoint;
pub use iddpm_data as data;
pub use iddpm_diffusion as diffusion;
pub use iddpm_eval as eval;
pub use iddpm_nn as nn;
pub use iddpm_train as train;
pub use model_and_diffusion::ModelSpec;
