//! Image folders as the reference reads them (`image_datasets.py`).

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage, ImageReader, Limits};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::pil_resize::{Filter, Pixels, premultiply_alpha, resize, unpremultiply_alpha};

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

/// How Pillow would hold a decoded file, which decides how the reference resizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilMode {
    /// `"1"`: one-bit images, resized nearest-neighbour.
    Bilevel,
    /// `"L"`: greyscale.
    Grey,
    /// `"LA"`: greyscale with alpha, resized with premultiplied alpha.
    GreyAlpha,
    /// `"RGB"`.
    Rgb,
    /// `"RGBA"`, resized with premultiplied alpha.
    Rgba,
    /// `"P"`: palette images (PNG colour type 3, most GIFs), resized nearest-neighbour.
    Palette,
}

impl PilMode {
    /// The mode of a decoded image when nothing else is known about its file.
    pub fn of(img: &DynamicImage) -> Self {
        match img.color() {
            ColorType::L8 | ColorType::L16 => PilMode::Grey,
            ColorType::La8 | ColorType::La16 => PilMode::GreyAlpha,
            ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F => PilMode::Rgba,
            _ => PilMode::Rgb,
        }
    }

    /// The mode Pillow gives `bytes` (a PNG or GIF file), refining [`PilMode::of`].
    pub fn of_file(bytes: &[u8], img: &DynamicImage) -> Self {
        let decoded = Self::of(img);
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 25 {
            // IHDR: bit depth at byte 24, colour type at byte 25.
            return match (bytes[25], bytes[24]) {
                (3, _) => PilMode::Palette,
                (0, 1) => PilMode::Bilevel,
                _ => decoded,
            };
        }
        if bytes.starts_with(b"GIF8") {
            return if gif_palette_is_needed(bytes) {
                PilMode::Palette
            } else {
                PilMode::Grey
            };
        }
        decoded
    }

    fn channels(self) -> usize {
        match self {
            PilMode::Bilevel | PilMode::Grey => 1,
            PilMode::GreyAlpha => 2,
            PilMode::Rgb | PilMode::Palette => 3,
            PilMode::Rgba => 4,
        }
    }
}

/// Whether Pillow keeps a GIF's first frame as a palette image: it does unless the colour
/// table that applies (the frame's own, else the global one) is absent or the identity grey
/// ramp (entry i = (i, i, i)), in which case the frame is plain greyscale.
fn gif_palette_is_needed(bytes: &[u8]) -> bool {
    let table_needed = |table: &[u8]| {
        table
            .chunks(3)
            .enumerate()
            .any(|(i, c)| c.iter().any(|&v| usize::from(v) != i))
    };
    let Some(&packed) = bytes.get(10) else {
        return true;
    };
    let mut at = 13;
    let mut global = None;
    if packed & 0x80 != 0 {
        let len = 3 << ((packed & 7) + 1);
        global = bytes.get(at..at + len);
        at += len;
    }
    // Skip extension blocks up to the first image descriptor.
    while let Some(&tag) = bytes.get(at) {
        match tag {
            0x21 => {
                at += 2;
                while let Some(&n) = bytes.get(at) {
                    at += 1 + usize::from(n);
                    if n == 0 {
                        break;
                    }
                }
            }
            0x2C => {
                let flags = bytes.get(at + 9).copied().unwrap_or(0);
                if flags & 0x80 != 0 {
                    let len = 3 << ((flags & 7) + 1);
                    return bytes.get(at + 10..at + 10 + len).is_none_or(table_needed);
                }
                break;
            }
            _ => break,
        }
    }
    global.is_some_and(table_needed)
}

/// Loads one image as the reference does: while the shorter side is at least twice the
/// target, halve it with a box filter; then resize so the shorter side is `resolution`
/// (bicubic), centre-crop to a square, and map to [−1, 1]. Returns CHW f32.
pub fn load_image(path: &Path, resolution: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_image(&bytes, path, resolution)
}

/// [`load_image`] of a file's bytes; `path` names it in errors. Decoding stays within the
/// `image` crate's default limits (512 MiB).
pub fn decode_image(bytes: &[u8], path: &Path, resolution: usize) -> Result<Vec<f32>> {
    decode_image_channels(bytes, path, resolution, 3)
}

/// [`decode_image`] with `channels` 3 (RGB) or 1 (greyscale, Pillow's "L" of the RGB crop).
pub fn decode_image_channels(
    bytes: &[u8],
    path: &Path,
    resolution: usize,
    channels: usize,
) -> Result<Vec<f32>> {
    let img = decode_bounded(bytes, path)?;
    let mode = PilMode::of_file(bytes, &img);
    Ok(to_chw(&preprocess_as(&img, mode, resolution), channels))
}

/// The most pixels a decoded image may have: 2²⁴ (16.8 megapixels, e.g. 4,096 × 4,096). The
/// decoder and the conversions after it hold a few copies of the pixels, so this bounds the
/// memory one picture can take, whatever a few header bytes claim.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 24;

/// Decodes an image file's bytes after checking its declared size against
/// [`MAX_IMAGE_PIXELS`]; the decoder is held to that size and to a matching allocation budget
/// (16-bit RGBA, twice over).
pub fn decode_bounded(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let undecodable =
        |e: &dyn std::fmt::Display| DataError::bad(path, format!("cannot decode image: {e}"));
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| undecodable(&e))
    };
    let (width, height) = reader()?.into_dimensions().map_err(|e| undecodable(&e))?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(DataError::bad(
            path,
            format!(
                "image is {width} × {height} pixels, more than the limit of {MAX_IMAGE_PIXELS}"
            ),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8 * 2);
    let mut decoder = reader()?;
    decoder.limits(limits);
    decoder.decode().map_err(|e| undecodable(&e))
}

/// The reference's resize-and-crop in Pillow's arithmetic: resampled in `mode` (premultiplied
/// alpha for LA/RGBA, nearest-neighbour for bilevel and palette images), then converted to
/// RGB and centre-cropped. Returns `resolution × resolution` RGB pixels.
pub fn preprocess_as(img: &DynamicImage, mode: PilMode, resolution: usize) -> Pixels {
    let mut px = pixels_in_mode(img, mode);
    let alpha = matches!(mode, PilMode::GreyAlpha | PilMode::Rgba);
    let nearest = matches!(mode, PilMode::Bilevel | PilMode::Palette);
    let (halve, fit) = if nearest {
        (Filter::Nearest, Filter::Nearest)
    } else {
        (Filter::Box, Filter::Bicubic)
    };
    // Pillow premultiplies alpha for each resize call and divides it out again afterwards.
    let pil_resize = |px: &Pixels, w: usize, h: usize, filter: Filter| {
        if !alpha || (w, h) == (px.width, px.height) {
            return resize(px, w, h, filter);
        }
        let mut pre = px.clone();
        premultiply_alpha(&mut pre);
        let mut out = resize(&pre, w, h, filter);
        unpremultiply_alpha(&mut out);
        out
    };
    while px.width.min(px.height) >= 2 * resolution {
        px = pil_resize(&px, px.width / 2, px.height / 2, halve);
    }
    let scale = resolution as f64 / px.width.min(px.height) as f64;
    // Python's round() rounds half to even.
    let nw = ((px.width as f64 * scale).round_ties_even() as usize).max(resolution);
    let nh = ((px.height as f64 * scale).round_ties_even() as usize).max(resolution);
    px = pil_resize(&px, nw, nh, fit);
    let (cy, cx) = ((nh - resolution) / 2, (nw - resolution) / 2);
    let mut out = Vec::with_capacity(resolution * resolution * 3);
    for y in cy..cy + resolution {
        for x in cx..cx + resolution {
            let p = &px.data[(y * px.width + x) * px.channels..][..px.channels];
            match px.channels {
                1 | 2 => out.extend_from_slice(&[p[0], p[0], p[0]]),
                _ => out.extend_from_slice(&p[..3]),
            }
        }
    }
    Pixels::new(resolution, resolution, 3, out)
}

/// The bytes Pillow would hold for `img` in `mode`. Sixteen-bit samples keep their high byte,
/// as Pillow reads 16-bit RGB(A) PNGs.
fn pixels_in_mode(img: &DynamicImage, mode: PilMode) -> Pixels {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<u8> = match img {
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let wide = img.to_rgba16();
            let rgba: Vec<u8> = wide.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            from_rgba(&rgba, mode)
        }
        _ => from_rgba(img.to_rgba8().as_raw(), mode),
    };
    Pixels::new(w, h, mode.channels(), data)
}

fn from_rgba(rgba: &[u8], mode: PilMode) -> Vec<u8> {
    let keep: &[usize] = match mode {
        PilMode::Bilevel | PilMode::Grey => &[0],
        PilMode::GreyAlpha => &[0, 3],
        PilMode::Rgb | PilMode::Palette => &[0, 1, 2],
        PilMode::Rgba => &[0, 1, 2, 3],
    };
    rgba.chunks(4)
        .flat_map(|p| keep.iter().map(move |&i| p[i]))
        .collect()
}

/// RGB pixels as CHW floats in [−1, 1]: the three channels, or (`channels` = 1) their grey
/// level as Pillow's `convert("L")` computes it, L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16
/// (exact for grey pictures, whose R = G = B).
fn to_chw(px: &Pixels, channels: usize) -> Vec<f32> {
    let n = px.width * px.height;
    let mut out = vec![0f32; channels * n];
    for (i, p) in px.data.chunks(3).enumerate() {
        if channels == 1 {
            let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
            let l = (19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16;
            out[i] = l as f32 / 127.5 - 1.0;
        } else {
            for c in 0..3 {
                out[c * n + i] = f32::from(p[c]) / 127.5 - 1.0;
            }
        }
    }
    out
}

/// A folder of images, decoded lazily, with optional class labels from file names.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    files: Vec<PathBuf>,
    labels: Option<Vec<i64>>,
    resolution: usize,
    classes: Vec<String>,
    channels: usize,
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
            channels: 3,
        })
    }

    /// The same folder read with `channels` channels: 3 (RGB) or 1 (greyscale, as Pillow's
    /// `convert("L")`).
    pub fn with_channels(self, channels: usize) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(DataError::bad(
                self.files
                    .first()
                    .map(|f| f.as_path())
                    .unwrap_or(Path::new(".")),
                format!(
                    "image files are read as RGB (3 channels) or greyscale (1), not {channels} \
                     channels"
                ),
            ));
        }
        Ok(Self { channels, ..self })
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

    fn channels(&self) -> usize {
        self.channels
    }

    fn get(&self, index: usize) -> Result<(Vec<f32>, Option<i64>)> {
        let path = &self.files[index];
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let image = decode_image_channels(&bytes, path, self.resolution, self.channels)?;
        Ok((image, self.labels.as_ref().map(|l| l[index])))
    }
}
