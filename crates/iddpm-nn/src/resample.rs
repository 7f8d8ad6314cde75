//! Changing resolution inside the UNet: strided-conv downsampling, nearest+conv upsampling.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::layers::Conv2d;
use crate::params::{ParamVisitor, VisitParams};

/// Halves the resolution with a 3×3 convolution of stride 2 (named `op` in checkpoints).
#[derive(Module, Debug)]
pub struct Downsample {
    op: Conv2d,
}

impl Downsample {
    /// A downsampler keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            op: Conv2d::new(channels, channels, 3, 2, 1, device),
        }
    }

    /// `[B, C, H, W] -> [B, C, ⌈H/2⌉, ⌈W/2⌉]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.op.forward(x)
    }
}

impl VisitParams for Downsample {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        self.op.visit_params(&format!("{prefix}op."), v);
    }
}

/// Doubles the resolution by nearest-neighbour repetition, then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// An upsampler keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: Conv2d::new(channels, channels, 3, 1, 1, device),
        }
    }

    /// `[B, C, H, W] -> [B, C, 2H, 2W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(nearest_upsample_2x(x))
    }
}

/// Nearest-neighbour ×2 upsampling (each pixel becomes a 2×2 block).
pub fn nearest_upsample_2x(x: Tensor<4>) -> Tensor<4> {
    iddpm_kernels::ops::upsample_nearest_2x(x)
}

impl VisitParams for Upsample {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        self.conv.visit_params(&format!("{prefix}conv."), v);
    }
}
