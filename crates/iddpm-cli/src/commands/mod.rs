//! One module per subcommand.

pub mod check_device;
pub mod config;
pub mod data;
pub mod distributed;
pub mod eval;
pub mod nll;
pub mod plot;
pub mod sample;
pub mod schedule;
pub mod super_res;
pub mod train;

use anyhow::Context;
use std::path::{Path, PathBuf};

use crate::flags::RunFlags;

use iddpm::data::{InMemoryDataset, fashion_mnist};
use iddpm::io::{NpyArray, NpyData, save_grid, write_npz};
use iddpm::sample::Samples;

/// A new folder for a command's outputs, `runs/COMMAND-YYYYmmdd-HHMMSS` (UTC), with `-2`,
/// `-3` … appended when that name is taken. Not created here.
pub fn fresh_run_dir(command: &str) -> PathBuf {
    unique_dir(run_dir_name(command))
}

/// `runs/COMMAND-YYYYmmdd-HHMMSS` (UTC) for the current time: the same in every process of a
/// data-parallel run started within the same second.
pub fn run_dir_name(command: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{command}-{}", utc_stamp(secs)))
}

/// `base`, or `base-2`, `base-3` … when it exists.
fn unique_dir(base: PathBuf) -> PathBuf {
    let mut dir = base.clone();
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = PathBuf::from(format!("{}-{n}", base.display()));
    }
    dir
}

/// `YYYYmmdd-HHMMSS` of a Unix time (UTC), by the civil-from-days algorithm.
fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The embedded Fashion-MNIST's last images, held out from `iddpm train` and evaluated by
/// `iddpm nll` (and `iddpm train --heldout_bpd`) by default.
pub const EMBEDDED_HELDOUT: usize = 1000;

/// The embedded Fashion-MNIST split into training images and the [`EMBEDDED_HELDOUT`] held-out
/// ones, with `channels` copies of the grey values (1: greyscale); `size` must be its 32×32.
pub fn embedded_split(
    size: usize,
    channels: usize,
) -> anyhow::Result<(InMemoryDataset, InMemoryDataset)> {
    if size != fashion_mnist::RESOLUTION {
        anyhow::bail!(
            "the embedded Fashion-MNIST images are 32x32: pass --image_size 32 (or --data_dir for other data); got {size}"
        );
    }
    let mut train = fashion_mnist::embedded_with_channels(channels)?;
    let heldout = train.split_off(EMBEDDED_HELDOUT);
    Ok((train, heldout))
}

/// Creates `dir` and checks that a file can be written there, before any long work starts.
pub fn ensure_writable_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("output directory {}", dir.display()))?;
    let probe = dir.join(format!(".iddpm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes `samples_{N}x{H}x{W}x{C}.npz` (`arr_0` uint8 NHWC, `arr_1` labels when there are any)
/// and a PNG grid of the first `shown` images into `dir`; returns both paths.
pub fn write_samples(
    dir: &Path,
    samples: Samples,
    shown: usize,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (n, h, w, c) = (samples.n, samples.h, samples.w, samples.c);
    let stem = format!("samples_{n}x{h}x{w}x{c}");
    let images = NpyArray {
        shape: vec![n, h, w, c],
        data: NpyData::U8(samples.images),
    };
    let labels = samples.labels.map(|l| NpyArray {
        shape: vec![n],
        data: NpyData::I64(l),
    });
    let mut arrays = vec![("arr_0", &images)];
    if let Some(l) = &labels {
        arrays.push(("arr_1", l));
    }
    let npz = dir.join(format!("{stem}.npz"));
    write_npz(&npz, &arrays)?;
    let NpyData::U8(pixels) = &images.data else {
        unreachable!("built as uint8 above")
    };
    let shown = n.min(shown);
    let png = dir.join(format!("{stem}.png"));
    let rgb = iddpm::io::as_rgb(&pixels[..shown * h * w * c], c);
    save_grid(&png, &rgb, shown, h, w)?;
    Ok((npz, png))
}

/// Where a sampling command keeps its finished batches, so that rerunning the same command
/// resumes an interrupted run: a folder in `--output_dir` named by the command line and the
/// model file, so that any other flag or model starts afresh. `None` without an explicit
/// `--output_dir` (a new default folder could never be found again).
pub fn batch_dir(run: &RunFlags) -> Option<PathBuf> {
    let out = run.output_dir.as_ref()?;
    let meta = std::fs::metadata(&run.model_path).ok()?;
    let modified = meta.modified().ok()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = format!("{args:?} {} {modified:?}", meta.len());
    let digest = iddpm::checkpoint::FileDigest::of(key.as_bytes()).fnv1a;
    Some(out.join(format!(".batches-{digest:016x}")))
}

/// Removes a finished run's kept batches (see [`batch_dir`]).
pub fn remove_batch_dir(dir: Option<PathBuf>) -> anyhow::Result<()> {
    match dir.map(std::fs::remove_dir_all) {
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2000-02-29 (a leap day) 12:34:56 and 2026-12-03 09:15:00.
        assert_eq!(utc_stamp(951_827_696), "20000229-123456");
        assert_eq!(utc_stamp(1_796_289_300), "20261203-091500");
    }

    #[test]
    fn fresh_run_dirs_are_under_runs_and_named_for_the_command() {
        let dir = fresh_run_dir("sample");
        assert!(dir.starts_with("runs"));
        assert!(
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sample-"),
            "{}",
            dir.display()
        );
    }
}
