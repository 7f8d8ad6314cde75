//! Training behaves as promised: the loss falls, microbatches equal the full batch, a resumed
//! run equals an uninterrupted one, EMAs follow their formula.

mod common;

use burn::tensor::Device;
use common::{diffusion, ema_values, max_diff, params, tiny_net, tmpdir};
use iddpm_checkpoint::StateDict;
use iddpm_data::InMemoryDataset;
use iddpm_nn::state_dict_of;
use iddpm_train::{SamplerKind, TrainEvent, TrainOptions, Trainer};

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

#[test]
fn the_loss_falls() {
    let data = data(32);
    let mut t = Trainer::new(
        tiny_net(0.0),
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
        tiny_net(0.0),
        diffusion(),
        &data,
        options("full"),
        &Device::flex(),
    )
    .unwrap();
    let mut micro_opts = options("micro");
    micro_opts.microbatch = 2;
    let mut micro = Trainer::new(
        tiny_net(0.0),
        diffusion(),
        &data,
        micro_opts,
        &Device::flex(),
    )
    .unwrap();
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
    let mut t = Trainer::new(
        tiny_net(0.0),
        diffusion(),
        data,
        opts.clone(),
        &Device::flex(),
    )
    .unwrap();
    iddpm_nn::apply_state_dict(t.model_mut(), init).unwrap();
    let ckpt = opts.log_dir.join("model000000.safetensors");
    iddpm_nn::save_weights(t.model_mut(), &ckpt).unwrap();
    t.resume(&ckpt).unwrap();
    t
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    for kind in [SamplerKind::Uniform, SamplerKind::LossSecondMoment] {
        let data = data(24);
        let mut o = options(&format!("init-{kind:?}"));
        o.schedule_sampler = kind;
        let init = state_dict_of(
            Trainer::new(
                tiny_net(0.0),
                diffusion(),
                &data,
                o.clone(),
                &Device::flex(),
            )
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
        let mut second = Trainer::new(
            tiny_net(0.0),
            diffusion(),
            &data,
            split_opts,
            &Device::flex(),
        )
        .unwrap();
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
        tiny_net(0.0),
        diffusion(),
        &data,
        options("ema"),
        &Device::flex(),
    )
    .unwrap();
    let before = params(&mut t);
    t.run_step().unwrap();
    let after = params(&mut t);
    let ema = ema_values(&t);
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
    let err = Trainer::new(tiny_net(0.0), diffusion(), &data, o, &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("microbatch 16"), "{err}");
    let mut o = options("bad2");
    o.batch_size = 9;
    let err = Trainer::new(tiny_net(0.0), diffusion(), &data, o, &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fewer than batch_size 9"), "{err}");
}

// Mixed precision (`--use_fp16`): the torso runs in f16 with dynamic loss scaling.

fn fp16_options(name: &str, initial_lg_loss_scale: f64) -> TrainOptions {
    TrainOptions {
        use_fp16: true,
        initial_lg_loss_scale,
        ..options(name)
    }
}

/// A fresh network's weights with its zero-initialised layers filled in: otherwise the first
/// steps send no gradient into the torso, where f16 is used.
fn init_without_zeros(data: &InMemoryDataset, name: &str) -> StateDict {
    let fresh = state_dict_of(
        Trainer::new(
            tiny_net(0.0),
            diffusion(),
            data,
            options(name),
            &Device::flex(),
        )
        .unwrap()
        .model_mut(),
    );
    let mut init = StateDict::new();
    for (key, e) in fresh.iter() {
        let mut values = e.values.clone();
        if values.iter().all(|&v| v == 0.0) && key.ends_with("weight") {
            for (i, v) in values.iter_mut().enumerate() {
                *v = 0.05 * ((i * 7919 % 1000) as f32 / 500.0 - 1.0);
            }
        }
        init.insert(key, e.shape.clone(), values);
    }
    init
}

#[test]
fn a_mixed_precision_step_tracks_the_f32_step() {
    let data = data(16);
    let init = init_without_zeros(&data, "fp16-init");
    let mut full = trainer_from(&init, &data, options("fp16-ref"));
    // A small model has large per-element gradients: 2^10 keeps them well inside f16's range.
    let mut mixed = trainer_from(&init, &data, fp16_options("fp16-mixed", 10.0));
    let before = params(&mut full);
    let mut after_first = None;
    for step in 0..3 {
        let a = full.run_step().unwrap();
        let b = mixed.run_step().unwrap();
        assert!(!b.skipped, "step {step}: 2^10 should not overflow here");
        // The reported norm is of the unscaled gradients: without unscaling it would be 2^10
        // times larger.
        let rel = (a.grad_norm - b.grad_norm).abs() / a.grad_norm;
        eprintln!(
            "step {step}: loss {:.5} vs {:.5}, grad norm {:.5} vs {:.5}",
            a.loss, b.loss, a.grad_norm, b.grad_norm
        );
        // From the same weights they agree to f16's resolution; afterwards the runs drift
        // apart a little (Adam turns tiny gradient differences into steps of about lr).
        let tol = if step == 0 { 5e-3 } else { 1e-1 };
        assert!(
            rel < tol,
            "step {step}: grad norm {} vs {}",
            a.grad_norm,
            b.grad_norm
        );
        assert!((a.loss - b.loss).abs() < tol * a.loss);
        let want = 10.0 + 1e-3 * (step + 1) as f64;
        assert!((b.lg_loss_scale.unwrap() - want).abs() < 1e-9);
        if step == 0 {
            after_first = Some((params(&mut full), params(&mut mixed)));
        }
    }
    // Adam's first step moves every parameter by about lr in the direction of its gradient's
    // sign, whatever the gradient's size: only parameters whose gradient is within f16's
    // error of zero may move differently.
    let (p_full, p_mixed) = after_first.unwrap();
    let moved = max_diff(&before, &p_full);
    let apart = p_full
        .iter()
        .zip(&p_mixed)
        .filter(|(a, b)| (*a - *b).abs() > 0.25 * moved)
        .count() as f64
        / p_full.len() as f64;
    eprintln!(
        "after one step: largest move {moved:.3e}, {:.3}% of parameters apart by > move/4",
        100.0 * apart
    );
    assert!(
        apart < 0.01,
        "{:.2}% of parameters moved apart",
        100.0 * apart
    );
}

#[test]
fn an_overflow_skips_the_update_and_halves_the_loss_scale() {
    let data = data(8);
    // 2^40 times any sizeable gradient is far beyond f16's largest value, 65504.
    let init = init_without_zeros(&data, "fp16-overflow-init");
    let mut t = trainer_from(&init, &data, fp16_options("fp16-overflow", 40.0));
    let before = params(&mut t);
    let ema_before = ema_values(&t);
    let r = t.run_step().unwrap();
    assert!(r.skipped);
    assert_eq!(
        r.step, 1,
        "a skipped step still counts, as in the reference"
    );
    assert_eq!(r.lg_loss_scale, Some(39.0));
    assert_eq!(params(&mut t), before, "no update on overflow");
    assert_eq!(ema_values(&t), ema_before, "no EMA update on overflow");
    // The scale keeps falling until the gradients fit, then training proceeds.
    let mut skipped = 1;
    let first_update = loop {
        let r = t.run_step().unwrap();
        if !r.skipped {
            break r;
        }
        skipped += 1;
        assert!(skipped < 40, "the loss scale never came down");
    };
    let lg = first_update.lg_loss_scale.unwrap();
    assert!(
        (lg - (40.0 - skipped as f64 + 1e-3)).abs() < 1e-9,
        "lg_loss_scale {lg}"
    );
    assert!(first_update.grad_norm.is_finite() && first_update.grad_norm > 0.0);
    assert!(
        max_diff(&before, &params(&mut t)) > 1e-4,
        "the update happened"
    );
}

#[test]
fn a_resumed_mixed_precision_run_keeps_its_loss_scale() {
    let data = data(24);
    let init = init_without_zeros(&data, "fp16-resume-init");
    // Starting high, the first steps overflow and lower the scale: the resumed run must carry
    // on from the lowered scale, not from the initial one.
    let mut straight = trainer_from(&init, &data, fp16_options("fp16-straight", 24.0));
    for _ in 0..6 {
        straight.run_step().unwrap();
    }
    let split = fp16_options("fp16-split", 24.0);
    let mut first = trainer_from(&init, &data, split.clone());
    for _ in 0..3 {
        first.run_step().unwrap();
    }
    let lg_saved = first.lg_loss_scale();
    let path = first.save().unwrap();
    drop(first);
    let mut second =
        Trainer::new(tiny_net(0.0), diffusion(), &data, split, &Device::flex()).unwrap();
    second.resume(&path).unwrap();
    assert_eq!(second.lg_loss_scale(), lg_saved);
    for _ in 0..3 {
        second.run_step().unwrap();
    }
    assert_eq!(second.lg_loss_scale(), straight.lg_loss_scale());
    let d = max_diff(&params(&mut straight), &params(&mut second));
    assert!(d < 1e-6, "resumed parameters differ by {d}");
}

/// The steps logged in a run's progress.csv, in file order.
fn logged_steps(dir: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("progress.csv")).unwrap();
    let mut lines = text.lines();
    let column = lines
        .next()
        .unwrap()
        .split(',')
        .position(|k| k == "step")
        .unwrap();
    lines
        .map(|l| l.split(',').nth(column).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_resumed_run_keeps_the_logged_history() {
    let data = data(16);
    let opts = TrainOptions {
        log_interval: 1,
        ..options("history")
    };
    let new_trainer = || {
        Trainer::new(
            tiny_net(0.0),
            diffusion(),
            &data,
            opts.clone(),
            &Device::flex(),
        )
        .unwrap()
    };
    let mut first = new_trainer();
    let mut checkpoint = None;
    for step in 1..=4 {
        first.run_step().unwrap();
        first.dump_logs().unwrap();
        if step == 2 {
            checkpoint = Some(first.save().unwrap());
        }
    }
    drop(first);
    assert_eq!(logged_steps(&opts.log_dir), vec![1.0, 2.0, 3.0, 4.0]);
    // Resumed from step 2: steps 3 and 4 are logged again, once, after the history up to 2.
    let mut second = new_trainer();
    assert_eq!(second.resume(&checkpoint.unwrap()).unwrap(), 2);
    assert_eq!(logged_steps(&opts.log_dir), vec![1.0, 2.0]);
    for _ in 0..2 {
        second.run_step().unwrap();
        second.dump_logs().unwrap();
    }
    assert_eq!(logged_steps(&opts.log_dir), vec![1.0, 2.0, 3.0, 4.0]);
}

/// What the run loop reported, in order.
fn loop_events(opts: TrainOptions, stop: bool) -> (Vec<String>, iddpm_train::LoopSummary) {
    let images = data(16);
    let mut t = Trainer::new(tiny_net(0.0), diffusion(), &images, opts, &Device::flex()).unwrap();
    let mut seen = Vec::new();
    let flag = std::sync::atomic::AtomicBool::new(stop);
    let summary = t
        .run_loop(&flag, &mut |event| {
            seen.push(match event {
                TrainEvent::Step(r) => format!("step {}", r.step),
                TrainEvent::Saved { step, path } => {
                    assert!(path.exists());
                    format!("saved {step}")
                }
                TrainEvent::Interrupted { step } => format!("interrupted at {step}"),
            })
        })
        .unwrap();
    (seen, summary)
}

#[test]
fn the_run_loop_saves_at_its_interval_and_at_the_end() {
    let opts = TrainOptions {
        max_steps: Some(3),
        save_interval: 2,
        ..options("run-loop")
    };
    let (events, summary) = loop_events(opts.clone(), false);
    assert_eq!(
        events,
        ["step 1", "step 2", "saved 2", "step 3", "saved 3"],
        "{events:?}"
    );
    assert_eq!((summary.first_step, summary.last_step), (0, 3));
    assert!(!summary.interrupted);
    // Stopped before the first step: nothing trained, nothing saved.
    let (events, summary) = loop_events(opts, true);
    assert_eq!(events, ["interrupted at 0"]);
    assert!(summary.interrupted && summary.last_step == 0);
}

/// With `ema_warmup`, the first update copies the weights and the second decays at
/// 1 − 2^(−power) (diffusers' EMAModel), well below the rate of 0.9999.
#[test]
fn an_ema_warmup_forgets_the_initial_weights() {
    let data = data(8);
    let warmup = iddpm_train::EmaWarmup {
        inv_gamma: 1.0,
        power: 2.0 / 3.0,
    };
    let opts = TrainOptions {
        ema_rates: vec![0.9999],
        ema_warmup: Some(warmup),
        ..options("ema-warmup")
    };
    let mut t = Trainer::new(tiny_net(0.0), diffusion(), &data, opts, &Device::flex()).unwrap();
    let before = params(&mut t);
    t.run_step().unwrap();
    let first = params(&mut t);
    assert!(max_diff(&before, &first) > 1e-4, "the step changed nothing");
    assert_eq!(
        ema_values(&t),
        first,
        "decay 0 at the first step: the weights themselves"
    );
    t.run_step().unwrap();
    let second = params(&mut t);
    let d = 1.0 - 2f64.powf(-2.0 / 3.0);
    assert!((warmup.decay(0.9999, 2) - d).abs() < 1e-15);
    assert_eq!(
        warmup.decay(0.9999, 1_000_000_000),
        0.9999,
        "capped at the rate"
    );
    let want: Vec<f32> = first
        .iter()
        .zip(&second)
        .map(|(e, p)| (d * f64::from(*e) + (1.0 - d) * f64::from(*p)) as f32)
        .collect();
    assert!(max_diff(&ema_values(&t), &want) < 1e-6);
}
