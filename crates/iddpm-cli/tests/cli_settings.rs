//! Checkpoints that describe themselves: a trained model samples, computes its NLL and
//! resumes from its path alone; typed flags must agree with the file; `--config` and
//! `iddpm config` serve files that carry no settings.

use std::process::Command;

mod common;
use common::{iddpm, images, run, tmp, with};

/// Runs the binary expecting failure; returns its error output.
fn fails(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(args)
        .output()
        .unwrap();
    assert!(!o.status.success(), "iddpm {args:?} should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_trained_checkpoint_needs_no_model_flags() {
    let data = tmp("settings-data");
    images(&data, 8, 8);
    let log = tmp("settings-run");
    let (d, l) = (data.to_str().unwrap(), log.to_str().unwrap());
    run(with(
        &[
            "train",
            "--data_dir",
            d,
            "--image_size",
            "8",
            "--log_dir",
            l,
        ],
        &[
            "--batch_size",
            "4",
            "--max_steps",
            "2",
            "--save_interval",
            "2",
            "--preview_samples",
            "0",
            "--ema_rate",
            "0.99",
        ],
    ));
    let args: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(log.join("args.json")).unwrap()).unwrap();
    assert_eq!(args["settings"]["num_channels"], 32);
    assert_eq!(args["settings"]["diffusion_steps"], 10);

    let ema = log.join("ema_0.99_000002.safetensors");
    let model = log.join("model000002.safetensors");
    let (ema, model) = (ema.to_str().unwrap(), model.to_str().unwrap());
    // Sampling and the NLL: nothing but the path (and run options).
    let out = tmp("settings-sample");
    iddpm(&[
        "sample",
        "--model_path",
        ema,
        "--num_samples",
        "2",
        "--batch_size",
        "2",
        "--timestep_respacing",
        "3",
        "--output_dir",
        out.to_str().unwrap(),
    ]);
    assert!(out.join("samples_2x8x8x3.npz").is_file());
    let nll = tmp("settings-nll");
    iddpm(&[
        "nll",
        "--model_path",
        model,
        "--data_dir",
        d,
        "--num_samples",
        "2",
        "--batch_size",
        "2",
        "--output_dir",
        nll.to_str().unwrap(),
    ]);
    // Resuming: the model's settings come from the checkpoint, the run's other flags (data,
    // batch size, EMA rate, log folder, …) from its args.json, and typed flags win.
    let resumed = iddpm(&["train", "--resume_checkpoint", model, "--max_steps", "4"]);
    assert!(resumed.contains("flags recorded in"), "{resumed}");
    assert!(log.join("ema_0.99_000004.safetensors").is_file());
    let args: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(log.join("args.json")).unwrap()).unwrap();
    let argv: Vec<&str> = args["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.ends_with(&["--resume_checkpoint", model, "--max_steps", "4"]),
        "{argv:?}"
    );
    assert!(
        argv.windows(2).any(|w| w == ["--ema_rate", "0.99"]),
        "{argv:?}"
    );
    assert!(log.join("model000004.safetensors").is_file());

    // A typed flag that disagrees names both values; one that agrees is fine.
    let err = fails(&["sample", "--model_path", ema, "--num_channels", "64"]);
    assert!(
        err.contains("--num_channels 64") && err.contains("num_channels = 32"),
        "{err}"
    );
    let err = fails(&[
        "sample",
        "--model_path",
        ema,
        "--num_channels",
        "32",
        "--num_samples",
        "0",
    ]);
    assert!(err.contains("--num_samples must be at least 1"), "{err}");

    // `iddpm config` prints what the file carries.
    let printed = iddpm(&["config", "--model_path", ema]);
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["image_size"], 8);
}

#[test]
fn released_models_get_their_settings_by_name_and_files_can_be_given_them() {
    let dir = tmp("settings-config");
    let file = dir.join("cifar.json");
    iddpm(&[
        "config",
        "cifar10_uncond_50M_500K",
        "--output",
        file.to_str().unwrap(),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json["num_res_blocks"], 3);
    assert_eq!(json["dropout"], 0.3);
    assert_eq!(json["diffusion_steps"], 4000);
    let err = fails(&["config", "cifar11"]);
    assert!(err.contains("cifar10_uncond_50M_500K"), "{err}");

    // A hostile --config is refused with the key named.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"num_channels": -5}"#).unwrap();
    let err = fails(&[
        "sample",
        "--model_path",
        file.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(
        err.contains("num_channels") && err.contains("bad.json"),
        "{err}"
    );
}
