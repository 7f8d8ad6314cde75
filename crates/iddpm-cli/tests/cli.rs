//! The `iddpm` binary end to end: parity with the reference through the command line, and the
//! errors bad input gets.

use std::path::{Path, PathBuf};
use std::process::Command;

use iddpm::io::{NpyArray, NpyData, read_npz_array, write_npz};
use safetensors::SafeTensors;

fn reference_dir() -> PathBuf {
    std::env::var("IDDPM_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("iddpm-cli-tests-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn f32_tensor(file: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

/// Model A's flags, as the reference scripts take them.
const MODEL_A: &[&str] = &[
    "--image_size",
    "32",
    "--num_channels",
    "32",
    "--num_res_blocks",
    "1",
    "--num_heads",
    "2",
    "--learn_sigma",
    "True",
    "--diffusion_steps",
    "100",
    "--noise_schedule",
    "cosine",
];

fn iddpm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn ddim_samples_through_the_cli_match_the_reference() {
    let dir = reference_dir();
    let out = tmp("ddim");
    let (shape, x_t) = f32_tensor(&dir.join("diffusion_a.safetensors"), "ddim.x_T");
    let noise = out.join("x_T.npy");
    std::fs::write(
        &noise,
        NpyArray {
            shape: shape.clone(),
            data: NpyData::F32(x_t),
        }
        .to_bytes(),
    )
    .unwrap();
    let model = dir.join("model_a.pt");
    let mut args = vec![
        "sample",
        "--model_path",
        model.to_str().unwrap(),
        "--use_ddim",
        "True",
        "--timestep_respacing",
        "ddim10",
        "--init_noise",
        noise.to_str().unwrap(),
        "--num_samples",
        "2",
        "--batch_size",
        "2",
        "--output_dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(MODEL_A);
    let o = iddpm(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let arr = read_npz_array(&out.join("samples_2x32x32x3.npz"), "arr_0").unwrap();
    assert_eq!(arr.shape, vec![2, 32, 32, 3]);
    let NpyData::U8(ours) = arr.data else {
        panic!("arr_0 must be uint8")
    };
    let (_, reference) = f32_tensor(&dir.join("diffusion_a.safetensors"), "ddim.sample");
    let (n, c, hw) = (2, 3, 32 * 32);
    let mut off_by_one = 0;
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                let v = reference[(b * c + ch) * hw + p];
                let want = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
                let got = ours[(b * hw + p) * c + ch];
                let diff = (got as i32 - want as i32).abs();
                assert!(diff <= 1, "pixel {b},{ch},{p}: {got} vs {want}");
                if diff == 1 {
                    // Only allowed where the float sits within rounding of a level boundary.
                    let scaled = (v + 1.0) * 127.5;
                    assert!((scaled - scaled.round()).abs() < 1e-2, "{scaled}");
                    off_by_one += 1;
                }
            }
        }
    }
    println!(
        "CLI DDIM parity: {} pixels, {off_by_one} off by one",
        n * c * hw
    );
    assert!(out.join("samples_2x32x32x3.png").is_file());
}

#[test]
fn every_registered_sampler_runs_through_the_cli() {
    let model = reference_dir().join("model_a.pt");
    for name in ["dpm++2m", "dpm++3m", "sde-dpm++2m", "unipc"] {
        let out = tmp(&format!("sampler-{name}"));
        let mut args = vec![
            "sample",
            "--model_path",
            model.to_str().unwrap(),
            "--sampler",
            name,
            "--timestep_respacing",
            "4",
            "--dynamic_threshold",
            "0.995",
            "--threshold_max",
            "1.5",
            "--num_samples",
            "2",
            "--batch_size",
            "2",
            "--output_dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(MODEL_A);
        let o = iddpm(&args);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let arr = read_npz_array(&out.join("samples_2x32x32x3.npz"), "arr_0").unwrap();
        assert_eq!(arr.shape, vec![2, 32, 32, 3], "{name}");
    }
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_no_output() {
    let dir = reference_dir();
    let model = dir.join("model_a.pt");
    let out = tmp("bad");
    let out_s = out.to_str().unwrap();

    let check = |args: Vec<&str>, needle: &str| {
        let o = iddpm(&args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should mention {needle:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    let model_s = model.to_str().unwrap();
    let with_model = |extra: &[&'static str]| -> Vec<&str> {
        let mut v = vec![
            "sample",
            "--model_path",
            model_s,
            "--output_dir",
            out_s,
            "--num_samples",
            "1",
            "--timestep_respacing",
            "2",
        ];
        v.extend_from_slice(MODEL_A);
        v.extend_from_slice(extra);
        v
    };
    check(with_model(&["--num_samples", "0"]), "--num_samples");
    check(
        with_model(&["--sampler", "euler"]),
        "unknown sampler \"euler\": expected one of ancestral, ddim, dpm++2m",
    );
    check(
        with_model(&["--sampler", "unipc", "--use_ddim", "True"]),
        "--use_ddim True asks for DDIM but --sampler asks for unipc",
    );
    check(
        with_model(&["--dynamic_threshold", "1.5"]),
        "dynamic thresholding needs a ratio in (0, 1]",
    );
    // A batch no machine has the memory for is refused before anything is allocated.
    check(
        with_model(&[
            "--num_samples",
            "1000000000000",
            "--batch_size",
            "1000000000",
        ]),
        "in batches of 1000000000 needs at least",
    );
    let mut fixed = vec![
        "sample",
        "--model_path",
        model.to_str().unwrap(),
        "--output_dir",
        out_s,
    ];
    // Model A's network flags without `--learn_sigma True`.
    fixed.extend_from_slice(&MODEL_A[..8]);
    check(fixed, "--learn_sigma True");
    check(
        vec!["sample", "--model_path", "/nonexistent/model.pt"],
        "/nonexistent/model.pt",
    );
    check(with_model(&["--timestep_respacing", "ddim99"]), "ddim99");
    check(with_model(&["--learn_sigma", "maybe"]), "maybe");
    // Typed flags are parsed by clap, which names the flag and the value.
    check(with_model(&["--noise_schedule", "quadratic"]), "quadratic");
    check(
        with_model(&["--noise_schedule", "quadratic"]),
        "--noise_schedule",
    );
    check(with_model(&["--channel_mult", "1,two"]), "\"two\"");
    let train_flags =
        |flag: &'static str, value: &'static str| vec!["train", flag, value, "--log_dir", out_s];
    check(train_flags("--ema_rate", "0.999,fast"), "\"fast\"");
    check(train_flags("--schedule_sampler", "lossy"), "lossy");
    let train_dir = out.join("train");
    check(
        vec![
            "train",
            "--fp16_scale_growth",
            "-1",
            "--log_dir",
            train_dir.to_str().unwrap(),
        ],
        "--fp16_scale_growth -1",
    );
    // Fewer labels than low-resolution images for a class-conditional upsampler.
    let base = tmp("bad-base").join("low.npz");
    let low = NpyArray {
        shape: vec![3, 4, 4, 3],
        data: NpyData::U8(vec![0; 144]),
    };
    let labels = NpyArray {
        shape: vec![2],
        data: NpyData::I64(vec![1, 2]),
    };
    write_npz(&base, &[("arr_0", &low), ("arr_1", &labels)]).unwrap();
    check(
        vec![
            "super_res_sample",
            "--model_path",
            model_s,
            "--base_samples",
            base.to_str().unwrap(),
            "--small_size",
            "4",
            "--large_size",
            "8",
            "--class_cond",
            "True",
            "--output_dir",
            out_s,
        ],
        "arr_1 holds 2 labels for 3 images",
    );
    let blocker = out.join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let nested = blocker.join("sub");
    let mut v = vec![
        "sample",
        "--model_path",
        model.to_str().unwrap(),
        "--output_dir",
        nested.to_str().unwrap(),
    ];
    v.extend_from_slice(MODEL_A);
    check(v, "a-file");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("a-file")],
        "no output may be left behind"
    );
}

/// `iddpm plot` draws named CSV columns into a PNG, and names a missing column in its error.
#[test]
fn plot_draws_csv_columns_and_names_missing_ones() {
    let dir = tmp("plot");
    let csv = dir.join("progress.csv");
    std::fs::write(&csv, "loss,step,vb\n1.0,10,0.5\n0.5,20,0.25\n0.25,30,0.2\n").unwrap();
    let png = dir.join("chart.png");
    let series = format!("L_vlb (Σ = β)={}:step:vb", csv.display());
    let out = iddpm(&[
        "plot",
        "--series",
        &series,
        "--series",
        &format!("loss={}:step:loss", csv.display()),
        "--log_y",
        "--smooth",
        "--output",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (800, 500));
    let out = iddpm(&[
        "plot",
        "--series",
        &format!("x={}:step:fid", csv.display()),
        "--output",
        dir.join("other.png").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no column \"fid\""),
        "{err}"
    );
    assert!(!dir.join("other.png").exists());
}

/// Without `--output_dir`, `iddpm sample` writes into a new folder under `runs/` of the working
/// directory, says where, and a second run gets a folder of its own.
#[test]
fn default_outputs_go_to_a_new_folder_under_runs() {
    let dir = reference_dir();
    let model = dir.join("model_a.pt");
    let cwd = tmp("default-output");
    let mut args = vec![
        "sample",
        "--model_path",
        model.to_str().unwrap(),
        "--timestep_respacing",
        "2",
        "--num_samples",
        "1",
        "--batch_size",
        "1",
    ];
    args.extend_from_slice(MODEL_A);
    let mut folders = Vec::new();
    for _ in 0..2 {
        let o = Command::new(env!("CARGO_BIN_EXE_iddpm"))
            .args(&args)
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(stdout.contains("runs/sample-"), "{stdout}");
        folders = std::fs::read_dir(cwd.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    }
    assert_eq!(folders.len(), 2, "{folders:?}");
    for f in &folders {
        assert!(f.join("samples_1x32x32x3.npz").is_file(), "{}", f.display());
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_multi_process_launch_without_mpi_is_refused_with_instructions() {
    let out = Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(["sample", "--model_path", "absent.pt", "--num_samples", "1"])
        .args(["--image_size", "32"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("built without MPI") && stderr.contains("--features mpi"),
        "{stderr}"
    );
}
