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
//!
//! Sampling 16 images with 50 DDIM steps from the released CIFAR-10 checkpoint
//! (`cifar10_uncond_50M_500K.pt`, loaded as it is):
//!
//! ```no_run
//! use iddpm::diffusion::{BetaSchedule, DiffusionConfig, Sampler};
//! use iddpm::nn::ModelFlags;
//! use iddpm::sample::{SampleOptions, sample_images};
//! use iddpm::{ModelSpec, default_device};
//!
//! # fn main() -> iddpm::Result<()> {
//! let spec = ModelSpec {
//!     model: ModelFlags {
//!         image_size: 32,
//!         num_channels: 128,
//!         num_res_blocks: 3,
//!         learn_sigma: true,
//!         dropout: 0.3,
//!         ..ModelFlags::default()
//!     },
//!     diffusion: DiffusionConfig {
//!         diffusion_steps: 4000,
//!         noise_schedule: BetaSchedule::Cosine,
//!         learn_sigma: true,
//!         timestep_respacing: "ddim50".into(),
//!         ..DiffusionConfig::default()
//!     },
//!     super_res: false,
//! };
//! let device = default_device();
//! let (model, diffusion) = spec.load("cifar10_uncond_50M_500K.pt".as_ref(), &device)?;
//! let opts = SampleOptions {
//!     num_samples: 16,
//!     image_size: 32,
//!     sampler: Sampler::ddim(0.0),
//!     ..SampleOptions::default()
//! };
//! let samples = sample_images(&model, &diffusion, &opts, &device, &mut |_| {})?;
//! iddpm::io::save_grid("samples.png".as_ref(), &samples.images, samples.n, 32, 32)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod allocator;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod io;
pub mod model_and_diffusion;
pub mod nll;
pub mod progress;
pub mod reference_check;
pub mod sample;
pub mod settings;
pub mod sharding;
pub mod steady_rate;

pub use device::{default_device, parse_device};
pub use error::{Error, Result};
pub use iddpm_checkpoint as checkpoint;
pub use iddpm_data as data;
pub use iddpm_diffusion as diffusion;
pub use iddpm_eval as eval;
pub use iddpm_kernels::ops as kernels;
pub use iddpm_nn as nn;
pub use iddpm_train as train;
pub use model_and_diffusion::ModelSpec;
