//! A model and its diffusion from one set of flags (the reference's
//! `create_model_and_diffusion`), with weights loaded from a checkpoint.

use std::path::Path;

use burn::tensor::Device;
use iddpm_diffusion::{DiffusionConfig, GaussianDiffusion};
use iddpm_nn::{ModelFlags, UNetModel, load_weights};

use crate::error::Result;

/// Everything needed to build a network and its diffusion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSpec {
    /// Network flags.
    pub model: ModelFlags,
    /// Diffusion flags (its `learn_sigma` is taken from the network's).
    pub diffusion: DiffusionConfig,
    /// Whether this is the super-resolution model (3 extra input channels).
    pub super_res: bool,
}

impl ModelSpec {
    /// The diffusion flags with `learn_sigma` kept consistent with the network.
    pub fn diffusion_config(&self) -> DiffusionConfig {
        DiffusionConfig {
            learn_sigma: self.model.learn_sigma,
            ..self.diffusion.clone()
        }
    }

    /// Builds a freshly initialised network and the diffusion (with its configured respacing).
    pub fn build(&self, device: &Device) -> Result<(UNetModel, GaussianDiffusion)> {
        let config = self.model.unet_config(self.super_res)?;
        let diffusion = self.diffusion_config().build()?;
        Ok((UNetModel::new(&config, device), diffusion))
    }

    /// Builds the network and diffusion and loads the weights at `path` (`.pt` or
    /// `.safetensors`); an error lists whatever does not fit.
    pub fn load(&self, path: &Path, device: &Device) -> Result<(UNetModel, GaussianDiffusion)> {
        let (mut model, diffusion) = self.build(device)?;
        load_weights(&mut model, path)?;
        Ok((model, diffusion))
    }
}
