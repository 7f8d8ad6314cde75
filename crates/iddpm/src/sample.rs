//! Drawing image samples in batches, as the reference's `image_sample.py`.

use iddpm_kernels::ops::DeviceKind;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use iddpm_data::batch_ranges;
use iddpm_data::npy::{NpyArray, NpyData};
use iddpm_diffusion::{
    Conditioning, DynamicThreshold, GOLDEN_GAMMA, GaussianDiffusion, NoiseSource, PredictOptions,
    SampleRequest, Sampler, SeededNoise, splitmix64_mix,
};
use iddpm_kernels::to_f32_vec;
use iddpm_nn::UNetModel;
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
    /// The solver (ancestral, DDIM, DPM-Solver++, UniPC, … : [`crate::diffusion::REGISTRY`]).
    pub sampler: Sampler,
    /// Clamp predicted x_0 to [−1, 1] at every step.
    pub clip_denoised: bool,
    /// Imagen's dynamic thresholding of the predicted x_0 instead of the clamp.
    pub threshold: Option<DynamicThreshold>,
    /// Seed of all randomness (noise and random labels).
    pub seed: u64,
    /// Class labels for class-conditional models (`None`: drawn uniformly, as the reference).
    pub labels: Option<Vec<i64>>,
    /// Start noise `[num_samples, C, H, W]` (row-major), instead of drawing it.
    pub init_noise: Option<Vec<f32>>,
    /// Super-resolution: low-resolution images `[num_samples, C, s, s]` in [−1, 1] and `s`.
    pub low_res: Option<(Vec<f32>, usize)>,
    /// Draw only this share of the batches (one process of several); `None`: all.
    pub shard: Option<Shard>,
    /// Where each finished batch's images are kept (`batch_{k:06}.npy`, uint8 NHWC). A rerun
    /// with the same options takes them instead of sampling again, so an interrupted run
    /// resumes where it stopped, with the same result: each batch has its own noise
    /// generator. `None`: nothing is kept.
    pub batch_dir: Option<PathBuf>,
}

/// The reference's `image_sample.py` defaults: 10,000 images in batches of 16, ancestral
/// sampling with x̂_0 clipped, seed 0, at the model's default size.
impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            num_samples: 10_000,
            batch_size: 16,
            image_size: iddpm_nn::ModelFlags::default().image_size,
            sampler: Sampler::default(),
            clip_denoised: true,
            threshold: None,
            seed: 0,
            labels: None,
            init_noise: None,
            low_res: None,
            shard: None,
            batch_dir: None,
        }
    }
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
    /// `[N, H, W, C]` uint8, converted as the reference does.
    pub images: Vec<u8>,
    /// Channels per pixel (3 for RGB, 1 for greyscale).
    pub c: usize,
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
    let c = image_channels(model, opts);
    check_options(opts, c)?;
    check_batch_fits(model, opts, c, device)?;
    let labels = labels_to_sample(opts, model.num_classes())?;
    let low_res_channels = opts.low_res.as_ref().map(|_| c);
    model.check_conditioning(labels.as_deref(), c, low_res_channels)?;
    let sampler = BatchSampler {
        model,
        diffusion,
        opts,
        labels: labels.as_deref(),
        device,
        channels: c,
    };
    let s = opts.image_size;
    let mut images = Vec::with_capacity(opts.num_samples * s * s * c);
    let mut own_labels = Vec::new();
    let mut done_steps = 0u64;
    let mut on_step = || {
        done_steps += 1;
        progress(done_steps);
    };
    let steps = diffusion.num_timesteps() as u64;
    for (k, part) in batch_ranges(opts.num_samples, opts.batch_size).enumerate() {
        if opts.shard.is_some_and(|sh| !sh.owns(k)) {
            continue;
        }
        let kept = opts.batch_dir.as_deref().map(|dir| BatchFile::new(dir, k));
        match kept.as_ref().and_then(|f| f.read([part.len(), s, s, c])) {
            Some(pixels) => {
                images.extend(pixels);
                (0..steps).for_each(|_| on_step());
            }
            None => {
                let sample = sampler.sample_batch(k, part.clone(), &mut on_step)?;
                let pixels = to_uint8_nhwc(&to_f32_vec(sample), part.len(), c, s, s);
                if let Some(file) = &kept {
                    file.write(&pixels, [part.len(), s, s, c])?;
                }
                images.extend(pixels);
            }
        }
        if let Some(l) = &labels {
            own_labels.extend_from_slice(&l[part]);
        }
    }
    Ok(Samples {
        n: images.len() / (s * s * c),
        images,
        c,
        labels: labels.map(|_| own_labels),
        h: s,
        w: s,
    })
}

/// Channels of the images `model` draws: those of the low-resolution images when they are
/// given (the network then takes both, which `check_conditioning` checks), else the network's
/// input channels.
fn image_channels(model: &UNetModel, opts: &SampleOptions) -> usize {
    match &opts.low_res {
        Some((values, small)) => values.len() / (opts.num_samples * small * small).max(1),
        None => model.in_channels(),
    }
}

/// Refuses, on the CPU, a batch whose activations, or samples whose pixels, cannot fit in the
/// memory available (lower bounds, [`crate::nn::memory`]).
fn check_batch_fits(
    model: &UNetModel,
    opts: &SampleOptions,
    c: usize,
    device: &Device,
) -> Result<()> {
    if !DeviceKind::of(device).is_flex() {
        return Ok(());
    }
    let (n, s) = (opts.num_samples as u64, opts.image_size);
    let batch = (opts.batch_size as u64).min(n);
    let pixels = (c * s * s) as u64;
    let bytes = batch
        .saturating_mul(model.config().activation_bytes(s, false))
        .saturating_add(n.saturating_mul(pixels));
    let what = format!("sampling {n} images at {s}x{s} in batches of {batch}");
    crate::nn::memory::check_fits(bytes, &what).map_err(Error::Invalid)
}

/// Checks the sizes of everything `opts` holds against one another, for images of `c`
/// channels.
fn check_options(opts: &SampleOptions, c: usize) -> Result<()> {
    let (n, s) = (opts.num_samples, opts.image_size);
    if n == 0 {
        return Err(Error::Invalid("num_samples must be at least 1".into()));
    }
    if opts.batch_size == 0 {
        return Err(Error::Invalid("batch_size must be at least 1".into()));
    }
    if let Some(noise) = &opts.init_noise
        && noise.len() != n * c * s * s
    {
        return Err(Error::Invalid(format!(
            "the start noise holds {} values; [{n}, {c}, {s}, {s}] needs {}",
            noise.len(),
            n * c * s * s
        )));
    }
    if let Some((values, small)) = &opts.low_res
        && values.len() != n * c * small * small
    {
        return Err(Error::Invalid(format!(
            "{} low-resolution values given; [{n}, {c}, {small}, {small}] needs {}",
            values.len(),
            n * c * small * small
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
    Ok(())
}

/// The class label of every sample: the given ones (their count checked here, their range by
/// the model), or drawn uniformly from the model's classes as the reference does for a
/// class-conditional model; `None` for an unconditional one.
fn labels_to_sample(opts: &SampleOptions, classes: Option<usize>) -> Result<Option<Vec<i64>>> {
    let n = opts.num_samples;
    match (&opts.labels, classes) {
        (Some(l), _) if l.len() != n => Err(Error::Invalid(format!(
            "{} labels given for {n} samples",
            l.len()
        ))),
        (Some(l), _) => Ok(Some(l.clone())),
        (None, Some(classes)) => {
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6c61_6265_6c73);
            Ok(Some(
                (0..n)
                    .map(|_| rng.random_range(0..classes as i64))
                    .collect(),
            ))
        }
        (None, None) => Ok(None),
    }
}

/// A finished batch's images on disk, for [`SampleOptions::batch_dir`].
struct BatchFile {
    path: PathBuf,
}

impl BatchFile {
    fn new(dir: &Path, k: usize) -> Self {
        Self {
            path: dir.join(format!("batch_{k:06}.npy")),
        }
    }

    /// The batch's images `[b, s, s, c]`, if a file of exactly that shape is there.
    fn read(&self, shape: [usize; 4]) -> Option<Vec<u8>> {
        let array = NpyArray::read(&self.path).ok()?;
        match array.data {
            NpyData::U8(pixels) if array.shape == shape => Some(pixels),
            _ => None,
        }
    }

    /// Keeps the batch's images (atomically, so that a kill never leaves half a batch).
    fn write(&self, pixels: &[u8], shape: [usize; 4]) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let array = NpyArray {
            shape: shape.to_vec(),
            data: NpyData::U8(pixels.to_vec()),
        };
        iddpm_checkpoint::write_atomic(&self.path, &array.to_bytes())?;
        Ok(())
    }
}

/// Draws one batch after another with the same model, diffusion and options.
struct BatchSampler<'a> {
    model: &'a UNetModel,
    diffusion: &'a GaussianDiffusion,
    opts: &'a SampleOptions,
    labels: Option<&'a [i64]>,
    device: &'a Device,
    /// Channels of the images.
    channels: usize,
}

impl BatchSampler<'_> {
    /// Batch `k`, the samples `part`: its final x_0 `[b, C, s, s]`.
    fn sample_batch(
        &self,
        k: usize,
        part: Range<usize>,
        on_step: &mut dyn FnMut(),
    ) -> Result<Tensor<4>> {
        let s = self.opts.image_size;
        let shape = [part.len(), self.channels, s, s];
        let mut noise = batch_noise(self.opts.seed, k);
        let x_t = self.start_noise(part.clone(), &mut noise)?;
        let cond = self.conditioning(part);
        let request = SampleRequest::new(self.opts.sampler, shape, &cond, &mut noise, self.device)
            .starting_from(x_t)
            .with_options(
                PredictOptions::clip(self.opts.clip_denoised).with_threshold(self.opts.threshold),
            );
        let mut last = None;
        for step in self
            .diffusion
            .sample_loop_progressive(self.model, request)?
        {
            last = Some(step?.sample);
            on_step();
        }
        Ok(last.expect("a diffusion has at least one step"))
    }

    /// x_T of the samples `part`: the given start noise, or drawn from the batch's `noise`.
    fn start_noise(&self, part: Range<usize>, noise: &mut SeededNoise) -> Result<Tensor<4>> {
        let s = self.opts.image_size;
        let shape = [part.len(), self.channels, s, s];
        Ok(match &self.opts.init_noise {
            Some(all) => {
                let chw = self.channels * s * s;
                let values = all[part.start * chw..part.end * chw].to_vec();
                Tensor::<4>::from_data(TensorData::new(values, shape), self.device)
            }
            None => noise.sample(shape, self.device)?,
        })
    }

    /// The labels and low-resolution images of the samples `part`.
    fn conditioning(&self, part: Range<usize>) -> Conditioning {
        let b = part.len();
        let mut cond = match self.labels {
            Some(l) => Conditioning::labels(Tensor::<1, Int>::from_data(
                TensorData::new(l[part.clone()].to_vec(), [b]),
                self.device,
            )),
            None => Conditioning::none(),
        };
        if let Some((values, small)) = &self.opts.low_res {
            let per = self.channels * small * small;
            let values = values[part.start * per..part.end * per].to_vec();
            cond.low_res = Some(Tensor::<4>::from_data(
                TensorData::new(values, [b, self.channels, *small, *small]),
                self.device,
            ));
        }
        cond
    }
}
