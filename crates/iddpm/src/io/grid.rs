//! Sample grids as PNG (see [`iddpm_data::pictures`]).

use std::path::Path;

use crate::error::Result;

/// Lays `n` NHWC uint8 RGB images on a near-square grid and writes it as PNG (atomically).
pub fn save_grid(path: &Path, images: &[u8], n: usize, h: usize, w: usize) -> Result<()> {
    iddpm_data::pictures::save_grid(path, images, n, h, w)?;
    Ok(())
}

/// Writes an RGB image as PNG (atomically).
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    iddpm_data::pictures::write_png(path, img)?;
    Ok(())
}
