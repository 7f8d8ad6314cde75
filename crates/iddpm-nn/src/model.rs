//! The UNet as the diffusion's denoising model.

use burn::tensor::Tensor;
use iddpm_diffusion::{Conditioning, DiffusionModel};

use crate::unet::UNetModel;

impl DiffusionModel for UNetModel {
    fn forward(&self, x: Tensor<4>, timesteps: Tensor<1>, cond: &Conditioning) -> Tensor<4> {
        match &cond.low_res {
            Some(low_res) => {
                self.forward_super_res(x, timesteps, low_res.clone(), cond.labels.clone())
            }
            None => UNetModel::forward(self, x, timesteps, cond.labels.clone()),
        }
    }
}
