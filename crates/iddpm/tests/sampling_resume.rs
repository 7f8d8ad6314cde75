//! Kept batches let an interrupted sampling run resume with the same result.

use burn::tensor::Device;
use iddpm::ModelSpec;
use iddpm::diffusion::{BetaSchedule, DiffusionConfig, Sampler};
use iddpm::nn::ModelFlags;
use iddpm::sample::{SampleOptions, sample_images};

#[test]
fn kept_batches_are_taken_and_missing_ones_resampled_identically() {
    let device = Device::flex();
    let spec = ModelSpec {
        model: ModelFlags {
            image_size: 8,
            num_channels: 32,
            num_res_blocks: 1,
            channel_mult: Some(vec![1, 2]),
            attention_resolutions: "4".into(),
            learn_sigma: true,
            ..ModelFlags::default()
        },
        diffusion: DiffusionConfig {
            diffusion_steps: 4,
            noise_schedule: BetaSchedule::Cosine,
            learn_sigma: true,
            timestep_respacing: String::new(),
            ..DiffusionConfig::default()
        },
        super_res: false,
    };
    let (model, diffusion) = spec.build(&device).unwrap();
    let dir = std::env::temp_dir().join(format!("iddpm-batches-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = SampleOptions {
        num_samples: 5,
        batch_size: 2,
        image_size: 8,
        sampler: Sampler::ANCESTRAL,
        clip_denoised: true,
        threshold: None,
        seed: 3,
        labels: None,
        init_noise: None,
        low_res: None,
        shard: None,
        batch_dir: Some(dir.clone()),
    };
    // The samples and the last progress count of a run.
    let run = |opts: &SampleOptions| {
        let mut steps = 0;
        let samples = sample_images(&model, &diffusion, opts, &device, &mut |s| steps = s).unwrap();
        (samples, steps)
    };
    let (first, steps) = run(&opts);
    assert_eq!(steps, 3 * 4, "three batches of four steps");
    let (plain, _) = run(&SampleOptions {
        batch_dir: None,
        ..opts.clone()
    });
    assert_eq!(
        first.images, plain.images,
        "keeping batches changes nothing"
    );
    // A kept batch is taken as it is (here, one overwritten with a marker)...
    let per_image = 8 * 8 * 3;
    let marker = iddpm::io::NpyArray {
        shape: vec![2, 8, 8, 3],
        data: iddpm::io::NpyData::U8(vec![7; 2 * per_image]),
    };
    let second = dir.join("batch_000001.npy");
    std::fs::write(&second, marker.to_bytes()).unwrap();
    let (resumed, steps) = run(&opts);
    assert_eq!(steps, 3 * 4, "the progress still counts every batch");
    assert!(
        resumed.images[2 * per_image..4 * per_image]
            .iter()
            .all(|&p| p == 7)
    );
    assert_eq!(
        resumed.images[..2 * per_image],
        first.images[..2 * per_image]
    );
    // ...and a missing one is drawn again, identically.
    std::fs::remove_file(&second).unwrap();
    assert_eq!(run(&opts).0.images, first.images);
    std::fs::remove_dir_all(dir).unwrap();
}
