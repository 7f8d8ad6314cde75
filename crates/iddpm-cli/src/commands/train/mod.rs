//! `iddpm train` and `iddpm super_res_train`: the reference's `image_train.py` and
//! `super_res_train.py`.

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use iddpm::data::{Dataset, ImageFolder, InMemoryDataset};
use iddpm::steady_rate::SteadyRate;
use iddpm::train::{LoopSummary, TrainEvent, Trainer};

use crate::commands::distributed::{device_for, join_processes, main_process_bar};
use crate::commands::{embedded_split, ensure_writable_dir};

mod args;
mod report;

pub use args::TrainArgs;
use args::{check_fp16_flags, image_sizes, log_dir, train_options};
use report::{
    checkpoint_metadata, print_rates, report_communication, report_heldout_bpd, write_args_json,
};

/// Steps left out of the steady rate.
pub(super) const STEADY_AFTER: u64 = 3;

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
    // Written once the run has started, so that a refused resume leaves the run's record as
    // it was.
    if main {
        write_args_json(&log_dir, &spec)?;
    }
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
