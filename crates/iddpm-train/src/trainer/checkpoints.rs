//! Saving a run (model, EMAs, optimizer and everything an exact resume needs) and resuming it.
//!
//! The companions (optimizer, EMAs) are written first and the model last; the model file
//! records the run id, the step and each companion's size and hash ([`Manifest`]). A crash at
//! any moment therefore leaves either a complete checkpoint or none under the new step's model
//! name, and a resume uses exactly the files saved together, or refuses with a clear error.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use iddpm_checkpoint::{
    FileDigest, StateDict, TensorEntry, load_state_dict, remove_stale_temporaries,
    write_safetensors,
};
use iddpm_data::{BatchLoader, LoaderState};
use iddpm_kernels::to_f32_vec;
use iddpm_nn::{apply_state_dict, state_dict_of};

use super::manifest::Manifest;
use super::{TimestepSampler, Trainer, for_each_param};
use crate::ema::format_rate;
use crate::error::{Result, TrainError};
use crate::plot::save_loss_curve;

/// Keys under which the optimizer file keeps the timestep sampler's loss history.
const LOSS_HISTORY: &str = "__resampler__.loss_history";
const LOSS_COUNTS: &str = "__resampler__.loss_counts";

impl Trainer<'_> {
    /// Saves `opt`, EMA and model checkpoints for the current step (model last, recording
    /// its companions), then the loss curve and a preview grid. In a data-parallel run only
    /// the main process writes (every process holds the same state); all return the model
    /// checkpoint's path.
    pub fn save(&mut self) -> Result<PathBuf> {
        let dir = self.opts.log_dir.clone();
        let s = self.step;
        let model_path = dir.join(format!("model{s:06}.safetensors"));
        if !self.group.is_main() {
            return Ok(model_path);
        }
        // Only this process writes here, so any temporary file is a killed write's leftover.
        remove_stale_temporaries(&dir)?;
        let mut companions = vec![self.save_optimizer(&dir)?];
        for i in 0..self.emas.len() {
            companions.push(self.save_ema(&dir, i)?);
        }
        let manifest = Manifest {
            run_id: self.run_id.clone(),
            step: s,
            companions,
        };
        let mut meta = vec![
            ("format".to_string(), "pt".to_string()),
            ("producer".to_string(), "iddpm".to_string()),
        ];
        meta.extend(manifest.to_metadata());
        meta.extend(self.opts.checkpoint_metadata.iter().cloned());
        write_safetensors(&model_path, &state_dict_of(&mut self.model), &refs(&meta))?;
        save_loss_curve(
            &dir.join("loss_curve.png"),
            &self.loss_points,
            self.logger.rows(),
        )?;
        if self.opts.preview_samples > 0 {
            let grid = dir.join(format!("samples_{s:06}.png"));
            self.preview(&grid)?;
            self.logger.log_image(s, "samples", &grid)?;
        }
        Ok(model_path)
    }

    /// Writes `opt{step}.safetensors`: Adam's moments, the sampler's loss history, and the
    /// counters, seeds and data position as metadata.
    fn save_optimizer(&self, dir: &Path) -> Result<(String, FileDigest)> {
        let s = self.step;
        let mut opt_dict = self.opt.state_dict(&self.names);
        if let TimestepSampler::LossSecondMoment(r) = &self.sampler {
            let t = r.loss_history().len();
            let h = r.loss_history().first().map_or(0, Vec::len);
            let hist: Vec<f32> = r
                .loss_history()
                .iter()
                .flatten()
                .map(|&v| v as f32)
                .collect();
            opt_dict.insert(LOSS_HISTORY, vec![t, h], hist);
            opt_dict.insert(
                LOSS_COUNTS,
                vec![t],
                r.loss_counts().iter().map(|&c| c as f32).collect(),
            );
        }
        let ls = self.loader.state();
        let meta = [
            ("step", s.to_string()),
            ("run_id", self.run_id.clone()),
            ("opt_step", self.opt.step.to_string()),
            ("seed", self.opts.seed.to_string()),
            ("loader_seed", ls.seed.to_string()),
            ("loader_epoch", ls.epoch.to_string()),
            ("loader_position", ls.position.to_string()),
            // Exact bits, so that a resumed run scales its losses identically.
            (
                "lg_loss_scale",
                self.scaler.lg_scale().to_bits().to_string(),
            ),
        ];
        let meta: Vec<(String, String)> = meta.into_iter().map(|(k, v)| (k.into(), v)).collect();
        let name = format!("opt{s:06}.safetensors");
        let digest = write_safetensors(&dir.join(&name), &opt_dict, &refs(&meta))?;
        Ok((name, digest))
    }

    /// Writes `ema_{rate}_{step}.safetensors` of the `i`-th EMA, with the reference's names.
    fn save_ema(&self, dir: &Path, i: usize) -> Result<(String, FileDigest)> {
        let ema = &self.emas[i];
        let mut dict = StateDict::new();
        for ((name, flat), (_, shape)) in ema.params.iter().zip(&self.names) {
            dict.insert(name.clone(), shape.clone(), to_f32_vec(flat.clone()));
        }
        let name = ema_file_name(ema.rate, self.step);
        let meta = [
            ("format".to_string(), "pt".to_string()),
            ("producer".to_string(), "iddpm".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("run_id".to_string(), self.run_id.clone()),
            ("ema_rate".to_string(), format_rate(ema.rate)),
            (
                EMA_WARMUP_KEY.to_string(),
                warmup_label(self.opts.ema_warmup),
            ),
        ];
        let mut meta = meta.to_vec();
        meta.extend(self.opts.checkpoint_metadata.iter().cloned());
        let digest = write_safetensors(&dir.join(&name), &dict, &refs(&meta))?;
        Ok((name, digest))
    }

    /// Restores a run from `model{step}.safetensors`: the weights, the optimizer, the EMAs,
    /// the RNG seeds, the data position and the timestep-sampler history, from exactly the
    /// companion files saved with it. Returns the step resumed at.
    ///
    /// With [`TrainOptions::resume_weights_only`](super::TrainOptions::resume_weights_only)
    /// only the weights are read (from any checkpoint, e.g. a reference `.pt`), and the
    /// optimizer and EMAs start afresh, as fine-tuning does.
    pub fn resume(&mut self, model_path: &Path) -> Result<u64> {
        let step = parse_resume_step(model_path);
        let dict = load_state_dict(model_path)?;
        apply_state_dict(&mut self.model, &dict).map_err(|mut m| {
            m.file = Some(model_path.display().to_string());
            TrainError::Load(iddpm_nn::LoadError::Mismatch(m))
        })?;
        let flats = self.param_flats();
        if self.opts.resume_weights_only || step == 0 {
            for ema in &mut self.emas {
                ema.params = flats.clone();
            }
        } else {
            let dir = model_path.parent().unwrap_or(Path::new("."));
            self.check_companions(model_path, dir, step)?;
            for i in 0..self.emas.len() {
                let path = dir.join(ema_file_name(self.emas[i].rate, step));
                check_warmup(&path, self.opts.ema_warmup)?;
                self.emas[i].params = read_ema(&path, &flats)?;
            }
            self.resume_optimizer(&dir.join(format!("opt{step:06}.safetensors")))?;
        }
        if self.group.is_main() {
            self.logger.keep_history_until(step)?;
            // A killed run may have left half-written files; none of them is needed.
            remove_stale_temporaries(&self.opts.log_dir)?;
        }
        self.step = step;
        Ok(step)
    }

    /// The model's parameters as `(name, flat tensor)`, in order.
    fn param_flats(&mut self) -> Vec<(String, Tensor<1>)> {
        let mut flats = Vec::new();
        for_each_param(&mut self.model, |_, name, p| {
            flats.push((name.to_string(), p.flat()))
        });
        flats
    }

    /// Checks that the optimizer and EMA files of `step` are the ones saved with the model
    /// file, and adopts its run id. A model file from an iddpm older than the record (or from
    /// the reference) is accepted only with every companion present and the optimizer's step
    /// matching.
    fn check_companions(&mut self, model_path: &Path, dir: &Path, step: u64) -> Result<()> {
        let meta = read_metadata(model_path)?;
        let mut names = vec![format!("opt{step:06}.safetensors")];
        names.extend(self.emas.iter().map(|e| ema_file_name(e.rate, step)));
        match Manifest::from_metadata(&meta, model_path)? {
            Some(manifest) => {
                if manifest.step != step {
                    return Err(TrainError::Other(format!(
                        "{}: the file name says step {step} but it was saved at step {}",
                        model_path.display(),
                        manifest.step
                    )));
                }
                for name in &names {
                    manifest.verify(dir, name, model_path)?;
                }
                self.run_id = manifest.run_id;
            }
            None => {
                for name in &names {
                    if !dir.join(name).exists() {
                        return Err(TrainError::Other(format!(
                            "{}: {} is missing, so the run cannot resume exactly; to start \
                             from the weights alone, with a fresh optimizer and EMA, pass \
                             --resume_weights_only True",
                            model_path.display(),
                            dir.join(name).display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Restores Adam's moments, the counters, seeds, data position, loss scale and timestep
    /// sampler history from `opt{step}.safetensors`.
    fn resume_optimizer(&mut self, opt_path: &Path) -> Result<()> {
        let meta = read_metadata(opt_path)?;
        let get = |k: &str| -> Result<u128> {
            meta.iter()
                .find(|(mk, _)| mk == k)
                .and_then(|(_, v)| v.parse::<u128>().ok())
                .ok_or_else(|| {
                    TrainError::Other(format!("{}: metadata {k} is missing", opt_path.display()))
                })
        };
        let dict = load_state_dict(opt_path)?;
        check_lengths(&dict, opt_path, &self.names, &[".exp_avg", ".exp_avg_sq"])?;
        let device = self.device.clone();
        let missing =
            self.opt
                .load_state_dict(&dict, &self.names, &device, get("opt_step")? as u64);
        if !missing.is_empty() {
            return Err(TrainError::Other(format!(
                "{}: no optimizer state for {}",
                opt_path.display(),
                missing.join(", ")
            )));
        }
        // The run's seed keys every example's randomness: continue with the saved one.
        self.opts.seed = get("seed")? as u64;
        let state = LoaderState {
            seed: get("loader_seed")? as u64,
            epoch: get("loader_epoch")? as u64,
            position: get("loader_position")? as u64,
        };
        let global_batch = self.opts.batch_size * self.group.world_size();
        self.loader = BatchLoader::resume(self.loader.data(), global_batch, state)?;
        // Older checkpoints (and f32 runs resumed with --use_fp16) start from the default.
        if let Ok(bits) = get("lg_loss_scale") {
            self.scaler.set_lg_scale(f64::from_bits(bits as u64));
        }
        self.resume_loss_history(&dict, opt_path)
    }

    /// Restores the loss-second-moment sampler's history, when the run uses it.
    fn resume_loss_history(&mut self, dict: &StateDict, opt_path: &Path) -> Result<()> {
        let TimestepSampler::LossSecondMoment(r) = &mut self.sampler else {
            return Ok(());
        };
        let (Some(h), Some(c)) = (dict.get(LOSS_HISTORY), dict.get(LOSS_COUNTS)) else {
            return Err(TrainError::Other(format!(
                "{}: no loss history for the loss-second-moment sampler",
                opt_path.display()
            )));
        };
        let width = h.shape.get(1).copied().unwrap_or(0);
        let hist: Vec<Vec<f64>> = h
            .values
            .chunks(width.max(1))
            .map(|row| row.iter().map(|&v| v as f64).collect())
            .collect();
        let counts: Vec<usize> = c.values.iter().map(|&v| v as usize).collect();
        if !r.restore(hist, counts) {
            return Err(TrainError::Other(format!(
                "{}: the loss history does not fit this diffusion",
                opt_path.display()
            )));
        }
        Ok(())
    }
}

/// The reference's EMA file name, `ema_{rate}_{step:06}.safetensors`.
/// The EMA files' metadata key for the warm-up they were averaged with.
const EMA_WARMUP_KEY: &str = "ema_warmup";

/// How an EMA file records its warm-up: `none`, or `inv_gamma=G,power=P`.
fn warmup_label(warmup: Option<crate::ema::EmaWarmup>) -> String {
    match warmup {
        None => "none".into(),
        Some(w) => format!("inv_gamma={},power={}", w.inv_gamma, w.power),
    }
}

/// Refuses to continue an EMA under another warm-up than it was averaged with (files
/// written before the record say nothing and are accepted).
fn check_warmup(path: &Path, warmup: Option<crate::ema::EmaWarmup>) -> Result<()> {
    let meta = read_metadata(path)?;
    let recorded = meta
        .iter()
        .find(|(k, _)| k == EMA_WARMUP_KEY)
        .map(|(_, v)| v);
    match recorded {
        Some(v) if *v != warmup_label(warmup) => Err(TrainError::Config(format!(
            "{}: the EMA was averaged with warm-up {v}, but this run asks for {} \
             (--ema_warmup, --ema_inv_gamma, --ema_power must match to resume)",
            path.display(),
            warmup_label(warmup)
        ))),
        _ => Ok(()),
    }
}

fn ema_file_name(rate: f64, step: u64) -> String {
    format!("ema_{}_{step:06}.safetensors", format_rate(rate))
}

/// An EMA file's values, one per parameter of `flats` and as long as it.
fn read_ema(path: &Path, flats: &[(String, Tensor<1>)]) -> Result<Vec<(String, Tensor<1>)>> {
    let d = load_state_dict(path)?;
    flats
        .iter()
        .map(|(name, flat)| {
            let e = d
                .get(name)
                .ok_or_else(|| TrainError::Other(format!("{}: missing {name}", path.display())))?;
            check_length(e, path, name, flat.dims()[0])?;
            let data = TensorData::new(e.values.clone(), [e.values.len()]);
            Ok((name.clone(), Tensor::from_data(data, &flat.device())))
        })
        .collect()
}

/// Checks that every `{name}{suffix}` present in `dict` has as many values as the parameter.
fn check_lengths(
    dict: &StateDict,
    path: &Path,
    names: &[(String, Vec<usize>)],
    suffixes: &[&str],
) -> Result<()> {
    for (name, shape) in names {
        for suffix in suffixes {
            let key = format!("{name}{suffix}");
            if let Some(e) = dict.get(&key) {
                check_length(e, path, &key, shape.iter().product())?;
            }
        }
    }
    Ok(())
}

fn check_length(e: &TensorEntry, path: &Path, key: &str, expected: usize) -> Result<()> {
    if e.values.len() != expected {
        return Err(TrainError::Other(format!(
            "{}: {key} holds {} values where the model's parameter has {expected}",
            path.display(),
            e.values.len()
        )));
    }
    Ok(())
}

/// The step encoded in a checkpoint name (`.../model001000.safetensors` → 1000), as the
/// reference's `parse_resume_step_from_filename`; 0 when there is none.
pub fn parse_resume_step(path: &Path) -> u64 {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Some(rest) = name.rsplit("model").next() else {
        return 0;
    };
    rest.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A safetensors file's metadata; empty for other formats (a reference `.pt`).
fn read_metadata(path: &Path) -> Result<Vec<(String, String)>> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    if bytes.starts_with(b"PK") {
        return Ok(Vec::new());
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
    Ok(meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}

fn refs(meta: &[(String, String)]) -> Vec<(&str, &str)> {
    meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
