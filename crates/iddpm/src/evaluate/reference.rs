//! The reference side of `iddpm eval`: a statistics file, images, or the features an earlier
//! run computed for the same images (cached under `~/.cache/iddpm/ref-stats`).

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use iddpm_checkpoint::FileDigest;
use iddpm_data::list_image_files;
use iddpm_eval::FeatureStats;
use iddpm_eval::fid_inception::{FidInception, SPATIAL_FEATURES};

use super::FEATURES;
use super::batch::{ImageBatch, batch_features, batch_from_arrays, load_batch};
use crate::error::{Error, Result};
use crate::io::{NpyArray, NpyData, read_npz, write_npz};

/// A reference batch as read from disk, before any network runs.
pub enum Reference {
    /// `mu`/`sigma` of a statistics file (and `mu_s`/`sigma_s`, as guided-diffusion's
    /// reference batches have, for sFID): enough for the FID, not for precision and recall.
    Stats(FeatureStats, Option<FeatureStats>),
    /// Statistics and features an earlier run computed for this file.
    Cached {
        /// Their mean and covariance.
        stats: FeatureStats,
        /// The spatial features' mean and covariance.
        spatial: FeatureStats,
        /// Pool features `[n, 2048]`.
        features: Vec<f32>,
    },
    /// Images that still go through the network; their features are cached afterwards.
    Images {
        /// The decoded images.
        batch: ImageBatch,
        /// The file or folder they came from.
        path: PathBuf,
        /// Where their features go: keyed by the files as they were read, so that a file
        /// changed while the network runs is not stored under its new state.
        cache: Option<PathBuf>,
    },
}

/// Reference statistics, with the features precision and recall need where there are any.
pub(super) struct RefStats {
    pub stats: FeatureStats,
    pub spatial: Option<FeatureStats>,
    pub features: Option<Vec<f32>>,
    pub count: usize,
}

impl Reference {
    /// Reads `path`, each file once: the cache entry of its images if there is one, else the
    /// npz (statistics or images) or the image folder.
    pub fn load(path: &Path) -> Result<Self> {
        let cache = cache_path(path);
        if let Some((stats, spatial, features)) = cache.as_deref().and_then(cached_reference) {
            mark_used(cache.as_deref());
            return Ok(Self::Cached {
                stats,
                spatial,
                features,
            });
        }
        if path.is_dir() {
            let batch = load_batch(path)?;
            let path = path.to_path_buf();
            return Ok(Self::Images { batch, path, cache });
        }
        let arrays = read_npz(path)?;
        if !arrays.iter().any(|(n, _)| n == "arr_0")
            && let Some(stats) = stats_from_npz(&arrays, path)?
        {
            let spatial = spatial_stats_from_npz(&arrays, path)?;
            return Ok(Self::Stats(stats, spatial));
        }
        let batch = batch_from_arrays(&arrays, path)?;
        let path = path.to_path_buf();
        Ok(Self::Images { batch, path, cache })
    }

    /// The statistics, running `net` over images (and caching their features).
    pub(super) fn into_stats(
        self,
        net: &FidInception,
        batch_size: usize,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<RefStats> {
        match self {
            Self::Stats(stats, spatial) => Ok(RefStats {
                stats,
                spatial,
                features: None,
                count: 0,
            }),
            Self::Cached {
                stats,
                spatial,
                features,
            } => {
                let count = features.len() / FEATURES;
                progress("reference (cached)", count, count);
                Ok(RefStats {
                    stats,
                    spatial: Some(spatial),
                    features: Some(features),
                    count,
                })
            }
            Self::Images { batch, path, cache } => {
                image_stats(net, &batch, &path, cache.as_deref(), batch_size, progress)
            }
        }
    }
}

/// Features and statistics of reference images, written to the cache for the next run.
fn image_stats(
    net: &FidInception,
    batch: &ImageBatch,
    path: &Path,
    cache: Option<&Path>,
    batch_size: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RefStats> {
    let n = batch.count;
    let all = batch_features(net, batch, batch_size, &mut |d| progress("reference", d, n));
    let stats_of = |values: &[f32], d: usize| {
        let as64: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        FeatureStats::from_features(&as64, n, d).ok_or_else(|| Error::file(path, "too few images"))
    };
    let stats = stats_of(&all.pool, FEATURES)?;
    let spatial = stats_of(&all.spatial, SPATIAL_FEATURES)?;
    if let Some(cache) = cache {
        write_cache(cache, &stats, &spatial, &all.pool, n);
    }
    Ok(RefStats {
        stats,
        spatial: Some(spatial),
        features: Some(all.pool),
        count: n,
    })
}

/// Keeps statistics and features for the next run; a cache that cannot be written only costs
/// that run the time to compute them again.
fn write_cache(
    cache: &Path,
    stats: &FeatureStats,
    spatial: &FeatureStats,
    features: &[f32],
    n: usize,
) {
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let (mu, sigma) = stats_arrays(stats);
    let (mu_s, sigma_s) = stats_arrays(spatial);
    let feats = NpyArray {
        shape: vec![n, FEATURES],
        data: NpyData::F32(features.to_vec()),
    };
    let _ = write_npz(
        cache,
        &[
            ("mu", &mu),
            ("sigma", &sigma),
            ("mu_s", &mu_s),
            ("sigma_s", &sigma_s),
            ("features", &feats),
        ],
    );
    if let Some(dir) = cache.parent() {
        prune_cache(dir, KEPT_REFERENCES);
    }
}

/// `mu` and `sigma` as arrays (nalgebra stores column-major; sigma is symmetric, so the order
/// does not matter).
fn stats_arrays(stats: &FeatureStats) -> (NpyArray, NpyArray) {
    let d = stats.mu.len();
    (
        NpyArray {
            shape: vec![d],
            data: NpyData::F64(stats.mu.as_slice().to_vec()),
        },
        NpyArray {
            shape: vec![d, d],
            data: NpyData::F64(stats.sigma.as_slice().to_vec()),
        },
    )
}

/// Cache entries kept: each holds a 2048 × 2048 covariance (32 MiB) and the features, so the
/// cache keeps the references in use, not every file ever evaluated.
const KEPT_REFERENCES: usize = 4;

/// Makes a cache entry the most recently used, so pruning keeps it.
fn mark_used(entry: Option<&Path>) {
    if let Some(file) = entry.and_then(|p| std::fs::File::options().append(true).open(p).ok()) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes all but the `keep` most recently used entries of the cache folder `dir`.
fn prune_cache(dir: &Path, keep: usize) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = listing
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "npz"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, stale) in entries.into_iter().skip(keep) {
        let _ = std::fs::remove_file(stale);
    }
}

/// The cache entry of `path`: named by digests of its canonical path and of its
/// [`content_stamp`], so that features are reused only for the very same files.
fn cache_path(path: &Path) -> Option<PathBuf> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let place = FileDigest::of(canonical.to_string_lossy().as_bytes()).fnv1a;
    let state = FileDigest::of(content_stamp(path)?.as_bytes()).fnv1a;
    let home = std::env::var_os("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".cache/iddpm/ref-stats")
            .join(format!("{place:016x}-{state:016x}.npz")),
    )
}

/// What changes whenever the reference's images do: `size:mtime` (nanoseconds) of a file, or one
/// `name\0size:mtime` line per image of a folder, in listing order. A folder's own time would
/// miss an image rewritten in place.
fn content_stamp(path: &Path) -> Option<String> {
    let stamp = |file: &Path| -> Option<String> {
        let meta = std::fs::metadata(file).ok()?;
        let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(format!("{}:{}", meta.len(), modified.as_nanos()))
    };
    if !path.is_dir() {
        return stamp(path);
    }
    let mut lines = String::new();
    for file in list_image_files(path).ok()? {
        let name = file.strip_prefix(path).unwrap_or(&file).to_string_lossy();
        lines.push_str(&format!("{name}\0{}\n", stamp(&file)?));
    }
    Some(lines)
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

/// `mu_s`/`sigma_s` of a statistics file (sFID's spatial features): None when it has none, an
/// error naming the file when their shapes are not `[2023]`, `[2023, 2023]`.
fn spatial_stats_from_npz(
    arrays: &[(String, NpyArray)],
    path: &Path,
) -> Result<Option<FeatureStats>> {
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, a)| a);
    let (Some(mu), Some(sigma)) = (get("mu_s"), get("sigma_s")) else {
        return Ok(None);
    };
    let d = SPATIAL_FEATURES;
    if mu.shape != [d] || sigma.shape != [d, d] {
        return Err(Error::file(
            path,
            format!(
                "mu_s {:?} and sigma_s {:?} must have the shapes of the spatial features, \
                 [{d}] and [{d}, {d}]",
                mu.shape, sigma.shape
            ),
        ));
    }
    Ok(Some(FeatureStats {
        mu: nalgebra::DVector::from_vec(mu.to_f64()),
        sigma: nalgebra::DMatrix::from_row_slice(d, d, &sigma.to_f64()),
    }))
}

/// A cache entry's statistics (pool and spatial) and features, if it is whole (a damaged
/// one, or one written before sFID, is recomputed).
fn cached_reference(path: &Path) -> Option<(FeatureStats, FeatureStats, Vec<f32>)> {
    let arrays = read_npz(path).ok()?;
    let stats = stats_from_npz(&arrays, path).ok()??;
    let spatial = spatial_stats_from_npz(&arrays, path).ok()??;
    let (_, features) = arrays.iter().find(|(n, _)| n == "features")?;
    let count = features.shape.first().copied()?;
    (count >= 2 && features.shape == [count, FEATURES]).then(|| (stats, spatial, features.to_f32()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one test's files.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iddpm-ref-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_statistics_file_loads_as_statistics() {
        let path = scratch("stats").join("ref.npz");
        let mu = NpyArray {
            shape: vec![FEATURES],
            data: NpyData::F64(vec![0.5; FEATURES]),
        };
        let sigma = NpyArray {
            shape: vec![FEATURES, FEATURES],
            data: NpyData::F64(vec![0.0; FEATURES * FEATURES]),
        };
        write_npz(&path, &[("mu", &mu), ("sigma", &sigma)]).unwrap();
        match Reference::load(&path).unwrap() {
            Reference::Stats(stats, spatial) => {
                assert_eq!(stats.mu[7], 0.5);
                assert!(spatial.is_none());
            }
            _ => panic!("a mu/sigma file must load as statistics"),
        }
    }

    #[test]
    fn an_image_file_loads_as_images_and_a_file_without_either_is_an_error() {
        let dir = scratch("images");
        let images = NpyArray {
            shape: vec![3, 4, 4, 1],
            data: NpyData::U8((0..48).collect()),
        };
        write_npz(&dir.join("ref.npz"), &[("arr_0", &images)]).unwrap();
        match Reference::load(&dir.join("ref.npz")).unwrap() {
            Reference::Images { batch, .. } => {
                assert_eq!(batch.count, 3);
                // Grey images are repeated over three channels.
                assert_eq!(&batch.groups[0].0[..6], &[0, 0, 0, 1, 1, 1]);
            }
            _ => panic!("an arr_0 file must load as images"),
        }
        let other = NpyArray {
            shape: vec![2],
            data: NpyData::F64(vec![1.0, 2.0]),
        };
        write_npz(&dir.join("other.npz"), &[("x", &other)]).unwrap();
        let Err(err) = Reference::load(&dir.join("other.npz")) else {
            panic!("a file with neither images nor statistics must be refused");
        };
        let message = err.to_string();
        assert!(
            message.contains("other.npz") && message.contains("arr_0"),
            "{message}"
        );
    }

    #[test]
    fn a_folder_gets_a_new_cache_entry_when_an_image_changes_in_place() {
        let dir = scratch("stamp");
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        let write = |name: &str, bytes: &[u8], at: std::time::SystemTime| {
            std::fs::write(dir.join(name), bytes).unwrap();
            let file = std::fs::File::options()
                .append(true)
                .open(dir.join(name))
                .unwrap();
            file.set_modified(at).unwrap();
        };
        write("a.png", b"one", then);
        write("b.png", b"two", then);
        let first = cache_path(&dir).unwrap();
        assert_eq!(cache_path(&dir).unwrap(), first, "the key must be stable");
        // Same name, same size, one second later: the folder's own time need not change.
        write("b.png", b"2wo", then + std::time::Duration::from_secs(1));
        let edited = cache_path(&dir).unwrap();
        assert_ne!(edited, first);
        write("c.png", b"three", then);
        assert_ne!(cache_path(&dir).unwrap(), edited);
        // Files that are not images do not count.
        let with_images = cache_path(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        assert_eq!(cache_path(&dir).unwrap(), with_images);
    }

    #[test]
    fn the_cache_keeps_only_the_most_recently_used_entries() {
        let dir = scratch("prune");
        let start = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        for i in 0..6u64 {
            let path = dir.join(format!("{i}.npz"));
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(start + std::time::Duration::from_secs(10 * i))
                .unwrap();
        }
        // The oldest entry was just used: it stays, and the next oldest go.
        mark_used(Some(&dir.join("0.npz")));
        prune_cache(&dir, 3);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["0.npz", "4.npz", "5.npz"]);
    }
}
