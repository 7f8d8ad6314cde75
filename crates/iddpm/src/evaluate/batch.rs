//! The images `iddpm eval` compares: an `.npz` of uint8 images or a folder of image files.

use std::path::Path;

use iddpm_eval::fid_inception::{FidInception, SPATIAL_FEATURES};

use super::FEATURES;
use crate::error::{Error, Result};
use crate::io::{NpyArray, NpyData, read_npz};

/// Images of a batch: uint8 NHWC, grouped by size.
pub struct ImageBatch {
    /// `(pixels, n, h, w)` groups of equally sized images.
    pub groups: Vec<(Vec<u8>, usize, usize, usize)>,
    /// Total images.
    pub count: usize,
}

/// Reads an `.npz` (`arr_0` uint8 `[N, H, W, 3]`) or a folder of images.
pub fn load_batch(path: &Path) -> Result<ImageBatch> {
    if path.is_dir() {
        batch_from_folder(path)
    } else {
        batch_from_arrays(&read_npz(path)?, path)
    }
}

/// The decoded images of a folder, grouped by size in file order.
fn batch_from_folder(path: &Path) -> Result<ImageBatch> {
    let files = iddpm_data::list_image_files(path)?;
    let mut groups: Vec<(Vec<u8>, usize, usize, usize)> = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::file(&f, e.to_string()))?;
        let img = iddpm_data::decode_bounded(&bytes, &f)?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        match groups.last_mut() {
            Some(g) if g.2 == h && g.3 == w => {
                g.0.extend_from_slice(img.as_raw());
                g.1 += 1;
            }
            _ => groups.push((img.into_raw(), 1, h, w)),
        }
    }
    let count = groups.iter().map(|g| g.1).sum();
    at_least_two(ImageBatch { groups, count }, path)
}

/// The images in `arr_0` of an npz already read from `path` (grey images become RGB).
pub(super) fn batch_from_arrays(arrays: &[(String, NpyArray)], path: &Path) -> Result<ImageBatch> {
    let arr = arrays
        .iter()
        .find(|(n, _)| n == "arr_0")
        .map(|(_, a)| a)
        .ok_or_else(|| {
            Error::file(
                path,
                "no array named arr_0 (expected uint8 images [N, H, W, 3])",
            )
        })?;
    let NpyData::U8(pixels) = &arr.data else {
        return Err(Error::file(
            path,
            format!("arr_0 is {}, expected uint8 images", arr.descr()),
        ));
    };
    let [n, h, w, c] = arr.shape[..] else {
        return Err(Error::file(
            path,
            format!("arr_0 has shape {:?}, expected [N, H, W, 3]", arr.shape),
        ));
    };
    let pixels = match c {
        3 => pixels.clone(),
        1 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => {
            return Err(Error::file(
                path,
                format!("arr_0 has {c} channels, expected 3 (or 1)"),
            ));
        }
    };
    let batch = ImageBatch {
        groups: vec![(pixels, n, h, w)],
        count: n,
    };
    at_least_two(batch, path)
}

/// Statistics need two images; fewer is an error naming the file.
fn at_least_two(batch: ImageBatch, path: &Path) -> Result<ImageBatch> {
    if batch.count < 2 {
        return Err(Error::file(
            path,
            format!("{} image(s): statistics need at least 2", batch.count),
        ));
    }
    Ok(batch)
}

/// The two feature sets of a batch's images.
pub struct BatchFeatures {
    /// Pool3 features `[n, 2048]` (FID, precision, recall).
    pub pool: Vec<f32>,
    /// Spatial features `[n, 2023]` (sFID: `mixed_6/conv`, 7 channels at 17×17).
    pub spatial: Vec<f32>,
}

/// The features of a batch, `batch_size` images at a time.
pub fn batch_features(
    net: &FidInception,
    batch: &ImageBatch,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> BatchFeatures {
    let mut pool = Vec::with_capacity(batch.count * FEATURES);
    let mut spatial = Vec::with_capacity(batch.count * SPATIAL_FEATURES);
    let mut done = 0;
    for (pixels, n, h, w) in &batch.groups {
        let per = h * w * 3;
        for start in (0..*n).step_by(batch_size.max(1)) {
            let b = batch_size.max(1).min(n - start);
            let images = &pixels[start * per..(start + b) * per];
            let (p, s) = net.features_and_spatial_uint8(images, b, *h, *w);
            pool.extend(p);
            spatial.extend(s);
            done += b;
            progress(done);
        }
    }
    BatchFeatures { pool, spatial }
}
