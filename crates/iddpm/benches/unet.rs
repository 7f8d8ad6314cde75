//! UNet speed and memory: forward pass and full training step (data, forward, backward, AdamW,
//! EMA) for the
//! demo network and the CIFAR-10 released configuration, with and without gradient
//! checkpointing, each variant measured in its own process (peak RSS is per process).
//!
//! `cargo bench -p iddpm --bench unet` (add `-- quick` for fewer repetitions). With
//! `IDDPM_TORCH_PYTHON=/path/to/python` (a Python with torch), the same network in PyTorch
//! (`bench/torch_unet.py`, checked equal to the reference on model A) runs side by side and the
//! ratios are printed. The sampling column is one DDIM step at batch 16 (a forward pass),
//! scaled to 50 steps.

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use iddpm::data::InMemoryDataset;
use iddpm::diffusion::{BetaSchedule, DiffusionConfig, NoiseSource, SeededNoise};
use iddpm::nn::{ModelFlags, UNetModel};
use iddpm::train::{TrainOptions, Trainer};

fn flags(name: &str, checkpoint: bool) -> ModelFlags {
    match name {
        "demo" => ModelFlags {
            image_size: 32,
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
    for _ in 0..reps {
        let start = Instant::now();
        trainer.run_step().unwrap();
        train.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // The first repetition warms caches and allocators; report the median of the rest.
    let skip = |v: Vec<f64>| if v.len() > 1 { v[1..].to_vec() } else { v };
    println!(
        "{} {} {}",
        median(skip(forward)),
        median(skip(train)),
        peak_rss_mib()
    );
}

/// One DDIM step (a forward pass at `batch`) timed; prints `ms_step 0 peak_mib`.
fn sample_child(name: &str, batch: usize, reps: usize) {
    let device = Device::flex();
    let config = flags(name, false).unet_config(false).unwrap();
    let model = UNetModel::new(&config, &device);
    let x = SeededNoise::new(0)
        .sample([batch, 3, 32, 32], &device)
        .unwrap();
    let ts: Vec<f32> = (0..batch).map(|_| 500.0).collect();
    let mut times = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let out = model.forward(
            x.clone(),
            Tensor::from_data(TensorData::new(ts.clone(), [batch]), &device),
            None,
        );
        let _: Vec<f32> = out.into_data().convert::<f32>().try_into_vec().unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let times = if times.len() > 1 {
        times[1..].to_vec()
    } else {
        times
    };
    println!("{} 0 {}", median(times), peak_rss_mib());
}

fn torch(python: &str, name: &str, batch: usize, reps: usize) -> Option<Vec<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/torch_unet.py");
    let out = Command::new(python)
        .args([script, "bench", name, &batch.to_string(), &reps.to_string()])
        .output()
        .ok()?;
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    (v.len() == 3).then_some(v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let name = &args[pos + 1];
        let checkpoint = args[pos + 2] == "1";
        let batch: usize = args[pos + 3].parse().unwrap();
        let reps: usize = args[pos + 4].parse().unwrap();
        child(name, checkpoint, batch, reps);
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
    let exe = std::env::current_exe().unwrap();
    println!(
        "{:<9} {:>5} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "config", "batch", "ckpt", "forward ms", "train ms", "train img/s", "peak MiB"
    );
    for (name, reps) in [
        ("demo", if quick { 3 } else { 6 }),
        ("cifar10", if quick { 2 } else { 4 }),
    ] {
        let batch = 8;
        let mut results = Vec::new();
        for checkpoint in [false, true] {
            let out = Command::new(&exe)
                .args([
                    "--child",
                    name,
                    if checkpoint { "1" } else { "0" },
                    &batch.to_string(),
                    &reps.to_string(),
                ])
                .output()
                .expect("run the benchmark child");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if v.len() != 3 {
                eprintln!(
                    "{name}: child failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            println!(
                "{name:<9} {batch:>5} {:>6} {:>12.1} {:>12.1} {:>12.2} {:>10.0}",
                checkpoint,
                v[0],
                v[1],
                batch as f64 * 1e3 / v[1],
                v[2]
            );
            results.push(v);
        }
        if results.len() == 2 {
            println!(
                "{name}: gradient checkpointing / plain: train time x{:.2}, peak memory x{:.2}",
                results[1][1] / results[0][1],
                results[1][2] / results[0][2]
            );
        }
        let python = std::env::var("IDDPM_TORCH_PYTHON").ok();
        if let (Some(py), Some(ours)) = (&python, results.first()) {
            match torch(py, name, batch, reps) {
                Some(t) => {
                    println!(
                        "{:<9} {batch:>5} {:>6} {:>12.1} {:>12.1} {:>12.2} {:>10.0}",
                        format!("{name}/pt"),
                        "torch",
                        t[0],
                        t[1],
                        batch as f64 * 1e3 / t[1],
                        t[2]
                    );
                    println!(
                        "{name}: iddpm / PyTorch: forward x{:.2}, train step x{:.2}, peak memory x{:.2}",
                        ours[0] / t[0],
                        ours[1] / t[1],
                        ours[2] / t[2]
                    );
                }
                None => eprintln!("{name}: the PyTorch run failed (IDDPM_TORCH_PYTHON={py})"),
            }
        }
        // Sampling throughput: 50 DDIM steps at batch 16, from one timed step.
        let sample_batch = 16;
        let out = Command::new(&exe)
            .args([
                "--child",
                &format!("{name}-sample"),
                "0",
                &sample_batch.to_string(),
                &reps.to_string(),
            ])
            .output()
            .expect("run the sampling child");
        let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        if v.len() == 3 {
            let ours = sample_batch as f64 / (50.0 * v[0] / 1e3);
            print!(
                "{name}: 50-step DDIM at batch {sample_batch}: {ours:.3} images/s (step {:.0} ms)",
                v[0]
            );
            if let Some(t) = python
                .as_deref()
                .and_then(|py| torch(py, name, sample_batch, reps))
            {
                let theirs = sample_batch as f64 / (50.0 * t[0] / 1e3);
                print!(
                    "; PyTorch {theirs:.3} images/s; iddpm / PyTorch x{:.2}",
                    ours / theirs
                );
            }
            println!();
        }
    }
}
