//! Training data for iddpm.
//!
//! - [`ImageFolder`]: jpg/jpeg/png/gif files below a folder, loaded as the reference does
//!   (box-halving, bicubic resize, centre crop, [−1, 1]) in Pillow's arithmetic
//!   ([`pil_resize`]), classes from file-name prefixes.
//! - [`fashion_mnist::embedded`]: 10,000 real images shipped in the binary.
//! - [`BatchLoader`]: endless, shuffled, resumable batches.
//! - [`convert`]: MNIST/Fashion-MNIST IDX files and CIFAR-10 batches to image folders.

#![warn(missing_docs)]

pub mod convert;
pub mod dataset;
pub mod error;
pub mod fashion_mnist;
#[doc(hidden)]
pub mod fuzzing;
pub mod idx;
pub mod image_folder;
pub mod npy;
pub mod npz;
pub mod pictures;
pub mod pil_resize;

pub use dataset::{Batch, BatchLoader, Dataset, InMemoryDataset, LoaderState, batch_ranges};
pub use error::{DataError, Result};
pub use image_folder::{
    ImageFolder, MAX_IMAGE_PIXELS, PilMode, decode_bounded, decode_image, list_image_files,
    load_image, preprocess_as,
};
