//! UNet speed and memory: forward pass and full training step (data, forward, backward, AdamW,
//! EMA) for the
//! demo network and the CIFAR-10 released configuration, with and without gradient
//! checkpointing, each variant measured in its own process (peak RSS is per process).
//!
//! `cargo bench -p iddpm --bench unet` (add `-- quick` for fewer repetitions, `--config
//! demo,cifar10` and `--batch 8,32` to choose, `--kernels_only` to skip the burn-ops and
//! checkpointed variants). With
//! `IDDPM_TORCH_PYTHON=/path/to/python` (a Python with torch), the same network in PyTorch
//! (`bench/torch_unet.py`, checked equal to the reference on model A) runs side by side and the
//! ratios are printed. The sampling line times whole DDIM steps at batch 16 on both sides
//! (network, p_mean_variance with the learned variance, clipping, the update), scaled to 50
//! steps, with the cores busy during them.

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use iddpm::data::InMemoryDataset;
use iddpm::diffusion::{
    BetaSchedule, Conditioning, DiffusionConfig, NoiseSource, SampleRequest, Sampler, SeededNoise,
};
use iddpm::nn::{ModelFlags, UNetModel};
use iddpm::train::{TrainOptions, Trainer};

fn flags(name: &str, checkpoint: bool) -> ModelFlags {
    match name {
        "demo" => ModelFlags {
            image_size: 32,
            image_channels: 3,
            num_channels: 32,
            num_res_blocks: 1,
            num_heads: 2,
            learn_sigma: true,
            use_checkpoint: checkpoint,
            ..ModelFlags::default()
        },
        "cifar10" => ModelFlags {
            image_size: 32,
            num_channels: 128,
            num_res_blocks: 3,
            num_heads: 4,
            dropout: 0.3,
            learn_sigma: true,
            use_checkpoint: checkpoint,
            ..ModelFlags::default()
        },
        other => panic!("unknown config {other}"),
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds this process's live threads have used (user + system), summed over
/// /proc/self/task/*/stat.
fn cpu_seconds() -> f64 {
    let ticks = |stat: &str| -> f64 {
        // After the command name (in parentheses) come state, ppid, …; utime and stime are
        // the 12th and 13th of those fields.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        field(11) + field(12)
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .map(|s| ticks(&s))
        .sum::<f64>()
        / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs one variant in this process and prints `ms_forward ms_train peak_mib`.
fn child(name: &str, checkpoint: bool, batch: usize, reps: usize) {
    if name.ends_with("-sample") {
        return sample_child(name.trim_end_matches("-sample"), batch, reps);
    }
    let device = Device::flex();
    let config = flags(name, checkpoint).unet_config(false).unwrap();
    let diffusion_config = DiffusionConfig {
        diffusion_steps: 1000,
        noise_schedule: BetaSchedule::Cosine,
        learn_sigma: true,
        ..Default::default()
    };
    let mut noise = SeededNoise::new(0);
    let x = noise.sample([batch, 3, 32, 32], &device).unwrap();
    let ts: Vec<f32> = (0..batch).map(|i| (i * 997 % 1000) as f32).collect();
    let infer = UNetModel::new(&config, &device);
    let mut forward = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let out = infer.forward(
            x.clone(),
            Tensor::from_data(TensorData::new(ts.clone(), [batch]), &device),
            None,
        );
        let _: Vec<f32> = out.into_data().convert::<f32>().try_into_vec().unwrap();
        forward.push(start.elapsed().as_secs_f64() * 1e3);
    }
    drop(infer);
    // A full training step: batch from the data set, forward, backward, AdamW, EMA.
    let data = InMemoryDataset::new(
        (0..64)
            .map(|i| {
                SeededNoise::new(i)
                    .normal_vec(3 * 32 * 32)
                    .into_iter()
                    .map(|v| v.clamp(-1.0, 1.0))
                    .collect()
            })
            .collect(),
        None,
        32,
    );
    let opts = TrainOptions {
        batch_size: batch,
        ema_rates: vec![0.9999],
        log_dir: std::env::temp_dir().join(format!("iddpm-bench-{}", std::process::id())),
        preview_samples: 0,
        quiet: true,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(config.clone(), diffusion_config, &data, opts, &device).unwrap();
    let mut train = Vec::new();
    trainer.run_step().unwrap();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for _ in 0..reps {
        let start = Instant::now();
        trainer.run_step().unwrap();
        train.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let cores = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    // The first repetition warms caches and allocators; report the median of the rest.
    let skip = |v: Vec<f64>| if v.len() > 1 { v[1..].to_vec() } else { v };
    println!(
        "{} {} {} {cores}",
        median(skip(forward)),
        median(train),
        peak_rss_mib()
    );
}

/// Full 50-step DDIM sampling steps at `batch` (network, p_mean_variance, clipping, the DDIM
/// update, as `iddpm sample` runs them), timed one by one; prints `ms_step 0 peak_mib cores`.
fn sample_child(name: &str, batch: usize, reps: usize) {
    let device = Device::flex();
    let config = flags(name, false).unet_config(false).unwrap();
    let model = UNetModel::new(&config, &device);
    let diffusion = DiffusionConfig {
        diffusion_steps: 1000,
        noise_schedule: BetaSchedule::Cosine,
        learn_sigma: true,
        timestep_respacing: "ddim50".into(),
        ..Default::default()
    }
    .build()
    .unwrap();
    let conditioning = Conditioning::none();
    let mut noise = SeededNoise::new(0);
    let request = SampleRequest::new(
        Sampler::ddim(0.0),
        [batch, 3, 32, 32],
        &conditioning,
        &mut noise,
        &device,
    );
    let mut steps = diffusion.sample_loop_progressive(&model, request).unwrap();
    let mut times = Vec::new();
    let (mut cpu0, mut wall0) = (cpu_seconds(), Instant::now());
    for rep in 0..=reps {
        let start = Instant::now();
        let step = steps.next().expect("50 steps").unwrap();
        // Reading the sample back ends the step, as the CLI's uint8 conversion does.
        let _: Vec<f32> = step
            .sample
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        if rep == 0 {
            // The first step warms caches and allocators.
            (cpu0, wall0) = (cpu_seconds(), Instant::now());
        } else {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let cores = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    println!("{} 0 {} {cores}", median(times), peak_rss_mib());
}

/// PyTorch's FLOP count of one forward pass and one training step of `name`, and its sgemm
/// rate (GFLOP/s of a 1024³ product).
fn torch_flops(python: &str, name: &str, batch: usize) -> Option<Vec<f64>> {
    torch_script(python, &["flops", name, &batch.to_string()])
}

/// Runs `bench/torch_unet.py` with `args` and returns the three numbers it prints.
fn torch_script(python: &str, args: &[&str]) -> Option<Vec<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/torch_unet.py");
    let out = Command::new(python).arg(script).args(args).output().ok()?;
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    (v.len() == 3).then_some(v)
}

/// GFLOP/s of a 1024³ f32 product on Flex (the gemm crate on all threads), median of 5.
fn sgemm_gflops() -> f64 {
    let device = Device::flex();
    let n = 1024;
    let a: Tensor<2> = Tensor::random([n, n], burn::tensor::Distribution::Default, &device);
    let b: Tensor<2> = Tensor::random([n, n], burn::tensor::Distribution::Default, &device);
    let _ = a.clone().matmul(b.clone()).into_data();
    let times = (0..5)
        .map(|_| {
            let start = Instant::now();
            let _ = a.clone().matmul(b.clone()).into_data();
            start.elapsed().as_secs_f64()
        })
        .collect();
    2.0 * (n * n * n) as f64 / median(times) / 1e9
}

fn torch(python: &str, name: &str, batch: usize, reps: usize) -> Option<Vec<f64>> {
    torch_script(
        python,
        &["bench", name, &batch.to_string(), &reps.to_string()],
    )
}

/// Runs one benchmark child (`kernels` off sets `IDDPM_KERNELS=0`: burn's standard ops) and
/// returns its four numbers: forward ms, train ms, peak MiB, cores busy during training.
fn run_child(
    name: &str,
    checkpoint: bool,
    kernels: bool,
    batch: usize,
    reps: usize,
) -> Option<Vec<f64>> {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .env("IDDPM_KERNELS", if kernels { "1" } else { "0" })
        .args([
            "--child",
            name,
            if checkpoint { "1" } else { "0" },
            &batch.to_string(),
            &reps.to_string(),
        ])
        .output()
        .expect("run the benchmark child");
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() != 4 {
        eprintln!(
            "{name}: child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        // As the CLI runs; IDDPM_BENCH_GLIBC_DEFAULTS=1 keeps glibc's defaults, for comparison.
        if std::env::var_os("IDDPM_BENCH_GLIBC_DEFAULTS").is_none() {
            iddpm::allocator::keep_freed_memory();
        }
        let name = &args[pos + 1];
        let checkpoint = args[pos + 2] == "1";
        let batch: usize = args[pos + 3].parse().unwrap();
        let reps: usize = args[pos + 4].parse().unwrap();
        child(name, checkpoint, batch, reps);
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
    // Only iddpm's kernels (and PyTorch): the baselines take most of a full run.
    let kernels_only = args.iter().any(|a| a == "--kernels_only");
    let batches: Vec<usize> = match args.iter().position(|a| a == "--batch") {
        Some(p) => args[p + 1]
            .split(',')
            .map(|b| b.parse().expect("--batch N[,M]"))
            .collect(),
        None => vec![8],
    };
    let configs: Vec<String> = match args.iter().position(|a| a == "--config") {
        Some(p) => args[p + 1].split(',').map(str::to_string).collect(),
        None => vec!["demo".into(), "cifar10".into()],
    };
    let python = std::env::var("IDDPM_TORCH_PYTHON").ok();
    println!(
        "{:<9} {:>5} {:<12} {:>11} {:>10} {:>11} {:>9} {:>6}",
        "config", "batch", "variant", "forward ms", "train ms", "train img/s", "peak MiB", "cores"
    );
    for name in &configs {
        let reps = match (name.as_str(), quick) {
            ("demo", true) => 3,
            ("demo", false) => 6,
            (_, true) => 2,
            (_, false) => 4,
        };
        for &batch in &batches {
            let row = |variant: &str, v: &[f64]| {
                println!(
                    "{name:<9} {batch:>5} {variant:<12} {:>11.1} {:>10.1} {:>11.2} {:>9.0} {:>6.2}",
                    v[0],
                    v[1],
                    batch as f64 * 1e3 / v[1],
                    v[2],
                    v[3]
                );
            };
            let kernels = run_child(name, false, true, batch, reps);
            let (standard, checkpointed) = if kernels_only {
                (None, None)
            } else {
                (
                    run_child(name, false, false, batch, reps),
                    run_child(name, true, true, batch, reps),
                )
            };
            for (variant, v) in [
                ("kernels", &kernels),
                ("burn ops", &standard),
                ("kernels+ckpt", &checkpointed),
            ] {
                if let Some(v) = v {
                    row(variant, v);
                }
            }
            let theirs = python
                .as_deref()
                .and_then(|py| torch(py, name, batch, reps));
            if let Some(t) = &theirs {
                row("PyTorch", &[t[0], t[1], t[2], f64::NAN]);
            }
            if let (Some(k), Some(s)) = (&kernels, &standard) {
                println!(
                    "{name} batch {batch}: kernels / burn ops: forward x{:.2}, train step x{:.2}, peak memory x{:.2}",
                    k[0] / s[0],
                    k[1] / s[1],
                    k[2] / s[2]
                );
            }
            if let (Some(k), Some(t)) = (&kernels, &theirs) {
                println!(
                    "{name} batch {batch}: iddpm / PyTorch: forward x{:.2}, train step x{:.2}, peak memory x{:.2}",
                    k[0] / t[0],
                    k[1] / t[1],
                    k[2] / t[2]
                );
            }
            if let Some(f) = python
                .as_deref()
                .and_then(|py| torch_flops(py, name, batch))
            {
                let rate = |v: &Option<Vec<f64>>| {
                    v.as_ref().map_or("-".to_string(), |v| {
                        format!("{:.0}/{:.0}", f[0] / v[0] / 1e6, f[1] / v[1] / 1e6)
                    })
                };
                println!(
                    "{name} batch {batch}: GFLOP/s forward/train (PyTorch's FLOP count: {:.1}/{:.1} GFLOP): kernels {}, burn ops {}, PyTorch {}; sgemm 1024³ peak: iddpm {:.0}, PyTorch {:.0}",
                    f[0] / 1e9,
                    f[1] / 1e9,
                    rate(&kernels),
                    rate(&standard),
                    rate(&theirs),
                    sgemm_gflops(),
                    f[2]
                );
            }
            if let (Some(k), Some(c)) = (&kernels, &checkpointed) {
                println!(
                    "{name} batch {batch}: gradient checkpointing / plain: train time x{:.2}, peak memory x{:.2}",
                    c[1] / k[1],
                    c[2] / k[2]
                );
            }
        }
        // Sampling throughput: 50 DDIM steps at batch 16, from the median timed step.
        let sample_batch = 16;
        let sample = format!("{name}-sample");
        let ours = run_child(&sample, false, true, sample_batch, reps);
        let standard = if kernels_only {
            None
        } else {
            run_child(&sample, false, false, sample_batch, reps)
        };
        let rate = |ms: f64| sample_batch as f64 / (50.0 * ms / 1e3);
        if let Some(k) = &ours {
            print!(
                "{name}: 50-step DDIM at batch {sample_batch}: kernels {:.3} images/s ({:.2} cores busy)",
                rate(k[0]),
                k[3]
            );
            if let Some(s) = &standard {
                print!(", burn ops {:.3} images/s", rate(s[0]));
            }
            if let Some(t) = python.as_deref().and_then(|py| {
                torch_script(
                    py,
                    &["sample", name, &sample_batch.to_string(), &reps.to_string()],
                )
            }) {
                print!(
                    "; PyTorch {:.3} images/s; iddpm / PyTorch throughput x{:.2}",
                    rate(t[0]),
                    rate(k[0]) / rate(t[0])
                );
            }
            println!();
        }
    }
}
