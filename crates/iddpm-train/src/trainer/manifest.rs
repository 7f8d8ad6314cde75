//! What a model checkpoint records of its companions (optimizer and EMA files), so that a
//! resume uses exactly the files that were saved with it, or refuses.

use std::path::Path;

use iddpm_checkpoint::FileDigest;

use crate::error::{Result, TrainError};

/// Metadata keys of the record.
const RUN_ID: &str = "run_id";
const STEP: &str = "step";
const COMPANION_PREFIX: &str = "companion:";

/// The model file's record of its run, step and companion files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The run that wrote the files (kept across resumes).
    pub run_id: String,
    /// The step they were saved at.
    pub step: u64,
    /// File name → digest of each companion, in writing order.
    pub companions: Vec<(String, FileDigest)>,
}

impl Manifest {
    /// The record as safetensors metadata entries.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut meta = vec![
            (RUN_ID.to_string(), self.run_id.clone()),
            (STEP.to_string(), self.step.to_string()),
        ];
        meta.extend(
            self.companions
                .iter()
                .map(|(name, d)| (format!("{COMPANION_PREFIX}{name}"), d.to_text())),
        );
        meta
    }

    /// The record in a model file's metadata; `None` when it has none (a reference `.pt`, or a
    /// checkpoint from an iddpm older than the record).
    pub fn from_metadata(meta: &[(String, String)], path: &Path) -> Result<Option<Self>> {
        let get = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let Some(run_id) = get(RUN_ID) else {
            return Ok(None);
        };
        let bad = |what: String| TrainError::Other(format!("{}: {what}", path.display()));
        let step = get(STEP)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the checkpoint's step is missing from its metadata".into()))?;
        let mut companions = Vec::new();
        for (key, value) in meta {
            if let Some(name) = key.strip_prefix(COMPANION_PREFIX) {
                let digest = FileDigest::from_text(value)
                    .ok_or_else(|| bad(format!("unreadable record of {name}: {value:?}")))?;
                companions.push((name.to_string(), digest));
            }
        }
        companions.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(Self {
            run_id: run_id.clone(),
            step,
            companions,
        }))
    }

    /// Checks that the companion `name` is recorded, present in `dir` and unchanged.
    pub fn verify(&self, dir: &Path, name: &str, model: &Path) -> Result<()> {
        let refuse = |why: String| {
            TrainError::Other(format!(
                "{}: {why}; its optimizer and EMA files must be the ones saved with it (run {}, \
                 step {}). To start from its weights alone, with a fresh optimizer and EMA, pass \
                 --resume_weights_only True",
                model.display(),
                self.run_id,
                self.step
            ))
        };
        let Some((_, recorded)) = self.companions.iter().find(|(n, _)| n == name) else {
            return Err(refuse(format!("{name} was not saved with this checkpoint")));
        };
        let path = dir.join(name);
        if !path.exists() {
            return Err(refuse(format!("{} is missing", path.display())));
        }
        let found = FileDigest::of_file(&path)?;
        if found != *recorded {
            return Err(refuse(format!(
                "{} is not the file saved with it ({} bytes, hash {:016x}; expected {} bytes, \
                 hash {:016x})",
                path.display(),
                found.size,
                found.fnv1a,
                recorded.size,
                recorded.fnv1a
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_metadata() {
        let m = Manifest {
            run_id: "00ff".into(),
            step: 12,
            companions: vec![
                ("ema_0.9999_000012.safetensors".into(), FileDigest::of(b"e")),
                ("opt000012.safetensors".into(), FileDigest::of(b"o")),
            ],
        };
        let meta = m.to_metadata();
        let p = Path::new("model000012.safetensors");
        assert_eq!(Manifest::from_metadata(&meta, p).unwrap(), Some(m));
        assert_eq!(Manifest::from_metadata(&[], p).unwrap(), None);
    }
}
