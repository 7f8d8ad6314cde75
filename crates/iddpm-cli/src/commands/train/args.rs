//! The flags of `iddpm train` and how they become the library's training options.

use anyhow::{Context, bail};
use std::path::PathBuf;

use burn::tensor::Device;
use clap::{ArgAction, Args};
use iddpm::diffusion::Sampler;
use iddpm::kernels::DeviceKind;
use iddpm::train::{EmaWarmup, SamplerKind, TrainOptions};

use crate::flags::{CommaList, ModelArgs, parse_bool};

/// The library's training defaults, which the flags' defaults are (declared once, in
/// `TrainOptions::default`).
pub(super) fn defaults() -> TrainOptions {
    TrainOptions::default()
}

/// Arguments of `iddpm train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Folder of training images (default: the embedded Fashion-MNIST split, 32x32).
    #[arg(long = "data_dir", alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Learning rate.
    #[arg(long = "lr", default_value_t = defaults().lr)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long = "weight_decay", alias = "weight-decay", default_value_t = defaults().weight_decay)]
    pub weight_decay: f64,
    /// Anneal the learning rate linearly to 0 over this many steps, then stop (0: never).
    #[arg(
        long = "lr_anneal_steps",
        alias = "lr-anneal-steps",
        default_value_t = defaults().lr_anneal_steps
    )]
    pub lr_anneal_steps: u64,
    /// Images per step.
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = defaults().batch_size)]
    pub batch_size: usize,
    /// Images per forward/backward pass (-1: the whole batch).
    #[arg(long = "microbatch", default_value_t = -1, allow_negative_numbers = true)]
    pub microbatch: i64,
    /// EMA rates, comma-separated.
    #[arg(long = "ema_rate", alias = "ema-rate", default_value_t = CommaList(defaults().ema_rates))]
    pub ema_rate: CommaList<f64>,
    /// diffusers' EMA warm-up: decay min(rate, 1 − (1 + (step − 1)/inv_gamma)^−power), so that
    /// a short run's EMA is not mostly random initial weights (off: the reference's behaviour).
    #[arg(long = "ema_warmup", alias = "ema-warmup", default_value_t = defaults().ema_warmup.is_some(), value_parser = parse_bool, action = ArgAction::Set)]
    pub ema_warmup: bool,
    /// The warm-up's inv_gamma (diffusers' default).
    #[arg(long = "ema_inv_gamma", alias = "ema-inv-gamma", default_value_t = EmaWarmup::default().inv_gamma)]
    pub ema_inv_gamma: f64,
    /// The warm-up's power (diffusers' default 2/3; 3/4 suits shorter runs).
    #[arg(long = "ema_power", alias = "ema-power", default_value_t = EmaWarmup::default().power)]
    pub ema_power: f64,
    /// Steps between log dumps.
    #[arg(long = "log_interval", alias = "log-interval", default_value_t = defaults().log_interval)]
    pub log_interval: u64,
    /// Steps between checkpoints.
    #[arg(
        long = "save_interval",
        alias = "save-interval",
        default_value_t = defaults().save_interval
    )]
    pub save_interval: u64,
    /// Resume from model{step}.safetensors (or a reference model{step}.pt).
    #[arg(
        long = "resume_checkpoint",
        alias = "resume-checkpoint",
        default_value = ""
    )]
    pub resume_checkpoint: String,
    /// Resume from the checkpoint's weights alone, with a fresh optimizer and EMA (to
    /// fine-tune a reference .pt, or a model whose companion files are gone).
    #[arg(long = "resume_weights_only", alias = "resume-weights-only", default_value_t = defaults().resume_weights_only, value_parser = parse_bool, action = ArgAction::Set)]
    pub resume_weights_only: bool,
    /// Mixed precision (CUDA only).
    #[arg(long = "use_fp16", alias = "use-fp16", default_value_t = defaults().use_fp16, value_parser = parse_bool, action = ArgAction::Set)]
    pub use_fp16: bool,
    /// Added to the log2 loss scale after each fp16 step without overflow.
    #[arg(
        long = "fp16_scale_growth",
        alias = "fp16-scale-growth",
        default_value_t = defaults().fp16_scale_growth,
        allow_negative_numbers = true
    )]
    pub fp16_scale_growth: f64,
    /// Timestep sampler: uniform or loss-second-moment.
    #[arg(
        long = "schedule_sampler",
        alias = "schedule-sampler",
        default_value_t = defaults().schedule_sampler
    )]
    pub schedule_sampler: SamplerKind,
    /// Stop after this many steps in total.
    #[arg(long = "max_steps", alias = "max-steps")]
    pub max_steps: Option<u64>,
    /// Seed of all randomness.
    #[arg(long = "seed", default_value_t = defaults().seed)]
    pub seed: u64,
    #[arg(long = "device", default_value = iddpm::device::DEFAULT_DEVICE_NAME, help = iddpm::device::DEVICE_HELP)]
    pub device: String,
    /// Where logs, checkpoints and pictures go (default: a new folder runs/train-TIME).
    #[arg(long = "log_dir", alias = "log-dir")]
    pub log_dir: Option<PathBuf>,
    /// Images in the preview grid written at each save (0: none).
    #[arg(
        long = "preview_samples",
        alias = "preview-samples",
        default_value_t = defaults().preview_samples
    )]
    pub preview_samples: usize,
    /// Sampling steps of the preview (respaced from the training steps).
    #[arg(long = "preview_steps", alias = "preview-steps", default_value_t = defaults().preview_steps)]
    pub preview_steps: usize,
    /// Preview with DDIM (η = 0); False samples ancestrally, with the model's variances.
    #[arg(long = "preview_use_ddim", alias = "preview-use-ddim", default_value_t = defaults().preview_sampler == Sampler::ddim(0.0), value_parser = parse_bool, action = ArgAction::Set)]
    pub preview_use_ddim: bool,
    /// The preview's solver by name (see `sample --sampler`); overrides --preview_use_ddim.
    #[arg(long = "preview_sampler", alias = "preview-sampler")]
    pub preview_sampler: Option<String>,
    /// At the end, bits/dim of this many held-out images (embedded data only; 0: skip).
    #[arg(long = "heldout_bpd", alias = "heldout-bpd", default_value_t = 0)]
    pub heldout_bpd: usize,
    /// Super-resolution: size of the high-resolution images.
    #[arg(long = "large_size", alias = "large-size", hide = true)]
    pub large_size: Option<usize>,
    /// Super-resolution: size of the low-resolution input.
    #[arg(long = "small_size", alias = "small-size", hide = true)]
    pub small_size: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The library's options from the flags.
/// `--ema_warmup` with its checked settings.
pub(super) fn ema_warmup(args: &TrainArgs) -> anyhow::Result<Option<iddpm::train::EmaWarmup>> {
    if !args.ema_warmup {
        return Ok(None);
    }
    let (g, p) = (args.ema_inv_gamma, args.ema_power);
    if !(g > 0.0 && g.is_finite() && p > 0.0 && p.is_finite()) {
        bail!("--ema_inv_gamma {g} and --ema_power {p} must be positive numbers");
    }
    Ok(Some(iddpm::train::EmaWarmup {
        inv_gamma: g,
        power: p,
    }))
}

/// The preview's solver: `--preview_sampler`, else DDIM (η = 0) or ancestral.
pub(super) fn preview_sampler(args: &TrainArgs) -> anyhow::Result<Sampler> {
    Ok(match (&args.preview_sampler, args.preview_use_ddim) {
        (Some(name), _) => Sampler::named(name)?,
        (None, true) => Sampler::ddim(0.0),
        (None, false) => Sampler::ANCESTRAL,
    })
}

pub(super) fn train_options(
    args: &TrainArgs,
    log_dir: PathBuf,
    small_size: Option<usize>,
) -> anyhow::Result<TrainOptions> {
    let microbatch = if args.microbatch <= 0 {
        0
    } else {
        args.microbatch as usize
    };
    Ok(TrainOptions {
        lr: args.lr,
        weight_decay: args.weight_decay,
        lr_anneal_steps: args.lr_anneal_steps,
        batch_size: args.batch_size,
        microbatch,
        ema_rates: args.ema_rate.0.clone(),
        ema_warmup: ema_warmup(args)?,
        log_interval: args.log_interval,
        save_interval: args.save_interval,
        max_steps: args.max_steps,
        seed: args.seed,
        schedule_sampler: args.schedule_sampler,
        log_dir,
        preview_samples: args.preview_samples,
        preview_steps: args.preview_steps,
        preview_sampler: preview_sampler(args)?,
        small_size,
        quiet: true,
        use_fp16: args.use_fp16,
        fp16_scale_growth: args.fp16_scale_growth,
        resume_weights_only: args.resume_weights_only,
        ..TrainOptions::default()
    })
}

/// Warns of mixed precision off CUDA (it works, slowly) and refuses a negative loss-scale
/// growth.
pub(super) fn check_fp16_flags(args: &TrainArgs, device: &Device) -> anyhow::Result<()> {
    if args.use_fp16 && DeviceKind::of(device).is_flex() {
        eprintln!(
            "warning: --use_fp16 True on --device {}: f16 arithmetic is slower than f32 on \
             the CPU; mixed precision pays on CUDA devices",
            args.device
        );
    }
    if args.fp16_scale_growth.is_nan() || args.fp16_scale_growth < 0.0 {
        bail!(
            "--fp16_scale_growth {} must be zero or positive",
            args.fp16_scale_growth
        );
    }
    Ok(())
}

/// The training image size and, for super-resolution, the low-resolution one.
pub(super) fn image_sizes(
    args: &TrainArgs,
    super_res: bool,
) -> anyhow::Result<(usize, Option<usize>)> {
    if !super_res {
        return Ok((args.model.image_size, None));
    }
    let large = args
        .large_size
        .context("super_res_train needs --large_size")?;
    let small = args
        .small_size
        .context("super_res_train needs --small_size")?;
    Ok((large, Some(small)))
}

/// `--log_dir`, or a new folder under `runs/` (named alike by every process of a run).
pub(super) fn log_dir(args: &TrainArgs, super_res: bool, world_size: usize) -> PathBuf {
    args.log_dir.clone().unwrap_or_else(|| {
        let command = if super_res {
            "super_res_train"
        } else {
            "train"
        };
        // Every process of a data-parallel run must land in the same folder.
        if world_size > 1 {
            crate::run_dir::run_dir_name(command)
        } else {
            crate::run_dir::fresh_run_dir(command)
        }
    })
}
