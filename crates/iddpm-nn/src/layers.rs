//! The primitive layers of the UNet, storing weights in PyTorch's layout.

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Distribution, FloatDType, Int, Tensor};
use iddpm_kernels::ops::{self as kernels, Film};

use crate::params::{ParamVisitor, VisitParams};

/// Number of groups of every GroupNorm in the reference UNet.
pub const NORM_GROUPS: usize = 32;

fn uniform<const D: usize>(shape: [usize; D], fan_in: usize, device: &Device) -> Param<Tensor<D>> {
    // PyTorch's default init for conv and linear layers: U(−1/sqrt(fan_in), 1/sqrt(fan_in)).
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Param::from_tensor(crate::init::random(
        shape,
        Distribution::Uniform(-bound, bound),
        device,
    ))
}

/// `x` in `dtype` (no operation when it already is). Mixed precision runs the UNet's torso in
/// f16 while parameters stay f32: each layer casts at use, and autodiff casts gradients back.
pub fn to_dtype<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(FloatDType::from(dtype))
    }
}

/// A trainable parameter of zeros shaped like `like` (a fresh leaf that requires gradients).
fn zeros_param<const D: usize>(like: &Param<Tensor<D>>) -> Param<Tensor<D>> {
    let v = like.val();
    Param::from_tensor(Tensor::zeros(v.dims(), &v.device()))
}

/// A 2-D convolution with bias; weight `[out, in, k, k]`.
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// A convolution with PyTorch's default initialisation.
    pub fn new(
        channels_in: usize,
        channels_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Self {
        let fan_in = channels_in * kernel * kernel;
        Self {
            weight: uniform([channels_out, channels_in, kernel, kernel], fan_in, device),
            bias: uniform([channels_out], fan_in, device),
            stride,
            padding,
        }
    }

    /// The same convolution with all parameters zero (the reference's `zero_module`).
    pub fn zeroed(self) -> Self {
        Self {
            weight: zeros_param(&self.weight),
            bias: zeros_param(&self.bias),
            ..self
        }
    }

    /// `[B, in, H, W] -> [B, out, H', W']`, computed in x's precision (the Flex kernel for
    /// f32 on the CPU, burn's convolution otherwise).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let dtype = x.dtype();
        kernels::conv2d(
            x,
            to_dtype(self.weight.val(), dtype),
            to_dtype(self.bias.val(), dtype),
            self.stride,
            self.padding,
        )
    }
}

impl VisitParams for Conv2d {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        let shape = self.weight.val().dims();
        v.visit(&format!("{prefix}weight"), &shape, &mut self.weight);
        v.visit(&format!("{prefix}bias"), &[shape[0]], &mut self.bias);
    }
}

/// A 1×1 convolution over a sequence (`nn.Conv1d(in, out, 1)`); weight stored `[out, in]`,
/// named with PyTorch's `[out, in, 1]` shape.
#[derive(Module, Debug)]
pub struct Conv1x1 {
    /// `[out, in]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl Conv1x1 {
    /// A 1×1 convolution with PyTorch's default initialisation.
    pub fn new(channels_in: usize, channels_out: usize, device: &Device) -> Self {
        Self {
            weight: uniform([channels_out, channels_in], channels_in, device),
            bias: uniform([channels_out], channels_in, device),
        }
    }

    /// The same layer with all parameters zero.
    pub fn zeroed(self) -> Self {
        Self {
            weight: zeros_param(&self.weight),
            bias: zeros_param(&self.bias),
        }
    }

    /// `[B, in, T] -> [B, out, T]`, computed in x's precision.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [out, _] = self.weight.val().dims();
        let dtype = x.dtype();
        let w: Tensor<3> = to_dtype(self.weight.val(), dtype).unsqueeze();
        kernels::matmul(w, x) + to_dtype(self.bias.val(), dtype).reshape([1, out, 1])
    }
}

impl VisitParams for Conv1x1 {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        let [o, i] = self.weight.val().dims();
        v.visit(&format!("{prefix}weight"), &[o, i, 1], &mut self.weight);
        v.visit(&format!("{prefix}bias"), &[o], &mut self.bias);
    }
}

/// A fully connected layer; weight stored as PyTorch does, `[out, in]`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    /// A linear layer with PyTorch's default initialisation.
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        Self {
            weight: uniform([d_out, d_in], d_in, device),
            bias: uniform([d_out], d_in, device),
        }
    }

    /// `[B, in] -> [B, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let out = self.bias.val().dims()[0];
        kernels::matmul_2d(x, self.weight.val().transpose()) + self.bias.val().reshape([1, out])
    }
}

impl VisitParams for Linear {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        let shape = self.weight.val().dims();
        v.visit(&format!("{prefix}weight"), &shape, &mut self.weight);
        v.visit(&format!("{prefix}bias"), &[shape[0]], &mut self.bias);
    }
}

/// GroupNorm with 32 groups and eps 1e-5 (the reference's `GroupNorm32`), computed in f32.
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// Scale γ, `[C]`.
    pub weight: Param<Tensor<1>>,
    /// Shift β, `[C]`.
    pub bias: Param<Tensor<1>>,
}

impl GroupNorm {
    /// γ = 1, β = 0 over `channels` channels (must be a multiple of 32).
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
        }
    }

    /// Normalises `[B, C, ...]` over groups of C/32 channels and all positions; always in f32,
    /// returned in x's precision (as the reference's `GroupNorm32`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, None, false)
    }

    /// `silu(norm(x))`, fused into one pass on the CPU.
    pub fn forward_silu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, None, true)
    }

    /// `silu(norm(x) · (1 + scale) + shift)`, the ResBlock's scale-shift norm, fused into one
    /// pass on the CPU; scale and shift are `[B, C, 1, 1]`.
    pub fn forward_film_silu(&self, x: Tensor<4>, scale: Tensor<4>, shift: Tensor<4>) -> Tensor<4> {
        self.apply(x, Some(Film { scale, shift }), true)
    }

    fn apply<const D: usize>(&self, x: Tensor<D>, film: Option<Film<D>>, silu: bool) -> Tensor<D> {
        let (gamma, beta) = (self.weight.val(), self.bias.val());
        kernels::group_norm(x, gamma, beta, film, NORM_GROUPS, silu)
    }
}

impl VisitParams for GroupNorm {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        let c = self.weight.val().dims()[0];
        v.visit(&format!("{prefix}weight"), &[c], &mut self.weight);
        v.visit(&format!("{prefix}bias"), &[c], &mut self.bias);
    }
}

/// A lookup table of class embeddings, `[num_classes, dim]`.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[num_classes, dim]`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// N(0, 1) initialised, as PyTorch's `nn.Embedding`.
    pub fn new(num_classes: usize, dim: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(crate::init::random(
                [num_classes, dim],
                Distribution::Normal(0.0, 1.0),
                device,
            )),
        }
    }

    /// `[B]` labels → `[B, dim]`.
    pub fn forward(&self, labels: Tensor<1, Int>) -> Tensor<2> {
        self.weight.val().select(0, labels)
    }
}

impl VisitParams for Embedding {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        let shape = self.weight.val().dims();
        v.visit(&format!("{prefix}weight"), &shape, &mut self.weight);
    }
}
