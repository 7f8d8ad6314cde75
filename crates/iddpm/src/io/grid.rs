//! Sample grids as PNG: the quickest way to look at what a model makes.

use std::path::Path;

use image::{ImageFormat, RgbImage};

use crate::error::{Error, Result};

/// Lays `n` NHWC uint8 RGB images of `h`×`w` on a near-square grid with a 2-pixel border
/// and writes it as PNG (atomically).
pub fn save_grid(path: &Path, images: &[u8], n: usize, h: usize, w: usize) -> Result<()> {
    if n == 0 || images.len() != n * h * w * 3 {
        return Err(Error::Invalid(format!(
            "cannot make a grid of {n} images of {h}x{w} from {} bytes",
            images.len()
        )));
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let pad = 2;
    let width = cols * (w + pad) + pad;
    let height = rows * (h + pad) + pad;
    let mut grid = RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        let (x0, y0) = (pad + c * (w + pad), pad + r * (h + pad));
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
        .map_err(|e| Error::file(path, format!("cannot encode PNG: {e}")))?;
    iddpm_checkpoint::write_atomic(path, bytes.get_ref())?;
    Ok(())
}
