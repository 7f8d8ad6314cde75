//! Spatial self-attention with the reference's legacy (head-major) QKV layout.

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};

use iddpm_kernels::ops::{matmul, softmax_last_dim};

use crate::layers::{Conv1x1, GroupNorm, to_dtype};
use crate::params::{ParamVisitor, VisitParams};

/// Multi-head self-attention over all positions, with a residual connection.
///
/// The qkv projection's channels are head-major: head h owns channels `[h·3d, (h+1)·3d)` with
/// q, k, v consecutive (d = C/heads), exactly as the released checkpoints were trained.
#[derive(Module, Debug)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    num_heads: usize,
}

impl AttentionBlock {
    /// Attention over `channels` channels split into `num_heads` heads.
    pub fn new(channels: usize, num_heads: usize, device: &Device) -> Self {
        Self {
            norm: GroupNorm::new(channels, device),
            qkv: Conv1x1::new(channels, 3 * channels, device),
            proj_out: Conv1x1::new(channels, channels, device).zeroed(),
            num_heads,
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // B batch, C channels, T = H·W positions, n heads of d = C/n channels, N = B·n.
        let [b, c, h, w] = x.dims();
        let (n, d, t) = (self.num_heads, c / self.num_heads, h * w);
        let x: Tensor<3> = x.reshape([b, c, t]); // [B, C, T]
        let qkv = self.qkv.forward(self.norm.forward(x.clone())); // [B, 3C, T]
        let qkv: Tensor<3> = qkv.reshape([b * n, 3 * d, t]); // [N, 3d, T], head-major
        // Scaling q and k separately by d^(-1/4) is more stable in f16 than scaling the product.
        let scale = (1.0 / (d as f64).sqrt().sqrt()) as f32;
        let q = qkv.clone().narrow(1, 0, d).mul_scalar(scale); // [N, d, T]
        let k = qkv.clone().narrow(1, d, d).mul_scalar(scale); // [N, d, S], S = T keys
        let v = qkv.narrow(1, 2 * d, d); // [N, d, S]
        let logits = matmul(q.swap_dims(1, 2), k); // [N, T, d] · [N, d, S] = [N, T, S]
        let dtype = logits.dtype();
        // The softmax runs in f32 even when the torso runs in f16.
        let weight = to_dtype(softmax_last_dim(to_dtype(logits, DType::F32)), dtype); // [N, T, S]
        let out = matmul(v, weight.swap_dims(1, 2)); // [N, d, S] · [N, S, T] = [N, d, T]
        let out: Tensor<3> = out.reshape([b, c, t]); // [B, C, T], heads back side by side
        let out = self.proj_out.forward(out); // [B, C, T]
        (x + out).reshape([b, c, h, w]) // [B, C, H, W]
    }
}

impl VisitParams for AttentionBlock {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        self.norm.visit_params(&format!("{prefix}norm."), v);
        self.qkv.visit_params(&format!("{prefix}qkv."), v);
        self.proj_out.visit_params(&format!("{prefix}proj_out."), v);
    }
}
