//! What the training tests share: a tiny network, a short diffusion, folders, and readers of a
//! trainer's parameters and EMAs.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::PathBuf;

use iddpm_diffusion::{BetaSchedule, DiffusionConfig};
use iddpm_nn::{ModelFlags, UNetConfig};
use iddpm_train::{Trainer, for_each_param};

/// A 8×8 UNet of two levels with attention at 4×4 and learned variances.
pub fn tiny_net(dropout: f64) -> UNetConfig {
    ModelFlags {
        image_size: 8,
        num_channels: 32,
        num_res_blocks: 1,
        num_heads: 1,
        attention_resolutions: "4".into(),
        learn_sigma: true,
        channel_mult: Some(vec![1, 2]),
        dropout,
        ..ModelFlags::default()
    }
    .unet_config(false)
    .unwrap()
}

/// 50 cosine-schedule steps with learned variances (L_hybrid).
pub fn diffusion() -> DiffusionConfig {
    DiffusionConfig {
        diffusion_steps: 50,
        noise_schedule: BetaSchedule::Cosine,
        learn_sigma: true,
        ..DiffusionConfig::default()
    }
}

/// A fresh folder `name` under this test process's own temporary folder.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("iddpm-train-tests-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn values(t: burn::tensor::Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Every parameter of the model, flattened in visiting order.
pub fn params(t: &mut Trainer) -> Vec<f32> {
    let mut out = Vec::new();
    for_each_param(t.model_mut(), |_, _, p| out.extend(values(p.flat())));
    out
}

/// The first EMA's parameters, flattened in visiting order.
pub fn ema_values(t: &Trainer) -> Vec<f32> {
    t.emas()[0]
        .params
        .iter()
        .flat_map(|(_, x)| values(x.clone()))
        .collect()
}

/// The largest absolute difference between two equally long vectors.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
