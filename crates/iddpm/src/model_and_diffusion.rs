//! A model and its diffusion from one set of flags (the reference's
//! `create_model_and_diffusion`), with weights loaded from a checkpoint.

use std::path::Path;

use burn::tensor::Device;
use iddpm_diffusion::{DiffusionConfig, GaussianDiffusion};
use iddpm_nn::{ModelFlags, UNetModel, load_weights};

use crate::error::{Error, Result};

/// Everything needed to build a network and its diffusion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSpec {
    /// Network flags.
    pub model: ModelFlags,
    /// Diffusion flags; `learn_sigma` must agree with the network's.
    pub diffusion: DiffusionConfig,
    /// Whether this is the super-resolution model (3 extra input channels).
    pub super_res: bool,
}

impl ModelSpec {
    /// Checks that the two halves agree: the reference passes one `learn_sigma` to both, and a
    /// network with six output channels under a fixed-variance diffusion (or the reverse)
    /// cannot work.
    pub fn check(&self) -> Result<()> {
        if self.model.learn_sigma != self.diffusion.learn_sigma {
            return Err(Error::Invalid(format!(
                "learn_sigma is {} for the network but {} for the diffusion; they must agree",
                self.model.learn_sigma, self.diffusion.learn_sigma
            )));
        }
        Ok(())
    }

    /// Builds a freshly initialised network and the diffusion (with its configured respacing).
    pub fn build(&self, device: &Device) -> Result<(UNetModel, GaussianDiffusion)> {
        self.check()?;
        let config = self.model.unet_config(self.super_res)?;
        let diffusion = self.diffusion.build()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_halves_must_agree_on_learn_sigma() {
        let mut spec = ModelSpec::default();
        spec.model.image_size = 32;
        spec.model.learn_sigma = true;
        let err = spec.check().unwrap_err().to_string();
        assert!(
            err.contains("learn_sigma is true for the network but false"),
            "{err}"
        );
        spec.diffusion.learn_sigma = true;
        assert!(spec.check().is_ok());
    }
}
