//! `train_step_<id>`: one recorded training step of the reference (gradients, AdamW, EMA),
//! replayed through iddpm's trainer on the Flex kernels and on burn's standard ops.

use std::process::Command;

use iddpm::reference_check::{check_train_step, train_step_ids};

use crate::device;
use crate::reference::{Finish, assert_no_failures, reference_dir};

/// Which path the network's ops take in this process.
fn path_name() -> &'static str {
    if iddpm_kernels::ops::enabled() {
        "Flex kernels"
    } else {
        "standard ops (IDDPM_KERNELS=0)"
    }
}

#[test]
fn train_steps() {
    let dir = reference_dir();
    let mut failures = Vec::new();
    for id in train_step_ids(&dir) {
        println!("train_step_{id} on {}", path_name());
        match check_train_step(&dir, &id, &device(), 1.0) {
            Ok(groups) => groups.into_iter().for_each(|g| failures.extend(g.finish())),
            Err(e) => failures.push(format!("train_step_{id}: {e}")),
        }
    }
    assert_no_failures(failures);
    // The kernel switch is global to a process: burn's standard ops run in a child of this
    // test binary, so the other tests running beside this one keep their path.
    if std::env::var_os("IDDPM_KERNELS").is_none() && !train_step_ids(&dir).is_empty() {
        rerun_on_standard_ops();
    }
}

fn rerun_on_standard_ops() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            "groups_train::train_steps",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("IDDPM_KERNELS", "0")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "train_steps on burn's standard ops failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
