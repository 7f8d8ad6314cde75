//! What `iddpm train` prints and writes beside the checkpoints: rates, held-out bits/dim,
//! communication, the settings metadata and `args.json`.

use std::path::Path;

use burn::tensor::Device;
use iddpm::ModelSpec;
use iddpm::data::{Dataset, InMemoryDataset};
use iddpm::nll::{NllOptions, evaluate_nll};
use iddpm::nn::UNetModel;
use iddpm::progress;
use iddpm::steady_rate::SteadyRate;
use iddpm::train::{LoopSummary, ProcessGroup};

use super::STEADY_AFTER;
use super::args::TrainArgs;

/// The loop's overall rate and, once past the first steps, its steady rate (`global_batch`
/// images per step, all processes together).
pub(super) fn print_rates(
    summary: &LoopSummary,
    steady: &SteadyRate,
    global_batch: usize,
    log_dir: &Path,
) {
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
pub(super) fn report_heldout_bpd(
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

/// In a multi-process run, each rank's time in collectives and bytes sent, per step.
pub(super) fn report_communication(group: &ProcessGroup, steps: u64) {
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

/// The metadata every model and EMA file of the run carries: the model's settings and
/// iddpm's version, so that `sample --model_path FILE` needs no other flag.
pub(super) fn checkpoint_metadata(spec: &ModelSpec) -> Vec<(String, String)> {
    use iddpm::settings::{ModelSettings, SETTINGS_KEY, VERSION_KEY};
    vec![
        (SETTINGS_KEY.into(), ModelSettings::of(spec).to_json()),
        (VERSION_KEY.into(), env!("CARGO_PKG_VERSION").into()),
    ]
}

/// Writes `args.json` into the log folder (atomically): the command line the run ran with
/// (for a resumed run, the recorded flags and then the typed ones), and the model and
/// diffusion settings it resolved to. A later `--resume_checkpoint` reads it back.
pub(super) fn write_args_json(log_dir: &Path, spec: &ModelSpec) -> anyhow::Result<()> {
    let settings: serde_json::Value =
        serde_json::from_str(&iddpm::settings::ModelSettings::of(spec).to_json())?;
    let json = serde_json::json!({
        "argv": crate::recorded_flags::command_line(),
        "settings": settings,
        "iddpm_version": env!("CARGO_PKG_VERSION"),
    });
    let path = log_dir.join(crate::recorded_flags::ARGS_FILE);
    iddpm::checkpoint::write_atomic(&path, format!("{json:#}\n").as_bytes())?;
    Ok(())
}
