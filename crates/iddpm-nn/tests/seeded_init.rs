//! A seeded network's initial weights depend on its seed alone, not on what other threads draw
//! from burn's process-wide generator.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Distribution, Tensor};
use iddpm_checkpoint::StateDict;
use iddpm_nn::{ModelFlags, UNetModel, state_dict_of};

fn weights(seed: u64) -> StateDict {
    let flags = ModelFlags {
        image_size: 8,
        num_channels: 32,
        num_res_blocks: 1,
        class_cond: true,
        attention_resolutions: "4".into(),
        channel_mult: Some(vec![1, 2]),
        ..ModelFlags::default()
    };
    let config = flags.unet_config(false).unwrap();
    state_dict_of(&mut UNetModel::seeded(&config, seed, &Device::flex()))
}

fn flat(d: &StateDict) -> Vec<f32> {
    d.iter().flat_map(|(_, e)| e.values.clone()).collect()
}

#[test]
fn the_seed_alone_decides_the_initial_weights() {
    let quiet = flat(&weights(3));
    // Another thread reseeds and draws from the device's generator all along.
    let busy = AtomicBool::new(true);
    let disturbed = std::thread::scope(|s| {
        s.spawn(|| {
            let device = Device::flex();
            while busy.load(Ordering::Relaxed) {
                device.seed(99);
                let _ = Tensor::<1>::random([64], Distribution::Default, &device);
            }
        });
        let w = (0..3).map(|_| flat(&weights(3))).collect::<Vec<_>>();
        busy.store(false, Ordering::Relaxed);
        w
    });
    for w in &disturbed {
        assert!(
            w == &quiet,
            "a seeded construction drew from another thread's generator"
        );
    }
    assert!(flat(&weights(4)) != quiet, "the seed must matter");
}

#[test]
fn seeded_weights_follow_the_reference_initialisation() {
    let d = weights(5);
    // PyTorch's conv default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3 * 3 * 3.
    let first = &d.get("input_blocks.0.0.weight").unwrap().values;
    let bound = 1.0 / 27f32.sqrt();
    assert!(first.iter().all(|v| v.abs() <= bound));
    assert!(first.iter().any(|v| v.abs() > 0.9 * bound));
    // nn.Embedding's default: N(0, 1); 1000 classes × 128 values.
    let emb = &d.get("label_emb.weight").unwrap().values;
    let mean = emb.iter().sum::<f32>() / emb.len() as f32;
    let var = emb.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / emb.len() as f32;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
        "mean {mean}, var {var}"
    );
    // The output convolution stays zero, as the reference's zero_module leaves it.
    assert!(
        d.get("out.2.weight")
            .unwrap()
            .values
            .iter()
            .all(|&v| v == 0.0)
    );
}
