//! `iddpm super_res_sample`: the reference's `super_res_sample.py`.

use anyhow::{Context, bail};
use std::path::PathBuf;

use clap::Args;
use iddpm::io::{NpyData, read_npz};
use iddpm::sample::{SampleOptions, sample_images};

use crate::commands::distributed::{
    device_for, join_processes, main_process_bar, output_dir_of, own_batch_count, shard_of,
};
use crate::commands::{batch_dir, remove_batch_dir, write_samples};
use crate::flags::{ModelArgs, RunFlags, SamplerFlags};
use iddpm::sharding::gather_samples;

/// Arguments of `iddpm super_res_sample`.
#[derive(Args)]
pub struct SuperResArgs {
    /// Low-resolution samples: an .npz with arr_0 uint8 [N, s, s, C] (and arr_1 labels).
    #[arg(long = "base_samples", alias = "base-samples")]
    pub base_samples: PathBuf,
    /// Output side.
    #[arg(long = "large_size", alias = "large-size", default_value_t = 256)]
    pub large_size: usize,
    /// Input side (default: the side of the --base_samples images; the reference's is 64).
    #[arg(long = "small_size", alias = "small-size")]
    pub small_size: Option<usize>,
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

/// Upsamples the base samples and writes `samples_{N}x{L}x{L}x{C}.npz` and a grid.
pub fn run(args: &SuperResArgs) -> anyhow::Result<()> {
    args.run.check_model_path()?;
    let spec = (args.model).resolve(
        "large_size",
        args.large_size,
        true,
        Some(&args.run.model_path),
    )?;
    let large_size = spec.model.image_size;
    let base = read_base_samples(args, &spec)?;
    let n = base.count;
    let mut group = join_processes()?;
    let device = device_for(&args.run.device, &group)?;
    let output_dir = output_dir_of(&args.run, "super_res_sample", &group)?;
    let (model, diffusion) = args.run.load_model(&spec, &device)?;
    let opts = SampleOptions {
        num_samples: n,
        batch_size: args.run.batch_size,
        image_size: large_size,
        sampler: args.sampler.sampler()?,
        clip_denoised: args.sampler.clip_denoised,
        threshold: args.sampler.threshold()?,
        seed: args.run.seed,
        labels: base.labels,
        init_noise: None,
        low_res: Some((base.low_res, base.side)),
        shard: shard_of(&group),
        batch_dir: batch_dir(&args.run),
    };
    let batches = own_batch_count(n.div_ceil(args.run.batch_size), &group);
    let steps = diffusion.num_timesteps() as u64;
    let bar = main_process_bar(group.is_main(), batches * steps, "upsampling", "steps");
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
        l = large_size
    );
    remove_batch_dir(opts.batch_dir)?;
    Ok(group.finish()?)
}

/// The low-resolution images to upsample, as the model's conditioning input.
struct BaseSamples {
    /// `[N, C, s, s]` in [-1, 1].
    low_res: Vec<f32>,
    /// `arr_1`, for a class-conditional model.
    labels: Option<Vec<i64>>,
    /// N: `--num_samples`, at most the file's count.
    count: usize,
    /// s: the images' side.
    side: usize,
}

/// Reads `--base_samples` (`arr_0` uint8 `[N, s, s, C]`, `arr_1` labels) and checks it
/// against `--small_size`, `--image_channels`, `--num_samples` and `--class_cond`.
fn read_base_samples(args: &SuperResArgs, spec: &iddpm::ModelSpec) -> anyhow::Result<BaseSamples> {
    let file = args.base_samples.display();
    let arrays =
        read_npz(&args.base_samples).with_context(|| format!("reading --base_samples {file}"))?;
    let array = |name: &str| arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a);
    let images = array("arr_0").with_context(|| format!("{file}: no array named arr_0"))?;
    let NpyData::U8(pixels) = &images.data else {
        bail!("{file}: arr_0 must be uint8 images");
    };
    let [count, h, w, c] = images.shape[..] else {
        bail!(
            "{file}: arr_0 has shape {:?}, expected [N, H, W, C]",
            images.shape
        );
    };
    let (s, want_c) = (args.small_size.unwrap_or(h), spec.model.image_channels);
    if (h, w, c) != (s, s, want_c) {
        bail!(
            "{file}: images are {h}x{w}x{c}, --small_size {s} (default: their height) and \
             --image_channels {want_c} need {s}x{s}x{want_c}"
        );
    }
    let n = args.num_samples.unwrap_or(count).min(count);
    if n == 0 {
        bail!("no images to upsample (--num_samples 0 or an empty arr_0)");
    }
    let labels = if spec.model.class_cond {
        let labels = array("arr_1")
            .and_then(|a| a.to_i64())
            .with_context(|| format!("{file}: a class-conditional model needs arr_1 labels"))?;
        if labels.len() < n {
            bail!("{file}: arr_1 holds {} labels for {n} images", labels.len());
        }
        Some(labels[..n].to_vec())
    } else {
        None
    };
    Ok(BaseSamples {
        low_res: nhwc_u8_to_nchw_unit(&pixels[..n * s * s * c], n, s, c),
        labels,
        count: n,
        side: s,
    })
}

/// `[n, s, s, c]` uint8 pixels → `[n, c, s, s]` floats in [-1, 1].
fn nhwc_u8_to_nchw_unit(pixels: &[u8], n: usize, s: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * c * s * s];
    for b in 0..n {
        for p in 0..s * s {
            for ch in 0..c {
                out[(b * c + ch) * s * s + p] =
                    pixels[(b * s * s + p) * c + ch] as f32 / 127.5 - 1.0;
            }
        }
    }
    out
}
