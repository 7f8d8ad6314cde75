//! The UNet of Improved DDPM (the reference's `UNetModel`) and its super-resolution variant.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Device, Int, Tensor};

use crate::attention::AttentionBlock;
use crate::conditioning::ConditioningError;
use crate::config::UNetConfig;
use crate::layers::{Conv2d, Embedding, GroupNorm, Linear, to_dtype};
use crate::params::{ParamVisitor, VisitParams};
use crate::resample::{Downsample, Upsample};
use crate::resblock::ResBlock;
use crate::timestep_embedding::timestep_embedding;

/// One entry of `input_blocks` / `output_blocks`: the layers present, applied in this order.
#[derive(Module, Debug)]
pub struct EmbedBlock {
    conv: Option<Conv2d>,
    res: Option<ResBlock>,
    attn: Option<AttentionBlock>,
    down: Option<Downsample>,
    up: Option<Upsample>,
}

impl EmbedBlock {
    fn empty() -> Self {
        Self {
            conv: None,
            res: None,
            attn: None,
            down: None,
            up: None,
        }
    }

    fn forward(&self, mut h: Tensor<4>, emb_silu: &Tensor<2>) -> Tensor<4> {
        if let Some(conv) = &self.conv {
            h = conv.forward(h);
        }
        if let Some(res) = &self.res {
            h = res.forward(h, emb_silu.clone());
        }
        if let Some(attn) = &self.attn {
            h = attn.forward(h);
        }
        if let Some(down) = &self.down {
            h = down.forward(h);
        }
        if let Some(up) = &self.up {
            h = up.forward(h);
        }
        h
    }
}

impl VisitParams for EmbedBlock {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        // Sequential indices count only the layers present, as in TimestepEmbedSequential.
        let mut i = 0;
        let mut next = || {
            i += 1;
            format!("{prefix}{}.", i - 1)
        };
        if let Some(m) = &mut self.conv {
            m.visit_params(&next(), v);
        }
        if let Some(m) = &mut self.res {
            m.visit_params(&next(), v);
        }
        if let Some(m) = &mut self.attn {
            m.visit_params(&next(), v);
        }
        if let Some(m) = &mut self.down {
            m.visit_params(&next(), v);
        }
        if let Some(m) = &mut self.up {
            m.visit_params(&next(), v);
        }
    }
}

/// Intermediate activations of a forward pass, for debugging against the reference.
#[derive(Debug, Default, Clone)]
pub struct UNetTrace {
    /// Input of `time_embed`: the sinusoidal embedding `[B, model_channels]`.
    pub temb_sinusoid: Option<Tensor<2>>,
    /// Output of `time_embed` (plus the label embedding) `[B, 4·model_channels]`.
    pub emb: Option<Tensor<2>>,
    /// Output of each input block.
    pub input_blocks: Vec<Tensor<4>>,
    /// Output of the middle block.
    pub middle_block: Option<Tensor<4>>,
    /// Output of each output block.
    pub output_blocks: Vec<Tensor<4>>,
}

/// The denoising UNet. With `in_channels` doubled and a low-resolution input it is the
/// super-resolution model (see [`UNetModel::forward_super_res`]).
#[derive(Module, Debug)]
pub struct UNetModel {
    time_embed_0: Linear,
    time_embed_2: Linear,
    label_emb: Option<Embedding>,
    input_blocks: Vec<EmbedBlock>,
    middle_res1: ResBlock,
    middle_attn: AttentionBlock,
    middle_res2: ResBlock,
    output_blocks: Vec<EmbedBlock>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    model_channels: usize,
    in_channels: usize,
    torso_f16: bool,
    /// The shape it was built from.
    #[module(skip)]
    config: UNetConfig,
}

impl UNetModel {
    /// Builds the network of `config` on `device`, initialised as the reference (including its
    /// zero-initialised output convolutions). The config must be valid ([`UNetConfig::validate`]).
    pub fn new(config: &UNetConfig, device: &Device) -> Self {
        let mc = config.model_channels;
        let temb = 4 * mc;
        let dropout = config.dropout;
        let ssn = config.use_scale_shift_norm;
        let mut input_blocks = vec![EmbedBlock {
            conv: Some(Conv2d::new(config.in_channels, mc, 3, 1, 1, device)),
            ..EmbedBlock::empty()
        }];
        let mut chans = vec![mc];
        let mut ch = mc;
        let mut ds = 1;
        let levels = config.channel_mult.len();
        for (level, &mult) in config.channel_mult.iter().enumerate() {
            for _ in 0..config.num_res_blocks {
                let out = mult * mc;
                let mut block = EmbedBlock {
                    res: Some(ResBlock::new(ch, temb, out, dropout, ssn, device)),
                    ..EmbedBlock::empty()
                };
                ch = out;
                if config.attention_resolutions.contains(&ds) {
                    block.attn = Some(AttentionBlock::new(ch, config.num_heads, device));
                }
                input_blocks.push(block);
                chans.push(ch);
            }
            if level + 1 != levels {
                input_blocks.push(EmbedBlock {
                    down: Some(Downsample::new(ch, device)),
                    ..EmbedBlock::empty()
                });
                chans.push(ch);
                ds *= 2;
            }
        }
        let middle_res1 = ResBlock::new(ch, temb, ch, dropout, ssn, device);
        let middle_attn = AttentionBlock::new(ch, config.num_heads, device);
        let middle_res2 = ResBlock::new(ch, temb, ch, dropout, ssn, device);
        let heads_up = config.heads_upsample();
        let mut output_blocks = Vec::new();
        for (level, &mult) in config.channel_mult.iter().enumerate().rev() {
            for i in 0..=config.num_res_blocks {
                let skip = chans.pop().expect("one skip per block");
                let out = mult * mc;
                let mut block = EmbedBlock {
                    res: Some(ResBlock::new(ch + skip, temb, out, dropout, ssn, device)),
                    ..EmbedBlock::empty()
                };
                ch = out;
                if config.attention_resolutions.contains(&ds) {
                    block.attn = Some(AttentionBlock::new(ch, heads_up, device));
                }
                if level > 0 && i == config.num_res_blocks {
                    block.up = Some(Upsample::new(ch, device));
                    ds /= 2;
                }
                output_blocks.push(block);
            }
        }
        Self {
            time_embed_0: Linear::new(mc, temb, device),
            time_embed_2: Linear::new(temb, temb, device),
            label_emb: config.num_classes.map(|n| Embedding::new(n, temb, device)),
            input_blocks,
            middle_res1,
            middle_attn,
            middle_res2,
            output_blocks,
            out_norm: GroupNorm::new(ch, device),
            out_conv: Conv2d::new(mc, config.out_channels, 3, 1, 1, device).zeroed(),
            model_channels: mc,
            in_channels: config.in_channels,
            torso_f16: false,
            config: config.clone(),
        }
    }

    /// The shape this network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// [`UNetModel::new`] with initial weights decided by `seed` alone: the same on every
    /// device and whatever other threads draw ([`crate::init`]).
    pub fn seeded(config: &UNetConfig, seed: u64, device: &Device) -> Self {
        crate::init::with_seed(seed, || Self::new(config, device))
    }

    /// Runs the torso (input, middle and output blocks) in f16, as the reference's
    /// `convert_to_fp16` does for mixed-precision training; `false` restores f32.
    ///
    /// Parameters stay f32 (they are the master weights): convolutions cast theirs to f16 at
    /// use, group norms and the attention softmax compute in f32, the timestep embedding and the
    /// output layers stay f32. Gradients reach the f32 parameters through the casts.
    pub fn set_torso_f16(&mut self, enabled: bool) {
        self.torso_f16 = enabled;
    }

    /// Whether the torso runs in f16 ([`set_torso_f16`](Self::set_torso_f16)).
    pub fn torso_f16(&self) -> bool {
        self.torso_f16
    }

    /// Whether the network takes class labels.
    pub fn is_class_conditional(&self) -> bool {
        self.label_emb.is_some()
    }

    /// The number of classes of a class-conditional network.
    pub fn num_classes(&self) -> Option<usize> {
        self.label_emb.as_ref().map(|e| e.weight.dims()[0])
    }

    /// Channels of the network's input (x_t, and the upsampled low-resolution image of a
    /// super-resolution model).
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Predicts from x_t `[B, C, H, W]` and timesteps `[B]` (as floats), with labels `[B]` for
    /// class-conditional networks.
    pub fn forward(
        &self,
        x: Tensor<4>,
        timesteps: Tensor<1>,
        labels: Option<Tensor<1, Int>>,
    ) -> Tensor<4> {
        self.forward_traced(x, timesteps, labels, None)
    }

    /// The super-resolution forward: `low_res` is bilinearly upsampled to x's size (as
    /// `F.interpolate(..., mode="bilinear", align_corners=False)`) and concatenated to x.
    pub fn forward_super_res(
        &self,
        x: Tensor<4>,
        timesteps: Tensor<1>,
        low_res: Tensor<4>,
        labels: Option<Tensor<1, Int>>,
    ) -> Tensor<4> {
        let x = Tensor::cat(vec![x.clone(), upsample_like(low_res, &x)], 1);
        self.forward(x, timesteps, labels)
    }

    /// [`forward`](Self::forward), recording intermediate activations into `trace`.
    ///
    /// # Panics
    /// When labels are given to an unconditional network or missing for a class-conditional
    /// one, as the reference asserts ([`check_conditioning`](Self::check_conditioning) turns
    /// this into an error beforehand).
    pub fn forward_traced(
        &self,
        x: Tensor<4>,
        timesteps: Tensor<1>,
        labels: Option<Tensor<1, Int>>,
        mut trace: Option<&mut UNetTrace>,
    ) -> Tensor<4> {
        let temb = timestep_embedding(timesteps, self.model_channels);
        let mut emb = self
            .time_embed_2
            .forward(silu(self.time_embed_0.forward(temb.clone())));
        match (&self.label_emb, labels) {
            (Some(table), Some(labels)) => emb = emb + table.forward(labels),
            (None, None) => {}
            (table, _) => panic!(
                "{}",
                if table.is_some() {
                    ConditioningError::MissingLabels {
                        classes: self.num_classes().unwrap_or(0),
                    }
                } else {
                    ConditioningError::UnexpectedLabels
                }
            ),
        }
        if let Some(t) = trace.as_deref_mut() {
            t.temb_sinusoid = Some(temb);
            t.emb = Some(emb.clone());
        }
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let out_dtype = x.dtype();
        let mut h = if self.torso_f16 {
            to_dtype(x, DType::F16)
        } else {
            x
        };
        // Every ResBlock starts its embedding projection with SiLU: compute it once.
        let emb = silu(emb);
        for block in &self.input_blocks {
            h = block.forward(h, &emb);
            skips.push(h.clone());
            if let Some(t) = trace.as_deref_mut() {
                t.input_blocks.push(h.clone());
            }
        }
        h = self.middle_res1.forward(h, emb.clone());
        h = self.middle_attn.forward(h);
        h = self.middle_res2.forward(h, emb.clone());
        if let Some(t) = trace.as_deref_mut() {
            t.middle_block = Some(h.clone());
        }
        for block in &self.output_blocks {
            let skip = skips.pop().expect("one skip per output block");
            h = block.forward(Tensor::cat(vec![h, skip], 1), &emb);
            if let Some(t) = trace.as_deref_mut() {
                t.output_blocks.push(h.clone());
            }
        }
        let h = to_dtype(h, out_dtype);
        self.out_conv.forward(self.out_norm.forward_silu(h))
    }
}

/// Bilinear resize of `low_res` to the spatial size of `like` (half-pixel centres).
pub fn upsample_like(low_res: Tensor<4>, like: &Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = like.dims();
    interpolate(
        low_res,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([h, w]),
    )
}

impl VisitParams for UNetModel {
    fn visit_params(&mut self, prefix: &str, v: &mut dyn ParamVisitor) {
        self.time_embed_0
            .visit_params(&format!("{prefix}time_embed.0."), v);
        self.time_embed_2
            .visit_params(&format!("{prefix}time_embed.2."), v);
        if let Some(e) = &mut self.label_emb {
            e.visit_params(&format!("{prefix}label_emb."), v);
        }
        for (i, b) in self.input_blocks.iter_mut().enumerate() {
            b.visit_params(&format!("{prefix}input_blocks.{i}."), v);
        }
        self.middle_res1
            .visit_params(&format!("{prefix}middle_block.0."), v);
        self.middle_attn
            .visit_params(&format!("{prefix}middle_block.1."), v);
        self.middle_res2
            .visit_params(&format!("{prefix}middle_block.2."), v);
        for (i, b) in self.output_blocks.iter_mut().enumerate() {
            b.visit_params(&format!("{prefix}output_blocks.{i}."), v);
        }
        self.out_norm.visit_params(&format!("{prefix}out.0."), v);
        self.out_conv.visit_params(&format!("{prefix}out.2."), v);
    }
}
