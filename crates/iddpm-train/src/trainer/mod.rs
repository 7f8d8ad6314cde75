//! The training loop (the reference's `TrainLoop`): batches, microbatches, importance
//! sampling, AdamW, EMAs, logs, previews and resumable checkpoints.

use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use iddpm_data::{BatchLoader, Dataset};
use iddpm_diffusion::{
    DiffusionConfig, GOLDEN_GAMMA, GaussianDiffusion, LossSecondMomentResampler, ScheduleSampler,
    UniformSampler, splitmix64_mix,
};
use iddpm_kernels::ops::DeviceKind;
use iddpm_kernels::to_f32_vec;
use iddpm_nn::{ParamSlot, ParamVisitor, UNetConfig, UNetModel, VisitParams, param_names};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::adamw::AdamW;
use crate::distributed::ProcessGroup;
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::logger::Logger;

mod checkpoints;
mod forward_backward;
mod loss_scaler;
mod manifest;
mod optimize;
mod options;
mod preview;
mod run_loop;
mod step_parts;

use loss_scaler::LossScaler;

pub use checkpoints::parse_resume_step;
pub use forward_backward::{StepGradients, StepInputs};
pub use options::{INITIAL_LG_LOSS_SCALE, SamplerKind, StepReport, TrainOptions};
pub use run_loop::{LoopSummary, TrainEvent};

/// The schedule sampler a run uses: `--schedule_sampler`'s choice.
enum TimestepSampler {
    Uniform(UniformSampler),
    LossSecondMoment(LossSecondMomentResampler),
}

impl TimestepSampler {
    fn new(kind: SamplerKind, num_timesteps: usize) -> Self {
        match kind {
            SamplerKind::Uniform => Self::Uniform(UniformSampler::new(num_timesteps)),
            SamplerKind::LossSecondMoment => {
                Self::LossSecondMoment(LossSecondMomentResampler::new(num_timesteps))
            }
        }
    }

    fn get(&self) -> &dyn ScheduleSampler {
        match self {
            Self::Uniform(s) => s,
            Self::LossSecondMoment(s) => s,
        }
    }
}

/// Calls `f(index, name, slot)` for every parameter in order.
pub fn for_each_param<M: VisitParams + ?Sized>(
    model: &mut M,
    f: impl FnMut(usize, &str, &mut dyn ParamSlot),
) {
    struct V<F>(F, usize);
    impl<F: FnMut(usize, &str, &mut dyn ParamSlot)> ParamVisitor for V<F> {
        fn visit(&mut self, name: &str, _shape: &[usize], p: &mut dyn ParamSlot) {
            (self.0)(self.1, name, p);
            self.1 += 1;
        }
    }
    model.visit_params("", &mut V(f, 0));
}

/// A training run in progress.
pub struct Trainer<'d> {
    model: UNetModel,
    unet_config: UNetConfig,
    diffusion: GaussianDiffusion,
    diffusion_config: DiffusionConfig,
    opts: TrainOptions,
    opt: AdamW,
    emas: Vec<Ema>,
    sampler: TimestepSampler,
    group: ProcessGroup,
    loader: BatchLoader<'d>,
    step: u64,
    device: Device,
    train_device: Device,
    logger: Logger,
    loss_points: Vec<(f64, f64)>,
    preview_model: Option<UNetModel>,
    names: Vec<(String, Vec<usize>)>,
    resolution: usize,
    scaler: LossScaler,
    /// Identifies the files this run saves together ([`manifest::Manifest`]).
    run_id: String,
}

/// The device seed for the dropout masks of one microbatch (splitmix64 of the three inputs).
fn dropout_seed(seed: u64, step: u64, offset: u64) -> u64 {
    splitmix64_mix(
        seed ^ step.wrapping_mul(GOLDEN_GAMMA) ^ offset.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

/// The generator of one training example's timestep and noise, keyed by the run's seed, the
/// step and the example's position in the global batch: the draws do not depend on how the
/// batch is split into microbatches or processes, and need no state to resume.
fn example_rng(seed: u64, step: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(dropout_seed(seed, step, index) ^ 0x5EED);
    rng.set_stream(index);
    rng
}

/// Refuses, on the CPU, a (micro)batch whose activations cannot fit in the memory available
/// (a lower bound, [`iddpm_nn::memory`]): the first step would otherwise abort the process.
fn check_step_fits(
    config: &UNetConfig,
    opts: &TrainOptions,
    resolution: usize,
    device: &Device,
) -> Result<()> {
    if !DeviceKind::of(device).is_flex() {
        return Ok(());
    }
    let micro = if opts.microbatch == 0 {
        opts.batch_size
    } else {
        opts.microbatch
    } as u64;
    let channels = if opts.small_size.is_some() {
        config.in_channels / 2
    } else {
        config.in_channels
    };
    let pixels = (channels * resolution * resolution) as u64;
    let bytes = micro
        .saturating_mul(config.activation_bytes(resolution, true))
        .saturating_add((opts.batch_size as u64).saturating_mul(pixels * 8));
    let what = format!("a training step of {micro} images at {resolution}x{resolution}");
    iddpm_nn::memory::check_fits(bytes, &what).map_err(TrainError::Config)
}

/// Everything in the options, the network and the data that can be checked before any
/// weights exist.
fn check_options(opts: &TrainOptions, unet_config: &UNetConfig, data: &dyn Dataset) -> Result<()> {
    if opts.batch_size == 0 {
        return Err(TrainError::Config("batch_size must be at least 1".into()));
    }
    if opts.microbatch > opts.batch_size {
        return Err(TrainError::Config(format!(
            "microbatch {} is larger than batch_size {}",
            opts.microbatch, opts.batch_size
        )));
    }
    if opts.log_interval == 0 || opts.save_interval == 0 {
        return Err(TrainError::Config(
            "log_interval and save_interval must be at least 1".into(),
        ));
    }
    if let Some(rate) = opts.ema_rates.iter().find(|r| !(0.0..1.0).contains(*r)) {
        return Err(TrainError::Config(format!(
            "EMA rate {rate} is not in [0, 1)"
        )));
    }
    if opts.lr.is_nan() || opts.lr <= 0.0 {
        return Err(TrainError::Config(format!(
            "lr {} must be positive",
            opts.lr
        )));
    }
    let resolution = data.resolution();
    if let Some(small) = opts.small_size
        && (small == 0 || !resolution.is_multiple_of(small))
    {
        return Err(TrainError::Config(format!(
            "small_size {small} must divide the resolution {resolution}"
        )));
    }
    let c = data.channels();
    let expect_in = if opts.small_size.is_some() { 2 * c } else { c };
    if unet_config.in_channels != expect_in {
        let what = if opts.small_size.is_some() {
            format!("the super-resolution network for {c}-channel images")
        } else {
            format!("a network for {c}-channel images")
        };
        return Err(TrainError::Config(format!(
            "the data have {c} channels per image, so training needs {what} ({expect_in} \
             input channels, --image_channels {c}); this network takes {}",
            unet_config.in_channels
        )));
    }
    unet_config.check_image_size(resolution)?;
    if data.len() < opts.batch_size {
        return Err(TrainError::Config(format!(
            "the dataset has {} images, fewer than batch_size {}",
            data.len(),
            opts.batch_size
        )));
    }
    Ok(())
}

/// One EMA per rate, each starting from the model's initial weights.
fn initial_emas(model: &mut UNetModel, rates: &[f64]) -> Vec<Ema> {
    let mut flats = Vec::new();
    for_each_param(model, |_, name, p| flats.push((name.to_string(), p.flat())));
    rates.iter().map(|&r| Ema::new(r, flats.clone())).collect()
}

impl<'d> Trainer<'d> {
    /// Sets up a run on `device` (the autodiff device is derived from it). Everything that
    /// can be checked before spending compute is checked here.
    pub fn new(
        unet_config: UNetConfig,
        diffusion_config: DiffusionConfig,
        data: &'d dyn Dataset,
        opts: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        check_options(&opts, &unet_config, data)?;
        let resolution = data.resolution();
        check_step_fits(&unet_config, &opts, resolution, device)?;
        let diffusion = diffusion_config.build_with_respacing("")?;
        // --use_checkpoint: burn recomputes memory-bound activations in the backward pass.
        let train_device = if unet_config.use_checkpoint {
            device.clone().autodiff().gradient_checkpointing()
        } else {
            device.clone().autodiff()
        };
        // --seed decides the initial weights too.
        let init_seed = opts.seed ^ 0x1A17_u64.wrapping_mul(GOLDEN_GAMMA);
        let mut model = UNetModel::seeded(&unet_config, init_seed, &train_device);
        model.set_torso_f16(opts.use_fp16);
        let names = param_names(&mut model);
        let emas = initial_emas(&mut model, &opts.ema_rates);
        let sampler = TimestepSampler::new(opts.schedule_sampler, diffusion.num_timesteps());
        let logger = Logger::new(&opts.log_dir, opts.quiet)?;
        let loader = BatchLoader::new(data, opts.batch_size, opts.seed)?;
        Ok(Self {
            model,
            unet_config,
            diffusion,
            diffusion_config,
            opt: AdamW::new(opts.weight_decay),
            emas,
            sampler,
            group: ProcessGroup::single(),
            loader,
            step: 0,
            device: device.clone(),
            train_device,
            logger,
            loss_points: Vec::new(),
            preview_model: None,
            names,
            resolution,
            scaler: LossScaler::new(
                opts.use_fp16,
                opts.initial_lg_loss_scale,
                opts.fp16_scale_growth,
            ),
            run_id: iddpm_checkpoint::new_run_id(),
            opts,
        })
    }

    /// Makes this trainer one process of a data-parallel run: every process trains on its
    /// part (`--batch_size` examples) of a global batch of `batch_size × world_size`, gradients
    /// are summed across processes, and all start from the main process's weights. Results
    /// equal a single process training on the global batch with `--microbatch batch_size`.
    /// Call before [`resume`](Self::resume).
    pub fn join_group(&mut self, mut group: ProcessGroup) -> Result<()> {
        if group.world_size() == 1 {
            self.group = group;
            return Ok(());
        }
        let global_batch = self.opts.batch_size * group.world_size();
        let data = self.loader.data();
        if data.len() < global_batch {
            return Err(TrainError::Config(format!(
                "the dataset has {} images, fewer than batch_size {} x {} processes",
                data.len(),
                self.opts.batch_size,
                group.world_size()
            )));
        }
        self.loader = BatchLoader::new(data, global_batch, self.opts.seed)?;
        // The same initial weights everywhere: the main process's.
        let mut failure = None;
        let mut flats = Vec::new();
        for_each_param(&mut self.model, |_, name, p| {
            if failure.is_some() {
                return;
            }
            let current = p.flat();
            let device = current.device();
            let mut host = to_f32_vec(current);
            match group.broadcast(&mut host) {
                Ok(()) => {
                    let n = host.len();
                    let value = Tensor::<1>::from_data(TensorData::new(host, [n]), &device);
                    p.set_flat(value.clone());
                    flats.push((name.to_string(), value));
                }
                Err(e) => failure = Some(e),
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        for ema in &mut self.emas {
            ema.params = flats.clone();
        }
        // Training steps' communication is what the statistics are for.
        group.reset_stats();
        self.group = group;
        Ok(())
    }

    /// Hands the process group back (leaving a group of one), e.g. to
    /// [`finish`](ProcessGroup::finish) it at the end of a run.
    pub fn leave_group(&mut self) -> ProcessGroup {
        std::mem::replace(&mut self.group, ProcessGroup::single())
    }

    /// The process group (a group of one unless [`join_group`](Self::join_group) was called).
    pub fn group_mut(&mut self) -> &mut ProcessGroup {
        &mut self.group
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The model being trained (on the autodiff device).
    pub fn model_mut(&mut self) -> &mut UNetModel {
        &mut self.model
    }

    /// The EMAs.
    pub fn emas(&self) -> &[Ema] {
        &self.emas
    }

    /// Whether the run has reached `--max_steps` or the end of `--lr_anneal_steps`.
    pub fn finished(&self) -> bool {
        self.opts.max_steps.is_some_and(|m| self.step >= m)
            || (self.opts.lr_anneal_steps > 0 && self.step >= self.opts.lr_anneal_steps)
    }

    /// The learning rate of the next step (linear annealing).
    pub fn current_lr(&self) -> f64 {
        if self.opts.lr_anneal_steps == 0 {
            self.opts.lr
        } else {
            self.opts.lr * (1.0 - self.step as f64 / self.opts.lr_anneal_steps as f64)
        }
    }

    fn low_res(&self, x: &Tensor<4>) -> Option<Tensor<4>> {
        let small = self.opts.small_size?;
        let k = x.dims()[2] / small;
        Some(avg_pool2d(x.clone(), AvgPoolOptions::new([k, k])))
    }

    /// One optimizer step on the next batch (in a data-parallel run: on this process's part of
    /// the next global batch, with gradients summed over all processes). As the reference's
    /// `run_step`: forward and backward passes, the update, the step's logs.
    pub fn run_step(&mut self) -> Result<StepReport> {
        let inputs = self.next_inputs()?;
        let gradients = self.forward_backward(&inputs)?;
        Ok(self.optimize(gradients))
    }

    /// Channels of the images trained on (the super-resolution network also takes the
    /// upsampled low-resolution image).
    pub(crate) fn image_channels(&self) -> usize {
        let inputs = self.unet_config.in_channels;
        if self.opts.small_size.is_some() {
            inputs / 2
        } else {
            inputs
        }
    }

    fn log_step_counts(&mut self, batch: usize, lr: f64) {
        self.logger.log("step", self.step as f64);
        self.logger
            .log("samples", (self.step * batch as u64) as f64);
        self.logger.log("lr", lr);
    }

    /// log2 of the current loss scale (meaningful with `use_fp16`).
    pub fn lg_loss_scale(&self) -> f64 {
        self.scaler.lg_scale()
    }

    /// Writes the averaged logs of the last interval (the main process only).
    pub fn dump_logs(&mut self) -> Result<()> {
        if self.group.is_main() {
            self.logger.dump()?;
        }
        Ok(())
    }
}
