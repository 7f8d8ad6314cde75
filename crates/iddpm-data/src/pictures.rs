//! From model space back to pictures: uint8 conversion as the reference does it, and PNG grids.

use std::path::Path;

use image::{ImageFormat, RgbImage};

use crate::error::{DataError, Result};

/// Converts images `[N, C, H, W]` in [−1, 1] to uint8 NHWC exactly as the reference:
/// truncation of `clamp((x + 1) · 127.5, 0, 255)`.
pub fn to_uint8_nhwc(values: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * h * w * c];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                let v = values[(b * c + ch) * h * w + p];
                out[(b * h * w + p) * c + ch] = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// NHWC uint8 pixels of `c` channels as RGB, for pictures: a grey channel (c < 3) is
/// repeated, images with more channels show their first three.
pub fn as_rgb(pixels: &[u8], c: usize) -> Vec<u8> {
    match c {
        3 => pixels.to_vec(),
        0 => Vec::new(),
        1 | 2 => pixels.chunks(c).flat_map(|p| [p[0]; 3]).collect(),
        _ => pixels.chunks(c).flat_map(|p| [p[0], p[1], p[2]]).collect(),
    }
}

/// Lays `n` NHWC uint8 RGB images of `h`×`w` on a near-square grid with a 2-pixel white
/// border and writes it as PNG (atomically).
pub fn save_grid(path: &Path, images: &[u8], n: usize, h: usize, w: usize) -> Result<()> {
    save_grid_with_columns(path, images, n, h, w, None)
}

/// [`save_grid`] with a fixed number of columns (`None`: as square as possible).
pub fn save_grid_with_columns(
    path: &Path,
    images: &[u8],
    n: usize,
    h: usize,
    w: usize,
    columns: Option<usize>,
) -> Result<()> {
    if n == 0 || images.len() != n * h * w * 3 {
        return Err(DataError::bad(
            path,
            format!(
                "cannot make a grid of {n} images of {h}x{w} from {} bytes",
                images.len()
            ),
        ));
    }
    let cols = columns
        .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
        .clamp(1, n);
    let rows = n.div_ceil(cols);
    let pad = 2;
    let mut grid = RgbImage::from_pixel(
        (cols * (w + pad) + pad) as u32,
        (rows * (h + pad) + pad) as u32,
        image::Rgb([255, 255, 255]),
    );
    for i in 0..n {
        let (x0, y0) = (pad + (i % cols) * (w + pad), pad + (i / cols) * (h + pad));
        for y in 0..h {
            for x in 0..w {
                let o = ((i * h + y) * w + x) * 3;
                grid.put_pixel(
                    (x0 + x) as u32,
                    (y0 + y) as u32,
                    image::Rgb([images[o], images[o + 1], images[o + 2]]),
                );
            }
        }
    }
    write_png(path, &grid)
}

/// Writes an RGB image as PNG through a temporary file and a rename.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| DataError::bad(path, format!("cannot encode PNG: {e}")))?;
    write_atomic(path, bytes.get_ref())
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    iddpm_checkpoint::write_atomic(path, bytes).map_err(|e| match e {
        iddpm_checkpoint::CheckpointError::Io { path, source } => DataError::io(path, source),
        other => DataError::bad(path, other.to_string()),
    })
}
