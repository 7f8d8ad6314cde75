//! Helpers of the tests that run the binary on a tiny model.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh, empty folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("iddpm-cli-flow-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary, requiring success; returns stdout and stderr.
pub fn iddpm(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(args)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "iddpm {args:?} failed:\n{out}");
    out
}

/// A tiny model and diffusion, quick to train.
pub const TINY: &[&str] = &[
    "--channel_mult",
    "1,2",
    "--num_channels",
    "32",
    "--num_res_blocks",
    "1",
    "--attention_resolutions",
    "4",
    "--num_heads",
    "1",
    "--learn_sigma",
    "True",
    "--diffusion_steps",
    "10",
    "--noise_schedule",
    "cosine",
];

/// `base`, the tiny model's flags, then `extra`.
pub fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter()
        .chain(TINY)
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// [`iddpm`] with owned arguments.
pub fn run(args: Vec<String>) -> String {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    iddpm(&refs)
}

/// Writes `n` distinct `size`×`size` PNGs into `dir`.
pub fn images(dir: &Path, n: usize, size: u32) {
    for i in 0..n {
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (i * 30) as u8])
        });
        img.save(dir.join(format!("img_{i}.png"))).unwrap();
    }
}

/// How many entries of `dir` have names starting with `prefix`.
pub fn count_named(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .count()
}

/// The newest `model{step}.safetensors` in `dir`, with its step.
pub fn newest_model(dir: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let step = name.strip_prefix("model")?.strip_suffix(".safetensors")?;
            Some((step.parse().ok()?, p))
        })
        .max()
}

/// `iddpm COMMAND --model_path MODEL` on the tiny model at 8×8: 5 images in batches of 2,
/// into `out`, then `extra`.
pub fn five_images(command: &str, model: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut tail = vec![
        "--image_size",
        "8",
        "--num_samples",
        "5",
        "--batch_size",
        "2",
        "--output_dir",
        out.to_str().unwrap(),
    ];
    tail.extend_from_slice(extra);
    with(&[command, "--model_path", model.to_str().unwrap()], &tail)
}

/// `iddpm train` of the tiny model at 8×8 on `data` into `log`, saving every step without
/// previews, then `extra` (batch size, steps and so on).
pub fn train_every_step(data: &Path, log: &Path, extra: &[&str]) -> Vec<String> {
    let mut tail = vec!["--save_interval", "1", "--preview_samples", "0"];
    tail.extend_from_slice(extra);
    let head = [
        "train",
        "--data_dir",
        data.to_str().unwrap(),
        "--image_size",
        "8",
    ];
    with(
        &head,
        &[&["--log_dir", log.to_str().unwrap()], &tail[..]].concat(),
    )
}
