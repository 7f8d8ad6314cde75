//! The network and diffusion a reference `model_<id>.json` describes: the keyword arguments
//! the reference scripts passed to `create_model_and_diffusion` (or its super-resolution twin),
//! with the reference's defaults for those left out.

use serde_json::Value;

use crate::diffusion::{BetaSchedule, DiffusionConfig};
use crate::nn::ModelFlags;
use crate::{Error, ModelSpec, Result};

fn flag_bool(kw: &Value, name: &str, default: bool) -> bool {
    kw.get(name).and_then(Value::as_bool).unwrap_or(default)
}

fn flag_usize(kw: &Value, name: &str, default: usize) -> usize {
    kw.get(name)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .unwrap_or(default)
}

fn flag_str<'a>(kw: &'a Value, name: &str, default: &'a str) -> &'a str {
    kw.get(name).and_then(Value::as_str).unwrap_or(default)
}

/// The [`ModelSpec`] of a parsed `model_<id>.json`.
pub fn spec_from_reference(meta: &Value) -> Result<ModelSpec> {
    let (kw, super_res) = match meta.get("sr_create_model_and_diffusion_kwargs") {
        Some(kw) => (kw, true),
        None => (&meta["create_model_and_diffusion_kwargs"], false),
    };
    if !kw.is_object() {
        return Err(Error::Invalid(
            "the model description has no create_model_and_diffusion_kwargs".into(),
        ));
    }
    let d = ModelFlags::default();
    let image_size = if super_res {
        flag_usize(kw, "large_size", 256)
    } else {
        flag_usize(kw, "image_size", 64)
    };
    let model = ModelFlags {
        image_size,
        // The reference scripts build RGB networks.
        image_channels: flag_usize(kw, "image_channels", 3),
        num_channels: flag_usize(kw, "num_channels", d.num_channels),
        num_res_blocks: flag_usize(kw, "num_res_blocks", d.num_res_blocks),
        num_heads: flag_usize(kw, "num_heads", d.num_heads),
        num_heads_upsample: kw
            .get("num_heads_upsample")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
        attention_resolutions: flag_str(kw, "attention_resolutions", "16,8").to_string(),
        dropout: kw.get("dropout").and_then(Value::as_f64).unwrap_or(0.0),
        learn_sigma: flag_bool(kw, "learn_sigma", false),
        class_cond: flag_bool(kw, "class_cond", false),
        use_checkpoint: flag_bool(kw, "use_checkpoint", false),
        use_scale_shift_norm: flag_bool(kw, "use_scale_shift_norm", true),
        channel_mult: None,
    };
    let dc = DiffusionConfig::default();
    let diffusion = DiffusionConfig {
        diffusion_steps: flag_usize(kw, "diffusion_steps", dc.diffusion_steps),
        noise_schedule: flag_str(kw, "noise_schedule", "linear").parse::<BetaSchedule>()?,
        learn_sigma: model.learn_sigma,
        sigma_small: flag_bool(kw, "sigma_small", false),
        use_kl: flag_bool(kw, "use_kl", false),
        predict_xstart: flag_bool(kw, "predict_xstart", false),
        rescale_timesteps: flag_bool(kw, "rescale_timesteps", true),
        rescale_learned_sigmas: flag_bool(kw, "rescale_learned_sigmas", true),
        timestep_respacing: flag_str(kw, "timestep_respacing", "").to_string(),
        // The reference has no such flag: its grids keep every step.
        lambda_min_clipped: dc.lambda_min_clipped,
    };
    Ok(ModelSpec {
        model,
        diffusion,
        super_res,
    })
}
