//! `iddpm nll`: the reference's `image_nll.py`.

use anyhow::{Context, bail};
use std::path::PathBuf;

use clap::{ArgAction, Args};
use iddpm::data::{Dataset, ImageFolder, fashion_mnist};
use iddpm::io::{NpyArray, NpyData, write_npz};
use iddpm::nll::{NllOptions, combine_nll, evaluate_nll_batches};
use iddpm::progress;
use iddpm::sample::Shard;

use crate::commands::distributed::{device_for, join_processes};
use crate::commands::ensure_writable_dir;
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
    #[arg(long = "clip_denoised", alias = "clip-denoised", default_value = "True", value_parser = parse_bool, action = ArgAction::Set)]
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
    let (rank, world) = (group.rank(), group.world_size());
    let device = device_for(&args.run.device, &group)?;
    let size = args.model.image_size;
    let spec = args.model.spec(size, false)?;
    args.run.check_model_path()?;
    let data: Box<dyn Dataset> = match &args.data_dir {
        Some(dir) => Box::new(
            ImageFolder::open(dir, size, spec.model.class_cond)
                .with_context(|| format!("reading --data_dir {}", dir.display()))?,
        ),
        None => {
            if size != fashion_mnist::RESOLUTION {
                bail!(
                    "the embedded Fashion-MNIST images are 32x32: pass --image_size 32 or --data_dir"
                );
            }
            let mut all = fashion_mnist::embedded()?;
            Box::new(all.split_off(1000))
        }
    };
    // Only rank 0 writes; a default folder is made once, by it.
    let output_dir = args.run.output_dir("nll");
    if rank == 0 {
        ensure_writable_dir(&output_dir)?;
    }
    let (model, diffusion) = spec
        .load(&args.run.model_path, &device)
        .with_context(|| format!("loading --model_path {}", args.run.model_path.display()))?;
    let n = args.num_samples.min(data.len());
    let shard = (world > 1).then_some(Shard {
        index: rank,
        count: world,
    });
    let bar = progress::bar(n.div_ceil(world) as u64, "nll", "images");
    if rank != 0 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
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
    // With several processes, rank 0 collects every batch's sums and writes the results.
    let t = diffusion.num_timesteps();
    let Some(batches) = gather_nll_batches(&mut group, batches, t)? else {
        return Ok(group.finish()?);
    };
    let report = combine_nll(batches, t)?;
    for (name, terms) in [
        ("vb", &report.vb),
        ("mse", &report.mse),
        ("xstart_mse", &report.xstart_mse),
    ] {
        let array = NpyArray {
            shape: vec![terms.len()],
            data: NpyData::F32(terms.clone()),
        };
        write_npz(
            &output_dir.join(format!("{name}_terms.npz")),
            &[("arr_0", &array)],
        )?;
    }
    let summary = serde_json::json!({
        "bpd": report.bpd,
        "bpd_stderr": report.bpd_stderr,
        "num_images": report.num_images,
        "num_timesteps": t,
        "clip_denoised": args.clip_denoised,
    });
    let path = output_dir.join("nll_results.json");
    iddpm::checkpoint::write_atomic(&path, format!("{summary:#}\n").as_bytes())?;
    println!(
        "NLL: {:.4} ± {:.4} bits/dim (standard error) over {} images; wrote {}",
        report.bpd,
        report.bpd_stderr,
        report.num_images,
        path.display()
    );
    Ok(group.finish()?)
}
