//! `iddpm data`: turn the usual dataset files into image folders named like the reference's
//! `datasets/cifar10.py` output (`{class}_{index:05}.png`).

use std::path::Path;

use image::{GrayImage, RgbImage};

use crate::error::{DataError, Result};
use crate::fashion_mnist::CLASS_NAMES as FASHION_CLASSES;
use crate::idx::read_idx;

/// CIFAR-10 class names.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

fn save(path: &Path, result: image::ImageResult<()>) -> Result<()> {
    result.map_err(|e| DataError::bad(path, format!("cannot write PNG: {e}")))
}

/// Writes an IDX image file and its label file (MNIST or Fashion-MNIST) as PNGs into `out`.
/// Returns the number of images written.
pub fn idx_to_folder(images: &Path, labels: &Path, out: &Path, fashion: bool) -> Result<usize> {
    let imgs = read_idx(images)?;
    let labs = read_idx(labels)?;
    if imgs.dims.len() != 3 || labs.dims.len() != 1 || imgs.dims[0] != labs.dims[0] {
        return Err(DataError::bad(
            images,
            format!(
                "shape {:?} does not match labels {:?}",
                imgs.dims, labs.dims
            ),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let (n, h, w) = (imgs.dims[0], imgs.dims[1], imgs.dims[2]);
    for i in 0..n {
        let label = labs.data[i] as usize;
        let class = if fashion {
            FASHION_CLASSES
                .get(label)
                .copied()
                .unwrap_or("unknown")
                .to_string()
        } else {
            label.to_string()
        };
        let img = GrayImage::from_raw(
            w as u32,
            h as u32,
            imgs.data[i * h * w..(i + 1) * h * w].to_vec(),
        )
        .expect("sizes checked");
        let path = out.join(format!("{class}_{i:05}.png"));
        save(&path, img.save(&path))?;
    }
    Ok(n)
}

/// Writes CIFAR-10 binary batches (`data_batch_*.bin` / `test_batch.bin`: records of one label
/// byte and 3072 pixel bytes) found in `input` (a file or a folder) as PNGs into `out`.
pub fn cifar10_to_folder(input: &Path, out: &Path) -> Result<usize> {
    let files: Vec<std::path::PathBuf> = if input.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(input)
            .map_err(|e| DataError::io(input, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "bin")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains("batch"))
            })
            .collect();
        f.sort();
        f
    } else {
        vec![input.to_path_buf()]
    };
    if files.is_empty() {
        return Err(DataError::bad(
            input,
            "no CIFAR-10 binary batches (*batch*.bin) found; download the binary version",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let mut index = 0;
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
        if bytes.len() % 3073 != 0 {
            return Err(DataError::bad(
                &file,
                "size is not a multiple of 3073 bytes: not a CIFAR-10 binary batch",
            ));
        }
        for rec in bytes.chunks_exact(3073) {
            let class = CIFAR10_CLASSES
                .get(rec[0] as usize)
                .ok_or_else(|| DataError::bad(&file, "label outside 0..10"))?;
            let mut rgb = vec![0u8; 3072];
            for p in 0..1024 {
                for c in 0..3 {
                    rgb[p * 3 + c] = rec[1 + c * 1024 + p];
                }
            }
            let img = RgbImage::from_raw(32, 32, rgb).expect("32x32x3");
            let path = out.join(format!("{class}_{index:05}.png"));
            save(&path, img.save(&path))?;
            index += 1;
        }
    }
    Ok(index)
}
