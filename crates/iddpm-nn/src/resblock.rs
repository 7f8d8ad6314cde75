//! The residual block of the UNet, conditioned on the timestep embedding.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::dropout::KeyedDropout;
use crate::layers::{Conv2d, GroupNorm, Linear, to_dtype};
use crate::params::{ParamVisitor, VisitParams};

/// GN → SiLU → conv, plus the embedding (added, or as a FiLM scale and shift of the second
/// norm), then GN → SiLU → dropout → zero-initialised conv, and a skip connection.
#[derive(Module, Debug)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    emb_linear: Linear,
    out_norm: GroupNorm,
    dropout: KeyedDropout,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
    use_scale_shift_norm: bool,
}

impl ResBlock {
    /// A block from `channels` to `out_channels`, taking an embedding of `emb_channels`.
    pub fn new(
        channels: usize,
        emb_channels: usize,
        out_channels: usize,
        dropout: f64,
        use_scale_shift_norm: bool,
        device: &Device,
    ) -> Self {
        let emb_out = if use_scale_shift_norm {
            2 * out_channels
        } else {
            out_channels
        };
        Self {
            in_norm: GroupNorm::new(channels, device),
            in_conv: Conv2d::new(channels, out_channels, 3, 1, 1, device),
            emb_linear: Linear::new(emb_channels, emb_out, device),
            out_norm: GroupNorm::new(out_channels, device),
            dropout: KeyedDropout::new(dropout),
            out_conv: Conv2d::new(out_channels, out_channels, 3, 1, 1, device).zeroed(),
            skip: (channels != out_channels)
                .then(|| Conv2d::new(channels, out_channels, 1, 1, 0, device)),
            use_scale_shift_norm,
        }
    }

    /// `x: [B, C, H, W]`, `emb_silu: [B, E]` → `[B, C_out, H, W]`. `emb_silu` is
    /// `silu(emb)`, the first layer of the reference's `emb_layers`, computed once by the
    /// caller for all blocks.
    pub fn forward(&self, x: Tensor<4>, emb_silu: Tensor<2>) -> Tensor<4> {
        let h = self.in_conv.forward(self.in_norm.forward_silu(x.clone()));
        // The embedding projection stays in f32; its output joins h in h's precision.
        let emb_out = to_dtype(self.emb_linear.forward(emb_silu), h.dtype());
        let [b, e] = emb_out.dims();
        let emb_out: Tensor<4> = emb_out.reshape([b, e, 1, 1]);
        let h = if self.use_scale_shift_norm {
            let half = e / 2;
            let scale = emb_out.clone().narrow(1, 0, half);
            let shift = emb_out.narrow(1, half, half);
            self.out_norm.forward_film_silu(h, scale, shift)
        } else {
            self.out_norm.forward_silu(h + emb_out)
        };
        let h = self.out_conv.forward(self.dropout.forward(h));
        let skip = match &self.skip {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}

impl VisitParams for ResBlock {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        self.in_norm
            .visit_params(&format!("{prefix}in_layers.0."), v);
        self.in_conv
            .visit_params(&format!("{prefix}in_layers.2."), v);
        self.emb_linear
            .visit_params(&format!("{prefix}emb_layers.1."), v);
        self.out_norm
            .visit_params(&format!("{prefix}out_layers.0."), v);
        self.out_conv
            .visit_params(&format!("{prefix}out_layers.3."), v);
        if let Some(skip) = &mut self.skip {
            skip.visit_params(&format!("{prefix}skip_connection."), v);
        }
    }
}
