//! Runs under `mpirun` (a build with `--features mpi` and Open MPI installed): N ranks equal
//! one process bit for bit, sharded sampling and NLL write what one process writes, a killed
//! rank ends the run, and the run resumes from its last checkpoint.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use iddpm::checkpoint::load_state_dict;

mod common;
use common::{count_named, five_images, images, newest_model, run, tmp, train_every_step, with};

/// `mpirun -n ranks iddpm args...`, oversubscribed, as root if need be.
fn mpirun(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--oversubscribe",
        "--allow-run-as-root",
        "-n",
        &ranks.to_string(),
    ])
    .arg(env!("CARGO_BIN_EXE_iddpm"))
    .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    cmd
}

fn succeed(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`train_every_step`] with a per-process batch, microbatch and step count, seed 5.
fn train_args(data: &Path, log: &Path, batch: usize, micro: i64, steps: u64) -> Vec<String> {
    let (batch, micro, steps) = (batch.to_string(), micro.to_string(), steps.to_string());
    let flags = [
        "--batch_size",
        &batch,
        "--microbatch",
        &micro,
        "--max_steps",
        &steps,
    ];
    train_every_step(data, log, &[&flags[..], &["--seed", "5"]].concat())
}

/// The bytes of every tensor of a run's step-3 files.
fn final_files(dir: &Path) -> Vec<(String, iddpm::checkpoint::StateDict)> {
    ["model000003", "ema_0.9999_000003", "opt000003"]
        .iter()
        .map(|n| {
            let path = dir.join(format!("{n}.safetensors"));
            (n.to_string(), load_state_dict(&path).unwrap())
        })
        .collect()
}

#[test]
fn n_ranks_equal_one_process_in_microbatches_bit_for_bit() {
    let data = tmp("mpi-data");
    images(&data, 24, 8);
    for ranks in [2, 3, 4] {
        let single = tmp(&format!("mpi-single-{ranks}"));
        run(train_args(&data, &single, 2 * ranks, 2, 3));
        let shared = tmp(&format!("mpi-ranks-{ranks}"));
        let mut cmd = mpirun(ranks);
        cmd.args(train_args(&data, &shared, 2, -1, 3));
        succeed(cmd, &format!("{ranks} ranks"));
        for ((name, a), (_, b)) in final_files(&single).iter().zip(final_files(&shared)) {
            assert!(*a == b, "{ranks} ranks: {name} differs from one process");
        }
        // One log, written by rank 0, counting the global batch.
        let csv = std::fs::read_to_string(shared.join("progress.csv")).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let last: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
        let samples = header.iter().position(|k| *k == "samples").unwrap();
        let expected = (3 * 2 * ranks) as f64;
        assert_eq!(last[samples].parse::<f64>().unwrap(), expected, "{csv}");
    }
}

#[test]
fn sharded_sampling_and_nll_write_what_one_process_writes() {
    let data = tmp("mpi-shard-data");
    images(&data, 8, 8);
    let log = tmp("mpi-shard-train");
    run(train_args(&data, &log, 4, -1, 1));
    let model = log.join("model000001.safetensors");
    let sample = |out: &Path| five_images("sample", &model, out, &[]);
    let (one, three) = (tmp("mpi-sample-1"), tmp("mpi-sample-3"));
    run(sample(&one));
    let mut cmd = mpirun(3);
    cmd.args(sample(&three));
    succeed(cmd, "sampling on 3 ranks");
    let npz = "samples_5x8x8x3.npz";
    assert_eq!(
        std::fs::read(one.join(npz)).unwrap(),
        std::fs::read(three.join(npz)).unwrap(),
        "the sample files differ"
    );
    let nll = |out: &Path| five_images("nll", &model, out, &["--data_dir", data.to_str().unwrap()]);
    let (one, two) = (tmp("mpi-nll-1"), tmp("mpi-nll-2"));
    run(nll(&one));
    let mut cmd = mpirun(2);
    cmd.args(nll(&two));
    succeed(cmd, "nll on 2 ranks");
    let files = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut f: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "npz"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        f.sort();
        f
    };
    assert!(!files(&one).is_empty());
    assert_eq!(files(&one), files(&two), "the NLL files differ");
}

#[test]
fn a_killed_rank_ends_the_run_and_it_resumes_from_its_last_checkpoint() {
    let data = tmp("mpi-kill-data");
    images(&data, 8, 8);
    let log = tmp("mpi-kill-run");
    let mut cmd = mpirun(2);
    cmd.args(train_args(&data, &log, 2, -1, 100_000))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut launcher = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while newest_model(&log).is_none_or(|(s, _)| s < 2) {
        assert!(Instant::now() < deadline, "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Kill one rank (a child of the launcher) outright.
    let ranks = Command::new("pgrep")
        .args(["-P", &launcher.id().to_string()])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&ranks.stdout).to_string();
    let victim = pids.split_whitespace().last().expect("rank processes");
    assert!(
        Command::new("kill")
            .args(["-9", victim])
            .status()
            .unwrap()
            .success()
    );
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the other rank kept running a minute after its peer was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the run must fail when a rank is killed");
    println!(
        "the run ended {:?} after a rank was killed",
        killed_at.elapsed()
    );
    let (step, model) = newest_model(&log).unwrap();
    let mut resume = mpirun(2);
    resume.args(train_args(&data, &log, 2, -1, step + 2));
    resume.args(["--resume_checkpoint", model.to_str().unwrap()]);
    let out = succeed(resume, "the resumed run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("at step {step}")), "{stdout}");
    assert!(
        log.join(format!("model{:06}.safetensors", step + 2))
            .exists()
    );
}

#[test]
fn sigterm_saves_one_checkpoint_and_every_rank_exits() {
    let data = tmp("mpi-term-data");
    images(&data, 8, 8);
    let log = tmp("mpi-term-run");
    let mut args = train_args(&data, &log, 2, -1, 100_000);
    let at = args.iter().position(|a| a == "--save_interval").unwrap() + 1;
    args[at] = "100000".into();
    let mut cmd = mpirun(2);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let launcher = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log.join("progress.csv").exists() {
        assert!(Instant::now() < deadline, "training did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = launcher.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "{:?}",
        sent.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let steps: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("interrupted: saving a checkpoint at step "))
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert_eq!(steps.len(), 2, "both ranks stop:\n{stderr}");
    assert_eq!(steps[0], steps[1], "at the same step");
    let model = log.join(format!("model{:06}.safetensors", steps[0]));
    load_state_dict(&model).expect("the interrupted run's checkpoint loads");
    let saved = count_named(&log, "model");
    assert_eq!(saved, 1, "one checkpoint, the interrupted step's");
}

#[test]
fn sharded_super_resolution_writes_what_one_process_writes() {
    let data = tmp("mpi-sr-data");
    images(&data, 4, 8);
    let log = tmp("mpi-sr-train");
    let sizes = ["--large_size", "8", "--small_size", "4"];
    let mut train = vec!["super_res_train", "--data_dir", data.to_str().unwrap()];
    train.extend_from_slice(&sizes);
    train.extend_from_slice(&["--log_dir", log.to_str().unwrap()]);
    run(with(
        &train,
        &[
            "--batch_size",
            "2",
            "--max_steps",
            "1",
            "--preview_samples",
            "0",
        ],
    ));
    let model = log.join("model000001.safetensors");
    let base = tmp("mpi-sr-base");
    let low = iddpm::io::NpyArray {
        shape: vec![5, 4, 4, 3],
        data: iddpm::io::NpyData::U8((0..240).map(|v| v as u8).collect()),
    };
    let base_npz = base.join("low.npz");
    iddpm::io::write_npz(&base_npz, &[("arr_0", &low)]).unwrap();
    let upsample = |out: &Path| {
        let mut args = vec!["super_res_sample", "--model_path", model.to_str().unwrap()];
        args.extend_from_slice(&["--base_samples", base_npz.to_str().unwrap()]);
        args.extend_from_slice(&sizes);
        args.extend_from_slice(&["--output_dir", out.to_str().unwrap()]);
        with(&args, &["--timestep_respacing", "2", "--batch_size", "2"])
    };
    let (one, two) = (tmp("mpi-sr-1"), tmp("mpi-sr-2"));
    run(upsample(&one));
    let mut cmd = mpirun(2);
    cmd.args(upsample(&two));
    succeed(cmd, "super-resolution on 2 ranks");
    let npz = "samples_5x8x8x3.npz";
    assert_eq!(
        std::fs::read(one.join(npz)).unwrap(),
        std::fs::read(two.join(npz)).unwrap(),
        "the upsampled files differ"
    );
}
