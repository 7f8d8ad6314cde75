//! Fast CPU kernels for the Improved DDPM UNet.
//!
//! The UNet's hot operations, written for burn's Flex (CPU) backend as a backend extension
//! ([`UnetKernels`]), each with a hand-written backward pass registered with burn's autodiff,
//! so that training and gradient checkpointing use them too. [`ops`] is the entry point for
//! model code: it runs a kernel when the tensors live on Flex in f32 and falls back to burn's
//! standard operations everywhere else (CUDA, f16, shapes a kernel does not handle).

#![warn(missing_docs)]

mod activation;
mod autodiff;
mod batched_matmul;
mod buffer;
pub mod conv;
pub mod dropout;
mod flex;
pub mod group_norm;
pub mod host;
mod matmul;
pub mod ops;
pub mod optim;
mod simd;
pub mod softmax;
pub mod upsample;
mod winograd;

pub use host::to_f32_vec;

use burn::backend::{Backend, backend_extension, tensor::FloatTensor};

/// The UNet operations that have a Flex kernel.
#[backend_extension(Flex, Autodiff)]
pub trait UnetKernels: Backend {
    /// 2-D convolution with bias: x `[B, C_in, H, W]`, weight `[C_out, C_in, k, k]`,
    /// bias `[C_out]`, the same stride and zero padding on both axes.
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// GroupNorm over `groups` groups of x `[B, C, ...]` with γ, β `[C]`, then SiLU when
    /// `silu`.
    fn fused_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        silu: bool,
    ) -> FloatTensor<Self>;

    /// GroupNorm, then the FiLM `· (1 + scale) + shift` with scale and shift of `B·C`
    /// values, then SiLU when `silu`.
    #[allow(clippy::too_many_arguments)]
    fn fused_group_norm_film(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        groups: usize,
        silu: bool,
    ) -> FloatTensor<Self>;

    /// Batched matrix product `[B | 1, M, K] · [B | 1, K, N] = [B, M, N]`, read through the
    /// operands' strides (transposed views are not copied).
    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Softmax over the last axis.
    fn fused_softmax_last_dim(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Nearest-neighbour ×2 upsampling of x `[B, C, H, W]` → `[B, C, 2H, 2W]`.
    fn fused_upsample_nearest_2x(x: FloatTensor<Self>) -> FloatTensor<Self>;
}
