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
