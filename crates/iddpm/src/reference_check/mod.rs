//! Checking that a device computes what the reference computes: model A's forward pass,
//! diffusion A's training losses, `p_mean_variance` and DDIM loop, and a recorded training
//! step (gradients, AdamW, EMA), replayed on the device from the reference vectors
//! (`tests/reference`, see its README) with their recorded noise.
//!
//! The parity test suite checks everything the vectors pin down on the CPU. This is the part
//! of it a user, or a GPU machine without the test suite, runs through `iddpm check_device`.

mod compare;
mod spec;
mod train_step;
mod vectors;

use iddpm_kernels::ops::DeviceKind;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;

use crate::diffusion::{
    Conditioning, GaussianDiffusion, PredictOptions, RecordedNoise, SampleRequest, Sampler,
};
use crate::nn::UNetModel;
use crate::{Error, Result};

pub use compare::{CheckGroup, Tolerance};
pub use spec::spec_from_reference;
pub use train_step::{check_train_step, train_step_ids};
pub use vectors::VectorFile;

/// How many times looser than the CPU's parity tolerances a device's comparisons are.
///
/// The CPU tolerances (1e-4 absolute on network outputs) hold the reference's PyTorch f32
/// against iddpm's f32 on the CPU: both sum each convolution's 3·3·C_in products in
/// different orders, which moves results by about sqrt(K)·2⁻²⁴ relative per layer. A GPU sums
/// in yet other orders (tiled and split reductions, fused multiply-adds) and takes exp and
/// log from libdevice, each accurate to a few ulp: the same kind of error, a few times larger
/// through the network's depth. Ten times the CPU tolerance covers that. It does not cover
/// TF32 or f16 arithmetic standing in for f32 (errors of order 1e-3 relative per layer, 1e-2
/// at the output), which this check is meant to catch.
pub fn tolerance_scale(device: &Device) -> f64 {
    if DeviceKind::of(device).is_flex() {
        1.0
    } else {
        10.0
    }
}

/// Runs every check on `device` with the CPU tolerances times `scale`, one group each.
pub fn check_device(dir: &Path, device: &Device, scale: f64) -> Result<Vec<CheckGroup>> {
    let meta: Value = read_json(dir, "model_a.json")?;
    let spec = spec_from_reference(&meta)?;
    let weights = dir.join("model_a.safetensors");
    let (model, diffusion) = spec.load(&weights, device)?;
    let case = Case {
        model: &model,
        diffusion: &diffusion,
        device,
        scale,
    };
    let forward = VectorFile::open(dir, "model_a_forward.safetensors")?;
    let vectors = VectorFile::open(dir, "diffusion_a.safetensors")?;
    let sampling: Value = read_json(dir, "diffusion_a.json")?;
    let ddim = &sampling["ddim"];
    let mut groups = vec![
        case.forward(&forward)?,
        case.training_losses(&vectors)?,
        case.p_mean_variance(&vectors)?,
        case.ddim(&vectors, ddim, &spec.diffusion)?,
    ];
    // A training step's gradients, AdamW update and EMA, where the vectors are there.
    for id in train_step_ids(dir) {
        groups.extend(check_train_step(dir, &id, device, scale)?);
    }
    Ok(groups)
}

/// The optional seeded random-weights pytorch-fid Inception of the reference set: in `dir`,
/// else the file `IDDPM_RANDOM_INCEPTION` names (the repository's copy of the vectors leaves
/// this 43.7 MB file out).
pub fn random_inception_weights(dir: &Path) -> Option<std::path::PathBuf> {
    let name = "fid_inception_random_f16.safetensors";
    let beside = dir.join(name);
    if beside.exists() {
        return Some(beside);
    }
    let named = std::path::PathBuf::from(std::env::var_os("IDDPM_RANDOM_INCEPTION")?);
    named.exists().then_some(named)
}

/// The ids of every `<prefix><id>.json` in `dir`, sorted: the groups a directory of reference
/// vectors holds (`model_`, `diffusion_`, `train_step_`).
pub fn group_ids(dir: &Path, prefix: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| Some(n.strip_prefix(prefix)?.strip_suffix(".json")?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Reads `dir/file` as JSON; errors name the file.
pub fn read_json(dir: &Path, file: &str) -> Result<Value> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: bad JSON: {e}", path.display())))
}

/// Model A with its diffusion on one device.
struct Case<'a> {
    model: &'a UNetModel,
    diffusion: &'a GaussianDiffusion,
    device: &'a Device,
    scale: f64,
}

impl Case<'_> {
    fn tol(&self, t: Tolerance) -> Tolerance {
        t.scaled(self.scale)
    }

    fn t4(&self, f: &VectorFile, name: &str) -> Result<Tensor<4>> {
        let s = f.shape(name)?;
        let shape: [usize; 4] = s
            .try_into()
            .map_err(|_| Error::Invalid(format!("{}: {name} has shape {s:?}, not 4-D", f.name)))?;
        Ok(Tensor::from_data(
            TensorData::new(f.f32(name)?, shape),
            self.device,
        ))
    }

    /// Labels from `<group>.y` of the first group that has them.
    fn conditioning(&self, f: &VectorFile, groups: &[&str]) -> Result<Conditioning> {
        let mut cond = Conditioning::none();
        if let Some(key) = groups.iter().map(|g| format!("{g}.y")).find(|k| f.has(k)) {
            let labels: Vec<i64> = f.get(&key)?.iter().map(|&v| v as i64).collect();
            let n = labels.len();
            cond.labels = Some(Tensor::<1, Int>::from_data(
                TensorData::new(labels, [n]),
                self.device,
            ));
        }
        Ok(cond)
    }

    /// The network's output on the recorded inputs.
    fn forward(&self, f: &VectorFile) -> Result<CheckGroup> {
        let mut group = CheckGroup::new("model_a forward");
        let x = self.t4(f, "forward.x")?;
        let ts = f.f32("forward.t_model")?;
        let n = ts.len();
        let t = Tensor::<1>::from_data(TensorData::new(ts, [n]), self.device);
        let labels = self.conditioning(f, &["forward"])?.labels;
        let out = self.model.forward(x, t, labels);
        let want = f.get("forward.out")?;
        group.check(
            "forward.out",
            &values(out),
            want,
            self.tol(Tolerance::abs(1e-4)),
        );
        Ok(group)
    }

    /// L_hybrid's terms with x_t built from the recorded noise.
    fn training_losses(&self, f: &VectorFile) -> Result<CheckGroup> {
        let mut group = CheckGroup::new("diffusion_a training_losses");
        let x0 = self.t4(f, "training_losses.x_start")?;
        let t = f.usize("training_losses.t")?;
        let noise = self.t4(f, "training_losses.noise")?;
        let cond = self.conditioning(f, &["training_losses", "forward"])?;
        let losses = self
            .diffusion
            .training_losses(self.model, x0, &t, noise, &cond)?;
        let loss_tol = self.tol(Tolerance::sum(1e-4, 1e-4));
        let want = f.get("training_losses.loss")?;
        group.check("training_losses.loss", &values(losses.loss), want, loss_tol);
        for (name, term, tol) in [
            ("mse", losses.mse, Tolerance::either(1e-5, 1e-7)),
            ("vb", losses.vb, Tolerance::sum(1e-4, 1e-4)),
        ] {
            let key = format!("training_losses.{name}");
            match (term, f.has(&key)) {
                (Some(term), true) => group.check(&key, &values(term), f.get(&key)?, self.tol(tol)),
                (None, true) => group.fail(format!("{key}: the reference has it, iddpm not")),
                _ => {}
            }
        }
        Ok(group)
    }

    /// The reverse step's mean, variance and x̂_0, clipped.
    fn p_mean_variance(&self, f: &VectorFile) -> Result<CheckGroup> {
        let mut group = CheckGroup::new("diffusion_a p_mean_variance");
        let xt = self.t4(f, "p_mean_variance.x_t")?;
        let dims = xt.dims();
        let t = f.usize("p_mean_variance.t")?;
        let cond = self.conditioning(f, &["p_mean_variance", "forward"])?;
        let p =
            self.diffusion
                .p_mean_variance(self.model, xt, &t, PredictOptions::clipped(), &cond)?;
        let abs = self.tol(Tolerance::abs(1e-4));
        for (name, got) in [
            ("mean", p.mean),
            ("variance", p.variance.expand(dims)),
            ("log_variance", p.log_variance.expand(dims)),
        ] {
            let key = format!("p_mean_variance.{name}");
            group.check(&key, &values(got), f.get(&key)?, abs);
        }
        // x̂_0 = (x_t − sqrt(1 − ᾱ_t)·ε̂)/sqrt(ᾱ_t) magnifies ε̂'s error by sqrt(1/ᾱ_t − 1).
        let per_item: usize = dims[1..].iter().product();
        let coefs = self.diffusion.coefficients();
        let gain: Vec<f64> = t
            .iter()
            .map(|&s| coefs.sqrt_recipm1_alphas_cumprod[s].max(1.0))
            .collect();
        group.check_with(
            "p_mean_variance.pred_xstart",
            &values(p.pred_xstart),
            f.get("p_mean_variance.pred_xstart")?,
            |i| abs.scaled(gain[i / per_item]),
        );
        Ok(group)
    }

    /// The whole DDIM loop of `spec` (respacing, η, clipping) from the recorded x_T.
    fn ddim(
        &self,
        f: &VectorFile,
        spec: &Value,
        config: &crate::diffusion::DiffusionConfig,
    ) -> Result<CheckGroup> {
        let mut group = CheckGroup::new("diffusion_a ddim");
        let respacing = spec["timestep_respacing"].as_str().unwrap_or("");
        let eta = spec["eta"].as_f64().unwrap_or(0.0);
        let clip = spec["clip_denoised"].as_bool().unwrap_or(true);
        let spaced = config.build_with_respacing(respacing)?;
        let x_t = self.t4(f, "ddim.x_T")?;
        let shape = x_t.dims();
        let mut noise = RecordedNoise::new(self.recorded_noises(f, "ddim.noises", shape)?);
        let cond = self.conditioning(f, &["ddim", "sampling", "forward"])?;
        let request = SampleRequest::new(Sampler::ddim(eta), shape, &cond, &mut noise, self.device)
            .starting_from(x_t)
            .with_options(PredictOptions::clip(clip));
        let sample = spaced.sample_loop(self.model, request)?;
        let abs = self.tol(Tolerance::abs(1e-4));
        group.check("ddim.sample", &values(sample), f.get("ddim.sample")?, abs);
        Ok(group)
    }

    /// The per-step noises `[steps, ...shape]` of `key` (none when absent: η = 0 draws none).
    fn recorded_noises(
        &self,
        f: &VectorFile,
        key: &str,
        shape: [usize; 4],
    ) -> Result<Vec<Tensor<4>>> {
        if !f.has(key) {
            return Ok(Vec::new());
        }
        let whole = f.f32(key)?;
        let per: usize = shape.iter().product();
        Ok(whole
            .chunks_exact(per)
            .map(|c| Tensor::from_data(TensorData::new(c.to_vec(), shape), self.device))
            .collect())
    }
}

/// A tensor's values as f64, for comparison.
fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    iddpm_kernels::to_f32_vec(t)
        .into_iter()
        .map(f64::from)
        .collect()
}
