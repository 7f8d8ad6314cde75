//! `iddpm nll`: the reference's `image_nll.py`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

use clap::{ArgAction, Args};
use iddpm::data::{Dataset, ImageFolder};
use iddpm::io::{NpyArray, NpyData, write_npz};
use iddpm::nll::{NllOptions, NllReport, combine_nll, evaluate_nll_batches};

use crate::commands::distributed::{
    device_for, join_processes, main_process_bar, output_dir_of, shard_of,
};
use crate::commands::embedded_split;
use crate::flags::{ModelArgs, RunFlags, parse_bool};
use iddpm::sharding::gather_nll_batches;

/// Arguments of `iddpm nll`.
#[derive(Args)]
pub struct NllArgs {
    /// Images to evaluate (default: the embedded Fashion-MNIST held-out images).
    #[arg(long = "data_dir", alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Number of images.
    #[arg(long = "num_samples", alias = "num-samples", default_value_t = 1000)]
    pub num_samples: usize,
    /// Clamp predicted x_0 to [-1, 1].
    #[arg(long = "clip_denoised", alias = "clip-denoised", default_value_t = iddpm::sample::SampleOptions::default().clip_denoised, value_parser = parse_bool, action = ArgAction::Set)]
    pub clip_denoised: bool,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Prints the running bits/dim and writes the per-timestep terms.
pub fn run(args: &NllArgs) -> anyhow::Result<()> {
    if args.num_samples == 0 || args.run.batch_size == 0 {
        bail!("--num_samples and --batch_size must be at least 1");
    }
    let mut group = join_processes()?;
    let device = device_for(&args.run.device, &group)?;
    args.run.check_model_path()?;
    let spec = (args.model).resolve(
        "image_size",
        args.model.image_size,
        false,
        Some(&args.run.model_path),
    )?;
    let size = spec.model.image_size;
    let data = test_data(args, size, &spec.model)?;
    let output_dir = output_dir_of(&args.run, "nll", &group)?;
    let (model, diffusion) = args.run.load_model(&spec, &device)?;
    let n = args.num_samples.min(data.len());
    let shard = shard_of(&group);
    let own_images = n.div_ceil(group.world_size()) as u64;
    let bar = main_process_bar(group.is_main(), own_images, "nll", "images");
    let opts = NllOptions {
        num_images: n,
        batch_size: args.run.batch_size,
        clip_denoised: args.clip_denoised,
        seed: args.run.seed,
        shard,
    };
    let batches = evaluate_nll_batches(
        &model,
        &diffusion,
        data.as_ref(),
        &opts,
        &device,
        &mut |done, bpd| {
            bar.set_position(done as u64);
            bar.suspend(|| println!("done {done} samples: bpd={bpd}"));
        },
    )?;
    bar.finish_and_clear();
    // With several processes, the main one collects every batch's sums and writes the results.
    let t = diffusion.num_timesteps();
    let Some(batches) = gather_nll_batches(&mut group, batches, t)? else {
        return Ok(group.finish()?);
    };
    let report = combine_nll(batches, t)?;
    let path = write_nll_results(&output_dir, &report, t, args.clip_denoised)?;
    println!(
        "NLL: {:.4} ± {:.4} bits/dim (standard error) over {} images; wrote {}",
        report.bpd,
        report.bpd_stderr,
        report.num_images,
        path.display()
    );
    Ok(group.finish()?)
}

/// `--data_dir`, or the embedded Fashion-MNIST's held-out split.
fn test_data(
    args: &NllArgs,
    size: usize,
    model: &iddpm::nn::ModelFlags,
) -> anyhow::Result<Box<dyn Dataset>> {
    Ok(match &args.data_dir {
        Some(dir) => Box::new(
            ImageFolder::open(dir, size, model.class_cond)
                .and_then(|f| f.with_channels(model.image_channels))
                .with_context(|| format!("reading --data_dir {}", dir.display()))?,
        ),
        None => Box::new(embedded_split(size, model.image_channels)?.1),
    })
}

/// Writes the per-timestep terms as the reference does (`vb_terms.npz`, `mse_terms.npz`,
/// `xstart_mse_terms.npz`) and the summary `nll_results.json`, whose path it returns.
fn write_nll_results(
    dir: &Path,
    report: &NllReport,
    num_timesteps: usize,
    clip_denoised: bool,
) -> anyhow::Result<PathBuf> {
    for (name, terms) in [
        ("vb", &report.vb),
        ("mse", &report.mse),
        ("xstart_mse", &report.xstart_mse),
    ] {
        let array = NpyArray {
            shape: vec![terms.len()],
            data: NpyData::F32(terms.clone()),
        };
        write_npz(&dir.join(format!("{name}_terms.npz")), &[("arr_0", &array)])?;
    }
    let summary = serde_json::json!({
        "bpd": report.bpd,
        "bpd_stderr": report.bpd_stderr,
        "num_images": report.num_images,
        "num_timesteps": num_timesteps,
        "clip_denoised": clip_denoised,
    });
    let path = dir.join("nll_results.json");
    iddpm::checkpoint::write_atomic(&path, format!("{summary:#}\n").as_bytes())?;
    Ok(path)
}
