//! The parity suite: everything the reference vectors pin down, checked number for number.
//!
//! Reads the directory named by `IDDPM_REFERENCE_DIR` (default: the repository's
//! `tests/reference`) and
//! checks every group it finds there, printing for each how many values were compared and the
//! worst error. Run with `cargo test --release --test parity -- --nocapture` to see the report.

mod reference;

mod groups_core;
mod groups_eval;
mod groups_model;
mod groups_train;

use burn::tensor::{Device, Tensor, TensorData};

pub fn device() -> Device {
    iddpm::default_device()
}

pub fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
        .into_iter()
        .map(|v| v as f64)
        .collect()
}

pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), &device())
}

/// The directory must exist and hold at least one group: a suite that silently checks nothing
/// would pass for the wrong reason.
#[test]
fn reference_directory_is_present() {
    let dir = reference::reference_dir();
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "reference directory {} is unreadable ({e}); set IDDPM_REFERENCE_DIR",
                dir.display()
            )
        })
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let groups = [
        "schedules.json",
        "respacing.json",
        "losses.safetensors",
        "resampler.json",
    ];
    assert!(
        entries
            .iter()
            .any(|e| groups.contains(&e.as_str()) || e.starts_with("model_")),
        "{} holds no reference group (found {entries:?})",
        dir.display()
    );
    println!(
        "reference directory {}: {} files",
        dir.display(),
        entries.len()
    );
}
