//! The Fashion-MNIST test split shipped inside iddpm (Zalando SE, MIT licence, from Debian's
//! `dataset-fashion-mnist`), zero-padded to 32×32, greyscale or as RGB: real data that
//! trains on a laptop.

use std::path::Path;

use crate::dataset::InMemoryDataset;
use crate::error::Result;
use crate::idx::parse_idx;

const IMAGES: &[u8] = include_bytes!("../../../data/fashion-mnist/t10k-images-idx3-ubyte.gz");
const LABELS: &[u8] = include_bytes!("../../../data/fashion-mnist/t10k-labels-idx1-ubyte.gz");

/// Class names of Fashion-MNIST, without underscores (they prefix file names).
pub const CLASS_NAMES: [&str; 10] = [
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];

/// Side of the padded images.
pub const RESOLUTION: usize = 32;

/// Pads 28×28 grey images by 2 pixels of black on every side and repeats the channel 3 times,
/// mapped to [−1, 1] (CHW).
pub fn pad_gray_28_to_rgb_32(pixels: &[u8]) -> Vec<f32> {
    pad_gray_28_to_32(pixels, 3)
}

/// Pads a 28×28 grey image by 2 pixels of black on every side, `channels` copies of it,
/// mapped to [−1, 1] (CHW).
pub fn pad_gray_28_to_32(pixels: &[u8], channels: usize) -> Vec<f32> {
    let mut out = vec![-1.0f32; channels * 32 * 32];
    for y in 0..28 {
        for x in 0..28 {
            let v = pixels[y * 28 + x] as f32 / 127.5 - 1.0;
            for c in 0..channels {
                out[(c * 32 + y + 2) * 32 + x + 2] = v;
            }
        }
    }
    out
}

/// The 10,000 embedded images with their labels, as RGB (three equal channels).
pub fn embedded() -> Result<InMemoryDataset> {
    embedded_with_channels(3)
}

/// The 10,000 embedded images with their labels, with `channels` copies of the grey values
/// (1: greyscale).
pub fn embedded_with_channels(channels: usize) -> Result<InMemoryDataset> {
    let images = parse_idx(IMAGES, Path::new("<embedded t10k-images>"))?;
    let labels = parse_idx(LABELS, Path::new("<embedded t10k-labels>"))?;
    let n = images.dims[0];
    let decoded = (0..n)
        .map(|i| pad_gray_28_to_32(&images.data[i * 784..(i + 1) * 784], channels))
        .collect();
    let labels = labels.data.iter().map(|&l| l as i64).collect();
    Ok(InMemoryDataset::new(decoded, Some(labels), RESOLUTION).with_channels(channels))
}
