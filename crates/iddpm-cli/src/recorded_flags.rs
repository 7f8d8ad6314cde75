//! A resumed training run continues with the flags it was started with. `train` records its
//! command line in `args.json` beside its checkpoints; `--resume_checkpoint` reads the one in
//! the checkpoint's folder and puts those flags before the ones typed now, which therefore win
//! (a repeated flag takes its last value, as with the reference's argparse). So
//! `iddpm train --resume_checkpoint runs/demo/model001600.safetensors --max_steps 3200` goes
//! on with the run's data, batch size, learning rate and EMA rates.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The name of the file a training run records its command line in.
pub const ARGS_FILE: &str = "args.json";

/// The largest `args.json` read: a command line is a few kilobytes.
const MAX_ARGS_FILE_BYTES: u64 = 1 << 20;

/// Flags that belong to one invocation and are never carried over from the recorded one.
const NOT_CARRIED: &[&str] = &["resume_checkpoint", "resume_weights_only"];

/// The training commands, whose runs record their flags.
const TRAINING_COMMANDS: &[&str] = &["train", "super_res_train"];

/// The command line the process runs with (recorded by `main`): what was typed, or, for a
/// resumed run, the recorded flags followed by the typed ones.
static COMMAND_LINE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Records the command line the process runs with.
pub fn record_command_line(argv: Vec<String>) {
    let _ = COMMAND_LINE.set(argv);
}

/// The command line the process runs with (the typed one before `main` records it).
pub fn command_line() -> Vec<String> {
    COMMAND_LINE
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args().collect())
}

/// For `train` or `super_res_train` with `--resume_checkpoint FILE` whose folder holds an
/// `args.json`: `argv` with that run's recorded flags inserted after the command name, and
/// the file they came from. `None` for every other command line, which runs as typed.
pub fn continue_recorded_run(
    argv: &[String],
    command: &str,
    resume_checkpoint: Option<&str>,
) -> anyhow::Result<Option<(Vec<String>, PathBuf)>> {
    let Some(checkpoint) = resume_checkpoint.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if !TRAINING_COMMANDS.contains(&command) {
        return Ok(None);
    }
    let folder = Path::new(checkpoint).parent().unwrap_or(Path::new("."));
    let file = folder.join(ARGS_FILE);
    if !file.is_file() {
        return Ok(None);
    }
    let recorded = read_recorded_argv(&file)?;
    let recorded_command = normalised_command(&recorded[1]);
    if recorded_command != command {
        bail!(
            "{}: it records a `{}` run, and this is `{command}`; resume with that command, or \
             move the file away to resume from the flags typed alone",
            file.display(),
            recorded[1]
        );
    }
    let Some(at) = argv.iter().position(|a| normalised_command(a) == command) else {
        return Ok(None);
    };
    let mut merged = argv[..=at].to_vec();
    merged.extend(without_flags(&recorded[2..], NOT_CARRIED));
    merged.extend_from_slice(&argv[at + 1..]);
    Ok(Some((merged, file)))
}

/// A subcommand's canonical name (its kebab-case alias mapped to the underscore spelling).
fn normalised_command(name: &str) -> String {
    name.replace('-', "_")
}

/// The `argv` array of an `args.json`, checked: strings only, the program and a command first.
fn read_recorded_argv(file: &Path) -> anyhow::Result<Vec<String>> {
    let context = || format!("reading the resumed run's flags from {}", file.display());
    let size = std::fs::metadata(file).with_context(context)?.len();
    if size > MAX_ARGS_FILE_BYTES {
        bail!(
            "{}: {size} bytes, more than the {MAX_ARGS_FILE_BYTES} an args.json may have",
            file.display()
        );
    }
    let text = std::fs::read_to_string(file).with_context(context)?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(context)?;
    let argv = json
        .get("argv")
        .and_then(|a| a.as_array())
        .with_context(|| format!("{}: no \"argv\" array", file.display()))?;
    let argv = argv
        .iter()
        .map(|a| a.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .with_context(|| {
            format!(
                "{}: \"argv\" holds something other than strings",
                file.display()
            )
        })?;
    if argv.len() < 2 {
        bail!(
            "{}: \"argv\" has no command after the program's name",
            file.display()
        );
    }
    Ok(argv)
}

/// `args` without the given flags (by their underscore or kebab-case spelling, as `--f V` or
/// `--f=V`) and their values.
fn without_flags(args: &[String], flags: &[&str]) -> Vec<String> {
    let is_flag = |arg: &str| {
        let name = arg.strip_prefix("--").unwrap_or("");
        let name = name.split('=').next().unwrap_or("").replace('-', "_");
        flags.contains(&name.as_str()).then(|| arg.contains('='))
    };
    let mut kept = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match is_flag(arg) {
            Some(true) => {}
            Some(false) => {
                args.next();
            }
            None => kept.push(arg.clone()),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_resume_of_its_own_is_not_carried_over() {
        let recorded = strings(&[
            "--lr",
            "1e-3",
            "--resume_checkpoint",
            "old.safetensors",
            "--resume-weights-only=True",
            "--ema_rate",
            "0.995",
        ]);
        assert_eq!(
            without_flags(&recorded, NOT_CARRIED),
            strings(&["--lr", "1e-3", "--ema_rate", "0.995"])
        );
    }

    #[test]
    fn recorded_flags_come_before_the_typed_ones() {
        let dir = std::env::temp_dir().join(format!("iddpm-recorded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let checkpoint = dir.join("model000010.safetensors");
        let checkpoint = checkpoint.to_str().unwrap();
        std::fs::write(
            dir.join(ARGS_FILE),
            r#"{"argv": ["iddpm", "train", "--lr", "1e-3", "--max_steps", "10"]}"#,
        )
        .unwrap();
        let typed = strings(&["iddpm", "train", "--resume_checkpoint", checkpoint]);
        let typed_more = [typed.clone(), strings(&["--max_steps", "20"])].concat();
        let (merged, file) = continue_recorded_run(&typed_more, "train", Some(checkpoint))
            .unwrap()
            .unwrap();
        assert_eq!(file, dir.join(ARGS_FILE));
        assert_eq!(
            merged,
            strings(&[
                "iddpm",
                "train",
                "--lr",
                "1e-3",
                "--max_steps",
                "10",
                "--resume_checkpoint",
                checkpoint,
                "--max_steps",
                "20"
            ])
        );
        // Another command's record is refused, naming both.
        let err = continue_recorded_run(&typed, "super_res_train", Some(checkpoint)).unwrap_err();
        assert!(err.to_string().contains("`train` run"), "{err}");
        // Hostile files: not strings, no command, too large.
        for (text, expected) in [
            (r#"{"argv": ["iddpm", 3]}"#, "other than strings"),
            (r#"{"argv": ["iddpm"]}"#, "no command"),
            (r#"{"args": []}"#, "no \"argv\" array"),
            ("not json", "reading the resumed run's flags"),
        ] {
            std::fs::write(dir.join(ARGS_FILE), text).unwrap();
            let err = continue_recorded_run(&typed, "train", Some(checkpoint)).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{text}: {err:#}");
        }
        let big = vec![b' '; (MAX_ARGS_FILE_BYTES + 1) as usize];
        std::fs::write(dir.join(ARGS_FILE), big).unwrap();
        let err = continue_recorded_run(&typed, "train", Some(checkpoint)).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_commands_and_fresh_runs_run_as_typed() {
        let typed = strings(&["iddpm", "sample", "--model_path", "m.safetensors"]);
        assert!(
            continue_recorded_run(&typed, "sample", Some("x/model.safetensors"))
                .unwrap()
                .is_none()
        );
        assert!(
            continue_recorded_run(&typed, "train", None)
                .unwrap()
                .is_none()
        );
        assert!(
            continue_recorded_run(&typed, "train", Some(""))
                .unwrap()
                .is_none()
        );
    }
}
