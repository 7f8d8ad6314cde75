//! With dropout, a resumed run still equals an uninterrupted one: the masks are drawn from the
//! device generator, reseeded from the step. (A test binary of its own: the CPU backend's
//! generator is process-wide, and concurrent tests would draw from it.)

mod common;

use burn::tensor::Device;
use common::{diffusion, max_diff, params, tiny_net, tmpdir};
use iddpm_data::InMemoryDataset;
use iddpm_nn::{apply_state_dict, save_weights, state_dict_of};
use iddpm_train::{TrainOptions, Trainer};

fn opts(name: &str) -> TrainOptions {
    let dir = tmpdir(name);
    TrainOptions {
        lr: 1e-3,
        batch_size: 4,
        microbatch: 2,
        ema_rates: vec![0.9],
        seed: 3,
        log_dir: dir,
        preview_samples: 0,
        quiet: true,
        ..TrainOptions::default()
    }
}

#[test]
fn dropout_masks_are_replayed_after_a_resume() {
    let images = (0..12)
        .map(|i| {
            (0..192)
                .map(|j| ((i * 7 + j) % 11) as f32 / 5.0 - 1.0)
                .collect()
        })
        .collect();
    let data = InMemoryDataset::new(images, None, 8);
    let device = Device::flex();
    let init = state_dict_of(
        Trainer::new(tiny_net(0.3), diffusion(), &data, opts("init"), &device)
            .unwrap()
            .model_mut(),
    );
    let start = |name: &str| {
        let o = opts(name);
        let mut t = Trainer::new(tiny_net(0.3), diffusion(), &data, o.clone(), &device).unwrap();
        apply_state_dict(t.model_mut(), &init).unwrap();
        let ckpt = o.log_dir.join("model000000.safetensors");
        save_weights(t.model_mut(), &ckpt).unwrap();
        t.resume(&ckpt).unwrap();
        t
    };
    let mut straight = start("straight");
    for _ in 0..4 {
        straight.run_step().unwrap();
    }
    let mut first = start("split");
    for _ in 0..2 {
        first.run_step().unwrap();
    }
    let path = first.save().unwrap();
    drop(first);
    let mut second =
        Trainer::new(tiny_net(0.3), diffusion(), &data, opts("split"), &device).unwrap();
    second.resume(&path).unwrap();
    for _ in 0..2 {
        second.run_step().unwrap();
    }
    let a = params(&mut straight);
    let d = max_diff(&a, &params(&mut second));
    assert!(d < 1e-6, "resumed parameters differ by {d}");

    // Nothing else drawing from the device generator between steps changes the masks.
    let mut other = start("other-seed");
    for step in 0..4 {
        if step == 2 {
            device.seed(12345); // disturbs nothing: the trainer reseeds before each forward
        }
        other.run_step().unwrap();
    }
    let d = max_diff(&a, &params(&mut other));
    assert!(d < 1e-6, "a stray reseed changed training by {d}");
}
