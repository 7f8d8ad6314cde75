//! `iddpm data`: turn the usual dataset files into image folders named like the reference's
//! `datasets/cifar10.py` output (`{class}_{index:05}.png`).

use std::path::Path;

use image::{DynamicImage, GrayImage, RgbImage};

use crate::error::{DataError, Result};
use crate::fashion_mnist::CLASS_NAMES as FASHION_CLASSES;
use crate::idx::read_idx;
use crate::image_folder::{PilMode, preprocess_as};

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

/// Writes `img` as a PNG, first resized and centre-cropped to `image_size` as the training
/// loader would (so a folder made at the training size holds exactly what the model sees, and
/// can serve as an FID reference batch).
fn save(path: &Path, img: DynamicImage, image_size: Option<usize>) -> Result<()> {
    let img = match image_size {
        Some(size) => {
            let px = preprocess_as(&img, PilMode::of(&img), size);
            let rgb =
                RgbImage::from_raw(size as u32, size as u32, px.data).expect("size x size x 3");
            match img {
                DynamicImage::ImageLuma8(_) => DynamicImage::ImageRgb8(rgb).to_luma8().into(),
                _ => DynamicImage::ImageRgb8(rgb),
            }
        }
        None => img,
    };
    img.save(path)
        .map_err(|e| DataError::bad(path, format!("cannot write PNG: {e}")))
}

/// Writes an IDX image file and its label file (MNIST or Fashion-MNIST) as PNGs into `out`,
/// at their own size or, with `image_size`, resized as the training loader resizes them.
/// Returns the number of images written.
pub fn idx_to_folder(
    images: &Path,
    labels: &Path,
    out: &Path,
    fashion: bool,
    image_size: Option<usize>,
) -> Result<usize> {
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
        save(&path, img.into(), image_size)?;
    }
    Ok(n)
}

/// The records of a CIFAR-10 python batch (`data_batch_1`, `test_batch`: a pickled dict with
/// `data` uint8 [N, 3072] and `labels`), read with iddpm's pickle reader (no code runs).
fn cifar10_python_records(path: &Path, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let root = iddpm_checkpoint::pickle::parse(bytes).map_err(|m| DataError::bad(path, m))?;
    let data = root
        .dict_get("data")
        .and_then(|v| v.as_numpy())
        .ok_or_else(|| {
            DataError::bad(path, "no uint8 `data` array: not a CIFAR-10 python batch")
        })?;
    let labels = match root.dict_get("labels") {
        Some(iddpm_checkpoint::pickle::Value::List(l)) => l
            .iter()
            .map(|v| match v {
                iddpm_checkpoint::pickle::Value::Int(i) => u8::try_from(*i)
                    .map_err(|_| DataError::bad(path, format!("label {i} is not a class index"))),
                _ => Err(DataError::bad(path, "a label is not an integer")),
            })
            .collect::<Result<Vec<u8>>>()?,
        _ => {
            return Err(DataError::bad(
                path,
                "no `labels` list: not a CIFAR-10 python batch",
            ));
        }
    };
    if data.dtype != "u1"
        || data.shape.len() != 2
        || data.shape[1] != 3072
        || data.shape[0] != labels.len()
        || data.data.len() != labels.len() * 3072
    {
        return Err(DataError::bad(
            path,
            format!(
                "unexpected data: shape {:?}, dtype {}, {} bytes, for {} labels; a CIFAR-10 \
                 batch holds uint8 [N, 3072] and N labels",
                data.shape,
                data.dtype,
                data.data.len(),
                labels.len()
            ),
        ));
    }
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let mut rec = vec![l];
            rec.extend_from_slice(&data.data[i * 3072..(i + 1) * 3072]);
            rec
        })
        .collect())
}

/// The records (one label byte, then 3072 pixel bytes in CHW order) of a CIFAR-10 batch: the
/// python version (a pickle) or the binary one; `path` names it in errors.
pub fn cifar10_records(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>> {
    if bytes.first() == Some(&0x80) {
        cifar10_python_records(path, bytes)
    } else if !bytes.is_empty() && bytes.len().is_multiple_of(3073) {
        Ok(bytes.chunks_exact(3073).map(<[u8]>::to_vec).collect())
    } else {
        Err(DataError::bad(
            path,
            "neither a CIFAR-10 python batch nor a binary batch (3073-byte records)",
        ))
    }
}

/// Writes CIFAR-10 batches found in `input` (a file or a folder) as PNGs into `out`: the python
/// version (`data_batch_1` ... `test_batch`, pickles) or the binary version (`*.bin`, records of
/// one label byte and 3072 pixel bytes). With `image_size`, the images are resized as the
/// training loader resizes them.
pub fn cifar10_to_folder(input: &Path, out: &Path, image_size: Option<usize>) -> Result<usize> {
    let files: Vec<std::path::PathBuf> = if input.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(input)
            .map_err(|e| DataError::io(input, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                name.contains("_batch") && (name.ends_with(".bin") || !name.contains('.'))
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
            "no CIFAR-10 batches (data_batch_N, test_batch, or their .bin versions) found",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let mut index = 0;
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
        let records = cifar10_records(&bytes, &file)?;
        for rec in &records {
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
            save(&path, img.into(), image_size)?;
            index += 1;
        }
    }
    Ok(index)
}
