//! Image folders load like the reference's: any colour type, any size, classes from names.

use std::path::PathBuf;

use iddpm_data::{
    BatchLoader, Dataset, ImageFolder, InMemoryDataset, MAX_IMAGE_PIXELS, decode_image,
    fashion_mnist, load_image,
};
use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("iddpm-data-tests-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn in_range(v: &[f32]) -> bool {
    v.iter().all(|x| (-1.0..=1.0).contains(x))
}

#[test]
fn every_colour_type_and_shape_loads_as_rgb() {
    let d = dir("kinds");
    GrayImage::from_fn(40, 30, |x, _| Luma([(x * 6) as u8]))
        .save(d.join("gray_0.png"))
        .unwrap();
    RgbaImage::from_pixel(50, 50, Rgba([255, 0, 0, 128]))
        .save(d.join("rgba_0.png"))
        .unwrap();
    RgbImage::from_pixel(4, 4, Rgb([0, 255, 0]))
        .save(d.join("tiny_0.png"))
        .unwrap();
    RgbImage::from_fn(100, 20, |x, _| Rgb([x as u8, 0, 0]))
        .save(d.join("wide_0.jpg"))
        .unwrap();
    // GIF frames are palette images.
    let frame: ImageBuffer<Rgba<u8>, Vec<u8>> =
        ImageBuffer::from_pixel(16, 16, Rgba([0, 0, 255, 255]));
    frame.save(d.join("palette_0.gif")).unwrap();
    std::fs::write(d.join("notes.txt"), b"not an image").unwrap();
    let folder = ImageFolder::open(&d, 8, false).unwrap();
    assert_eq!(folder.len(), 5, "{:?}", folder.files());
    for i in 0..folder.len() {
        let (img, label) = folder.get(i).unwrap();
        assert_eq!(img.len(), 3 * 8 * 8);
        assert!(in_range(&img));
        assert!(label.is_none());
    }
    // Grey is replicated to three equal channels.
    let gray = load_image(&d.join("gray_0.png"), 8).unwrap();
    assert_eq!(&gray[..64], &gray[64..128]);
    // Pure green stays pure green through the resize.
    let tiny = load_image(&d.join("tiny_0.png"), 8).unwrap();
    assert!(tiny[..64].iter().all(|&v| v == -1.0) && tiny[64..128].iter().all(|&v| v == 1.0));
    // The palette image is blue.
    let pal = load_image(&d.join("palette_0.gif"), 8).unwrap();
    assert!(pal[128..].iter().all(|&v| v == 1.0));
}

#[test]
fn a_wide_image_is_centre_cropped() {
    let d = dir("crop");
    // Left half black, right half white, 64x16: the centre crop straddles the edge.
    RgbImage::from_fn(64, 16, |x, _| {
        if x < 32 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    })
    .save(d.join("a.png"))
    .unwrap();
    let img = load_image(&d.join("a.png"), 8).unwrap();
    assert!(img[0] < -0.9, "left column black: {}", img[0]);
    assert!(img[7] > 0.9, "right column white: {}", img[7]);
}

#[test]
fn classes_come_from_file_name_prefixes_and_listing_is_recursive_and_sorted() {
    let d = dir("classes");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    for name in ["dog_2.png", "cat_1.png", "sub/dog_0.png", "cat_0.png"] {
        RgbImage::from_pixel(8, 8, Rgb([1, 2, 3]))
            .save(d.join(name))
            .unwrap();
    }
    let folder = ImageFolder::open(&d, 8, true).unwrap();
    let names: Vec<String> = folder
        .files()
        .iter()
        .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["cat_0.png", "cat_1.png", "dog_2.png", "sub/dog_0.png"]
    );
    assert_eq!(folder.classes(), &["cat".to_string(), "dog".to_string()]);
    let labels: Vec<i64> = (0..4).map(|i| folder.get(i).unwrap().1.unwrap()).collect();
    assert_eq!(labels, vec![0, 0, 1, 1]);
}

#[test]
fn a_corrupt_image_is_an_error_naming_the_file() {
    let d = dir("corrupt");
    std::fs::write(
        d.join("broken.png"),
        b"\x89PNG\r\n\x1a\nthis is not really a png",
    )
    .unwrap();
    let folder = ImageFolder::open(&d, 8, false).unwrap();
    let err = folder.get(0).unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
}

/// A GIF whose screen and only frame claim `width × height` pixels, with no pixel data.
fn gif_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    for v in [width, height] {
        gif.extend_from_slice(&v.to_le_bytes());
    }
    gif.extend_from_slice(&[0, 0, 0, 0x2C, 0, 0, 0, 0]);
    for v in [width, height] {
        gif.extend_from_slice(&v.to_le_bytes());
    }
    gif.extend_from_slice(&[0, 8, 0, 0x3B]);
    gif
}

#[test]
fn an_image_claiming_billions_of_pixels_is_refused_before_decoding() {
    // 60,000 × 60,000 in 30 bytes: decoding would ask for 14 GB.
    let path = std::path::Path::new("huge.gif");
    let err = decode_image(&gif_claiming(60_000, 60_000), path, 32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("huge.gif"), "{err}");
    assert!(err.contains("60000 × 60000"), "{err}");
    assert!(err.contains(&MAX_IMAGE_PIXELS.to_string()), "{err}");
    // Just inside the limit, the missing pixel data is the error instead.
    let err = decode_image(&gif_claiming(4096, 4096), path, 32)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("limit"), "{err}");
}

#[test]
fn an_empty_or_missing_folder_is_an_error() {
    let d = dir("empty");
    let err = ImageFolder::open(&d, 8, false).unwrap_err().to_string();
    assert!(err.contains("no images"), "{err}");
    let err = ImageFolder::open(&d.join("nope"), 8, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn the_loader_is_reproducible_shuffled_and_resumable() {
    let data = InMemoryDataset::new((0..10).map(|i| vec![i as f32; 3]).collect(), None, 1);
    let take = |loader: &mut BatchLoader| -> Vec<f32> {
        (0..7)
            .flat_map(|_| loader.next_batch().unwrap().images.into_iter().step_by(3))
            .collect()
    };
    let a = take(&mut BatchLoader::new(&data, 3, 5).unwrap());
    let b = take(&mut BatchLoader::new(&data, 3, 5).unwrap());
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(
        a[..9].to_vec(),
        (0..9).map(|i| i as f32).collect::<Vec<_>>(),
        "shuffled"
    );
    // Each pass of 3 batches (drop_last) holds distinct images.
    let mut first_pass = a[..9].to_vec();
    first_pass.sort_by(|x, y| x.partial_cmp(y).unwrap());
    first_pass.dedup();
    assert_eq!(first_pass.len(), 9);
    let mut l = BatchLoader::new(&data, 3, 5).unwrap();
    for _ in 0..4 {
        l.next_batch().unwrap();
    }
    let mut resumed = BatchLoader::resume(&data, 3, l.state()).unwrap();
    assert_eq!(resumed.next_batch().unwrap(), l.next_batch().unwrap());
}

#[test]
fn the_embedded_dataset_is_fashion_mnist_padded_to_32() {
    let data = fashion_mnist::embedded().unwrap();
    assert_eq!(data.len(), 10_000);
    let (img, label) = data.get(0).unwrap();
    assert_eq!(img.len(), 3 * 32 * 32);
    assert_eq!(label, Some(9), "the first test image is an ankle boot");
    // The 2-pixel border is black (−1) and the three channels are equal.
    assert!(img[..64].iter().all(|&v| v == -1.0));
    assert_eq!(&img[..1024], &img[1024..2048]);
    assert!(img.iter().any(|&v| v > 0.0));
}

/// Files made and loaded by Pillow (`bench/make_pil_fixtures.py`, the reference's loading steps):
/// every mode, odd sizes, upscaling, box halving. iddpm must give the same bytes.
#[test]
fn images_load_pixel_for_pixel_as_pillow_loads_them() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pil");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let source = dir.join(case["source"].as_str().unwrap());
        let res = case["resolution"].as_u64().unwrap() as usize;
        let expected = image::open(dir.join(case["expected"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let got = load_image(&source, res).unwrap();
        let n = res * res;
        let mut off = 0;
        let mut worst = 0i32;
        for (i, p) in expected.pixels().enumerate() {
            for c in 0..3 {
                let level = ((got[c * n + i] + 1.0) * 127.5).round() as i32;
                let d = (level - p[c] as i32).abs();
                worst = worst.max(d);
                off += usize::from(d != 0);
            }
        }
        if source.extension().is_some_and(|e| e == "jpg") {
            // JPEG decoders differ (image-rs vs libjpeg): only close, not equal.
            eprintln!(
                "{}: {off} of {} values differ, by up to {worst}",
                source.display(),
                3 * n
            );
            assert!(worst <= 8, "{}: JPEG off by {worst}", source.display());
        } else if off > 0 {
            failures.push(format!(
                "{} (mode {}) at {res}: {off} of {} values differ, by up to {worst}",
                source.display(),
                case["mode"],
                3 * n
            ));
        }
        checked += 1;
    }
    eprintln!("{checked} Pillow cases checked");
    assert!(checked >= 30);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn greyscale_reads_one_channel_as_pillows_l() {
    let grey = fashion_mnist::embedded_with_channels(1).unwrap();
    let rgb = fashion_mnist::embedded().unwrap();
    assert_eq!(grey.channels(), 1);
    let (one, _) = grey.get(3).unwrap();
    let (three, _) = rgb.get(3).unwrap();
    assert_eq!(one.len(), 32 * 32);
    assert_eq!(&one[..], &three[..1024]);
    // The held-out split keeps the channel count.
    let mut split = grey.clone();
    assert_eq!(split.split_off(10).channels(), 1);

    let d = dir("grey");
    GrayImage::from_pixel(8, 8, Luma([77]))
        .save(d.join("g_0.png"))
        .unwrap();
    RgbImage::from_pixel(8, 8, Rgb([200, 100, 50]))
        .save(d.join("c_1.png"))
        .unwrap();
    let folder = ImageFolder::open(&d, 8, false)
        .unwrap()
        .with_channels(1)
        .unwrap();
    assert_eq!(folder.channels(), 1);
    let level = |i: usize| {
        let (img, _) = folder.get(i).unwrap();
        assert_eq!(img.len(), 64);
        ((img[0] + 1.0) * 127.5).round() as u32
    };
    let names: Vec<String> = folder
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let (c, g) = if names[0].ends_with("c_1.png") {
        (0, 1)
    } else {
        (1, 0)
    };
    // Grey pictures keep their level; colour ones get Pillow's L = (19595 R + 38470 G +
    // 7471 B + 32768) >> 16 = 124 for (200, 100, 50).
    assert_eq!(level(g), 77);
    assert_eq!(level(c), 124);
    let err = ImageFolder::open(&d, 8, false)
        .unwrap()
        .with_channels(2)
        .unwrap_err();
    assert!(err.to_string().contains("not 2 channels"), "{err}");
}
