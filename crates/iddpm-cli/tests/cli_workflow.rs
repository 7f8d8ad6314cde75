//! The whole workflow through the binary on a tiny model: train, resume, sample, nll,
//! super-resolution, data conversion, npz2png.

use std::path::Path;
use std::process::Command;

use iddpm::io::{NpyArray, NpyData, read_npz_array, write_npz};

mod common;
use common::{images, run, tmp, with};

/// Runs `world` iddpm processes at once, each set up by `setup(rank, command)`, and requires
/// every one to succeed.
fn run_ranks(world: usize, setup: impl Fn(usize, &mut Command)) {
    let children: Vec<_> = (0..world)
        .map(|rank| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_iddpm"));
            setup(rank, &mut cmd);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "rank {rank}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn train_resume_sample_nll() {
    let data = tmp("data");
    images(&data, 8, 16);
    let log = tmp("run");
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
            "4",
            "--save_interval",
            "2",
            "--log_interval",
            "2",
            "--preview_samples",
            "4",
            "--preview_steps",
            "3",
        ],
    ));
    for f in [
        "model000002.safetensors",
        "model000004.safetensors",
        "opt000004.safetensors",
        "ema_0.9999_000004.safetensors",
        "loss_curve.png",
        "samples_000004.png",
        "log.txt",
        "progress.csv",
    ] {
        assert!(log.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(log.join("progress.csv")).unwrap();
    for key in [
        "loss",
        "mse",
        "vb",
        "grad_norm",
        "loss_q0",
        "step",
        "samples",
        "lr",
    ] {
        assert!(
            csv.lines().next().unwrap().split(',').any(|k| k == key),
            "{key} not logged: {csv}"
        );
    }
    let ckpt = log.join("model000004.safetensors");
    let out = run(with(
        &[
            "train",
            "--data_dir",
            d,
            "--image_size",
            "8",
            "--log_dir",
            l,
            "--resume_checkpoint",
            ckpt.to_str().unwrap(),
        ],
        &[
            "--batch_size",
            "4",
            "--max_steps",
            "6",
            "--save_interval",
            "100",
            "--preview_samples",
            "0",
        ],
    ));
    assert!(
        out.contains("resumed") && log.join("model000006.safetensors").is_file(),
        "{out}"
    );

    let model = log.join("model000006.safetensors");
    let samples = tmp("samples");
    run(with(
        &[
            "sample",
            "--model_path",
            model.to_str().unwrap(),
            "--image_size",
            "8",
            "--output_dir",
            samples.to_str().unwrap(),
        ],
        &[
            "--num_samples",
            "5",
            "--batch_size",
            "2",
            "--timestep_respacing",
            "3",
        ],
    ));
    let arr = read_npz_array(&samples.join("samples_5x8x8x3.npz"), "arr_0").unwrap();
    assert_eq!(arr.shape, vec![5, 8, 8, 3]);
    assert!(matches!(arr.data, NpyData::U8(_)));

    let nll_out = tmp("nll");
    let out = run(with(
        &[
            "nll",
            "--model_path",
            model.to_str().unwrap(),
            "--image_size",
            "8",
            "--data_dir",
            d,
            "--output_dir",
            nll_out.to_str().unwrap(),
        ],
        &["--num_samples", "3", "--batch_size", "2"],
    ));
    assert!(out.contains("bits/dim"), "{out}");
    let vb = read_npz_array(&nll_out.join("vb_terms.npz"), "arr_0").unwrap();
    assert_eq!(vb.shape, vec![10]);

    let grid = samples.join("grid.png");
    run(vec![
        "npz2png".into(),
        samples.join("samples_5x8x8x3.npz").display().to_string(),
        "--grid".into(),
        grid.display().to_string(),
    ]);
    assert!(grid.is_file());
}

#[test]
fn super_resolution_train_and_sample() {
    let data = tmp("sr-data");
    images(&data, 4, 8);
    let log = tmp("sr-run");
    run(with(
        &[
            "super_res_train",
            "--data_dir",
            data.to_str().unwrap(),
            "--large_size",
            "8",
            "--small_size",
            "4",
            "--log_dir",
            log.to_str().unwrap(),
        ],
        &[
            "--batch_size",
            "2",
            "--max_steps",
            "2",
            "--save_interval",
            "2",
            "--preview_samples",
            "3",
            "--preview_steps",
            "2",
        ],
    ));
    let model = log.join("model000002.safetensors");
    assert!(model.is_file());
    // The preview shows rows of (low-resolution input, sample, original): 3x3 tiles of 8 px
    // with 2-px borders.
    let preview = image::open(log.join("samples_000002.png")).unwrap();
    assert_eq!((preview.width(), preview.height()), (32, 32));
    // The third tile of the first row is the first training image itself.
    let first = image::open(data.join("img_0.png")).unwrap().to_rgb8();
    let tile = preview.to_rgb8();
    let mut off = 0i32;
    for y in 0..8 {
        for x in 0..8 {
            let (a, b) = (tile.get_pixel(2 + 2 * 10 + x, 2 + y), first.get_pixel(x, y));
            off = off.max(
                (0..3)
                    .map(|c| (a[c] as i32 - b[c] as i32).abs())
                    .max()
                    .unwrap(),
            );
        }
    }
    assert!(off <= 1, "the original tile is off by {off}");
    let base = tmp("sr-base");
    let low = NpyArray {
        shape: vec![3, 4, 4, 3],
        data: NpyData::U8((0..144).map(|v| v as u8).collect()),
    };
    let base_npz = base.join("low.npz");
    write_npz(&base_npz, &[("arr_0", &low)]).unwrap();
    run(with(
        &[
            "super_res_sample",
            "--model_path",
            model.to_str().unwrap(),
            "--base_samples",
            base_npz.to_str().unwrap(),
            "--large_size",
            "8",
            "--small_size",
            "4",
            "--output_dir",
            base.to_str().unwrap(),
        ],
        &["--timestep_respacing", "2", "--batch_size", "2"],
    ));
    let up = read_npz_array(&base.join("samples_3x8x8x3.npz"), "arr_0").unwrap();
    assert_eq!(up.shape, vec![3, 8, 8, 3]);
}

#[test]
fn idx_files_become_a_folder_named_like_the_reference() {
    let dir = tmp("idx");
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend(std::iter::repeat_n(7u8, 2 * 28 * 28));
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), &images).unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 2, 9, 3],
    )
    .unwrap();
    let out = dir.join("png");
    run(vec![
        "data".into(),
        "fashion-mnist".into(),
        "--input".into(),
        dir.join("t10k-images-idx3-ubyte").display().to_string(),
        "--output".into(),
        out.display().to_string(),
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["boot_00000.png", "dress_00001.png"]);
}

/// A training process killed with SIGKILL at an arbitrary moment leaves its last complete
/// checkpoint loadable, and training resumes from it.
/// `IDDPM_RANK`/`IDDPM_WORLD_SIZE` (or mpirun's variables) make `iddpm train` one process of a
/// data-parallel run: two processes of batch 4 write the checkpoint one process of batch 8 in
/// microbatches of 4 writes.
#[test]
fn two_training_processes_equal_one() {
    let data = tmp("ddp-data");
    images(&data, 16, 16);
    let d = data.to_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = |log: &Path, batch: &str, micro: &str| {
        with(
            &["train", "--data_dir", &d, "--image_size", "8"],
            &[
                "--log_dir",
                log.to_str().unwrap(),
                "--batch_size",
                batch,
                "--microbatch",
                micro,
                "--max_steps",
                "3",
                "--save_interval",
                "3",
                "--preview_samples",
                "0",
                "--seed",
                "5",
                "--dist_addr",
                &port,
            ],
        )
    };
    let single = tmp("ddp-single");
    run(args(&single, "8", "4"));
    let shared = tmp("ddp-two");
    // Placed by the environment, as mpirun would.
    run_ranks(2, |rank, cmd| {
        cmd.args(args(&shared, "4", "-1"))
            .env("IDDPM_RANK", rank.to_string())
            .env("IDDPM_WORLD_SIZE", "2");
    });
    // Same seed, same initial weights, same examples, timesteps and noise: same result.
    let a = iddpm::checkpoint::load_state_dict(&single.join("model000003.safetensors")).unwrap();
    let b = iddpm::checkpoint::load_state_dict(&shared.join("model000003.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (name, x) in a.iter() {
        let y = b.get(name).unwrap_or_else(|| panic!("{name} missing"));
        for (u, v) in x.values.iter().zip(&y.values) {
            worst = worst.max((u - v).abs());
        }
    }
    assert!(worst < 1e-6, "one and two processes differ by {worst}");
    // One log, written by rank 0, counting the global batch: 3 steps x 8 examples.
    let csv = std::fs::read_to_string(shared.join("progress.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let last: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
    let samples = header.iter().position(|k| *k == "samples").unwrap();
    assert_eq!(last[samples].parse::<f64>().unwrap(), 24.0, "{csv}");
}

/// `iddpm sample` and `iddpm nll` as two processes: each takes every other batch, rank 0 writes
/// what a single process writes (every batch has its own noise).
#[test]
fn two_processes_sample_and_evaluate_like_one() {
    let data = tmp("shard-data");
    images(&data, 4, 8);
    let log = tmp("shard-run");
    run(with(
        &[
            "train",
            "--data_dir",
            data.to_str().unwrap(),
            "--image_size",
            "8",
        ],
        &[
            "--log_dir",
            log.to_str().unwrap(),
            "--batch_size",
            "2",
            "--max_steps",
            "1",
            "--preview_samples",
            "0",
        ],
    ));
    let model = log.join("model000001.safetensors");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = |out: &Path| {
        with(
            &[
                "sample",
                "--model_path",
                model.to_str().unwrap(),
                "--image_size",
                "8",
            ],
            &[
                "--num_samples",
                "5",
                "--batch_size",
                "2",
                "--timestep_respacing",
                "3",
                "--seed",
                "9",
                "--output_dir",
                out.to_str().unwrap(),
                "--dist_addr",
                &addr,
            ],
        )
    };
    let one = tmp("shard-one");
    run(args(&one));
    let two = tmp("shard-two");
    // Placed by flags.
    run_ranks(2, |rank, cmd| {
        cmd.args(args(&two))
            .args(["--rank", &rank.to_string(), "--world_size", "2"]);
    });
    let a = read_npz_array(&one.join("samples_5x8x8x3.npz"), "arr_0").unwrap();
    let b = read_npz_array(&two.join("samples_5x8x8x3.npz"), "arr_0").unwrap();
    assert_eq!(a.shape, vec![5, 8, 8, 3]);
    assert_eq!(a, b, "two processes wrote other samples than one");
    // Different batches got different noise (not one batch repeated).
    let NpyData::U8(px) = &a.data else {
        panic!("uint8 samples")
    };
    let per = 8 * 8 * 3;
    assert_ne!(px[..per], px[2 * per..3 * per]);

    // The bound on 4 images in batches of 1: two batches per process.
    let nll_args = |out: &Path| {
        with(
            &[
                "nll",
                "--model_path",
                model.to_str().unwrap(),
                "--image_size",
                "8",
            ],
            &[
                "--data_dir",
                data.to_str().unwrap(),
                "--num_samples",
                "4",
                "--batch_size",
                "1",
                "--output_dir",
                out.to_str().unwrap(),
                "--dist_addr",
                &addr,
            ],
        )
    };
    let one = tmp("nll-one");
    let printed = run(nll_args(&one));
    let two = tmp("nll-two");
    run_ranks(2, |rank, cmd| {
        cmd.args(nll_args(&two))
            .args(["--rank", &rank.to_string(), "--world_size", "2"]);
    });
    for name in ["vb_terms.npz", "mse_terms.npz", "xstart_mse_terms.npz"] {
        let a = read_npz_array(&one.join(name), "arr_0").unwrap();
        let b = read_npz_array(&two.join(name), "arr_0").unwrap();
        assert_eq!(a, b, "{name} differs between one and two processes");
    }
    assert!(printed.contains("over 4 images"), "{printed}");
}

/// Without `--data_dir` training uses the embedded Fashion-MNIST split, and `--heldout_bpd`
/// ends with the held-out bits/dim and its standard error, printed and written to
/// heldout_bpd.csv.
#[test]
fn embedded_data_and_heldout_bits_per_dim() {
    let log = tmp("embedded");
    let out = run(with(
        &[
            "train",
            "--image_size",
            "32",
            "--log_dir",
            log.to_str().unwrap(),
        ],
        &[
            "--batch_size",
            "2",
            "--max_steps",
            "1",
            "--preview_samples",
            "0",
            "--heldout_bpd",
            "2",
        ],
    ));
    assert!(out.contains("embedded Fashion-MNIST"), "{out}");
    let csv = std::fs::read_to_string(log.join("heldout_bpd.csv")).unwrap();
    let fields: Vec<&str> = csv.trim().split(',').collect();
    assert_eq!(fields[0], "heldout_bpd");
    let bpd: f64 = fields[1].parse().unwrap();
    assert!(bpd.is_finite() && bpd > 0.0, "{csv}");
    assert_eq!(fields[2], "2");
    let stderr: f64 = fields[3].parse().unwrap();
    assert!(stderr.is_finite() && stderr >= 0.0, "{csv}");
    assert!(out.contains("bits/dim over 2 images"), "{out}");
}
