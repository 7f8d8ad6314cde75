//! `iddpm super_res_sample`: the reference's `super_res_sample.py`.

use anyhow::{Context, bail};
use std::path::PathBuf;

use clap::Args;
use iddpm::io::{NpyData, read_npz};
use iddpm::progress;
use iddpm::sample::{SampleOptions, Shard, sample_images};

use crate::commands::distributed::{device_for, join_processes};
use crate::commands::{batch_dir, remove_batch_dir};
use crate::commands::{ensure_writable_dir, write_samples};
use crate::flags::{ModelArgs, RunFlags, SamplerFlags};
use iddpm::sharding::gather_samples;

/// Arguments of `iddpm super_res_sample`.
#[derive(Args)]
pub struct SuperResArgs {
    /// Low-resolution samples: an .npz with arr_0 uint8 [N, s, s, 3] (and arr_1 labels).
    #[arg(long = "base_samples", alias = "base-samples")]
    pub base_samples: PathBuf,
    /// Output side.
    #[arg(long = "large_size", alias = "large-size", default_value_t = 256)]
    pub large_size: usize,
    /// Input side.
    #[arg(long = "small_size", alias = "small-size", default_value_t = 64)]
    pub small_size: usize,
    /// Number of images to upsample (default: all of base_samples).
    #[arg(long = "num_samples", alias = "num-samples")]
    pub num_samples: Option<usize>,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub sampler: SamplerFlags,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Upsamples the base samples and writes `samples_{N}x{L}x{L}x3.npz` and a grid.
pub fn run(args: &SuperResArgs) -> anyhow::Result<()> {
    let arrays = read_npz(&args.base_samples)
        .with_context(|| format!("reading --base_samples {}", args.base_samples.display()))?;
    let arr = arrays
        .iter()
        .find(|(n, _)| n == "arr_0")
        .map(|(_, a)| a)
        .with_context(|| format!("{}: no array named arr_0", args.base_samples.display()))?;
    let NpyData::U8(pixels) = &arr.data else {
        bail!(
            "{}: arr_0 must be uint8 images",
            args.base_samples.display()
        );
    };
    let [count, h, w, c] = arr.shape[..] else {
        bail!(
            "{}: arr_0 has shape {:?}, expected [N, H, W, 3]",
            args.base_samples.display(),
            arr.shape
        );
    };
    let s = args.small_size;
    if (h, w, c) != (s, s, 3) {
        bail!(
            "{}: images are {h}x{w}x{c}, --small_size {s} needs {s}x{s}x3",
            args.base_samples.display()
        );
    }
    let n = args.num_samples.unwrap_or(count).min(count);
    if n == 0 {
        bail!("no images to upsample (--num_samples 0 or an empty arr_0)");
    }
    let mut low = vec![0f32; n * 3 * s * s];
    for b in 0..n {
        for p in 0..s * s {
            for ch in 0..3 {
                low[(b * 3 + ch) * s * s + p] =
                    pixels[(b * s * s + p) * 3 + ch] as f32 / 127.5 - 1.0;
            }
        }
    }
    let labels = arrays
        .iter()
        .find(|(n, _)| n == "arr_1")
        .and_then(|(_, a)| a.to_i64())
        .map(|l| l[..n].to_vec());
    let labels = if args.model.class_cond {
        Some(labels.with_context(|| {
            format!(
                "{}: a class-conditional model needs arr_1 labels",
                args.base_samples.display()
            )
        })?)
    } else {
        None
    };
    let mut group = join_processes()?;
    let (rank, world) = (group.rank(), group.world_size());
    let device = device_for(&args.run.device, &group)?;
    let spec = args.model.spec(args.large_size, true)?;
    // Only rank 0 writes; a default folder is made once, by it.
    let output_dir = args.run.output_dir("super_res_sample");
    if rank == 0 {
        ensure_writable_dir(&output_dir)?;
    }
    let (model, diffusion) = spec
        .load(&args.run.model_path, &device)
        .with_context(|| format!("loading --model_path {}", args.run.model_path.display()))?;
    let opts = SampleOptions {
        num_samples: n,
        batch_size: args.run.batch_size,
        image_size: args.large_size,
        sampler: args.sampler.sampler(),
        clip_denoised: args.sampler.clip_denoised,
        seed: args.run.seed,
        labels,
        init_noise: None,
        low_res: Some((low, s)),
        shard: (world > 1).then_some(Shard {
            index: rank,
            count: world,
        }),
        batch_dir: batch_dir(&args.run),
    };
    let batches = (0..n.div_ceil(args.run.batch_size))
        .filter(|k| k % world == rank)
        .count() as u64;
    let steps = diffusion.num_timesteps() as u64;
    let bar = progress::bar(batches * steps, "upsampling", "steps");
    if rank != 0 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let samples = sample_images(&model, &diffusion, &opts, &device, &mut |d| {
        bar.set_position(d)
    })?;
    bar.finish_and_clear();
    let Some(samples) = gather_samples(&mut group, samples, n, args.run.batch_size)? else {
        return Ok(group.finish()?);
    };
    let (npz, png) = write_samples(&output_dir, samples, 64)?;
    println!(
        "upsampled {n} images to {l}x{l}; wrote {} and {}",
        npz.display(),
        png.display(),
        l = args.large_size
    );
    remove_batch_dir(opts.batch_dir)?;
    Ok(group.finish()?)
}
