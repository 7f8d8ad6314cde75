//! Drawing image samples in batches, as the reference's `image_sample.py`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use iddpm_diffusion::{
    Conditioning, GOLDEN_GAMMA, GaussianDiffusion, NoiseSource, PredictOptions, SampleRequest,
    Sampler, SeededNoise, splitmix64_mix,
};
use iddpm_kernels::to_f32_vec;
use iddpm_nn::{NUM_CLASSES, UNetModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Total number of images.
    pub num_samples: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Side of the (square) images.
    pub image_size: usize,
    /// Ancestral sampling or DDIM.
    pub sampler: Sampler,
    /// Clamp predicted x_0 to [−1, 1] at every step.
    pub clip_denoised: bool,
    /// Seed of all randomness (noise and random labels).
    pub seed: u64,
    /// Class labels for class-conditional models (`None`: drawn uniformly, as the reference).
    pub labels: Option<Vec<i64>>,
    /// Start noise `[num_samples, 3, H, W]` (row-major), instead of drawing it.
    pub init_noise: Option<Vec<f32>>,
    /// Super-resolution: low-resolution images `[num_samples, 3, s, s]` in [−1, 1] and `s`.
    pub low_res: Option<(Vec<f32>, usize)>,
    /// Draw only this share of the batches (one process of several); `None`: all.
    pub shard: Option<Shard>,
}

/// One process's share of the batches: batch k belongs to process `k % count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's index.
    pub index: usize,
    /// Number of processes.
    pub count: usize,
}

impl Shard {
    /// Whether batch `k` is this process's.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// The noise generator of batch `k`: each batch has its own, so that a batch's images do not
/// depend on which process draws it or how many batches came before.
pub fn batch_noise(seed: u64, k: usize) -> SeededNoise {
    let counter = (k as u64).wrapping_add(1);
    SeededNoise::new(splitmix64_mix(seed ^ counter.wrapping_mul(GOLDEN_GAMMA)))
}

/// Sampled images.
#[derive(Debug, Clone)]
pub struct Samples {
    /// `[N, H, W, 3]` uint8, converted as the reference does.
    pub images: Vec<u8>,
    /// Labels of class-conditional samples.
    pub labels: Option<Vec<i64>>,
    /// Number of images.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

pub use iddpm_data::pictures::to_uint8_nhwc;

/// Draws `opts.num_samples` images (with `opts.shard`, only that share of the batches, in
/// batch order), calling `progress(steps_done)` after every denoising step.
pub fn sample_images(
    model: &UNetModel,
    diffusion: &GaussianDiffusion,
    opts: &SampleOptions,
    device: &Device,
    progress: &mut dyn FnMut(u64),
) -> Result<Samples> {
    if opts.num_samples == 0 {
        return Err(Error::Invalid("--num_samples must be at least 1".into()));
    }
    if opts.batch_size == 0 {
        return Err(Error::Invalid("--batch_size must be at least 1".into()));
    }
    let (n, s) = (opts.num_samples, opts.image_size);
    let class_cond = model.is_class_conditional();
    let labels: Option<Vec<i64>> = match (&opts.labels, class_cond) {
        (Some(l), true) => {
            if l.len() != n {
                return Err(Error::Invalid(format!(
                    "{} labels given for {n} samples",
                    l.len()
                )));
            }
            if let Some(bad) = l.iter().find(|&&y| y < 0 || y >= NUM_CLASSES as i64) {
                return Err(Error::Invalid(format!(
                    "label {bad} is outside 0..{NUM_CLASSES}"
                )));
            }
            Some(l.clone())
        }
        (Some(_), false) => {
            return Err(Error::Invalid(
                "--labels given, but the model is not class-conditional (--class_cond False)"
                    .into(),
            ));
        }
        (None, true) => {
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6c61_6265_6c73);
            Some(
                (0..n)
                    .map(|_| rng.random_range(0..NUM_CLASSES as i64))
                    .collect(),
            )
        }
        (None, false) => None,
    };
    if let Some(noise) = &opts.init_noise
        && noise.len() != n * 3 * s * s
    {
        return Err(Error::Invalid(format!(
            "--init_noise holds {} values; [{n}, 3, {s}, {s}] needs {}",
            noise.len(),
            n * 3 * s * s
        )));
    }
    if let Some((values, small)) = &opts.low_res
        && values.len() != n * 3 * small * small
    {
        return Err(Error::Invalid(format!(
            "{} low-resolution values given; [{n}, 3, {small}, {small}] needs {}",
            values.len(),
            n * 3 * small * small
        )));
    }
    if let Some(sh) = opts.shard
        && (sh.count == 0 || sh.index >= sh.count)
    {
        return Err(Error::Invalid(format!(
            "process {} of {} does not exist",
            sh.index, sh.count
        )));
    }
    let mut images = Vec::with_capacity(n * s * s * 3);
    let mut own_labels = Vec::new();
    let mut done_steps = 0u64;
    let mut start = 0;
    let mut k = 0;
    while start < n {
        let b = opts.batch_size.min(n - start);
        if opts.shard.is_some_and(|sh| !sh.owns(k)) {
            start += b;
            k += 1;
            continue;
        }
        let mut noise = batch_noise(opts.seed, k);
        let shape = [b, 3, s, s];
        let x_t = match &opts.init_noise {
            Some(all) => Some(Tensor::<4>::from_data(
                TensorData::new(
                    all[start * 3 * s * s..(start + b) * 3 * s * s].to_vec(),
                    shape,
                ),
                device,
            )),
            None => Some(noise.sample(shape, device)?),
        };
        let mut cond = match &labels {
            Some(l) => Conditioning::labels(Tensor::<1, Int>::from_data(
                TensorData::new(l[start..start + b].to_vec(), [b]),
                device,
            )),
            None => Conditioning::none(),
        };
        if let Some((values, small)) = &opts.low_res {
            let per = 3 * small * small;
            cond.low_res = Some(Tensor::<4>::from_data(
                TensorData::new(
                    values[start * per..(start + b) * per].to_vec(),
                    [b, 3, *small, *small],
                ),
                device,
            ));
        }
        let mut request = SampleRequest::new(opts.sampler, shape, &cond, &mut noise, device)
            .with_options(PredictOptions::clip(opts.clip_denoised));
        request.start = x_t;
        let steps = diffusion.sample_loop_progressive(model, request)?;
        let mut last = None;
        for step in steps {
            last = Some(step?.sample);
            done_steps += 1;
            progress(done_steps);
        }
        let sample = last.expect("at least one step");
        images.extend(to_uint8_nhwc(&to_f32_vec(sample), b, 3, s, s));
        if let Some(l) = &labels {
            own_labels.extend_from_slice(&l[start..start + b]);
        }
        start += b;
        k += 1;
    }
    let count = images.len() / (s * s * 3);
    Ok(Samples {
        images,
        labels: labels.map(|_| own_labels),
        n: count,
        h: s,
        w: s,
    })
}
