//! A loss curve as a PNG, drawn pixel by pixel (no fonts needed): the curve, its running mean,
//! axes and grid lines at powers of ten.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Result, TrainError};

/// Plots `(step, loss)` on a log-scale y axis into a 640×400 PNG, atomically.
pub fn save_loss_curve(path: &Path, points: &[(f64, f64)]) -> Result<()> {
    let (w, h) = (640u32, 400u32);
    let (left, right, top, bottom) = (40u32, 10u32, 10u32, 30u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .collect();
    if pts.len() >= 2 {
        let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
        let ys: Vec<f64> = pts.iter().map(|p| p.1.log10()).collect();
        let y0 = ys.iter().cloned().fold(f64::INFINITY, f64::min).floor();
        let y1 = ys
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(y0 + 1.0);
        let px = |x: f64| left as f64 + (x - x0) / (x1 - x0) * (w - left - right) as f64;
        let py = |y: f64| top as f64 + (y1 - y) / (y1 - y0) * (h - top - bottom) as f64;
        // Grid lines at each power of ten.
        let mut d = y0;
        while d <= y1 {
            let y = py(d).round() as u32;
            for x in left..w - right {
                img.put_pixel(x, y.min(h - 1), Rgb([225, 225, 225]));
            }
            d += 1.0;
        }
        let mut draw = |xs: &[(f64, f64)], color: Rgb<u8>| {
            for pair in xs.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let steps = ((px(b.0) - px(a.0))
                    .abs()
                    .max((py(b.1) - py(a.1)).abs())
                    .ceil() as usize)
                    .max(1);
                for s in 0..=steps {
                    let f = s as f64 / steps as f64;
                    let x = px(a.0 + (b.0 - a.0) * f).round() as u32;
                    let y = py(a.1 + (b.1 - a.1) * f).round() as u32;
                    if x < w && y < h {
                        img.put_pixel(x, y, color);
                    }
                }
            }
        };
        let raw: Vec<(f64, f64)> = pts.iter().zip(&ys).map(|(p, &y)| (p.0, y)).collect();
        draw(&raw, Rgb([150, 180, 230]));
        let window = (raw.len() / 20).max(1);
        let smooth: Vec<(f64, f64)> = (0..raw.len())
            .map(|i| {
                let lo = i.saturating_sub(window);
                let slice = &raw[lo..=i];
                (
                    raw[i].0,
                    slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64,
                )
            })
            .collect();
        draw(&smooth, Rgb([20, 60, 160]));
    }
    for x in left..w - right {
        img.put_pixel(x, h - bottom, Rgb([0, 0, 0]));
    }
    for y in top..=h - bottom {
        img.put_pixel(left, y, Rgb([0, 0, 0]));
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TrainError::Other(format!("{}: cannot encode PNG: {e}", path.display())))?;
    iddpm_checkpoint::write_atomic(path, bytes.get_ref())?;
    Ok(())
}
