//! Dataset converters: CIFAR-10 python (pickled, as Python 2 wrote them) and binary batches,
//! and IDX files written at their own size or at the training size.

use std::path::PathBuf;

use iddpm_data::convert::{cifar10_to_folder, idx_to_folder};
use iddpm_data::load_image;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("iddpm-convert-tests-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two images, the first pure red, the second with a blue top-left pixel.
fn pixels() -> Vec<u8> {
    let mut data = vec![0u8; 2 * 3072];
    data[..1024].fill(255); // image 0, red plane
    data[3072 + 2048] = 200; // image 1, blue plane, pixel 0
    data
}

/// A pickle laid out as Python 2's cPickle wrote the CIFAR-10 python batches.
fn python2_batch() -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}', b'q', 0, b'('];
    p.extend_from_slice(b"U\x04data");
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x02M\x00\x0c\x86");
    p.extend_from_slice(b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T");
    let data = pixels();
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(&data);
    p.extend_from_slice(b"tb");
    p.extend_from_slice(b"U\x06labels](K\x03K\x05eu.");
    p
}

#[test]
fn python_batches_convert() {
    let d = dir("py");
    std::fs::write(d.join("data_batch_1"), python2_batch()).unwrap();
    std::fs::write(d.join("readme.html"), b"<html>").unwrap();
    let out = d.join("png");
    assert_eq!(cifar10_to_folder(&d, &out, None).unwrap(), 2);
    let red = image::open(out.join("cat_00000.png")).unwrap().to_rgb8();
    assert_eq!(red.get_pixel(5, 5).0, [255, 0, 0]);
    let dog = image::open(out.join("dog_00001.png")).unwrap().to_rgb8();
    assert_eq!(dog.get_pixel(0, 0).0, [0, 0, 200]);
}

#[test]
fn binary_batches_convert() {
    let d = dir("bin");
    let data = pixels();
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&data[..3072]);
    bytes.push(5);
    bytes.extend_from_slice(&data[3072..]);
    std::fs::write(d.join("data_batch_1.bin"), bytes).unwrap();
    let out = d.join("png");
    assert_eq!(cifar10_to_folder(&d, &out, None).unwrap(), 2);
    assert!(out.join("cat_00000.png").is_file() && out.join("dog_00001.png").is_file());
}

#[test]
fn other_files_are_clear_errors() {
    let d = dir("bad");
    std::fs::write(d.join("test_batch"), b"garbage that is no batch").unwrap();
    let err = cifar10_to_folder(&d, &d.join("png"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("test_batch"), "{err}");
    let empty = dir("empty");
    let err = cifar10_to_folder(&empty, &empty.join("png"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no CIFAR-10 batches"), "{err}");
}

/// An IDX file: big-endian magic (unsigned bytes, `dims.len()` dimensions), sizes, data.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[test]
fn idx_written_at_the_training_size_loads_as_the_original() {
    let d = dir("idx");
    // Two 28x28 greyscale images with structure a resize can change.
    let pixels: Vec<u8> = (0..2 * 784u32).map(|i| ((i * 37) % 251) as u8).collect();
    std::fs::write(d.join("images"), idx(&[2, 28, 28], &pixels)).unwrap();
    std::fs::write(d.join("labels"), idx(&[2], &[0, 9])).unwrap();
    let native = d.join("native");
    let sized = d.join("sized");
    assert_eq!(
        idx_to_folder(&d.join("images"), &d.join("labels"), &native, true, None).unwrap(),
        2
    );
    assert_eq!(
        idx_to_folder(&d.join("images"), &d.join("labels"), &sized, true, Some(32)).unwrap(),
        2
    );
    for name in ["tshirt_00000.png", "boot_00001.png"] {
        let small = image::open(native.join(name)).unwrap();
        let large = image::open(sized.join(name)).unwrap();
        assert_eq!((small.width(), large.width()), (28, 32), "{name}");
        // The training loader sees the same pixels either way.
        let a = load_image(&native.join(name), 32).unwrap();
        let b = load_image(&sized.join(name), 32).unwrap();
        assert_eq!(a, b, "{name}");
    }
}
