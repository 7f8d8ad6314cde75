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
