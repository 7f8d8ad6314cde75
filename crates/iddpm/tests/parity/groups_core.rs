//! Groups that need no network: schedules, respacing, loss functions, the resampler.

use iddpm::diffusion::losses::{
    approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl, normal_kl_standard,
};
use iddpm::diffusion::{
    BetaSchedule, DiffusionCoefficients, LossSecondMomentResampler, ScheduleSampler,
    respaced_betas, space_timesteps,
};
use iddpm::nn::timestep_embedding;

use crate::reference::{
    Finish, Group, TensorFile, Tol, assert_no_failures, json_usizes, read_json, reference_dir,
};
use crate::{tensor, to_f64};

/// f64 arrays computed in the reference's order agree to rounding; the README allows 1e-5.
const SCHEDULE_TOL: Tol = Tol {
    abs: 0.0,
    rel: 1e-10,
    sum: false,
};

fn coefficient_arrays(c: &DiffusionCoefficients) -> Vec<(&'static str, &Vec<f64>)> {
    vec![
        ("betas", &c.betas),
        ("alphas_cumprod", &c.alphas_cumprod),
        ("alphas_cumprod_prev", &c.alphas_cumprod_prev),
        ("alphas_cumprod_next", &c.alphas_cumprod_next),
        ("sqrt_alphas_cumprod", &c.sqrt_alphas_cumprod),
        (
            "sqrt_one_minus_alphas_cumprod",
            &c.sqrt_one_minus_alphas_cumprod,
        ),
        (
            "log_one_minus_alphas_cumprod",
            &c.log_one_minus_alphas_cumprod,
        ),
        ("sqrt_recip_alphas_cumprod", &c.sqrt_recip_alphas_cumprod),
        (
            "sqrt_recipm1_alphas_cumprod",
            &c.sqrt_recipm1_alphas_cumprod,
        ),
        ("posterior_variance", &c.posterior_variance),
        (
            "posterior_log_variance_clipped",
            &c.posterior_log_variance_clipped,
        ),
        ("posterior_mean_coef1", &c.posterior_mean_coef1),
        ("posterior_mean_coef2", &c.posterior_mean_coef2),
    ]
}

/// Checks every coefficient array stored under `prefix` (those the file has).
pub fn check_coefficients(
    group: &mut Group,
    file: &TensorFile,
    prefix: &str,
    c: &DiffusionCoefficients,
    tol: Tol,
) {
    for (name, values) in coefficient_arrays(c) {
        let key = format!("{prefix}.{name}");
        if file.has(&key) {
            group.check(&key, values, file.get(&key), tol);
        }
    }
}

#[test]
fn schedules() {
    let dir = reference_dir();
    if !dir.join("schedules.json").exists() {
        return; // a directory without this group
    }
    let meta = read_json(&dir, "schedules.json");
    let file = TensorFile::open(&dir, "schedules.safetensors");
    let mut group = Group::new("schedules");
    for entry in meta["entries"].as_array().expect("entries") {
        let prefix = entry["prefix"].as_str().unwrap();
        let schedule: BetaSchedule = entry["schedule"].as_str().unwrap().parse().unwrap();
        let steps = entry["T"].as_u64().unwrap() as usize;
        match schedule.betas(steps) {
            Ok(betas) => {
                let c = DiffusionCoefficients::from_betas(betas);
                check_coefficients(&mut group, &file, prefix, &c, SCHEDULE_TOL);
            }
            Err(e) => group.fail(format!("{prefix}: cannot build the schedule: {e}")),
        }
    }
    assert_no_failures(group.finish());
}

#[test]
fn respacing() {
    let dir = reference_dir();
    if !dir.join("respacing.json").exists() {
        return;
    }
    let meta = read_json(&dir, "respacing.json");
    let file = TensorFile::open(&dir, "respacing.safetensors");
    let mut group = Group::new("respacing");
    for entry in meta["entries"].as_array().expect("entries") {
        let steps = entry["T"].as_u64().unwrap() as usize;
        let spec = entry["spec"].as_str().unwrap();
        let want = json_usizes(&entry["use_timesteps"]);
        let keep = match space_timesteps(steps, spec) {
            Ok(keep) => keep,
            Err(e) => {
                group.fail(format!("T={steps} {spec:?}: {e}"));
                continue;
            }
        };
        group.check_usize(&format!("T{steps}_{spec}.use_timesteps"), &keep, &want);
        // The map of a spaced diffusion is the kept timesteps in order.
        group.check_usize(
            &format!("T{steps}_{spec}.timestep_map"),
            &keep,
            &json_usizes(&entry["timestep_map"]),
        );
        for (schedule, prefix) in entry["tensor_prefixes"].as_object().unwrap() {
            let prefix = prefix.as_str().unwrap();
            let schedule: BetaSchedule = schedule.parse().unwrap();
            let base = DiffusionCoefficients::from_betas(schedule.betas(steps).unwrap());
            let betas = respaced_betas(&base.alphas_cumprod, &keep);
            let spaced = DiffusionCoefficients::from_betas(betas);
            check_coefficients(&mut group, &file, prefix, &spaced, SCHEDULE_TOL);
        }
    }
    for err in meta["errors"].as_array().into_iter().flatten() {
        let steps = err["T"].as_u64().unwrap() as usize;
        let spec = err["spec"].as_str().unwrap();
        if space_timesteps(steps, spec).is_ok() {
            group.fail(format!(
                "T={steps} {spec:?} must be rejected, as the reference does"
            ));
        }
    }
    assert_no_failures(group.finish());
}

#[test]
fn losses() {
    let dir = reference_dir();
    if !dir.join("losses.safetensors").exists() {
        return;
    }
    let f = TensorFile::open(&dir, "losses.safetensors");
    let tol = Tol::either(1e-5, 1e-6);
    let mut group = Group::new("losses");
    let t1 = |name: &str| tensor(f.f32(name), [f.get(name).len()]);

    let kl = normal_kl(
        t1("normal_kl.mean1"),
        t1("normal_kl.logvar1"),
        t1("normal_kl.mean2"),
        t1("normal_kl.logvar2"),
    );
    group.check("normal_kl.out", &to_f64(kl), f.get("normal_kl.out"), tol);
    let kl0 = normal_kl_standard(t1("normal_kl.mean1"), t1("normal_kl.logvar1"));
    group.check(
        "normal_kl.out_vs_standard",
        &to_f64(kl0),
        f.get("normal_kl.out_vs_standard"),
        tol,
    );

    let cdf = approx_standard_normal_cdf(t1("approx_standard_normal_cdf.x"));
    group.check(
        "approx_standard_normal_cdf.out",
        &to_f64(cdf),
        f.get("approx_standard_normal_cdf.out"),
        tol,
    );

    let shape = f.shape("dgll.x");
    let t2 = |name: &str| tensor(f.f32(name), [shape[0], shape[1]]);
    let ll =
        discretized_gaussian_log_likelihood(t2("dgll.x"), t2("dgll.means"), t2("dgll.log_scales"));
    group.check("dgll.log_probs", &to_f64(ll), f.get("dgll.log_probs"), tol);

    // The reference's f32 `exp` (PyTorch's vectorised one) differs from a correctly rounded
    // exp by one ulp for a few frequencies (measured: 2 of 64 at dim 128); cos(t·f) magnifies
    // that by t, up to 3999 here. So each entry is also allowed the effect of one ulp in f and
    // one in the rounded product t·f: 2·|t·f|·2⁻²³.
    let ts = f.get("timestep_embedding.timesteps").to_vec();
    for dim in [32usize, 33, 128] {
        let key = format!("timestep_embedding.dim{dim}");
        if f.has(&key) {
            let emb = timestep_embedding(t1("timestep_embedding.timesteps"), dim);
            let half = dim / 2;
            let freq = |j: usize| (-(10000f64.ln()) * j as f64 / half as f64).exp();
            let tol_at = |i: usize| {
                let (row, col) = (i / dim, i % dim);
                let j = if col >= half { col - half } else { col };
                let arg_ulps = if j < half {
                    2.0 * (ts[row] * freq(j)).abs() * f32::EPSILON as f64
                } else {
                    0.0
                };
                Tol::either(1e-5, 1e-6 + arg_ulps)
            };
            group.check_with(&key, &to_f64(emb), f.get(&key), tol_at);
        }
    }
    assert_no_failures(group.finish());
}

#[test]
fn resampler() {
    let dir = reference_dir();
    if !dir.join("resampler.json").exists() {
        return;
    }
    let meta = read_json(&dir, "resampler.json");
    let f = TensorFile::open(&dir, "resampler.safetensors");
    let steps = meta["num_timesteps"].as_u64().unwrap() as usize;
    let history = meta["history_per_term"].as_u64().unwrap() as usize;
    let uniform = meta["uniform_prob"].as_f64().unwrap();
    let mut sampler = LossSecondMomentResampler::with_params(steps, history, uniform);
    let mut group = Group::new("resampler");
    let tol = Tol::rel(1e-12);
    group.check(
        "weights_initial",
        &sampler.weights(),
        f.get("weights_initial"),
        tol,
    );
    let first_warm = meta["first_warmed_up_call"].as_u64().unwrap() as usize;
    for (c, call) in meta["calls"].as_array().unwrap().iter().enumerate() {
        let key = format!("call{c:03}");
        let ts = f.usize(&format!("{key}.ts"));
        group.check_usize(&format!("{key}.ts (json)"), &ts, &json_usizes(&call["ts"]));
        sampler.update_with_all_losses(&ts, f.get(&format!("{key}.losses")));
        group.check(
            &format!("{key}.weights"),
            &sampler.weights(),
            f.get(&format!("{key}.weights")),
            tol,
        );
        let warm = call["warmed_up"].as_bool().unwrap();
        if sampler.warmed_up() != warm || (warm && c < first_warm) {
            group.fail(format!(
                "{key}: warmed_up is {}, reference {warm}",
                sampler.warmed_up()
            ));
        }
    }
    let hist: Vec<f64> = sampler.loss_history().iter().flatten().copied().collect();
    group.check(
        "final.loss_history",
        &hist,
        f.get("final.loss_history"),
        Tol::exact(),
    );
    group.check_usize(
        "final.loss_counts",
        sampler.loss_counts(),
        &f.usize("final.loss_counts"),
    );
    let w = sampler.weights();
    let total: f64 = w.iter().sum();
    let p: Vec<f64> = w.iter().map(|x| x / total).collect();
    group.check("final.p", &p, f.get("final.p"), tol);
    let importance: Vec<f64> = p
        .iter()
        .map(|pi| (1.0 / (steps as f64 * pi)) as f32 as f64)
        .collect();
    group.check(
        "final.sample_weights_for_each_index",
        &importance,
        f.get("final.sample_weights_for_each_index"),
        Tol::rel(1e-6),
    );
    assert_no_failures(group.finish());
}
