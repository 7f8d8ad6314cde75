//! `iddpm sample`: the reference's `image_sample.py`.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{ArgAction, Args};
use iddpm::io::NpyArray;
use iddpm::sample::{SampleOptions, sample_images};
use iddpm::steady_rate::SteadyRate;

use crate::commands::distributed::{
    device_for, join_processes, main_process_bar, output_dir_of, own_batch_count, shard_of,
};
use crate::commands::{batch_dir, remove_batch_dir, write_samples};
use crate::flags::{ModelArgs, RunFlags, SamplerFlags, parse_bool};
use iddpm::sharding::gather_samples;

/// Arguments of `iddpm sample`.
#[derive(Args)]
pub struct SampleArgs {
    /// Number of images to draw.
    #[arg(long = "num_samples", alias = "num-samples", default_value_t = iddpm::sample::SampleOptions::default().num_samples)]
    pub num_samples: usize,
    /// Class labels: a comma list ("3,3,7") or a .npy file; one label applies to all samples.
    #[arg(long = "labels")]
    pub labels: Option<String>,
    /// Start noise x_T as a .npy file of shape [N, C, H, W] float32.
    #[arg(long = "init_noise", alias = "init-noise")]
    pub init_noise: Option<PathBuf>,
    /// Run the UNet's torso in f16 (guided-diffusion's sampling flag; for CUDA devices).
    #[arg(long = "use_fp16", alias = "use-fp16", default_value = "False", value_parser = parse_bool, action = ArgAction::Set)]
    pub use_fp16: bool,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub sampler: SamplerFlags,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn parse_labels(spec: &str, n: usize) -> anyhow::Result<Vec<i64>> {
    let path = Path::new(spec);
    let labels: Vec<i64> = if spec.ends_with(".npy") || path.is_file() {
        let array = NpyArray::read(path)?;
        array
            .to_i64()
            .with_context(|| format!("--labels {spec}: the array must hold integers"))?
    } else {
        spec.split(',')
            .map(|s| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| anyhow!("--labels: {s:?} is not an integer label"))
            })
            .collect::<Result<_, _>>()?
    };
    match labels.len() {
        1 => Ok(vec![labels[0]; n]),
        l if l == n => Ok(labels),
        l => Err(anyhow!("--labels gives {l} labels for --num_samples {n}")),
    }
}

/// Samples and writes `samples_{N}x{H}x{W}x3.npz` (plus labels) and a PNG grid.
pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    if args.num_samples == 0 {
        bail!("--num_samples must be at least 1");
    }
    if args.run.batch_size == 0 {
        bail!("--batch_size must be at least 1");
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
    let labels = match &args.labels {
        Some(l) => Some(parse_labels(l, args.num_samples)?),
        None => None,
    };
    let init_noise = match &args.init_noise {
        Some(path) => Some(read_init_noise(
            path,
            [args.num_samples, spec.model.image_channels, size, size],
        )?),
        None => None,
    };
    let output_dir = output_dir_of(&args.run, "sample", &group)?;
    let (mut model, diffusion) = args.run.load_model(&spec, &device)?;
    model.set_torso_f16(args.use_fp16);
    let opts = SampleOptions {
        num_samples: args.num_samples,
        batch_size: args.run.batch_size,
        image_size: size,
        sampler: args.sampler.sampler()?,
        clip_denoised: args.sampler.clip_denoised,
        threshold: args.sampler.threshold()?,
        seed: args.run.seed,
        labels,
        init_noise,
        low_res: None,
        shard: shard_of(&group),
        batch_dir: batch_dir(&args.run),
    };
    let batches = own_batch_count(args.num_samples.div_ceil(args.run.batch_size), &group);
    let steps = diffusion.num_timesteps() as u64;
    let bar = main_process_bar(group.is_main(), batches * steps, "sampling", "steps");
    let started = Instant::now();
    // Images per second after the first batch, which a GPU spends compiling its kernels.
    let mut steady = SteadyRate::new(1);
    let samples = sample_images(&model, &diffusion, &opts, &device, &mut |done| {
        bar.set_position(done);
        if done.is_multiple_of(steps) {
            steady.observe(done / steps);
        }
        let images = (done / steps) as f64 * args.run.batch_size as f64;
        let secs = started.elapsed().as_secs_f64();
        if secs > 0.0 {
            bar.set_message(format!(
                "{:.2} images/s",
                images.min(args.num_samples as f64) / secs
            ));
        }
    })?;
    bar.finish_and_clear();
    // With several processes, the main one collects every batch and writes the files.
    let Some(samples) = gather_samples(&mut group, samples, args.num_samples, args.run.batch_size)?
    else {
        return Ok(group.finish()?);
    };
    let secs = started.elapsed().as_secs_f64();
    let n = samples.n;
    let (npz, png) = write_samples(&output_dir, samples, 100)?;
    println!(
        "sampled {n} images in {secs:.1} s ({:.2} images/s); wrote {} and {}",
        n as f64 / secs,
        npz.display(),
        png.display()
    );
    if let Some(rate) = steady.per_second() {
        println!(
            "after the first batch: {:.2} images/s",
            rate * args.run.batch_size as f64
        );
    }
    remove_batch_dir(opts.batch_dir)?;
    Ok(group.finish()?)
}

/// `--init_noise`: x_T for every sample, float32 of shape `want` ([N, C, H, W]).
fn read_init_noise(path: &Path, want: [usize; 4]) -> anyhow::Result<Vec<f32>> {
    let array = NpyArray::read(path)?;
    if array.shape != want {
        bail!(
            "--init_noise {}: shape {:?}, expected {want:?}",
            path.display(),
            array.shape
        );
    }
    Ok(array.to_f32())
}
