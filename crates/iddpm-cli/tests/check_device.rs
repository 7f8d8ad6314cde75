//! `iddpm check_device` on the CPU: within the parity tolerances, and failing when they are
//! made too tight to hold.

mod common;

use std::process::Command;

fn reference_dir() -> String {
    std::env::var("IDDPM_REFERENCE_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/reference").to_string()
    })
}

#[test]
fn the_cpu_computes_what_the_reference_computes() {
    let dir = reference_dir();
    let out = common::iddpm(&["check_device", "--reference_dir", &dir]);
    let mut groups = vec!["forward", "training_losses", "p_mean_variance", "ddim"];
    // The recorded training step, where the directory has it.
    if std::path::Path::new(&dir)
        .join("train_step_a.json")
        .exists()
    {
        groups.extend(["train_step_a losses", "train_step_a gradients"]);
        groups.extend(["train_step_a adamw", "train_step_a ema"]);
    }
    let all = format!("all {} groups within tolerance", groups.len());
    assert!(out.contains(&all), "{out}");
    for group in groups {
        assert!(out.contains(group), "no {group} line in:\n{out}");
    }
}

#[test]
fn a_tolerance_too_tight_to_hold_fails() {
    let o = Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(["check_device", "--reference_dir", &reference_dir()])
        .args(["--tolerance_scale", "1e-6"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("out of tolerance") && err.contains("forward.out"),
        "{err}"
    );
}

#[test]
fn a_missing_reference_directory_is_named() {
    let o = Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(["check_device", "--reference_dir", "/nonexistent/reference"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/nonexistent/reference/model_a.json"),
        "{err}"
    );
}
