//! Checkpoints survive kills and full disks: the newest complete checkpoint always resumes
//! exactly, and a failed write costs nothing that was saved before.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use iddpm::checkpoint::{StateDict, is_temporary, load_state_dict};

mod common;
use common::{images, newest_model, run, tmp, train_every_step};

/// Steps of every run here; a checkpoint is saved after each.
const STEPS: u64 = 4;

/// `iddpm train` of the tiny model on `data` into `log` for [`STEPS`], checkpointing every step.
fn train_args(data: &Path, log: &Path, extra: &[&str]) -> Vec<String> {
    let steps = STEPS.to_string();
    let flags = [&["--batch_size", "4", "--max_steps", &steps][..], extra].concat();
    train_every_step(data, log, &flags)
}

/// The final model and EMA of a run in `dir`.
fn final_state(dir: &Path) -> (StateDict, StateDict) {
    let load = |name: String| load_state_dict(&dir.join(name)).unwrap();
    (
        load(format!("model{STEPS:06}.safetensors")),
        load(format!("ema_0.9999_{STEPS:06}.safetensors")),
    )
}

/// Uniform draws in [0, 1) from a fixed seed (xorshift64*), so that the test is repeatable.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn kill_9_at_50_random_moments_always_leaves_a_checkpoint_that_resumes_exactly() {
    let data = tmp("kill-data");
    images(&data, 8, 8);
    let reference = tmp("kill-reference");
    let start = Instant::now();
    run(train_args(&data, &reference, &[]));
    let full_run = start.elapsed();
    let expected = final_state(&reference);
    let mut draws = Draws(0x9E37_79B9_7F4A_7C15);
    let (mut mid_write, mut before_first) = (0, 0);
    for trial in 0..50 {
        let log = tmp(&format!("kill-{trial}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_iddpm"))
            .args(train_args(&data, &log, &[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full_run.mul_f64(draws.next()));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if files.iter().any(|p| is_temporary(p)) {
            mid_write += 1;
        }
        let resumed = match newest_model(&log) {
            Some((step, model)) => {
                load_state_dict(&model)
                    .unwrap_or_else(|e| panic!("trial {trial}: step {step} does not load: {e}"));
                let out = run(train_args(
                    &data,
                    &log,
                    &["--resume_checkpoint", model.to_str().unwrap()],
                ));
                assert!(out.contains(&format!("at step {step}")), "{out}");
                step
            }
            None => {
                before_first += 1;
                run(train_args(&data, &log, &[]));
                0
            }
        };
        assert!(
            final_state(&log) == expected,
            "trial {trial}: resumed from step {resumed}, the final model or EMA differs from \
             the uninterrupted run's"
        );
        assert!(
            !std::fs::read_dir(&log)
                .unwrap()
                .any(|e| is_temporary(&e.unwrap().path())),
            "trial {trial}: the resumed run left a temporary file"
        );
        std::fs::remove_dir_all(&log).unwrap();
    }
    println!(
        "50 kills over a {full_run:?} run: {mid_write} left a half-written temporary file, \
         {before_first} came before the first checkpoint; every run resumed exactly"
    );
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint() {
    let data = tmp("full-data");
    images(&data, 8, 8);
    let log = tmp("full-run");
    let mut first = train_args(&data, &log, &[]);
    let steps_at = first.iter().position(|a| a == "--max_steps").unwrap() + 1;
    first[steps_at] = "2".into();
    run(first);
    let saved = log.join("model000002.safetensors");
    let before = std::fs::read(&saved).unwrap();
    // Files may grow to at most a quarter of a model file (bash counts 1024-byte blocks):
    // the logs fit, checkpoints do not, as on a disk that filled up.
    let blocks = before.len() / 4 / 1024;
    let args = train_args(
        &data,
        &log,
        &["--resume_checkpoint", saved.to_str().unwrap()],
    );
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f {blocks}; exec '{}' {}",
        env!("CARGO_BIN_EXE_iddpm"),
        quoted.join(" ")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the write should have failed");
    assert!(
        stderr.contains("File too large") && stderr.contains("opt000003.safetensors"),
        "the error should name the file and the cause:\n{stderr}"
    );
    assert_eq!(std::fs::read(&saved).unwrap(), before, "step 2 is intact");
    assert!(!log.join("model000003.safetensors").exists());
    assert!(
        !std::fs::read_dir(&log)
            .unwrap()
            .any(|e| is_temporary(&e.unwrap().path())),
        "the failed write removed its temporary file"
    );
    // And the run continues from step 2 once there is room.
    let out = run(train_args(
        &data,
        &log,
        &["--resume_checkpoint", saved.to_str().unwrap()],
    ));
    assert!(out.contains("at step 2"), "{out}");
}

/// Runs the binary, requiring failure; returns stderr.
fn fails(args: Vec<String>) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_iddpm"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "iddpm {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_resume_uses_exactly_the_companions_saved_with_the_model_or_refuses() {
    let data = tmp("companion-data");
    images(&data, 8, 8);
    let log = tmp("companion-run");
    let mut first = train_args(&data, &log, &[]);
    let steps_at = first.iter().position(|a| a == "--max_steps").unwrap() + 1;
    first[steps_at] = "2".into();
    run(first);
    let model = log.join("model000002.safetensors");
    let resume = |extra: &[&str]| {
        let mut args = vec!["--resume_checkpoint", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        train_args(&data, &log, &args)
    };
    // An optimizer file of another step under this step's name.
    let opt = log.join("opt000002.safetensors");
    let saved_opt = std::fs::read(&opt).unwrap();
    std::fs::copy(log.join("opt000001.safetensors"), &opt).unwrap();
    let err = fails(resume(&[]));
    assert!(
        err.contains("opt000002.safetensors is not the file saved with it"),
        "{err}"
    );
    std::fs::write(&opt, saved_opt).unwrap();
    // A missing EMA.
    let ema = log.join("ema_0.9999_000002.safetensors");
    std::fs::rename(&ema, log.join("elsewhere")).unwrap();
    let err = fails(resume(&[]));
    assert!(
        err.contains("ema_0.9999_000002.safetensors is missing")
            && err.contains("--resume_weights_only True"),
        "{err}"
    );
    // The weights alone, on request.
    let out = run(resume(&["--resume_weights_only", "True"]));
    assert!(out.contains("at step 2"), "{out}");
}
