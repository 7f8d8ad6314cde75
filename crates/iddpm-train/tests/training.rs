//! Training behaves as promised: the loss falls, microbatches equal the full batch, a resumed
//! run equals an uninterrupted one, EMAs follow their formula.

use std::path::PathBuf;

use burn::tensor::Device;
use iddpm_checkpoint::StateDict;
use iddpm_data::InMemoryDataset;
use iddpm_diffusion::{BetaSchedule, DiffusionConfig};
use iddpm_nn::{ModelFlags, UNetConfig, state_dict_of};
use iddpm_train::{SamplerKind, TrainOptions, Trainer, for_each_param};

fn tiny_net() -> UNetConfig {
    ModelFlags {
        image_size: 8,
        num_channels: 32,
        num_res_blocks: 1,
        num_heads: 1,
        attention_resolutions: "4".into(),
        learn_sigma: true,
        channel_mult: Some(vec![1, 2]),
        ..ModelFlags::default()
    }
    .unet_config(false)
    .unwrap()
}

fn diffusion() -> DiffusionConfig {
    DiffusionConfig {
        diffusion_steps: 50,
        noise_schedule: BetaSchedule::Cosine,
        learn_sigma: true,
        ..DiffusionConfig::default()
    }
}

/// Smooth, learnable images: horizontal and vertical gradients with random signs.
fn data(n: usize) -> InMemoryDataset {
    let images = (0..n)
        .map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            let mut v = vec![0f32; 3 * 64];
            for c in 0..3 {
                for y in 0..8 {
                    for x in 0..8 {
                        let g = if i % 3 == 0 { x } else { y } as f32 / 7.0 * 2.0 - 1.0;
                        v[(c * 8 + y) * 8 + x] = sign * g * (0.5 + 0.25 * c as f32);
                    }
                }
            }
            v
        })
        .collect();
    InMemoryDataset::new(images, None, 8)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("iddpm-train-tests-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn options(name: &str) -> TrainOptions {
    TrainOptions {
        lr: 1e-3,
        batch_size: 8,
        ema_rates: vec![0.5],
        log_interval: 1000,
        save_interval: 1000,
        seed: 7,
        log_dir: tmpdir(name),
        preview_samples: 0,
        quiet: true,
        ..TrainOptions::default()
    }
}

fn params(t: &mut Trainer) -> Vec<f32> {
    let mut out = Vec::new();
    for_each_param(t.model_mut(), |_, _, p| {
        out.extend(
            p.flat()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap(),
        )
    });
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_loss_falls() {
    let data = data(32);
    let mut t = Trainer::new(
        tiny_net(),
        diffusion(),
        &data,
        options("falls"),
        &Device::flex(),
    )
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        losses.push(t.run_step().unwrap().loss);
    }
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[50..].iter().sum::<f64>() / 10.0;
    assert!(
        last < 0.7 * first,
        "loss did not fall: first {first:.4}, last {last:.4}"
    );
}

#[test]
fn microbatches_give_the_full_batch_update() {
    let data = data(16);
    let mut full = Trainer::new(
        tiny_net(),
        diffusion(),
        &data,
        options("full"),
        &Device::flex(),
    )
    .unwrap();
    let mut micro_opts = options("micro");
    micro_opts.microbatch = 2;
    let mut micro =
        Trainer::new(tiny_net(), diffusion(), &data, micro_opts, &Device::flex()).unwrap();
    // Same initial weights.
    let init = state_dict_of(full.model_mut());
    iddpm_nn::apply_state_dict(micro.model_mut(), &init).unwrap();
    full.run_step().unwrap();
    micro.run_step().unwrap();
    let d = max_diff(&params(&mut full), &params(&mut micro));
    assert!(d < 1e-5, "parameters differ by {d}");
}

/// A trainer whose model and EMAs start from `init` (saved as step 0 and resumed from).
fn trainer_from<'d>(
    init: &StateDict,
    data: &'d InMemoryDataset,
    opts: TrainOptions,
) -> Trainer<'d> {
    let mut t = Trainer::new(tiny_net(), diffusion(), data, opts.clone(), &Device::flex()).unwrap();
    iddpm_nn::apply_state_dict(t.model_mut(), init).unwrap();
    let ckpt = opts.log_dir.join("model000000.safetensors");
    iddpm_nn::save_weights(t.model_mut(), &ckpt).unwrap();
    t.resume(&ckpt).unwrap();
    t
}

fn ema_values(t: &Trainer) -> Vec<f32> {
    t.emas()[0]
        .params
        .iter()
        .flat_map(|(_, x)| x.to_data().convert::<f32>().try_into_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    for kind in [SamplerKind::Uniform, SamplerKind::LossSecondMoment] {
        let data = data(24);
        let mut o = options(&format!("init-{kind:?}"));
        o.schedule_sampler = kind;
        let init = state_dict_of(
            Trainer::new(tiny_net(), diffusion(), &data, o.clone(), &Device::flex())
                .unwrap()
                .model_mut(),
        );

        let straight_opts = TrainOptions {
            log_dir: tmpdir(&format!("straight-{kind:?}")),
            ..o.clone()
        };
        let mut straight = trainer_from(&init, &data, straight_opts);
        for _ in 0..6 {
            straight.run_step().unwrap();
        }

        let split_opts = TrainOptions {
            log_dir: tmpdir(&format!("split-{kind:?}")),
            ..o.clone()
        };
        let mut first = trainer_from(&init, &data, split_opts.clone());
        for _ in 0..3 {
            first.run_step().unwrap();
        }
        let path = first.save().unwrap();
        assert!(path.ends_with("model000003.safetensors"));
        drop(first);
        let mut second =
            Trainer::new(tiny_net(), diffusion(), &data, split_opts, &Device::flex()).unwrap();
        assert_eq!(second.resume(&path).unwrap(), 3);
        for _ in 0..3 {
            second.run_step().unwrap();
        }
        let d = max_diff(&params(&mut straight), &params(&mut second));
        assert!(d < 1e-6, "{kind:?}: resumed parameters differ by {d}");
        let e = max_diff(&ema_values(&straight), &ema_values(&second));
        assert!(e < 1e-6, "{kind:?}: resumed EMAs differ by {e}");
    }
}

#[test]
fn ema_follows_its_formula() {
    let data = data(8);
    let mut t = Trainer::new(
        tiny_net(),
        diffusion(),
        &data,
        options("ema"),
        &Device::flex(),
    )
    .unwrap();
    let before = params(&mut t);
    t.run_step().unwrap();
    let after = params(&mut t);
    let ema: Vec<f32> = t.emas()[0]
        .params
        .iter()
        .flat_map(|(_, x)| x.to_data().convert::<f32>().try_into_vec::<f32>().unwrap())
        .collect();
    let want: Vec<f32> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| 0.5 * b + 0.5 * a)
        .collect();
    assert!(max_diff(&ema, &want) < 1e-6);
    assert!(max_diff(&before, &after) > 1e-4, "the step changed nothing");
}

#[test]
fn bad_options_are_rejected_before_training() {
    let data = data(8);
    let mut o = options("bad");
    o.microbatch = 16;
    let err = Trainer::new(tiny_net(), diffusion(), &data, o, &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--microbatch 16"), "{err}");
    let mut o = options("bad2");
    o.batch_size = 9;
    let err = Trainer::new(tiny_net(), diffusion(), &data, o, &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fewer than --batch_size 9"), "{err}");
}
