//! The training loop (the reference's `TrainLoop`): batches, microbatches, importance
//! sampling, AdamW, EMAs, logs, previews and resumable checkpoints.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use iddpm_checkpoint::{StateDict, load_state_dict, write_safetensors};
use iddpm_data::pictures::{save_grid_with_columns, to_uint8_nhwc};
use iddpm_data::{BatchLoader, Dataset, LoaderState};
use iddpm_diffusion::{
    Conditioning, DiffusionConfig, GaussianDiffusion, LossSecondMomentResampler, PredictOptions,
    Sampler, ScheduleSampler, SeededNoise, UniformSampler,
};
use iddpm_nn::{
    ParamSlot, ParamVisitor, UNetConfig, UNetModel, VisitParams, apply_state_dict, param_names,
    state_dict_of,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::adamw::{AdamW, to_vec};
use crate::distributed::ProcessGroup;
use crate::ema::{Ema, format_rate};
use crate::error::{Result, TrainError};
use crate::logger::Logger;
use crate::plot::save_loss_curve;

/// How training timesteps are drawn (`--schedule_sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Uniformly.
    Uniform,
    /// Importance sampling by the second moment of recent losses (for L_vlb).
    LossSecondMoment,
}

impl FromStr for SamplerKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "loss-second-moment" => Ok(Self::LossSecondMoment),
            other => Err(TrainError::Config(format!(
                "--schedule_sampler {other:?}: expected uniform or loss-second-moment"
            ))),
        }
    }
}

/// The training flags of the reference (`image_train.py`) plus iddpm's own.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Decay the learning rate linearly to 0 over this many steps, then stop (0: constant).
    pub lr_anneal_steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Images per forward/backward (0: the whole batch); gradients are accumulated so the
    /// update equals the full batch's.
    pub microbatch: usize,
    /// EMA rates.
    pub ema_rates: Vec<f64>,
    /// Steps between log dumps.
    pub log_interval: u64,
    /// Steps between checkpoints.
    pub save_interval: u64,
    /// Stop after this many steps in total (resumed steps included).
    pub max_steps: Option<u64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Timestep sampler.
    pub schedule_sampler: SamplerKind,
    /// Where logs, checkpoints and pictures go.
    pub log_dir: PathBuf,
    /// Images in the preview grid written at each save (0: none).
    pub preview_samples: usize,
    /// Ancestral sampling steps of the preview (respaced from the training steps).
    pub preview_steps: usize,
    /// Super-resolution: the side of the low-resolution input.
    pub small_size: Option<usize>,
    /// Do not print the log table.
    pub quiet: bool,
    /// Mixed precision (`--use_fp16`): the UNet's torso computes in f16, the f32 parameters
    /// are the master weights, and the loss is scaled by 2^lg_loss_scale before the backward
    /// pass (dynamic loss scaling). Meant for CUDA devices; on a CPU f16 is only slower.
    pub use_fp16: bool,
    /// Added to lg_loss_scale after every step without overflow (`--fp16_scale_growth`).
    pub fp16_scale_growth: f64,
    /// lg_loss_scale at the start of a run (the reference's 20).
    pub initial_lg_loss_scale: f64,
}

/// The reference's starting log2 loss scale: big enough that small f16 gradients do not
/// underflow, and it falls by one at each overflow.
pub const INITIAL_LG_LOSS_SCALE: f64 = 20.0;

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.0,
            lr_anneal_steps: 0,
            batch_size: 1,
            microbatch: 0,
            ema_rates: vec![0.9999],
            log_interval: 10,
            save_interval: 10000,
            max_steps: None,
            seed: 0,
            schedule_sampler: SamplerKind::Uniform,
            log_dir: PathBuf::from("runs"),
            preview_samples: 16,
            preview_steps: 25,
            small_size: None,
            quiet: false,
            use_fp16: false,
            fp16_scale_growth: 1e-3,
            initial_lg_loss_scale: INITIAL_LG_LOSS_SCALE,
        }
    }
}

enum TimestepSampler {
    Uniform(UniformSampler),
    LossSecondMoment(LossSecondMomentResampler),
}

impl TimestepSampler {
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

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Steps completed so far.
    pub step: u64,
    /// Mean (unweighted) loss of the batch.
    pub loss: f64,
    /// Global gradient norm (of the unscaled gradients; 0 for a skipped step).
    pub grad_norm: f64,
    /// Mixed precision only: the gradients overflowed, so the parameters and EMAs were left as
    /// they were and the loss scale was halved.
    pub skipped: bool,
    /// Mixed precision only: log2 of the loss scale for the next step.
    pub lg_loss_scale: Option<f64>,
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
    lg_loss_scale: f64,
}

/// The device seed for the dropout masks of one microbatch (splitmix64 of the three inputs).
fn dropout_seed(seed: u64, step: u64, offset: u64) -> u64 {
    let mut z = seed
        ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ offset.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of one training example's timestep and noise, keyed by the run's seed, the
/// step and the example's position in the global batch: the draws do not depend on how the
/// batch is split into microbatches or processes, and need no state to resume.
fn example_rng(seed: u64, step: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(dropout_seed(seed, step, index) ^ 0x5EED);
    rng.set_stream(index);
    rng
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
        if opts.batch_size == 0 {
            return Err(TrainError::Config("--batch_size must be at least 1".into()));
        }
        if opts.microbatch > opts.batch_size {
            return Err(TrainError::Config(format!(
                "--microbatch {} is larger than --batch_size {}",
                opts.microbatch, opts.batch_size
            )));
        }
        if opts.log_interval == 0 || opts.save_interval == 0 {
            return Err(TrainError::Config(
                "--log_interval and --save_interval must be at least 1".into(),
            ));
        }
        if let Some(rate) = opts.ema_rates.iter().find(|r| !(0.0..1.0).contains(*r)) {
            return Err(TrainError::Config(format!(
                "--ema_rate {rate} is not in [0, 1)"
            )));
        }
        if opts.lr.is_nan() || opts.lr <= 0.0 {
            return Err(TrainError::Config(format!(
                "--lr {} must be positive",
                opts.lr
            )));
        }
        let resolution = data.resolution();
        if let Some(small) = opts.small_size
            && (small == 0 || !resolution.is_multiple_of(small))
        {
            return Err(TrainError::Config(format!(
                "--small_size {small} must divide --large_size {resolution}"
            )));
        }
        let expect_in = if opts.small_size.is_some() { 6 } else { 3 };
        if unet_config.in_channels != expect_in {
            return Err(TrainError::Config(
                "super-resolution training needs the super-resolution network".into(),
            ));
        }
        unet_config.check_image_size(resolution)?;
        if data.len() < opts.batch_size {
            return Err(TrainError::Config(format!(
                "the dataset has {} images, fewer than --batch_size {}",
                data.len(),
                opts.batch_size
            )));
        }
        let diffusion = diffusion_config.build_with_respacing("")?;
        // --use_checkpoint: burn recomputes memory-bound activations in the backward pass.
        let train_device = if unet_config.use_checkpoint {
            device.clone().autodiff().gradient_checkpointing()
        } else {
            device.clone().autodiff()
        };
        // --seed decides the initial weights too.
        train_device.seed(opts.seed ^ 0x1A17_u64.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut model = UNetModel::new(&unet_config, &train_device);
        model.set_torso_f16(opts.use_fp16);
        let names = param_names(&mut model);
        let mut flats = Vec::new();
        for_each_param(&mut model, |_, name, p| {
            flats.push((name.to_string(), p.flat()))
        });
        let emas = opts
            .ema_rates
            .iter()
            .map(|&r| Ema::new(r, flats.clone()))
            .collect();
        let sampler = match opts.schedule_sampler {
            SamplerKind::Uniform => {
                TimestepSampler::Uniform(UniformSampler::new(diffusion.num_timesteps()))
            }
            SamplerKind::LossSecondMoment => TimestepSampler::LossSecondMoment(
                LossSecondMomentResampler::new(diffusion.num_timesteps()),
            ),
        };
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
            lg_loss_scale: opts.initial_lg_loss_scale,
            opts,
        })
    }

    /// Makes this trainer one process of a data-parallel run: every process trains on its
    /// part (`--batch_size` examples) of a global batch of `batch_size × world_size`, gradients
    /// are summed across processes, and all start from the main process's weights. Results
    /// equal a single process training on the global batch with `--microbatch batch_size`.
    /// Call before [`resume`](Self::resume).
    pub fn join_group(&mut self, mut group: ProcessGroup) -> Result<()> {
        let global_batch = self.opts.batch_size * group.world_size();
        let data = self.loader.data();
        if data.len() < global_batch {
            return Err(TrainError::Config(format!(
                "the dataset has {} images, fewer than --batch_size {} x {} processes",
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
            let mut host = to_vec(&current);
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
        self.group = group;
        Ok(())
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
    /// the next global batch, with gradients summed over all processes).
    pub fn run_step(&mut self) -> Result<StepReport> {
        let world = self.group.world_size();
        let b = self.opts.batch_size;
        let global_b = b * world;
        let first = self.group.rank() * b;
        let batch = self.loader.next_batch_part(first..first + b)?;
        let r = batch.resolution;
        let chw = 3 * r * r;
        let micro = if self.opts.microbatch == 0 {
            b
        } else {
            self.opts.microbatch
        };
        // Timesteps, importance weights and noise of each example, keyed by its global index.
        let mut ts = Vec::with_capacity(b);
        let mut weights = Vec::with_capacity(b);
        let mut noise = Vec::with_capacity(b * chw);
        for i in 0..b {
            let mut rng = example_rng(self.opts.seed, self.step, (first + i) as u64);
            let (t, w) = self.sampler.get().sample(1, &mut rng);
            ts.push(t[0]);
            weights.push(w[0]);
            noise.extend((0..chw).map(|_| -> f32 { StandardNormal.sample(&mut rng) }));
        }
        let mut acc: Vec<Option<Tensor<1>>> = Vec::new();
        let loss_scale = if self.opts.use_fp16 {
            self.lg_loss_scale.exp2()
        } else {
            1.0
        };
        // Per example: unweighted loss, and the logged terms (weighted, as the reference logs).
        let mut raw_loss = Vec::with_capacity(b);
        let mut terms: Vec<(&'static str, Vec<f32>)> = Vec::new();
        let mut start = 0;
        while start < b {
            let m = micro.min(b - start);
            let x = Tensor::<4>::from_data(
                TensorData::new(
                    batch.images[start * chw..(start + m) * chw].to_vec(),
                    [m, 3, r, r],
                ),
                &self.train_device,
            );
            let t = &ts[start..start + m];
            let w = &weights[start..start + m];
            let eps = Tensor::<4>::from_data(
                TensorData::new(noise[start * chw..(start + m) * chw].to_vec(), [m, 3, r, r]),
                &self.train_device,
            );
            // Dropout draws its masks from the device's generator: reseeding it from the step
            // and the example's global index makes them reproducible, so a resumed run
            // replays them exactly, whatever the split into processes.
            self.train_device.seed(dropout_seed(
                self.opts.seed,
                self.step,
                (first + start) as u64,
            ));
            let mut cond = Conditioning::none();
            if let Some(labels) = &batch.labels
                && self.unet_config.num_classes.is_some()
            {
                cond.labels = Some(Tensor::<1, Int>::from_data(
                    TensorData::new(labels[start..start + m].to_vec(), [m]),
                    &self.train_device,
                ));
            }
            cond.low_res = self.low_res(&x);
            let losses = self
                .diffusion
                .training_losses(&self.model, x, t, eps, &cond)?;
            let loss_values = to_vec(&losses.loss.clone().inner());
            raw_loss.extend(loss_values.iter().copied());
            let mut logged = vec![("loss", loss_values)];
            if let Some(mse) = &losses.mse {
                logged.push(("mse", to_vec(&mse.clone().inner())));
            }
            if let Some(vb) = &losses.vb {
                logged.push(("vb", to_vec(&vb.clone().inner())));
            }
            for (key, values) in logged {
                let weighted = values.iter().zip(w).map(|(v, w)| v * w);
                match terms.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, all)) => all.extend(weighted),
                    None => terms.push((key, weighted.collect())),
                }
            }
            let wt = Tensor::<1>::from_data(TensorData::new(w.to_vec(), [m]), &self.train_device);
            // Scaled so that the gradients summed over microbatches and processes are the
            // global batch's mean (times the loss scale of mixed precision, undone below).
            let loss = (losses.loss * wt)
                .mean()
                .mul_scalar((m as f64 / global_b as f64 * loss_scale) as f32);
            let grads = loss.backward();
            if acc.is_empty() {
                for_each_param(&mut self.model, |_, _, _| acc.push(None));
            }
            for_each_param(&mut self.model, |i, _, p| {
                if let Some(g) = p.grad_flat(&grads) {
                    acc[i] = Some(match acc[i].take() {
                        Some(a) => a + g,
                        None => g,
                    });
                }
            });
            start += m;
        }
        // Every process sees every example's timestep and losses, in global order.
        let mut local = Vec::with_capacity(b * (2 + terms.len()));
        local.extend(ts.iter().map(|&t| t as f32));
        local.extend(&raw_loss);
        for (_, values) in &terms {
            local.extend(values);
        }
        let all = self.group.all_gather(&local)?;
        let per_rank = local.len();
        let column = |k: usize| -> Vec<f32> {
            all.chunks(per_rank)
                .flat_map(|c| c[k * b..(k + 1) * b].to_vec())
                .collect()
        };
        let all_t: Vec<usize> = column(0).iter().map(|&t| t as usize).collect();
        if let TimestepSampler::LossSecondMoment(s) = &mut self.sampler {
            let all_loss: Vec<f64> = column(1).iter().map(|&v| f64::from(v)).collect();
            s.update_with_all_losses(&all_t, &all_loss);
        }
        let t_total = self.diffusion.num_timesteps();
        let mut loss = 0.0;
        for (k, (key, _)) in terms.iter().enumerate() {
            let values: Vec<f64> = column(2 + k).iter().map(|&v| f64::from(v)).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            if *key == "loss" {
                loss = mean;
            }
            self.logger.log_mean(key, mean);
            for (&ti, &v) in all_t.iter().zip(&values) {
                let quartile = 4 * ti / t_total;
                self.logger.log_mean(&format!("{key}_q{quartile}"), v);
            }
        }
        if world > 1 {
            self.all_reduce_gradients(&mut acc)?;
        }
        let lr = self.current_lr();
        let mut sq = Vec::new();
        for g in acc.iter().flatten() {
            sq.push((g.clone() * g.clone()).sum());
        }
        let scaled_norm = if sq.is_empty() {
            0.0
        } else {
            let total: f32 = Tensor::cat(sq, 0).sum().into_scalar();
            (total as f64).sqrt()
        };
        if self.opts.use_fp16 {
            self.logger.log("lg_loss_scale", self.lg_loss_scale);
            // A gradient that overflowed f16 makes the squared norm inf or NaN (finite f16
            // values cannot overflow it in f32): skip the update and halve the scale.
            if !scaled_norm.is_finite() {
                self.lg_loss_scale -= 1.0;
                self.step += 1;
                self.loss_points.push((self.step as f64, loss));
                self.log_step_counts(global_b, lr);
                return Ok(StepReport {
                    step: self.step,
                    loss,
                    grad_norm: 0.0,
                    skipped: true,
                    lg_loss_scale: Some(self.lg_loss_scale),
                });
            }
            let unscale = (1.0 / loss_scale) as f32;
            for g in acc.iter_mut().flatten() {
                *g = g.clone().mul_scalar(unscale);
            }
        }
        let grad_norm = scaled_norm / loss_scale;
        self.opt.begin_step();
        let opt = &mut self.opt;
        let mut new_flats = Vec::with_capacity(acc.len());
        for_each_param(&mut self.model, |i, name, p| {
            let current = p.flat();
            let updated = match acc[i].take() {
                Some(g) => opt.update(name, current, g, lr),
                None => current,
            };
            p.set_flat(updated.clone());
            new_flats.push(updated);
        });
        for ema in &mut self.emas {
            ema.update(&new_flats);
        }
        self.step += 1;
        self.loss_points.push((self.step as f64, loss));
        self.logger.log_mean("grad_norm", grad_norm);
        self.log_step_counts(global_b, lr);
        let lg_loss_scale = self.opts.use_fp16.then(|| {
            self.lg_loss_scale += self.opts.fp16_scale_growth;
            self.lg_loss_scale
        });
        Ok(StepReport {
            step: self.step,
            loss,
            grad_norm,
            skipped: false,
            lg_loss_scale,
        })
    }

    /// Sums the accumulated gradients over all processes (one host round trip).
    fn all_reduce_gradients(&mut self, acc: &mut [Option<Tensor<1>>]) -> Result<()> {
        let present: Vec<usize> = (0..acc.len()).filter(|&i| acc[i].is_some()).collect();
        if present.is_empty() {
            return Ok(());
        }
        let sizes: Vec<usize> = present
            .iter()
            .map(|&i| acc[i].as_ref().expect("present").dims()[0])
            .collect();
        let flat = Tensor::cat(
            present
                .iter()
                .map(|&i| acc[i].take().expect("present"))
                .collect(),
            0,
        );
        let device = flat.device();
        let mut host = to_vec(&flat);
        self.group.all_reduce_sum(&mut host)?;
        let summed = Tensor::<1>::from_data(TensorData::new(host, [flat.dims()[0]]), &device);
        let mut offset = 0;
        for (&i, &n) in present.iter().zip(&sizes) {
            acc[i] = Some(summed.clone().narrow(0, offset, n));
            offset += n;
        }
        Ok(())
    }

    fn log_step_counts(&mut self, batch: usize, lr: f64) {
        self.logger.log("step", self.step as f64);
        self.logger
            .log("samples", (self.step * batch as u64) as f64);
        self.logger.log("lr", lr);
    }

    /// log2 of the current loss scale (meaningful with `use_fp16`).
    pub fn lg_loss_scale(&self) -> f64 {
        self.lg_loss_scale
    }

    /// Writes the averaged logs of the last interval (the main process only).
    pub fn dump_logs(&mut self) -> Result<()> {
        if self.group.is_main() {
            self.logger.dump()?;
        }
        Ok(())
    }

    /// Saves `opt`, EMA and model checkpoints for the current step (model last, so that a
    /// model file implies its companions), then the loss curve and a preview grid. In a
    /// data-parallel run only the main process writes (every process holds the same state);
    /// all return the model checkpoint's path.
    pub fn save(&mut self) -> Result<PathBuf> {
        let dir = self.opts.log_dir.clone();
        let s = self.step;
        if !self.group.is_main() {
            return Ok(dir.join(format!("model{s:06}.safetensors")));
        }
        let mut opt_dict = self.opt.state_dict(&self.names);
        if let TimestepSampler::LossSecondMoment(r) = &self.sampler {
            let t = r.loss_history().len();
            let h = r.loss_history().first().map_or(0, Vec::len);
            let hist: Vec<f32> = r
                .loss_history()
                .iter()
                .flatten()
                .map(|&v| v as f32)
                .collect();
            opt_dict.insert("__resampler__.loss_history", vec![t, h], hist);
            opt_dict.insert(
                "__resampler__.loss_counts",
                vec![t],
                r.loss_counts().iter().map(|&c| c as f32).collect(),
            );
        }
        let ls = self.loader.state();
        let meta = [
            ("step", s.to_string()),
            ("opt_step", self.opt.step.to_string()),
            ("seed", self.opts.seed.to_string()),
            ("loader_seed", ls.seed.to_string()),
            ("loader_epoch", ls.epoch.to_string()),
            ("loader_position", ls.position.to_string()),
            // Exact bits, so that a resumed run scales its losses identically.
            ("lg_loss_scale", self.lg_loss_scale.to_bits().to_string()),
        ];
        let meta_refs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_safetensors(
            &dir.join(format!("opt{s:06}.safetensors")),
            &opt_dict,
            &meta_refs,
        )?;
        for ema in &self.emas {
            let mut dict = StateDict::new();
            for ((name, flat), (_, shape)) in ema.params.iter().zip(&self.names) {
                dict.insert(name.clone(), shape.clone(), to_vec(flat));
            }
            let path = dir.join(format!("ema_{}_{s:06}.safetensors", ema.rate_label()));
            write_safetensors(&path, &dict, &[("format", "pt"), ("producer", "iddpm")])?;
        }
        let model_path = dir.join(format!("model{s:06}.safetensors"));
        write_safetensors(
            &model_path,
            &state_dict_of(&mut self.model),
            &[("format", "pt"), ("producer", "iddpm")],
        )?;
        save_loss_curve(&dir.join("loss_curve.png"), &self.loss_points)?;
        if self.opts.preview_samples > 0 {
            self.preview(&dir.join(format!("samples_{s:06}.png")))?;
        }
        Ok(model_path)
    }

    /// A network on the plain device holding the first EMA's weights (or the model's).
    pub fn inference_model(&mut self) -> Result<&UNetModel> {
        if self.preview_model.is_none() {
            self.preview_model = Some(UNetModel::new(&self.unet_config, &self.device));
        }
        let flats: Vec<Tensor<1>> = match self.emas.first() {
            Some(ema) => ema.params.iter().map(|(_, t)| t.clone()).collect(),
            None => {
                let mut v = Vec::new();
                for_each_param(&mut self.model, |_, _, p| v.push(p.flat()));
                v
            }
        };
        let model = self.preview_model.as_mut().expect("created above");
        for_each_param(model, |i, _, p| p.set_flat(flats[i].clone()));
        Ok(self.preview_model.as_ref().expect("created above"))
    }

    fn preview(&mut self, path: &Path) -> Result<()> {
        let n = self.opts.preview_samples;
        let r = self.resolution;
        let steps = self
            .opts
            .preview_steps
            .min(self.diffusion_config.diffusion_steps)
            .max(1);
        let diffusion = self
            .diffusion_config
            .build_with_respacing(&steps.to_string())?;
        let device = self.device.clone();
        let class_cond = self.unet_config.num_classes.is_some();
        // Super-resolution upsamples the first training images, shown beside the result.
        let originals = match self.opts.small_size {
            Some(_) => {
                let data = self.loader.data();
                let mut values = Vec::with_capacity(n * 3 * r * r);
                let mut labels = Vec::with_capacity(n);
                for i in 0..n {
                    let (image, label) = data.get(i % data.len())?;
                    values.extend(image);
                    labels.push(label.unwrap_or((i % 10) as i64));
                }
                Some((
                    Tensor::<4>::from_data(TensorData::new(values, [n, 3, r, r]), &device),
                    labels,
                ))
            }
            None => None,
        };
        let mut cond = Conditioning::none();
        if class_cond {
            let labels: Vec<i64> = match &originals {
                Some((_, l)) => l.clone(),
                None => (0..n as i64).map(|i| i % 10).collect(),
            };
            cond.labels = Some(Tensor::<1, Int>::from_data(
                TensorData::new(labels, [n]),
                &device,
            ));
        }
        if let Some((x, _)) = &originals {
            cond.low_res = self.low_res(x);
        }
        let model = self.inference_model()?;
        let mut noise = SeededNoise::new(12345);
        let x = diffusion.sample_loop(
            model,
            Sampler::Ancestral,
            [n, 3, r, r],
            None,
            PredictOptions::clipped(),
            &cond,
            &mut noise,
            &device,
        )?;
        let mut images = to_uint8_nhwc(&to_vec_4(x), n, 3, r, r);
        let mut count = n;
        if let (Some((x, _)), Some(low)) = (originals, cond.low_res) {
            // Rows of three: the low-resolution input (blown up), the sample, the original.
            let small = low.dims()[2];
            let blown = nearest_upsample(
                &to_uint8_nhwc(&to_vec_4(low), n, 3, small, small),
                n,
                small,
                r,
            );
            let truth = to_uint8_nhwc(&to_vec_4(x), n, 3, r, r);
            let per = r * r * 3;
            let mut rows = Vec::with_capacity(3 * n * per);
            for i in 0..n {
                for part in [&blown, &images, &truth] {
                    rows.extend_from_slice(&part[i * per..(i + 1) * per]);
                }
            }
            images = rows;
            count = 3 * n;
        }
        save_grid_with_columns(
            path,
            &images,
            count,
            r,
            r,
            if count == n { None } else { Some(3) },
        )?;
        Ok(())
    }

    /// Restores a run from `model{step}.safetensors` (or a reference `model{step}.pt`): the
    /// weights, and when the companion files exist, the optimizer, EMAs, RNGs, data position and
    /// timestep-sampler history. Returns the step resumed at.
    pub fn resume(&mut self, model_path: &Path) -> Result<u64> {
        let step = parse_resume_step(model_path);
        let dict = load_state_dict(model_path)?;
        apply_state_dict(&mut self.model, &dict).map_err(|mut m| {
            m.file = Some(model_path.display().to_string());
            TrainError::Load(iddpm_nn::LoadError::Mismatch(m))
        })?;
        let dir = model_path.parent().unwrap_or(Path::new("."));
        let mut flats = Vec::new();
        for_each_param(&mut self.model, |_, name, p| {
            flats.push((name.to_string(), p.flat()))
        });
        for ema in &mut self.emas {
            let path = dir.join(format!(
                "ema_{}_{step:06}.safetensors",
                format_rate(ema.rate)
            ));
            ema.params = if path.exists() {
                let d = load_state_dict(&path)?;
                let mut params = Vec::new();
                for (name, flat) in &flats {
                    let e = d.get(name).ok_or_else(|| {
                        TrainError::Other(format!("{}: missing {name}", path.display()))
                    })?;
                    params.push((
                        name.clone(),
                        Tensor::from_data(
                            TensorData::new(e.values.clone(), [e.values.len()]),
                            &flat.device(),
                        ),
                    ));
                }
                params
            } else {
                flats.clone()
            };
        }
        let opt_path = dir.join(format!("opt{step:06}.safetensors"));
        if opt_path.exists() {
            let bytes = std::fs::read(&opt_path).map_err(|e| TrainError::io(&opt_path, e))?;
            let meta = read_metadata(&bytes, &opt_path)?;
            let get = |k: &str| -> Result<u128> {
                meta.iter()
                    .find(|(mk, _)| mk == k)
                    .and_then(|(_, v)| v.parse::<u128>().ok())
                    .ok_or_else(|| {
                        TrainError::Other(format!(
                            "{}: metadata {k} is missing",
                            opt_path.display()
                        ))
                    })
            };
            let dict = load_state_dict(&opt_path)?;
            let device = self.device.clone();
            let missing =
                self.opt
                    .load_state_dict(&dict, &self.names, &device, get("opt_step")? as u64);
            if !missing.is_empty() {
                return Err(TrainError::Other(format!(
                    "{}: no optimizer state for {}",
                    opt_path.display(),
                    missing.join(", ")
                )));
            }
            // The run's seed keys every example's randomness: continue with the saved one.
            self.opts.seed = get("seed")? as u64;
            let state = LoaderState {
                seed: get("loader_seed")? as u64,
                epoch: get("loader_epoch")? as u64,
                position: get("loader_position")? as u64,
            };
            let global_batch = self.opts.batch_size * self.group.world_size();
            self.loader = BatchLoader::resume(self.loader.data(), global_batch, state)?;
            // Older checkpoints (and f32 runs resumed with --use_fp16) start from the default.
            if let Ok(bits) = get("lg_loss_scale") {
                self.lg_loss_scale = f64::from_bits(bits as u64);
            }
            if let (TimestepSampler::LossSecondMoment(r), Some(h), Some(c)) = (
                &mut self.sampler,
                dict.get("__resampler__.loss_history"),
                dict.get("__resampler__.loss_counts"),
            ) {
                let width = h.shape.get(1).copied().unwrap_or(0);
                let hist: Vec<Vec<f64>> = h
                    .values
                    .chunks(width.max(1))
                    .map(|row| row.iter().map(|&v| v as f64).collect())
                    .collect();
                let counts: Vec<usize> = c.values.iter().map(|&v| v as usize).collect();
                if !r.restore(hist, counts) {
                    return Err(TrainError::Other(format!(
                        "{}: the loss history does not fit this diffusion",
                        opt_path.display()
                    )));
                }
            }
        }
        self.step = step;
        Ok(step)
    }
}

/// The step encoded in a checkpoint name (`.../model001000.safetensors` → 1000), as the
/// reference's `parse_resume_step_from_filename`; 0 when there is none.
pub fn parse_resume_step(path: &Path) -> u64 {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Some(rest) = name.rsplit("model").next() else {
        return 0;
    };
    rest.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn read_metadata(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
    Ok(meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}

/// NHWC uint8 images of side `small` blown up to side `large` by pixel repetition.
fn nearest_upsample(images: &[u8], n: usize, small: usize, large: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * large * large * 3);
    for i in 0..n {
        for y in 0..large {
            for x in 0..large {
                let at = ((i * small + y * small / large) * small + x * small / large) * 3;
                out.extend_from_slice(&images[at..at + 3]);
            }
        }
    }
    out
}

fn to_vec_4(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
}
