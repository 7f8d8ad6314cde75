//! Image folders as the reference reads them (`image_datasets.py`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "gif"];

/// Every jpg/jpeg/png/gif below `dir`, recursively, in sorted order per directory.
pub fn list_image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut out = Vec::new();
    for path in entries {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        if name.contains('.') && EXTENSIONS.contains(&ext.as_str()) {
            out.push(path);
        } else if path.is_dir() {
            out.extend(list_image_files(&path)?);
        }
    }
    Ok(out)
}

/// The class of a file: its name up to the first `_` (the reference's convention).
pub fn class_name(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.split('_').next().unwrap_or("").to_string()
}

/// Loads one image as the reference does: while the shorter side is at least twice the
/// target, halve it with a box filter; then resize so the shorter side is `resolution`
/// (bicubic), centre-crop to a square, and map to [−1, 1]. Returns CHW f32.
pub fn load_image(path: &Path, resolution: usize) -> Result<Vec<f32>> {
    let img =
        image::open(path).map_err(|e| DataError::bad(path, format!("cannot decode image: {e}")))?;
    Ok(preprocess(img, resolution))
}

/// The reference's resize-and-crop of a decoded image (any colour type is converted to RGB).
pub fn preprocess(img: DynamicImage, resolution: usize) -> Vec<f32> {
    let mut rgb: RgbImage = img.to_rgb8();
    while (rgb.width().min(rgb.height()) as usize) >= 2 * resolution {
        rgb = box_halve(&rgb);
    }
    let (w, h) = (rgb.width() as f64, rgb.height() as f64);
    let scale = resolution as f64 / w.min(h);
    let nw = ((w * scale).round_ties_even() as u32).max(resolution as u32);
    let nh = ((h * scale).round_ties_even() as u32).max(resolution as u32);
    if (nw, nh) != (rgb.width(), rgb.height()) {
        rgb = image::imageops::resize(&rgb, nw, nh, FilterType::CatmullRom);
    }
    let crop_y = (nh as usize - resolution) / 2;
    let crop_x = (nw as usize - resolution) / 2;
    let mut out = vec![0f32; 3 * resolution * resolution];
    for y in 0..resolution {
        for x in 0..resolution {
            let p = rgb.get_pixel((crop_x + x) as u32, (crop_y + y) as u32);
            for c in 0..3 {
                out[(c * resolution + y) * resolution + x] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    out
}

/// Halves both sides (floor) by averaging 2×2 blocks, as PIL's BOX filter does for a factor 2.
fn box_halve(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() / 2, img.height() / 2);
    RgbImage::from_fn(w, h, |x, y| {
        let mut px = [0u8; 3];
        for (c, out) in px.iter_mut().enumerate() {
            let sum: u32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                .iter()
                .map(|&(dx, dy)| img.get_pixel(2 * x + dx, 2 * y + dy)[c] as u32)
                .sum();
            *out = ((sum + 2) / 4) as u8;
        }
        image::Rgb(px)
    })
}

/// A folder of images, decoded lazily, with optional class labels from file names.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    files: Vec<PathBuf>,
    labels: Option<Vec<i64>>,
    resolution: usize,
    classes: Vec<String>,
}

impl ImageFolder {
    /// Lists the images of `dir`; with `class_cond`, labels are the sorted distinct classes.
    pub fn open(dir: &Path, resolution: usize, class_cond: bool) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::bad(dir, "not a directory"));
        }
        let files = list_image_files(dir)?;
        if files.is_empty() {
            return Err(DataError::bad(
                dir,
                "no images (jpg, jpeg, png or gif) found",
            ));
        }
        let (labels, classes) = if class_cond {
            let names: Vec<String> = files.iter().map(|f| class_name(f)).collect();
            let classes: Vec<String> = names
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let labels = names
                .iter()
                .map(|n| classes.binary_search(n).unwrap() as i64)
                .collect();
            (Some(labels), classes)
        } else {
            (None, Vec::new())
        };
        Ok(Self {
            files,
            labels,
            resolution,
            classes,
        })
    }

    /// The image files, in dataset order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Class names, indexed by label (empty without class conditioning).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn resolution(&self) -> usize {
        self.resolution
    }

    fn get(&self, index: usize) -> Result<(Vec<f32>, Option<i64>)> {
        let image = load_image(&self.files[index], self.resolution)?;
        Ok((image, self.labels.as_ref().map(|l| l[index])))
    }
}
