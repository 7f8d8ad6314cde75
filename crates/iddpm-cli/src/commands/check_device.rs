//! `iddpm check_device`: replays the reference vectors on a device (model A's forward pass,
//! diffusion A's training losses, p_mean_variance and DDIM loop, and the recorded training
//! step's gradients, AdamW update and EMA where its vectors are there) and compares.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use iddpm::reference_check::{check_device, tolerance_scale};

/// Arguments of `iddpm check_device`.
#[derive(Args)]
pub struct CheckDeviceArgs {
    /// The reference vectors (`tests/reference` in the repository).
    #[arg(long = "reference_dir", alias = "reference-dir")]
    reference_dir: PathBuf,
    #[arg(long = "device", default_value = iddpm::device::DEFAULT_DEVICE_NAME, help = iddpm::device::DEVICE_HELP)]
    device: String,
    /// Tolerances as multiples of the CPU's parity tolerances (default: 1 on the CPU, 10 on a
    /// GPU; see `iddpm::reference_check::tolerance_scale`).
    #[arg(long = "tolerance_scale", alias = "tolerance-scale")]
    tolerance_scale: Option<f64>,
}

/// Prints one line per group and fails when any value is out of tolerance.
pub fn run(args: &CheckDeviceArgs) -> anyhow::Result<()> {
    let device = iddpm::parse_device(&args.device)?;
    let scale = args
        .tolerance_scale
        .unwrap_or_else(|| tolerance_scale(&device));
    if !(scale.is_finite() && scale > 0.0) {
        bail!("--tolerance_scale {scale} must be a positive number");
    }
    println!(
        "checking device {} against {} (tolerances x{scale})",
        args.device,
        args.reference_dir.display()
    );
    let groups = check_device(&args.reference_dir, &device, scale)?;
    let mut failures = Vec::new();
    for g in &groups {
        println!(
            "{}  {:5.1}% of tolerance  {}",
            g.summary(),
            100.0 * g.worst_fraction,
            if g.passed() { "ok" } else { "FAILED" }
        );
        failures.extend(g.failures());
    }
    if !failures.is_empty() {
        bail!(
            "{} check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    println!("all {} groups within tolerance", groups.len());
    Ok(())
}
