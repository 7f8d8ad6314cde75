//! The loaders as the fuzz targets (`fuzz/`) and the corpus-replay test call them: each takes
//! untrusted bytes and may refuse them with an error, but must not panic, abort, overflow its
//! stack, hang or exhaust memory. Not part of the library's API.

use std::path::Path;

use iddpm_checkpoint::settings_json::parse_settings;
use iddpm_checkpoint::{
    TorchArchive, pickle, read_safetensors, safetensors_metadata_from_bytes, state_dict_from_bytes,
};

use crate::convert::cifar10_records;
use crate::idx::parse_idx;
use crate::image_folder::decode_image;
use crate::npy::NpyArray;
use crate::npz::read_npz_bytes;

/// A target: untrusted bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("pickle", pickle),
    ("torch_archive", torch_archive),
    ("safetensors", safetensors),
    ("npy", npy),
    ("npz", npz),
    ("idx", idx),
    ("cifar", cifar),
    ("image", image),
];

const NAME: &str = "fuzz-input";

/// Formats an error too, so that message building is exercised.
fn consume<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        std::hint::black_box(e.to_string());
    }
}

/// The pickle interpreter.
pub fn pickle(data: &[u8]) {
    consume(pickle::parse(data));
}

/// A PyTorch zip archive → its state dict and its TorchScript module tensors.
pub fn torch_archive(data: &[u8]) {
    match TorchArchive::from_bytes(data, Path::new(NAME)) {
        Ok(archive) => {
            consume(archive.state_dict());
            consume(archive.module_tensors());
        }
        Err(e) => consume::<(), _>(Err(e)),
    }
    consume(state_dict_from_bytes(data, Path::new(NAME)));
}

/// A safetensors file: its tensors, and the model settings its metadata may carry.
pub fn safetensors(data: &[u8]) {
    consume(read_safetensors(Path::new(NAME), data));
    match safetensors_metadata_from_bytes(data, Path::new(NAME)) {
        Ok(Some(meta)) => {
            if let Some(text) = meta.get("iddpm_settings") {
                consume(parse_settings(text));
            }
        }
        Ok(None) => {}
        Err(e) => consume::<(), _>(Err(e)),
    }
}

/// A `.npy` array.
pub fn npy(data: &[u8]) {
    consume(NpyArray::from_bytes(data, Path::new(NAME)));
}

/// A `.npz` archive.
pub fn npz(data: &[u8]) {
    consume(read_npz_bytes(data, Path::new(NAME)));
}

/// An IDX array, gzipped or not.
pub fn idx(data: &[u8]) {
    consume(parse_idx(data, Path::new(NAME)));
}

/// A CIFAR-10 batch, python (pickle) or binary.
pub fn cifar(data: &[u8]) {
    consume(cifar10_records(data, Path::new(NAME)));
}

/// An image file, decoded and preprocessed as the training loader does (to 32×32).
pub fn image(data: &[u8]) {
    consume(decode_image(data, Path::new(NAME), 32));
}
