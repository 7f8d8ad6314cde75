//! `iddpm train` and `iddpm super_res_train`: the reference's `image_train.py` and
//! `super_res_train.py`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::Device;
use clap::{ArgAction, Args};
use iddpm::ModelSpec;
use iddpm::data::{Dataset, ImageFolder, InMemoryDataset};
use iddpm::diffusion::Sampler;
use iddpm::kernels::DeviceKind;
use iddpm::nll::{NllOptions, evaluate_nll};
use iddpm::nn::UNetModel;
use iddpm::progress;
use iddpm::steady_rate::SteadyRate;
use iddpm::train::{
    EmaWarmup, LoopSummary, ProcessGroup, SamplerKind, TrainEvent, TrainOptions, Trainer,
};

use crate::commands::distributed::{device_for, join_processes, main_process_bar};
use crate::commands::{embedded_split, ensure_writable_dir};
use crate::flags::{CommaList, ModelArgs, parse_bool};

/// The library's training defaults, which the flags' defaults are (declared once, in
/// `TrainOptions::default`).
fn defaults() -> TrainOptions {
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
    /// flex (CPU), cuda or cuda:N.
    #[arg(long = "device", default_value = "flex")]
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

/// Steps left out of the steady rate.
const STEADY_AFTER: u64 = 3;

/// Trains until `--max_steps`, the end of `--lr_anneal_steps`, or Ctrl-C / SIGTERM (which
/// save a checkpoint first).
pub fn run(args: &TrainArgs, super_res: bool) -> anyhow::Result<()> {
    let group = join_processes()?;
    let (rank, world_size) = (group.rank(), group.world_size());
    let main = rank == 0;
    let device = device_for(&args.device, &group)?;
    check_fp16_flags(args, &device)?;
    let (size, small_size) = image_sizes(args, super_res)?;
    // A resumed run takes the settings its checkpoint recorded.
    let resume = Some(Path::new(&args.resume_checkpoint)).filter(|p| !p.as_os_str().is_empty());
    let size_flag = if super_res {
        "large_size"
    } else {
        "image_size"
    };
    let spec = args.model.resolve(size_flag, size, super_res, resume)?;
    let size = spec.model.image_size;
    let unet = spec.model.unet_config(super_res)?;
    let gflop = unet.forward_flops(size) / 1e9;
    let log_dir = log_dir(args, super_res, world_size);
    ensure_writable_dir(&log_dir)?;
    let (train_data, heldout) = training_data(args, size, &spec.model)?;
    let mut opts = train_options(args, log_dir.clone(), small_size)?;
    opts.checkpoint_metadata = checkpoint_metadata(&spec);
    if main {
        write_args_json(&log_dir, &spec)?;
    }
    let mut trainer = Trainer::new(
        unet,
        spec.diffusion.clone(),
        train_data.as_ref(),
        opts,
        &device,
    )?;
    trainer.join_group(group)?;
    if main {
        let params = iddpm::nn::param_count(trainer.model_mut());
        println!("model: {params} parameters, {gflop:.3} GFLOP per image forward");
    }
    resume_if_asked(&mut trainer, args)?;
    let stop = stop_flag_on_interrupt()?;
    println!("logging to {}", log_dir.display());
    let started = Instant::now();
    let (summary, steady) = train_with_progress(&mut trainer, args, &stop, main)?;
    if main {
        print_rates(&summary, &steady, args.batch_size * world_size, &log_dir);
    }
    if args.heldout_bpd > 0 && main {
        let heldout = heldout
            .context("--heldout_bpd needs the embedded dataset; use `iddpm nll` for other data")?;
        let model = trainer.inference_model()?;
        report_heldout_bpd(args, &spec, model, &heldout, &device, &log_dir)?;
    }
    if main {
        let secs = started.elapsed().as_secs();
        println!(
            "done in {} min {} s (training, previews and evaluation)",
            secs / 60,
            secs % 60
        );
    }
    let group = trainer.leave_group();
    report_communication(&group, summary.last_step - summary.first_step);
    Ok(group.finish()?)
}

/// The metadata every model and EMA file of the run carries: the model's settings and
/// iddpm's version, so that `sample --model_path FILE` needs no other flag.
fn checkpoint_metadata(spec: &ModelSpec) -> Vec<(String, String)> {
    use iddpm::settings::{ModelSettings, SETTINGS_KEY, VERSION_KEY};
    vec![
        (SETTINGS_KEY.into(), ModelSettings::of(spec).to_json()),
        (VERSION_KEY.into(), env!("CARGO_PKG_VERSION").into()),
    ]
}

/// Writes `args.json` into the log folder (atomically): the command line as typed, and the
/// model and diffusion settings it resolved to.
fn write_args_json(log_dir: &Path, spec: &ModelSpec) -> anyhow::Result<()> {
    let settings: serde_json::Value =
        serde_json::from_str(&iddpm::settings::ModelSettings::of(spec).to_json())?;
    let json = serde_json::json!({
        "argv": std::env::args().collect::<Vec<_>>(),
        "settings": settings,
        "iddpm_version": env!("CARGO_PKG_VERSION"),
    });
    let path = log_dir.join("args.json");
    iddpm::checkpoint::write_atomic(&path, format!("{json:#}\n").as_bytes())?;
    Ok(())
}

/// Resumes from `--resume_checkpoint` when it is given.
fn resume_if_asked(trainer: &mut Trainer<'_>, args: &TrainArgs) -> anyhow::Result<()> {
    if args.resume_checkpoint.is_empty() {
        return Ok(());
    }
    let step = trainer
        .resume(Path::new(&args.resume_checkpoint))
        .with_context(|| {
            format!(
                "resuming from --resume_checkpoint {}",
                args.resume_checkpoint
            )
        })?;
    println!("resumed from {} at step {step}", args.resume_checkpoint);
    Ok(())
}

/// A flag that Ctrl-C (and SIGTERM) raise, so that training saves a checkpoint and stops.
fn stop_flag_on_interrupt() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let raised = stop.clone();
    ctrlc::set_handler(move || raised.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

/// Runs the training loop behind a progress bar (drawn by the main process only) that shows
/// the loss and the image rate, and measures the steady rate.
fn train_with_progress(
    trainer: &mut Trainer<'_>,
    args: &TrainArgs,
    stop: &AtomicBool,
    main: bool,
) -> anyhow::Result<(LoopSummary, SteadyRate)> {
    let total = match (args.max_steps, args.lr_anneal_steps) {
        (Some(m), _) => m,
        (None, a) if a > 0 => a,
        _ => 0, // no end: the bar shows the position and rate only
    };
    let bar = main_process_bar(main, total, "training", "steps");
    bar.set_position(trainer.step());
    let started = Instant::now();
    let first_step = trainer.step();
    // Rates after the first steps, which a GPU spends compiling and tuning its kernels.
    let mut steady = SteadyRate::new(first_step + STEADY_AFTER);
    let summary = trainer.run_loop(stop, &mut |event| match event {
        TrainEvent::Step(report) => {
            if report.skipped {
                bar.suspend(|| {
                    eprintln!(
                        "step {}: f16 gradients overflowed; update skipped, lg_loss_scale now {:.3}",
                        report.step,
                        report.lg_loss_scale.unwrap_or_default()
                    )
                });
            }
            bar.set_position(report.step);
            steady.observe(report.step);
            let images = (report.step - first_step) as f64 * args.batch_size as f64;
            let secs = started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4}, {:.1} images/s",
                report.loss,
                images / secs.max(1e-9)
            ));
        }
        TrainEvent::Saved { path, .. } if main => {
            bar.suspend(|| println!("saved {}", path.display()));
        }
        TrainEvent::Saved { .. } => {}
        TrainEvent::Interrupted { step } => {
            bar.suspend(|| eprintln!("interrupted: saving a checkpoint at step {step}"));
        }
    })?;
    bar.finish_and_clear();
    Ok((summary, steady))
}

/// The loop's overall rate and, once past the first steps, its steady rate (`global_batch`
/// images per step, all processes together).
fn print_rates(summary: &LoopSummary, steady: &SteadyRate, global_batch: usize, log_dir: &Path) {
    let steps = summary.last_step - summary.first_step;
    println!(
        "trained {steps} steps in {:.1} s ({:.2} steps/s); samples and loss curve in {}",
        summary.seconds,
        steps as f64 / summary.seconds.max(1e-9),
        log_dir.display()
    );
    if let Some(rate) = steady.per_second() {
        println!(
            "after the first {STEADY_AFTER} steps: {rate:.3} steps/s, {:.2} images/s",
            rate * global_batch as f64
        );
    }
}

/// Evaluates the full-T bound of `model` (the EMA) on the held-out images, prints it and writes
/// `heldout_bpd.csv` into the run's folder.
fn report_heldout_bpd(
    args: &TrainArgs,
    spec: &ModelSpec,
    model: &UNetModel,
    heldout: &InMemoryDataset,
    device: &Device,
    log_dir: &Path,
) -> anyhow::Result<()> {
    let diffusion = spec.diffusion.build_with_respacing("")?;
    let n = args.heldout_bpd.min(heldout.len());
    let bar = progress::bar(n as u64, "held-out bits/dim", "images");
    let opts = NllOptions {
        num_images: n,
        batch_size: args.batch_size.clamp(1, 64),
        clip_denoised: true,
        seed: args.seed,
        shard: None,
    };
    let report = evaluate_nll(
        model,
        &diffusion,
        heldout,
        &opts,
        device,
        &mut |done, bpd| {
            bar.set_position(done as u64);
            bar.set_message(format!("{bpd:.4} bits/dim"));
        },
    )?;
    bar.finish_and_clear();
    println!(
        "held-out NLL of the EMA model: {:.4} ± {:.4} bits/dim over {} images (± one standard error)",
        report.bpd, report.bpd_stderr, report.num_images
    );
    let line = format!(
        "heldout_bpd,{},{},{}\n",
        report.bpd, report.num_images, report.bpd_stderr
    );
    iddpm::checkpoint::write_atomic(&log_dir.join("heldout_bpd.csv"), line.as_bytes())?;
    Ok(())
}

/// The training images (`--data_dir`, or the embedded Fashion-MNIST training split) and, for
/// the embedded set, its held-out split.
fn training_data(
    args: &TrainArgs,
    size: usize,
    model: &iddpm::nn::ModelFlags,
) -> anyhow::Result<(Box<dyn Dataset>, Option<InMemoryDataset>)> {
    let channels = model.image_channels;
    Ok(match &args.data_dir {
        Some(dir) => {
            let folder = ImageFolder::open(dir, size, model.class_cond)
                .and_then(|f| f.with_channels(channels))
                .with_context(|| format!("reading --data_dir {}", dir.display()))?;
            println!("data: {} images in {}", folder.len(), dir.display());
            (Box::new(folder), None)
        }
        None => {
            let (train, heldout) = embedded_split(size, channels)?;
            println!(
                "data: embedded Fashion-MNIST, {} training and {} held-out images",
                train.len(),
                heldout.len()
            );
            (Box::new(train), Some(heldout))
        }
    })
}

/// The library's options from the flags.
/// `--ema_warmup` with its checked settings.
fn ema_warmup(args: &TrainArgs) -> anyhow::Result<Option<iddpm::train::EmaWarmup>> {
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
fn preview_sampler(args: &TrainArgs) -> anyhow::Result<Sampler> {
    Ok(match (&args.preview_sampler, args.preview_use_ddim) {
        (Some(name), _) => Sampler::named(name)?,
        (None, true) => Sampler::ddim(0.0),
        (None, false) => Sampler::ANCESTRAL,
    })
}

fn train_options(
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
fn check_fp16_flags(args: &TrainArgs, device: &Device) -> anyhow::Result<()> {
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
fn image_sizes(args: &TrainArgs, super_res: bool) -> anyhow::Result<(usize, Option<usize>)> {
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
fn log_dir(args: &TrainArgs, super_res: bool, world_size: usize) -> PathBuf {
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

/// In a multi-process run, each rank's time in collectives and bytes sent, per step.
fn report_communication(group: &ProcessGroup, steps: u64) {
    if group.world_size() == 1 || steps == 0 {
        return;
    }
    let stats = group.stats();
    eprintln!(
        "rank {}: {:.3} s in {} collectives ({:.2} ms per step), {} bytes sent ({} per step)",
        group.rank(),
        stats.seconds,
        stats.calls,
        stats.seconds * 1e3 / steps as f64,
        stats.bytes_sent,
        stats.bytes_sent / steps
    );
}
