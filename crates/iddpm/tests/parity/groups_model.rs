//! Groups that need the network: `model_<id>` (weights, forward pass) and `diffusion_<id>`
//! (every diffusion operation driven by that model, replayed with the recorded noise).

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use iddpm::diffusion::{
    Conditioning, DiffusionCoefficients, DiffusionConfig, GaussianDiffusion, PredictOptions,
    RecordedNoise, SampleRequest, Sampler,
};
use iddpm::nn::{ModelFlags, UNetModel, UNetTrace, load_weights, param_names, state_dict_of};
use iddpm::reference_check::{group_ids, spec_from_reference};
use serde_json::Value;

use crate::groups_core::check_coefficients;
use crate::reference::{
    Finish, Group, TensorFile, Tol, assert_no_failures, read_json, reference_dir,
};
use crate::{device, to_f64};

/// The ids of every `model_<id>.json` in the directory.
fn model_ids(dir: &Path) -> Vec<String> {
    group_ids(dir, "model_")
}

/// A model directory entry: the network with its weights and the diffusion of its flags.
pub struct RefModel {
    pub model: UNetModel,
    pub config: DiffusionConfig,
    pub super_res: bool,
}

/// The model and diffusion flags of a `model_<id>.json`, as the reference scripts take them.
pub fn flags_from_json(meta: &Value) -> (ModelFlags, DiffusionConfig, bool) {
    let spec = spec_from_reference(meta).expect("a model description");
    (spec.model, spec.diffusion, spec.super_res)
}

/// Builds the model of `model_<id>.json` and loads its weights from every file given (`.pt`
/// and/or `.safetensors`), checking that they agree. Failures go to `group`.
pub fn load_ref_model(dir: &Path, id: &str, group: &mut Group) -> Option<RefModel> {
    let meta = read_json(dir, &format!("model_{id}.json"));
    let (flags, config, super_res) = flags_from_json(&meta);
    let unet_config = match flags.unet_config(super_res) {
        Ok(c) => c,
        Err(e) => {
            group.fail(format!("model_{id}: cannot build the network: {e}"));
            return None;
        }
    };
    let mut loaded: Vec<(String, UNetModel)> = Vec::new();
    for ext in ["pt", "safetensors"] {
        let path = dir.join(format!("model_{id}.{ext}"));
        if !path.exists() {
            continue;
        }
        let mut model = UNetModel::new(&unet_config, &device());
        match load_weights(&mut model, &path) {
            Ok(()) => loaded.push((ext.to_string(), model)),
            Err(e) => group.fail(format!("model_{id}.{ext}: {e}")),
        }
    }
    if loaded.is_empty() {
        group.fail(format!(
            "model_{id}: no loadable weights (.pt or .safetensors)"
        ));
        return None;
    }
    // Names and shapes in the reference's order.
    let (_, first) = loaded.first_mut().unwrap();
    if let Some(params) = meta.get("parameters").and_then(Value::as_array) {
        let ours = param_names(first);
        let want: Vec<(String, Vec<usize>)> = params
            .iter()
            .map(|p| {
                let name = p[0].as_str().unwrap().to_string();
                let shape = p[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                (name, shape)
            })
            .collect();
        if ours != want {
            let first_diff = ours.iter().zip(&want).position(|(a, b)| a != b);
            group.fail(format!(
                "model_{id}: parameter names/shapes differ from the reference ({} vs {}, first difference at {first_diff:?})",
                ours.len(),
                want.len()
            ));
        }
    }
    if loaded.len() == 2 {
        let b = state_dict_of(&mut loaded[1].1);
        let a = state_dict_of(&mut loaded[0].1);
        if a != b {
            group.fail(format!(
                "model_{id}: the .pt and .safetensors weights differ"
            ));
        } else {
            group.check("weights .pt == .safetensors", &[0.0], &[0.0], Tol::exact());
        }
    }
    let (_, model) = loaded.swap_remove(0);
    Some(RefModel {
        model,
        config,
        super_res,
    })
}

pub fn t4(f: &TensorFile, name: &str) -> Tensor<4> {
    let s = f.shape(name);
    Tensor::from_data(
        TensorData::new(f.f32(name), [s[0], s[1], s[2], s[3]]),
        &device(),
    )
}

fn labels(f: &TensorFile, name: &str) -> Tensor<1, Int> {
    let v: Vec<i64> = f.get(name).iter().map(|&x| x as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), &device())
}

/// Conditioning for a group: its own `<group>.y` / `.low_res`, else the fallback groups'.
fn conditioning(f: &TensorFile, groups: &[&str]) -> Conditioning {
    let mut cond = Conditioning::none();
    for g in groups {
        if cond.labels.is_none() && f.has(&format!("{g}.y")) {
            cond.labels = Some(labels(f, &format!("{g}.y")));
        }
        if cond.low_res.is_none() && f.has(&format!("{g}.low_res")) {
            cond.low_res = Some(t4(f, &format!("{g}.low_res")));
        }
    }
    cond
}

#[test]
fn models() {
    let dir = reference_dir();
    let mut failures = Vec::new();
    for id in model_ids(&dir) {
        let mut group = Group::new(format!("model_{id}"));
        if let Some(m) = load_ref_model(&dir, &id, &mut group) {
            check_forward(&dir, &id, &m, &mut group);
        }
        failures.extend(group.finish());
    }
    assert_no_failures(failures);
}

fn check_forward(dir: &Path, id: &str, m: &RefModel, group: &mut Group) {
    let file = format!("model_{id}_forward.safetensors");
    if !dir.join(&file).exists() {
        group.fail(format!("{file} is missing"));
        return;
    }
    let f = TensorFile::open(dir, &file);
    let x = t4(&f, "forward.x");
    let ts = f.get("forward.t_model").to_vec();
    let t = Tensor::<1>::from_data(
        TensorData::new(f.f32("forward.t_model"), [ts.len()]),
        &device(),
    );
    let cond = conditioning(&f, &["forward"]);
    let mut trace = UNetTrace::default();
    let input = match (&cond.low_res, m.super_res) {
        (Some(lr), true) => {
            let up = iddpm::nn::unet::upsample_like(lr.clone(), &x);
            if f.has("forward.low_res_upsampled") {
                group.check(
                    "forward.low_res_upsampled",
                    &to_f64(up.clone()),
                    f.get("forward.low_res_upsampled"),
                    Tol::abs(1e-4),
                );
            }
            Tensor::cat(vec![x, up], 1)
        }
        (None, true) => {
            group.fail("a super-resolution model without forward.low_res".into());
            return;
        }
        _ => x,
    };
    let out = m
        .model
        .forward_traced(input, t, cond.labels.clone(), Some(&mut trace));
    let tol = Tol::abs(1e-4);
    group.check("forward.out", &to_f64(out), f.get("forward.out"), tol);
    if f.has("forward.temb_sinusoid") {
        // One ulp of the reference's f32 exp, magnified by t (see the losses group).
        let dim = f.shape("forward.temb_sinusoid")[1];
        let half = dim / 2;
        let tol_at = |i: usize| {
            let (row, col) = (i / dim, i % dim);
            let j = col % half.max(1);
            let freq = (-(10000f64.ln()) * j as f64 / half as f64).exp();
            Tol::abs(1e-4 + 2.0 * (ts[row] * freq).abs() * f32::EPSILON as f64)
        };
        group.check_with(
            "forward.temb_sinusoid",
            &to_f64(trace.temb_sinusoid.clone().unwrap()),
            f.get("forward.temb_sinusoid"),
            tol_at,
        );
    }
    if f.has("forward.emb") {
        group.check(
            "forward.emb",
            &to_f64(trace.emb.clone().unwrap()),
            f.get("forward.emb"),
            tol,
        );
    }
    let first = |t: &Tensor<4>| to_f64(t.clone().narrow(0, 0, 1));
    for (i, h) in trace.input_blocks.iter().enumerate() {
        let key = format!("forward.sample0.input_blocks.{i}");
        if f.has(&key) {
            group.check(&key, &first(h), f.get(&key), tol);
        }
    }
    if let Some(h) = &trace.middle_block
        && f.has("forward.sample0.middle_block")
    {
        group.check(
            "forward.sample0.middle_block",
            &first(h),
            f.get("forward.sample0.middle_block"),
            tol,
        );
    }
    for (i, h) in trace.output_blocks.iter().enumerate() {
        let key = format!("forward.sample0.output_blocks.{i}");
        if f.has(&key) {
            group.check(&key, &first(h), f.get(&key), tol);
        }
    }
}

/// The ids of every `diffusion_<id>.json`.
fn diffusion_ids(dir: &Path) -> Vec<String> {
    group_ids(dir, "diffusion_")
}

#[test]
fn diffusions() {
    let dir = reference_dir();
    let mut failures = Vec::new();
    for id in diffusion_ids(&dir) {
        let mut group = Group::new(format!("diffusion_{id}"));
        let meta = read_json(&dir, &format!("diffusion_{id}.json"));
        let model_file = meta.get("model").and_then(Value::as_str).unwrap_or("");
        let model_id = model_file
            .trim_start_matches("model_")
            .trim_end_matches(".json")
            .to_string();
        let model_id = if model_id.is_empty() {
            id.clone()
        } else {
            model_id
        };
        if let Some(m) = load_ref_model(&dir, &model_id, &mut Group::new("(weights)")) {
            check_diffusion(&dir, &id, &meta, &m, &mut group);
        } else {
            group.fail(format!("cannot load model {model_id} for diffusion_{id}"));
        }
        failures.extend(group.finish());
    }
    assert_no_failures(failures);
}

fn ts_of(f: &TensorFile, name: &str) -> Vec<usize> {
    f.usize(name)
}

/// One reference diffusion case: its vectors, our diffusion, the model and the coefficients.
#[derive(Clone, Copy)]
struct Case<'a> {
    f: &'a TensorFile,
    d: &'a GaussianDiffusion,
    model: &'a UNetModel,
    coefs: &'a DiffusionCoefficients,
}

fn check_diffusion(dir: &Path, id: &str, meta: &Value, m: &RefModel, group: &mut Group) {
    let f = TensorFile::open(dir, &format!("diffusion_{id}.safetensors"));
    let d = match m.config.build() {
        Ok(d) => d,
        Err(e) => {
            group.fail(format!("cannot build the diffusion: {e}"));
            return;
        }
    };
    check_types(&d, meta, group);
    let coefs = DiffusionCoefficients::clone(d.coefficients());
    check_coefficients(group, &f, "diffusion", &coefs, Tol::rel(1e-10));
    let case = Case {
        f: &f,
        d: &d,
        model: &m.model,
        coefs: &coefs,
    };
    check_forward_process(&case, group);
    check_training_losses(&case, group);
    check_p_mean_variance(&case, group);
    check_p_sample(&case, group);
    for name in ["ddim", "p_sample_loop"] {
        check_sampling_loop(&case, meta, &m.config, name, group);
    }
    check_bpd_loop(&case, meta, group);
}

/// The mean, variance and loss types the reference reports for this diffusion.
fn check_types(d: &GaussianDiffusion, meta: &Value, group: &mut Group) {
    let Some(desc) = meta.get("diffusion") else {
        return;
    };
    for (key, ours) in [
        ("model_mean_type", d.mean_type().as_str()),
        ("model_var_type", d.var_type().as_str()),
        ("loss_type", d.loss_type().as_str()),
    ] {
        if let Some(want) = desc.get(key).and_then(Value::as_str)
            && want != ours
        {
            group.fail(format!("{key}: ours {ours}, reference {want}"));
        }
    }
}

/// x̂_0 = f(ε̂) amplifies the network's error by sqrt(1/ᾱ_t − 1) (README "Tolerances"): the
/// tolerance of element i of items of `per_item` values at timesteps `t`.
fn xstart_tol(
    coefs: &DiffusionCoefficients,
    t: &[usize],
    per_item: usize,
) -> impl Fn(usize) -> Tol {
    let amp: Vec<f64> = t
        .iter()
        .map(|&s| coefs.sqrt_recipm1_alphas_cumprod[s].max(1.0))
        .collect();
    move |i: usize| Tol::abs(1e-4 * amp[i / per_item])
}

/// (g) The forward process: q_sample, the posterior and q(x_t | x_0).
fn check_forward_process(case: &Case, group: &mut Group) {
    let Case { f, d, .. } = *case;
    let abs5 = Tol::abs(1e-5);
    if f.has("q.x_start") {
        let x0 = t4(f, "q.x_start");
        let t = ts_of(f, "q.t");
        if f.has("q_sample.x_t") {
            let xt = d.q_sample(x0.clone(), &t, t4(f, "q.noise"));
            group.check("q_sample.x_t", &to_f64(xt), f.get("q_sample.x_t"), abs5);
        }
        if f.has("q_posterior.mean") {
            let (mean, var, logvar) =
                d.q_posterior_mean_variance(x0.clone(), t4(f, "q_posterior.x_t"), &t);
            group.check(
                "q_posterior.mean",
                &to_f64(mean),
                f.get("q_posterior.mean"),
                abs5,
            );
            group.check(
                "q_posterior.variance",
                &to_f64(var),
                f.get("q_posterior.variance"),
                abs5,
            );
            group.check(
                "q_posterior.log_variance_clipped",
                &to_f64(logvar),
                f.get("q_posterior.log_variance_clipped"),
                abs5,
            );
        }
        if f.has("q_mean_variance.mean") {
            let (mean, var, logvar) = d.q_mean_variance(x0, &t);
            group.check(
                "q_mean_variance.mean",
                &to_f64(mean),
                f.get("q_mean_variance.mean"),
                abs5,
            );
            group.check(
                "q_mean_variance.variance",
                &to_f64(var),
                f.get("q_mean_variance.variance"),
                abs5,
            );
            group.check(
                "q_mean_variance.log_variance",
                &to_f64(logvar),
                f.get("q_mean_variance.log_variance"),
                abs5,
            );
        }
    }
}

/// (a) The training losses, with x_t rebuilt from the recorded noise.
fn check_training_losses(case: &Case, group: &mut Group) {
    let Case { f, d, model, .. } = *case;
    let abs5 = Tol::abs(1e-5);
    if f.has("training_losses.x_start") {
        let x0 = t4(f, "training_losses.x_start");
        let t = ts_of(f, "training_losses.t");
        let noise = t4(f, "training_losses.noise");
        if f.has("training_losses.x_t") {
            let xt = d.q_sample(x0.clone(), &t, noise.clone());
            group.check(
                "training_losses.x_t",
                &to_f64(xt),
                f.get("training_losses.x_t"),
                abs5,
            );
        }
        let cond = conditioning(f, &["training_losses", "forward"]);
        match d.training_losses(model, x0, &t, noise, &cond) {
            Ok(l) => {
                group.check(
                    "training_losses.loss",
                    &to_f64(l.loss),
                    f.get("training_losses.loss"),
                    Tol::sum(1e-4, 1e-4),
                );
                if f.has("training_losses.mse") {
                    match l.mse {
                        Some(mse) => group.check(
                            "training_losses.mse",
                            &to_f64(mse),
                            f.get("training_losses.mse"),
                            Tol::either(1e-5, 1e-7),
                        ),
                        None => group.fail(
                            "training_losses.mse: the reference has an mse term, ours none".into(),
                        ),
                    }
                }
                if f.has("training_losses.vb") {
                    match l.vb {
                        Some(vb) => group.check(
                            "training_losses.vb",
                            &to_f64(vb),
                            f.get("training_losses.vb"),
                            Tol::sum(1e-4, 1e-4),
                        ),
                        None => group.fail(
                            "training_losses.vb: the reference has a vb term, ours none".into(),
                        ),
                    }
                }
            }
            Err(e) => group.fail(format!("training_losses: {e}")),
        }
    }
}

/// (b) p_mean_variance, clipped and not.
fn check_p_mean_variance(case: &Case, group: &mut Group) {
    let Case { f, d, model, coefs } = *case;
    let abs4 = Tol::abs(1e-4);
    if f.has("p_mean_variance.x_t") {
        let xt = t4(f, "p_mean_variance.x_t");
        let t = ts_of(f, "p_mean_variance.t");
        let per_item = xt.dims()[1..].iter().product();
        let cond = conditioning(f, &["p_mean_variance", "forward"]);
        match d.p_mean_variance(model, xt.clone(), &t, PredictOptions::clipped(), &cond) {
            Ok(p) => {
                let dims = xt.dims();
                group.check(
                    "p_mean_variance.mean",
                    &to_f64(p.mean),
                    f.get("p_mean_variance.mean"),
                    abs4,
                );
                group.check(
                    "p_mean_variance.variance",
                    &to_f64(p.variance.expand(dims)),
                    f.get("p_mean_variance.variance"),
                    abs4,
                );
                group.check(
                    "p_mean_variance.log_variance",
                    &to_f64(p.log_variance.expand(dims)),
                    f.get("p_mean_variance.log_variance"),
                    abs4,
                );
                group.check_with(
                    "p_mean_variance.pred_xstart",
                    &to_f64(p.pred_xstart),
                    f.get("p_mean_variance.pred_xstart"),
                    xstart_tol(coefs, &t, per_item),
                );
            }
            Err(e) => group.fail(format!("p_mean_variance: {e}")),
        }
        if f.has("p_mean_variance_noclip.mean") {
            match d.p_mean_variance(model, xt, &t, PredictOptions::unclipped(), &cond) {
                Ok(p) => {
                    // Unclipped, the mean inherits x̂_0's error times posterior_mean_coef1.
                    let amp: Vec<f64> = t
                        .iter()
                        .map(|&s| {
                            (coefs.posterior_mean_coef1[s] * coefs.sqrt_recipm1_alphas_cumprod[s])
                                .max(1.0)
                        })
                        .collect();
                    group.check_with(
                        "p_mean_variance_noclip.mean",
                        &to_f64(p.mean),
                        f.get("p_mean_variance_noclip.mean"),
                        |i| Tol::abs(1e-4 * amp[i / per_item]),
                    );
                    group.check_with(
                        "p_mean_variance_noclip.pred_xstart",
                        &to_f64(p.pred_xstart),
                        f.get("p_mean_variance_noclip.pred_xstart"),
                        xstart_tol(coefs, &t, per_item),
                    );
                }
                Err(e) => group.fail(format!("p_mean_variance_noclip: {e}")),
            }
        }
    }
}

/// (c) One ancestral step with the recorded noise.
fn check_p_sample(case: &Case, group: &mut Group) {
    let Case { f, d, model, coefs } = *case;
    let abs4 = Tol::abs(1e-4);
    if f.has("p_sample.x_t") {
        let xt = t4(f, "p_sample.x_t");
        let t = ts_of(f, "p_sample.t");
        let per_item = xt.dims()[1..].iter().product();
        let cond = conditioning(f, &["p_sample", "forward"]);
        let mut noise = RecordedNoise::new(vec![t4(f, "p_sample.z")]);
        match d.p_sample(model, xt, &t, PredictOptions::clipped(), &cond, &mut noise) {
            Ok(s) => {
                group.check(
                    "p_sample.sample",
                    &to_f64(s.sample),
                    f.get("p_sample.sample"),
                    abs4,
                );
                group.check_with(
                    "p_sample.pred_xstart",
                    &to_f64(s.pred_xstart),
                    f.get("p_sample.pred_xstart"),
                    xstart_tol(coefs, &t, per_item),
                );
            }
            Err(e) => group.fail(format!("p_sample: {e}")),
        }
    }
}

/// (d) DDIM or (e) the ancestral loop (`name`), on the respaced diffusion `meta[name]` names,
/// with the recorded noise.
fn check_sampling_loop(
    case: &Case,
    meta: &Value,
    config: &DiffusionConfig,
    name: &str,
    group: &mut Group,
) {
    let Case { f, model, .. } = *case;
    let abs4 = Tol::abs(1e-4);
    let sampler_group = name;
    if !f.has(&format!("{name}.x_T")) {
        return;
    }
    let spec = &meta[sampler_group];
    let respacing = spec
        .get("timestep_respacing")
        .and_then(Value::as_str)
        .unwrap_or("");
    let clip = spec
        .get("clip_denoised")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let sampler = if name == "ddim" {
        Sampler::ddim(spec.get("eta").and_then(Value::as_f64).unwrap_or(0.0))
    } else {
        Sampler::ANCESTRAL
    };
    let spaced = match config.build_with_respacing(respacing) {
        Ok(s) => s,
        Err(e) => {
            group.fail(format!("{name}: cannot respace with {respacing:?}: {e}"));
            return;
        }
    };
    if let Some(map) = spec
        .pointer("/diffusion/timestep_map")
        .and_then(Value::as_array)
    {
        let want: Vec<usize> = map.iter().map(|v| v.as_u64().unwrap() as usize).collect();
        group.check_usize(
            &format!("{name}.timestep_map"),
            spaced.timestep_map(),
            &want,
        );
    }
    let x_t = t4(f, &format!("{name}.x_T"));
    let shape = x_t.dims();
    let mut noise = if f.has(&format!("{name}.noises")) {
        let all = f.shape(&format!("{name}.noises")).to_vec();
        let n = all[0];
        let whole = f.f32(&format!("{name}.noises"));
        let per = whole.len() / n;
        RecordedNoise::new((0..n).map(|k| {
            Tensor::from_data(
                TensorData::new(whole[k * per..(k + 1) * per].to_vec(), shape),
                &device(),
            )
        }))
    } else {
        RecordedNoise::new(Vec::new())
    };
    let cond = conditioning(f, &[name, "sampling", "forward"]);
    let request = SampleRequest::new(sampler, shape, &cond, &mut noise, &device())
        .starting_from(x_t)
        .with_options(PredictOptions::clip(clip));
    let steps = spaced.sample_loop_progressive(model, request);
    let mut step_b0 = Vec::new();
    let mut last = None;
    match steps {
        Ok(steps) => {
            for s in steps {
                match s {
                    Ok(s) => {
                        step_b0.extend(to_f64(s.sample.clone().narrow(0, 0, 1)));
                        last = Some(s.sample);
                    }
                    Err(e) => {
                        group.fail(format!("{name}: {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => group.fail(format!("{name}: {e}")),
    }
    if let Some(last) = last {
        group.check(
            &format!("{name}.sample"),
            &to_f64(last),
            f.get(&format!("{name}.sample")),
            abs4,
        );
        let key = format!("{name}.step_samples_b0");
        if f.has(&key) {
            group.check(&key, &step_b0, f.get(&key), abs4);
        }
    }
}

/// (f) The bits/dim loop with the recorded noise.
fn check_bpd_loop(case: &Case, meta: &Value, group: &mut Group) {
    let Case { f, d, model, .. } = *case;
    if f.has("calc_bpd_loop.x_start") {
        let x0 = t4(f, "calc_bpd_loop.x_start");
        let shape = x0.dims();
        let all = f.shape("calc_bpd_loop.noises").to_vec();
        let whole = f.f32("calc_bpd_loop.noises");
        let per = whole.len() / all[0];
        let mut noise = RecordedNoise::new((0..all[0]).map(|k| {
            Tensor::from_data(
                TensorData::new(whole[k * per..(k + 1) * per].to_vec(), shape),
                &device(),
            )
        }));
        let clip = meta
            .pointer("/calc_bpd_loop/clip_denoised")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let cond = conditioning(f, &["calc_bpd_loop", "forward"]);
        match d.calc_bpd_loop(model, x0, clip, &cond, &mut noise) {
            Ok(terms) => {
                let small = Tol::sum(1e-4, 1e-6);
                group.check(
                    "calc_bpd_loop.vb",
                    &to_f64(terms.vb),
                    f.get("calc_bpd_loop.vb"),
                    Tol::abs(1e-3),
                );
                group.check(
                    "calc_bpd_loop.total_bpd",
                    &to_f64(terms.total_bpd),
                    f.get("calc_bpd_loop.total_bpd"),
                    Tol::abs(1e-3),
                );
                group.check(
                    "calc_bpd_loop.prior_bpd",
                    &to_f64(terms.prior_bpd),
                    f.get("calc_bpd_loop.prior_bpd"),
                    small,
                );
                group.check(
                    "calc_bpd_loop.mse",
                    &to_f64(terms.mse),
                    f.get("calc_bpd_loop.mse"),
                    small,
                );
                group.check(
                    "calc_bpd_loop.xstart_mse",
                    &to_f64(terms.xstart_mse),
                    f.get("calc_bpd_loop.xstart_mse"),
                    small,
                );
            }
            Err(e) => group.fail(format!("calc_bpd_loop: {e}")),
        }
    }
}
