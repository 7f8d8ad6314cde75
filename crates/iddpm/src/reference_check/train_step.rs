//! Replaying one training step the reference recorded (`train_step_<id>`, README §11): iddpm's
//! own trainer runs [`Trainer::forward_backward`] and [`Trainer::optimize`] on the stored
//! batch, timesteps, noise and importance weights, starting from the stored weights, and its
//! loss terms, gradients, AdamW update and EMA are compared under the README's rules.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use iddpm_data::{Batch, InMemoryDataset};
use iddpm_kernels::to_f32_vec;
use iddpm_train::{Ema, StepInputs, TrainOptions, Trainer, for_each_param};
use serde_json::Value;

use super::{CheckGroup, Tolerance, VectorFile, read_json, spec_from_reference};
use crate::{Error, Result};

/// The ids of every `train_step_<id>.json` in `dir`, sorted.
pub fn train_step_ids(dir: &Path) -> Vec<String> {
    super::group_ids(dir, "train_step_")
}

/// One recorded step: what the trainer computed, beside the parameters before it.
struct Replayed {
    names: Vec<String>,
    before: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    after: Vec<Vec<f32>>,
    ema: Vec<Vec<f32>>,
    terms: Vec<(&'static str, Vec<f32>)>,
    objective: f64,
    grad_norm: f64,
    ema_rate: f64,
}

/// Replays `train_step_<id>` on `device` and checks it with the README's tolerances times
/// `scale` (1 on the CPU): one group each for the loss terms, the gradients, the AdamW step
/// and the EMA.
pub fn check_train_step(
    dir: &Path,
    id: &str,
    device: &Device,
    scale: f64,
) -> Result<Vec<CheckGroup>> {
    let meta = read_json(dir, &format!("train_step_{id}.json"))?;
    let vectors = VectorFile::open(dir, &format!("train_step_{id}.safetensors"))?;
    let log_dir = scratch_dir(id);
    let replayed = replay(dir, &meta, &vectors, device, &log_dir);
    // The trainer's logs are not part of the check.
    let _ = std::fs::remove_dir_all(&log_dir);
    let r = replayed?;
    let tol = &meta["tolerance"];
    let name = |what: &str| format!("train_step_{id} {what}");
    Ok(vec![
        check_losses(&r, &meta, &vectors, scale, name("losses"))?,
        check_gradients(&r, tol, &vectors, scale, name("gradients"))?,
        check_adamw(&r, &meta, &vectors, scale, name("adamw"))?,
        check_ema(&r, &meta, &vectors, (device, scale), name("ema"))?,
    ])
}

/// A fresh folder for the trainer's logs.
fn scratch_dir(id: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "iddpm-train-step-{id}-{}-{nanos}",
        std::process::id()
    ))
}

fn number(v: &Value, what: &str) -> Result<f64> {
    v.as_f64()
        .ok_or_else(|| Error::Invalid(format!("train step description: {what} is not a number")))
}

/// The options of the recorded `TrainLoop`; refuses an optimizer iddpm's AdamW is not.
fn train_options(meta: &Value, log_dir: &Path) -> Result<TrainOptions> {
    let opt = &meta["optimizer"];
    let fixed = [
        ("betas", "[0.9,0.999]"),
        ("eps", "1e-8"),
        ("amsgrad", "false"),
    ];
    let adamw = iddpm_train::AdamW::new(0.0);
    let same = opt["betas"][0].as_f64() == Some(adamw.beta1)
        && opt["betas"][1].as_f64() == Some(adamw.beta2)
        && opt["eps"].as_f64() == Some(adamw.eps)
        && opt["amsgrad"].as_bool() == Some(false);
    if !same {
        return Err(Error::Invalid(format!(
            "the recorded optimizer {opt} is not iddpm's AdamW ({fixed:?})"
        )));
    }
    let batch_size = meta["inputs"]["batch_size"]
        .as_u64()
        .ok_or_else(|| Error::Invalid("train step description: no inputs.batch_size".into()))?;
    Ok(TrainOptions {
        lr: number(&opt["lr"], "optimizer.lr")?,
        weight_decay: number(&opt["weight_decay"], "optimizer.weight_decay")?,
        batch_size: batch_size as usize,
        ema_rates: vec![number(&meta["ema"]["rate"], "ema.rate")?],
        log_dir: log_dir.to_path_buf(),
        preview_samples: 0,
        quiet: true,
        resume_weights_only: true,
        ..TrainOptions::default()
    })
}

/// The stored batch and its draws as the trainer's step inputs.
fn step_inputs(vectors: &VectorFile, batch_size: usize) -> Result<(StepInputs, usize)> {
    let shape = vectors.shape("train_step.x_start")?.to_vec();
    if shape.len() != 4 || shape[0] != batch_size || shape[2] != shape[3] {
        return Err(Error::Invalid(format!(
            "{}: train_step.x_start has shape {shape:?}, not [{batch_size}, C, r, r]",
            vectors.name
        )));
    }
    let labels = if vectors.has("train_step.y") {
        Some(
            vectors
                .get("train_step.y")?
                .iter()
                .map(|&v| v as i64)
                .collect(),
        )
    } else {
        None
    };
    let inputs = StepInputs {
        batch: Batch {
            images: vectors.f32("train_step.x_start")?,
            labels,
            size: batch_size,
            resolution: shape[2],
        },
        first: 0,
        timesteps: vectors.usize("train_step.t")?,
        weights: vectors.f32("train_step.weights")?,
        noise: vectors.f32("train_step.noise")?,
    };
    Ok((inputs, shape[1] * shape[2] * shape[3]))
}

/// Runs the recorded step through iddpm's trainer.
fn replay(
    dir: &Path,
    meta: &Value,
    vectors: &VectorFile,
    device: &Device,
    log_dir: &Path,
) -> Result<Replayed> {
    let spec = spec_from_reference(meta)?;
    spec.check()?;
    let unet_config = spec.model.unet_config(spec.super_res)?;
    let opts = train_options(meta, log_dir)?;
    let ema_rate = opts.ema_rates[0];
    let (inputs, chw) = step_inputs(vectors, opts.batch_size)?;
    let images = inputs
        .batch
        .images
        .chunks(chw)
        .map(<[f32]>::to_vec)
        .collect();
    let data = InMemoryDataset::new(images, inputs.batch.labels.clone(), inputs.batch.resolution);
    let mut trainer = Trainer::new(unet_config, spec.diffusion, &data, opts, device)?;
    let weights = meta["weights"]
        .as_str()
        .ok_or_else(|| Error::Invalid("train step description: no weights file".into()))?;
    trainer.resume(&dir.join(weights))?;
    let (names, before) = parameters(&mut trainer);
    let gradients = trainer.forward_backward(&inputs)?;
    let grads = gradients
        .grads
        .iter()
        .zip(&before)
        .map(|(g, p)| match g {
            Some(g) => to_f32_vec(g.clone()),
            None => vec![0.0; p.len()],
        })
        .collect();
    let (terms, objective) = (gradients.terms.clone(), gradients.objective);
    let report = trainer.optimize(gradients);
    let (_, after) = parameters(&mut trainer);
    let ema = trainer.emas()[0]
        .params
        .iter()
        .map(|(_, t)| to_f32_vec(t.clone()))
        .collect();
    Ok(Replayed {
        names,
        before,
        grads,
        after,
        ema,
        terms,
        objective,
        grad_norm: report.grad_norm,
        ema_rate,
    })
}

/// Every parameter's name and values, in order.
fn parameters(trainer: &mut Trainer<'_>) -> (Vec<String>, Vec<Vec<f32>>) {
    let (mut names, mut values) = (Vec::new(), Vec::new());
    for_each_param(trainer.model_mut(), |_, name, p| {
        names.push(name.to_string());
        values.push(to_f32_vec(p.flat()));
    });
    (names, values)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The spacing of f32 numbers at |x| (README §11's `ulp_f32`).
fn ulp_f32(x: f64) -> f64 {
    let a = (x.abs() as f32).max(f32::MIN_POSITIVE);
    f64::from(a.next_up()) - f64::from(a)
}

/// The loss terms per example, the differentiated total and the logged gradient norm.
fn check_losses(
    r: &Replayed,
    meta: &Value,
    vectors: &VectorFile,
    scale: f64,
    name: String,
) -> Result<CheckGroup> {
    let mut group = CheckGroup::new(name);
    let keys = meta["training_losses_keys"]
        .as_array()
        .ok_or_else(|| Error::Invalid("train step description: no training_losses_keys".into()))?;
    for key in keys.iter().filter_map(Value::as_str) {
        let stored = format!("train_step.{key}");
        match r.terms.iter().find(|(k, _)| *k == key) {
            Some((_, got)) => group.check(
                &stored,
                &f64s(got),
                vectors.get(&stored)?,
                Tolerance::sum(1e-4, 1e-4).scaled(scale),
            ),
            None => group.fail(format!("{stored}: the reference has it, iddpm not")),
        }
    }
    group.check(
        "train_step.total_loss",
        &[r.objective],
        vectors.get("train_step.total_loss")?,
        Tolerance::rel(1e-5).scaled(scale),
    );
    // Each gradient within its tolerance moves the norm by at most the norm of the
    // tolerances (triangle inequality); the f32 sums of squares add 1e-5 relative.
    let per_tensor = &meta["tolerance"]["per_tensor"];
    let moved: f64 = r
        .names
        .iter()
        .zip(&r.grads)
        .map(|(n, g)| {
            let tol = per_tensor[n]["tol"].as_f64().unwrap_or(0.0) * scale;
            g.len() as f64 * tol * tol
        })
        .sum::<f64>()
        .sqrt();
    let want = number(&meta["grad_norm_logged"], "grad_norm_logged")?;
    group.check(
        "grad_norm",
        &[r.grad_norm],
        &[want],
        Tolerance::sum(1e-5 * scale, moved),
    );
    Ok(group)
}

/// Every parameter's gradient against its per-tensor tolerance; the exact-zero tensors
/// against zero.
fn check_gradients(
    r: &Replayed,
    tol: &Value,
    vectors: &VectorFile,
    scale: f64,
    name: String,
) -> Result<CheckGroup> {
    let mut group = CheckGroup::new(name);
    let zero_tensors: Vec<&str> = tol["exact_zero_gradient_tensors"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let zero_tol = 1e-6 * number(&tol["grad_max_abs_all_tensors"], "grad_max_abs_all_tensors")?;
    for (param, got) in r.names.iter().zip(&r.grads) {
        let key = format!("grad.{param}");
        if zero_tensors.contains(&param.as_str()) {
            let zeros = vec![0.0; got.len()];
            group.check(&key, &f64s(got), &zeros, Tolerance::abs(zero_tol * scale));
            continue;
        }
        let Some(t) = tol["per_tensor"][param]["tol"].as_f64() else {
            group.fail(format!("{key}: no tolerance in the description"));
            continue;
        };
        group.check(
            &key,
            &f64s(got),
            vectors.get(&key)?,
            Tolerance::abs(t * scale),
        );
    }
    Ok(group)
}

/// AdamW's first step on the entries whose gradient is large enough that its sign is
/// not rounding noise.
fn check_adamw(
    r: &Replayed,
    meta: &Value,
    vectors: &VectorFile,
    scale: f64,
    name: String,
) -> Result<CheckGroup> {
    let mut group = CheckGroup::new(name);
    let tol = &meta["tolerance"];
    let lr = number(&meta["optimizer"]["lr"], "optimizer.lr")?;
    // A device's gradient tolerance is `scale` times larger: so is the threshold above
    // which a gradient within it keeps its sign.
    let threshold = number(&tol["grad_threshold"], "grad_threshold")? * scale;
    let mut excluded = 0;
    for (i, param) in r.names.iter().enumerate() {
        let g_ref = vectors.get(&format!("grad.{param}"))?;
        let p_ref = vectors.get(&format!("param_after.{param}"))?;
        let compared: Vec<usize> = (0..g_ref.len())
            .filter(|&k| g_ref[k].abs() > threshold)
            .collect();
        excluded += g_ref.len() - compared.len();
        let got: Vec<f64> = compared.iter().map(|&k| f64::from(r.after[i][k])).collect();
        let want: Vec<f64> = compared.iter().map(|&k| p_ref[k]).collect();
        group.check_with(&format!("param_after.{param}"), &got, &want, |j| {
            Tolerance::abs(1e-3 * lr * scale + 2.0 * ulp_f32(want[j]) * scale)
        });
    }
    if scale == 1.0 {
        // The rule's own count: a filter that drifted from it would compare other entries.
        let stated = tol["adamw_excluded_entries_total"].as_u64().unwrap_or(0) as usize;
        group.check_usize("entries excluded", &[excluded], &[stated]);
    }
    Ok(group)
}

/// The trainer's EMA after the step, and iddpm's EMA update fed the stored `param_after`.
fn check_ema(
    r: &Replayed,
    meta: &Value,
    vectors: &VectorFile,
    (device, scale): (&Device, f64),
    name: String,
) -> Result<CheckGroup> {
    let mut group = CheckGroup::new(name);
    let stored: Vec<&str> = meta["ema"]["stored_names"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if stored.is_empty() {
        group.fail("the description lists no ema.stored_names".into());
        return Ok(group);
    }
    let threshold = number(&meta["tolerance"]["grad_threshold"], "grad_threshold")?;
    let mut fed = Vec::new();
    let mut starts = Vec::new();
    for param in &stored {
        let Some(i) = r.names.iter().position(|n| n == param) else {
            group.fail(format!("ema_after.{param}: no such parameter"));
            continue;
        };
        let e_ref = vectors.get(&format!("ema_after.{param}"))?;
        let g_ref = vectors.get(&format!("grad.{param}"))?;
        let before = &r.before[i];
        let allowed: Vec<f64> = (0..e_ref.len())
            .map(|k| 2.0 * ulp_f32(e_ref[k].abs().max(f64::from(before[k].abs()))))
            .collect();
        // The trainer's own EMA, where param_after is determined.
        let compared: Vec<usize> = (0..g_ref.len())
            .filter(|&k| g_ref[k].abs() > threshold * scale)
            .collect();
        let got: Vec<f64> = compared.iter().map(|&k| f64::from(r.ema[i][k])).collect();
        let want: Vec<f64> = compared.iter().map(|&k| e_ref[k]).collect();
        group.check_with(&format!("ema_after.{param}"), &got, &want, |j| {
            Tolerance::abs(allowed[compared[j]] * scale)
        });
        let n = before.len();
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [n]), device);
        starts.push((param.to_string(), t(before.clone())));
        fed.push((t(vectors.f32(&format!("param_after.{param}"))?), allowed));
    }
    // The update alone, fed the reference's param_after: every stored entry.
    let mut ema = Ema::new(r.ema_rate, starts);
    let currents: Vec<Tensor<1>> = fed.iter().map(|(p, _)| p.clone()).collect();
    ema.update(&currents);
    for ((param, value), (_, allowed)) in ema.params.iter().zip(&fed) {
        let key = format!("ema_after.{param}");
        let got = f64s(&to_f32_vec(value.clone()));
        group.check_with(&format!("{key} (fed)"), &got, vectors.get(&key)?, |k| {
            Tolerance::abs(allowed[k] * scale)
        });
    }
    Ok(group)
}
