//! The whole workflow through the binary on a tiny model: train, resume, sample, nll,
//! super-resolution, data conversion, npz2png.

use iddpm::io::{NpyArray, NpyData, read_npz_array, write_npz};

mod common;
use common::{count_named, iddpm, images, run, tmp, train_every_step, with};

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
    // The batches kept for a resume are gone once the files are written.
    let kept = count_named(&samples, ".batches-");
    assert_eq!(kept, 0);

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

/// `super_res_train` from 4x4 to 8x8 on `data` into `log`, with the tiny network and `extra`.
fn super_res_train(data: &std::path::Path, log: &std::path::Path, extra: &[&str]) {
    let (d, l) = (data.to_str().unwrap(), log.to_str().unwrap());
    let base = [
        "super_res_train",
        "--data_dir",
        d,
        "--large_size",
        "8",
        "--small_size",
        "4",
        "--log_dir",
        l,
    ];
    run(with(&base, extra));
}

/// Writes `n` base samples of `[4, 4, channels]` as `dir/low.npz` and returns its path.
fn base_samples(dir: &std::path::Path, n: usize, channels: usize) -> std::path::PathBuf {
    let len = n * 16 * channels;
    let low = NpyArray {
        shape: vec![n, 4, 4, channels],
        data: NpyData::U8((0..len).map(|v| (v * 255 / len) as u8).collect()),
    };
    let path = dir.join("low.npz");
    write_npz(&path, &[("arr_0", &low)]).unwrap();
    path
}

#[test]
fn super_resolution_train_and_sample() {
    let data = tmp("sr-data");
    images(&data, 4, 8);
    let log = tmp("sr-run");
    super_res_train(
        &data,
        &log,
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
    );
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
    let base_npz = base_samples(&base, 3, 3);
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

/// A one-channel super-resolution model trains, and samples from its checkpoint alone: the
/// network takes 2 input channels (once refused as "not a super-resolution model", which
/// looked for 6), and the input side comes from the base samples.
#[test]
fn one_channel_super_resolution_from_the_checkpoint_alone() {
    let data = tmp("sr1-data");
    images(&data, 4, 8);
    let log = tmp("sr1-run");
    let one_step = "--image_channels 1 --batch_size 2 --max_steps 1 --preview_samples 0";
    super_res_train(&data, &log, &one_step.split(' ').collect::<Vec<_>>());
    let base = tmp("sr1-base");
    let base_npz = base_samples(&base, 2, 1);
    let model = log.join("model000001.safetensors");
    iddpm(&[
        "super_res_sample",
        "--model_path",
        model.to_str().unwrap(),
        "--base_samples",
        base_npz.to_str().unwrap(),
        "--timestep_respacing",
        "2",
        "--output_dir",
        base.to_str().unwrap(),
    ]);
    let up = read_npz_array(&base.join("samples_2x8x8x1.npz"), "arr_0").unwrap();
    assert_eq!(up.shape, vec![2, 8, 8, 1]);
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

/// Mixed precision works on the CPU too (slowly, so with a warning): the loss scale starts at
/// 20 and grows by `--fp16_scale_growth` (1e-3) per step without overflow (the logged scale is
/// the one the step used);
/// the run reports its steady rate and its arithmetic per image.
#[test]
fn mixed_precision_on_the_cpu_warns_and_logs_its_loss_scale() {
    let data = tmp("fp16-data");
    images(&data, 4, 8);
    let log = tmp("fp16-log");
    let args = train_every_step(
        &data,
        &log,
        &[
            "--batch_size",
            "2",
            "--max_steps",
            "5",
            "--log_interval",
            "1",
            "--use_fp16",
            "True",
        ],
    );
    let out = run(args);
    assert!(
        out.contains("warning: --use_fp16 True on --device flex"),
        "{out}"
    );
    assert!(out.contains("GFLOP per image forward"), "{out}");
    assert!(out.contains("after the first 3 steps:"), "{out}");
    let csv = std::fs::read_to_string(log.join("progress.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "lg_loss_scale").unwrap();
    let scales: Vec<f64> = lines
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect();
    assert_eq!(scales.len(), 5, "{csv}");
    for (i, s) in scales.iter().enumerate() {
        assert!((s - (20.0 + 1e-3 * i as f64)).abs() < 1e-9, "{scales:?}");
    }
}

/// `--image_channels 1`: the embedded Fashion-MNIST trains as one grey channel, the network's
/// first and last convolutions have one (two with learned Σ) channels, and `sample` and `nll`
/// take the same flag: the samples are `[N, H, W, 1]`, the grid a grey picture.
#[test]
fn greyscale_models_train_sample_and_measure_on_one_channel() {
    let log = tmp("grey");
    let grey = ["--image_channels", "1", "--learn_sigma", "True"];
    let mut args = with(
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
            "2",
        ],
    );
    args.extend(grey.iter().map(|s| s.to_string()));
    run(args);
    let model = log.join("model000001.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("input_blocks.0.0.weight").unwrap().shape()[1], 1);
    assert_eq!(st.tensor("out.2.weight").unwrap().shape()[0], 2);
    assert!(log.join("samples_000001.png").is_file());

    let out = tmp("grey-samples");
    let mut args = with(
        &[
            "sample",
            "--model_path",
            model.to_str().unwrap(),
            "--image_size",
            "32",
        ],
        &[
            "--num_samples",
            "2",
            "--timestep_respacing",
            "3",
            "--sampler",
            "dpm++2m",
            "--output_dir",
            out.to_str().unwrap(),
        ],
    );
    args.extend(grey.iter().map(|s| s.to_string()));
    run(args);
    let arr = read_npz_array(&out.join("samples_2x32x32x1.npz"), "arr_0").unwrap();
    assert_eq!(arr.shape, vec![2, 32, 32, 1]);
    let grid = image::open(out.join("samples_2x32x32x1.png"))
        .unwrap()
        .to_rgb8();
    assert!(
        grid.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "a grey grid"
    );
    let npz = out.join("samples_2x32x32x1.npz");
    let again = out.join("again.png");
    let text = run(vec![
        "npz2png".into(),
        npz.to_str().unwrap().into(),
        "--grid".into(),
        again.to_str().unwrap().into(),
    ]);
    assert!(text.contains("wrote"), "{text}");
    assert_eq!(
        image::open(&again).unwrap().to_rgb8(),
        grid,
        "npz2png draws the same grid"
    );

    let mut args = with(
        &[
            "nll",
            "--model_path",
            model.to_str().unwrap(),
            "--image_size",
            "32",
        ],
        &["--num_samples", "2", "--output_dir", out.to_str().unwrap()],
    );
    args.extend(grey.iter().map(|s| s.to_string()));
    assert!(run(args).contains("bits/dim"));

    // The file says it has one channel: asking for three names both values.
    let mut args = with(
        &[
            "nll",
            "--model_path",
            model.to_str().unwrap(),
            "--image_size",
            "32",
        ],
        &["--num_samples", "2", "--output_dir", out.to_str().unwrap()],
    );
    args.extend(["--image_channels", "3"].iter().map(|s| s.to_string()));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("--image_channels 3") && err.contains("image_channels = 1"),
        "{err}"
    );
}

/// `--ema_warmup True` is recorded in the EMA files, and a resume under another warm-up is
/// refused, naming both; a resume that does not type it carries the run's own (args.json).
#[test]
fn an_ema_warmup_is_recorded_and_kept_on_resume() {
    let data = tmp("warmup-data");
    images(&data, 4, 8);
    let log = tmp("warmup");
    let (d, l) = (data.to_str().unwrap(), log.to_str().unwrap());
    let base = [
        "train",
        "--data_dir",
        d,
        "--image_size",
        "8",
        "--log_dir",
        l,
    ];
    let steps = [
        "--batch_size",
        "2",
        "--preview_samples",
        "0",
        "--save_interval",
        "2",
    ];
    let mut args = with(&base, &steps);
    args.extend(["--max_steps", "2", "--ema_warmup", "True"].map(String::from));
    run(args);
    let ema = log.join("ema_0.9999_000002.safetensors");
    let bytes = std::fs::read(&ema).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(
        meta["ema_warmup"],
        format!("inv_gamma=1,power={}", 2.0 / 3.0)
    );
    let model = log.join("model000002.safetensors");
    let mut args = with(&base, &steps);
    let resume = [
        "--max_steps",
        "3",
        "--resume_checkpoint",
        model.to_str().unwrap(),
        "--ema_warmup",
        "False",
    ];
    args.extend(resume.map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(&refs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a resume without the warm-up must fail"
    );
    assert!(
        err.contains("averaged with warm-up inv_gamma=1") && err.contains("asks for none"),
        "{err}"
    );
    run(vec![
        "train".into(),
        "--resume_checkpoint".into(),
        model.to_str().unwrap().into(),
        "--max_steps".into(),
        "3".into(),
    ]);
    assert!(log.join("ema_0.9999_000003.safetensors").is_file());
}
