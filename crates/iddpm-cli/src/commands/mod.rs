//! One module per subcommand.

pub mod data;
pub mod distributed;
pub mod eval;
pub mod nll;
pub mod plot;
pub mod sample;
pub mod schedule;
pub mod super_res;
pub mod train;

use std::path::{Path, PathBuf};

use iddpm::io::{NpyArray, NpyData, save_grid, write_npz};
use iddpm::sample::Samples;

/// Creates `dir` and checks that a file can be written there, before any long work starts.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("output directory {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".iddpm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| format!("output directory {} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes `samples_{N}x{H}x{W}x3.npz` (`arr_0` uint8 NHWC, `arr_1` labels when there are any)
/// and a PNG grid of the first `shown` images into `dir`; returns both paths.
pub fn write_samples(
    dir: &Path,
    samples: Samples,
    shown: usize,
) -> Result<(PathBuf, PathBuf), String> {
    let (n, h, w) = (samples.n, samples.h, samples.w);
    let stem = format!("samples_{n}x{h}x{w}x3");
    let images = NpyArray {
        shape: vec![n, h, w, 3],
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
    write_npz(&npz, &arrays).map_err(|e| e.to_string())?;
    let NpyData::U8(pixels) = &images.data else {
        unreachable!("built as uint8 above")
    };
    let shown = n.min(shown);
    let png = dir.join(format!("{stem}.png"));
    save_grid(&png, &pixels[..shown * h * w * 3], shown, h, w).map_err(|e| e.to_string())?;
    Ok((npz, png))
}
