//! Saving a run (model, EMAs, optimizer and everything an exact resume needs) and resuming it.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use iddpm_checkpoint::{StateDict, load_state_dict, write_safetensors};
use iddpm_data::{BatchLoader, LoaderState};
use iddpm_kernels::to_f32_vec;
use iddpm_nn::{apply_state_dict, state_dict_of};

use super::{TimestepSampler, Trainer, for_each_param};
use crate::ema::format_rate;
use crate::error::{Result, TrainError};
use crate::plot::save_loss_curve;

impl Trainer<'_> {
    /// Saves `opt`, EMA and model checkpoints for the current step (model last, so that a
    /// model file implies its companions), then the loss curve and a preview grid. In a
    /// data-parallel run only the main process writes (every process holds the same state);
    /// all return the model checkpoint's path.
    pub fn save(&mut self) -> Result<PathBuf> {
        let dir = self.opts.log_dir.clone();
        let s = self.step;
        if !self.group.is_main() {
            return Ok(dir.join(format!("model{s:06}.safetensors")));
        }
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
            opt_dict.insert("__resampler__.loss_history", vec![t, h], hist);
            opt_dict.insert(
                "__resampler__.loss_counts",
                vec![t],
                r.loss_counts().iter().map(|&c| c as f32).collect(),
            );
        }
        let ls = self.loader.state();
        let meta = [
            ("step", s.to_string()),
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
        let meta_refs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_safetensors(
            &dir.join(format!("opt{s:06}.safetensors")),
            &opt_dict,
            &meta_refs,
        )?;
        for ema in &self.emas {
            let mut dict = StateDict::new();
            for ((name, flat), (_, shape)) in ema.params.iter().zip(&self.names) {
                dict.insert(name.clone(), shape.clone(), to_f32_vec(flat.clone()));
            }
            let path = dir.join(format!("ema_{}_{s:06}.safetensors", ema.rate_label()));
            write_safetensors(&path, &dict, &[("format", "pt"), ("producer", "iddpm")])?;
        }
        let model_path = dir.join(format!("model{s:06}.safetensors"));
        write_safetensors(
            &model_path,
            &state_dict_of(&mut self.model),
            &[("format", "pt"), ("producer", "iddpm")],
        )?;
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

    /// Restores a run from `model{step}.safetensors` (or a reference `model{step}.pt`): the
    /// weights, and when the companion files exist, the optimizer, EMAs, RNGs, data position and
    /// timestep-sampler history. Returns the step resumed at.
    pub fn resume(&mut self, model_path: &Path) -> Result<u64> {
        let step = parse_resume_step(model_path);
        let dict = load_state_dict(model_path)?;
        apply_state_dict(&mut self.model, &dict).map_err(|mut m| {
            m.file = Some(model_path.display().to_string());
            TrainError::Load(iddpm_nn::LoadError::Mismatch(m))
        })?;
        let dir = model_path.parent().unwrap_or(Path::new("."));
        let mut flats = Vec::new();
        for_each_param(&mut self.model, |_, name, p| {
            flats.push((name.to_string(), p.flat()))
        });
        for ema in &mut self.emas {
            let path = dir.join(format!(
                "ema_{}_{step:06}.safetensors",
                format_rate(ema.rate)
            ));
            ema.params = if path.exists() {
                let d = load_state_dict(&path)?;
                let mut params = Vec::new();
                for (name, flat) in &flats {
                    let e = d.get(name).ok_or_else(|| {
                        TrainError::Other(format!("{}: missing {name}", path.display()))
                    })?;
                    params.push((
                        name.clone(),
                        Tensor::from_data(
                            TensorData::new(e.values.clone(), [e.values.len()]),
                            &flat.device(),
                        ),
                    ));
                }
                params
            } else {
                flats.clone()
            };
        }
        let opt_path = dir.join(format!("opt{step:06}.safetensors"));
        if opt_path.exists() {
            let bytes = std::fs::read(&opt_path).map_err(|e| TrainError::io(&opt_path, e))?;
            let meta = read_metadata(&bytes, &opt_path)?;
            let get = |k: &str| -> Result<u128> {
                meta.iter()
                    .find(|(mk, _)| mk == k)
                    .and_then(|(_, v)| v.parse::<u128>().ok())
                    .ok_or_else(|| {
                        TrainError::Other(format!(
                            "{}: metadata {k} is missing",
                            opt_path.display()
                        ))
                    })
            };
            let dict = load_state_dict(&opt_path)?;
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
            if let (TimestepSampler::LossSecondMoment(r), Some(h), Some(c)) = (
                &mut self.sampler,
                dict.get("__resampler__.loss_history"),
                dict.get("__resampler__.loss_counts"),
            ) {
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
            }
        }
        if self.group.is_main() {
            self.logger.keep_history_until(step)?;
        }
        self.step = step;
        Ok(step)
    }
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

fn read_metadata(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
    Ok(meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}
