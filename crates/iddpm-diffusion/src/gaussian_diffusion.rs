//! The Gaussian diffusion process: the forward process q, and the reverse process p as
//! parameterised by a network.

use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::coefficients::DiffusionCoefficients;
use crate::error::{DiffusionError, Result};
use crate::model::{Conditioning, DiffusionModel};
use crate::options::{LossType, ModelMeanType, ModelVarType};
use crate::respace::respaced_betas;
use crate::tensor_math::{one_minus, split_mean_and_variance};
use crate::thresholding::DynamicThreshold;

/// How the predicted x_0 is post-processed before it is used.
#[derive(Clone, Copy, Default)]
pub struct PredictOptions<'a> {
    /// Clamp the predicted x_0 to [−1, 1].
    pub clip_denoised: bool,
    /// Applied to the predicted x_0 before clipping (e.g. a projection for inpainting).
    pub denoised_fn: Option<&'a dyn Fn(Tensor<4>) -> Tensor<4>>,
    /// Imagen's dynamic thresholding of the predicted x_0, in place of the clipping.
    pub threshold: Option<DynamicThreshold>,
}

impl PredictOptions<'_> {
    /// Clamp predictions of x_0 to [−1, 1], as sampling normally does.
    pub fn clipped() -> Self {
        Self {
            clip_denoised: true,
            denoised_fn: None,
            threshold: None,
        }
    }

    /// Use predictions of x_0 as they are (training losses, likelihood without clipping).
    pub fn unclipped() -> Self {
        Self::default()
    }

    /// `clipped()` or `unclipped()` from a flag.
    pub fn clip(clip_denoised: bool) -> Self {
        Self {
            clip_denoised,
            denoised_fn: None,
            threshold: None,
        }
    }

    /// These options with Imagen's dynamic thresholding instead of the clipping (`None`: as
    /// they were).
    pub fn with_threshold(self, threshold: Option<DynamicThreshold>) -> Self {
        Self { threshold, ..self }
    }
}

/// The reverse-process distribution p(x_{t−1} | x_t) at a batch of timesteps.
#[derive(Debug, Clone)]
pub struct PMeanVariance {
    /// Mean of p, `[B, C, H, W]`.
    pub mean: Tensor<4>,
    /// Variance of p, `[B, C, H, W]` when learned, `[B, 1, 1, 1]` (broadcastable) when fixed.
    pub variance: Tensor<4>,
    /// Log of the variance, shaped like `variance`.
    pub log_variance: Tensor<4>,
    /// The network's estimate of x_0 (after `denoised_fn` and clipping).
    pub pred_xstart: Tensor<4>,
}

/// A Gaussian diffusion with T steps, possibly respaced from a longer process.
///
/// Respacing (the reference's `SpacedDiffusion`) is built in: `timestep_map` sends each of this
/// process's timesteps to the original timestep the network was trained on, and the network
/// always receives mapped (and, with `rescale_timesteps`, rescaled to [0, 1000)) timesteps.
#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    coefs: DiffusionCoefficients,
    mean_type: ModelMeanType,
    var_type: ModelVarType,
    loss_type: LossType,
    rescale_timesteps: bool,
    timestep_map: Vec<usize>,
    original_num_steps: usize,
    /// Precomputed 1 / posterior_mean_coef1 and coef2 / coef1 (for PREVIOUS_X).
    recip_coef1: Vec<f64>,
    coef2_over_coef1: Vec<f64>,
    /// FIXED_LARGE: β_t with β̃_1 substituted at t = 0, and its log.
    fixed_large_variance: Vec<f64>,
    fixed_large_log_variance: Vec<f64>,
    /// log β_t (the upper end of LEARNED_RANGE).
    log_betas: Vec<f64>,
}

impl GaussianDiffusion {
    /// A diffusion over `betas` (each in (0, 1]), unrespaced.
    pub fn new(
        betas: Vec<f64>,
        mean_type: ModelMeanType,
        var_type: ModelVarType,
        loss_type: LossType,
        rescale_timesteps: bool,
    ) -> Result<Self> {
        let n = betas.len();
        Self::with_map(
            betas,
            mean_type,
            var_type,
            loss_type,
            rescale_timesteps,
            (0..n).collect(),
            n,
        )
    }

    /// The diffusion over `base_betas` restricted to `use_timesteps` (sorted original
    /// timesteps), as the reference's `SpacedDiffusion`.
    pub fn spaced(
        base_betas: Vec<f64>,
        use_timesteps: &[usize],
        mean_type: ModelMeanType,
        var_type: ModelVarType,
        loss_type: LossType,
        rescale_timesteps: bool,
    ) -> Result<Self> {
        let original = base_betas.len();
        if use_timesteps.is_empty() {
            return Err(DiffusionError::InvalidStepCount(0));
        }
        if use_timesteps.windows(2).any(|w| w[0] >= w[1])
            || use_timesteps.last().is_some_and(|&t| t >= original)
        {
            return Err(DiffusionError::InvalidRespacing {
                spec: format!("{use_timesteps:?}"),
                num_timesteps: original,
                reason: "timesteps must be strictly increasing and below T".into(),
            });
        }
        validate_betas(&base_betas)?;
        let base = DiffusionCoefficients::from_betas(base_betas);
        let betas = respaced_betas(&base.alphas_cumprod, use_timesteps);
        Self::with_map(
            betas,
            mean_type,
            var_type,
            loss_type,
            rescale_timesteps,
            use_timesteps.to_vec(),
            original,
        )
    }

    fn with_map(
        betas: Vec<f64>,
        mean_type: ModelMeanType,
        var_type: ModelVarType,
        loss_type: LossType,
        rescale_timesteps: bool,
        timestep_map: Vec<usize>,
        original_num_steps: usize,
    ) -> Result<Self> {
        validate_betas(&betas)?;
        let coefs = DiffusionCoefficients::from_betas(betas);
        let n = coefs.len();
        let recip_coef1 = coefs.posterior_mean_coef1.iter().map(|c| 1.0 / c).collect();
        let coef2_over_coef1 = (0..n)
            .map(|i| coefs.posterior_mean_coef2[i] / coefs.posterior_mean_coef1[i])
            .collect();
        let fixed_large_variance: Vec<f64> = (0..n)
            .map(|i| {
                if i == 0 && n > 1 {
                    coefs.posterior_variance[1]
                } else {
                    coefs.betas[i]
                }
            })
            .collect();
        let fixed_large_log_variance = fixed_large_variance.iter().map(|v| v.ln()).collect();
        let log_betas = coefs.betas.iter().map(|b| b.ln()).collect();
        Ok(Self {
            coefs,
            mean_type,
            var_type,
            loss_type,
            rescale_timesteps,
            timestep_map,
            original_num_steps,
            recip_coef1,
            coef2_over_coef1,
            fixed_large_variance,
            fixed_large_log_variance,
            log_betas,
        })
    }

    /// Number of timesteps T of this (possibly respaced) process.
    pub fn num_timesteps(&self) -> usize {
        self.coefs.len()
    }

    /// Number of timesteps of the process the network was trained with.
    pub fn original_num_steps(&self) -> usize {
        self.original_num_steps
    }

    /// For each timestep of this process, the original timestep it stands for.
    pub fn timestep_map(&self) -> &[usize] {
        &self.timestep_map
    }

    /// The per-timestep constants.
    pub fn coefficients(&self) -> &DiffusionCoefficients {
        &self.coefs
    }

    /// What the network predicts.
    pub fn mean_type(&self) -> ModelMeanType {
        self.mean_type
    }

    /// How the variance is chosen.
    pub fn var_type(&self) -> ModelVarType {
        self.var_type
    }

    /// The training loss.
    pub fn loss_type(&self) -> LossType {
        self.loss_type
    }

    /// Whether network timesteps are rescaled to [0, 1000).
    pub fn rescale_timesteps(&self) -> bool {
        self.rescale_timesteps
    }

    /// The timesteps `[B]` the network receives for this process's timesteps `t`: mapped to the
    /// original process and, with `rescale_timesteps`, multiplied by f32(1000 / T_original).
    pub fn model_timesteps(&self, t: &[usize], device: &Device) -> Tensor<1> {
        let scale = if self.rescale_timesteps {
            (1000.0 / self.original_num_steps as f64) as f32
        } else {
            1.0
        };
        let values: Vec<f32> = t
            .iter()
            .map(|&i| self.timestep_map[i] as f32 * scale)
            .collect();
        Tensor::from_data(TensorData::new(values, [t.len()]), device)
    }

    /// `arr[t]` for each batch element as an f32 tensor `[B, 1, 1, 1]` that broadcasts over
    /// images (the reference's `_extract_into_tensor`: index in f64, then cast).
    pub fn extract(arr: &[f64], t: &[usize], device: &Device) -> Tensor<4> {
        let values: Vec<f32> = t.iter().map(|&i| arr[i] as f32).collect();
        Tensor::from_data(TensorData::new(values, [t.len(), 1, 1, 1]), device)
    }

    pub(crate) fn check_timesteps(&self, t: &[usize], batch: usize) -> Result<()> {
        if t.len() != batch {
            return Err(DiffusionError::Shape(format!(
                "{} timesteps given for a batch of {batch}",
                t.len()
            )));
        }
        if let Some(&bad) = t.iter().find(|&&i| i >= self.num_timesteps()) {
            return Err(DiffusionError::Shape(format!(
                "timestep {bad} is out of range for a diffusion with {} steps",
                self.num_timesteps()
            )));
        }
        Ok(())
    }

    /// Mean, variance and log-variance of q(x_t | x_0). The variances are `[B, 1, 1, 1]`.
    pub fn q_mean_variance(
        &self,
        x_start: Tensor<4>,
        t: &[usize],
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let device = x_start.device();
        let c = &self.coefs;
        let mean = Self::extract(&c.sqrt_alphas_cumprod, t, &device) * x_start;
        let one_minus: Vec<f64> = c.alphas_cumprod.iter().map(|a| 1.0 - a).collect();
        let variance = Self::extract(&one_minus, t, &device);
        let log_variance = Self::extract(&c.log_one_minus_alphas_cumprod, t, &device);
        (mean, variance, log_variance)
    }

    /// Draws x_t ~ q(x_t | x_0) with the given standard-normal `noise`.
    pub fn q_sample(&self, x_start: Tensor<4>, t: &[usize], noise: Tensor<4>) -> Tensor<4> {
        let device = x_start.device();
        Self::extract(&self.coefs.sqrt_alphas_cumprod, t, &device) * x_start
            + Self::extract(&self.coefs.sqrt_one_minus_alphas_cumprod, t, &device) * noise
    }

    /// Mean, variance and clipped log-variance of the posterior q(x_{t−1} | x_t, x_0).
    /// The variances are `[B, 1, 1, 1]`.
    pub fn q_posterior_mean_variance(
        &self,
        x_start: Tensor<4>,
        x_t: Tensor<4>,
        t: &[usize],
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let device = x_start.device();
        let c = &self.coefs;
        let mean = Self::extract(&c.posterior_mean_coef1, t, &device) * x_start
            + Self::extract(&c.posterior_mean_coef2, t, &device) * x_t;
        let variance = Self::extract(&c.posterior_variance, t, &device);
        let log_variance = Self::extract(&c.posterior_log_variance_clipped, t, &device);
        (mean, variance, log_variance)
    }

    /// x_0 implied by x_t and a noise estimate ε.
    pub fn predict_xstart_from_eps(
        &self,
        x_t: Tensor<4>,
        t: &[usize],
        eps: Tensor<4>,
    ) -> Tensor<4> {
        let device = x_t.device();
        Self::extract(&self.coefs.sqrt_recip_alphas_cumprod, t, &device) * x_t
            - Self::extract(&self.coefs.sqrt_recipm1_alphas_cumprod, t, &device) * eps
    }

    /// x_0 implied by x_t and an estimate of the posterior mean x_{t−1}.
    pub fn predict_xstart_from_xprev(
        &self,
        x_t: Tensor<4>,
        t: &[usize],
        xprev: Tensor<4>,
    ) -> Tensor<4> {
        let device = x_t.device();
        Self::extract(&self.recip_coef1, t, &device) * xprev
            - Self::extract(&self.coef2_over_coef1, t, &device) * x_t
    }

    /// ε implied by x_t and an estimate of x_0.
    pub fn predict_eps_from_xstart(
        &self,
        x_t: Tensor<4>,
        t: &[usize],
        pred_xstart: Tensor<4>,
    ) -> Tensor<4> {
        let device = x_t.device();
        (Self::extract(&self.coefs.sqrt_recip_alphas_cumprod, t, &device) * x_t - pred_xstart)
            / Self::extract(&self.coefs.sqrt_recipm1_alphas_cumprod, t, &device)
    }

    /// Runs the network on x_t at timesteps `t` and checks its channel count.
    pub fn run_model<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x: Tensor<4>,
        t: &[usize],
        cond: &Conditioning,
    ) -> Result<Tensor<4>> {
        let [batch, channels, h, w] = x.dims();
        self.check_timesteps(t, batch)?;
        let timesteps = self.model_timesteps(t, &x.device());
        let out = model.forward(x, timesteps, cond);
        let expected = if self.var_type.is_learned() {
            2 * channels
        } else {
            channels
        };
        let dims = out.dims();
        if dims != [batch, expected, h, w] {
            return Err(DiffusionError::Shape(format!(
                "the model returned {dims:?} for input [{batch}, {channels}, {h}, {w}]; \
                 {} needs {expected} output channels{}",
                self.var_type,
                if self.var_type.is_learned() {
                    " (a model built with learn_sigma = true)"
                } else {
                    " (a model built with learn_sigma = false)"
                }
            )));
        }
        Ok(out)
    }

    /// p(x_{t−1} | x_t): runs the network and turns its output into a mean, a variance and an
    /// estimate of x_0.
    pub fn p_mean_variance<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x: Tensor<4>,
        t: &[usize],
        opts: PredictOptions<'_>,
        cond: &Conditioning,
    ) -> Result<PMeanVariance> {
        let out = self.run_model(model, x.clone(), t, cond)?;
        Ok(self.p_mean_variance_from_output(out, x, t, opts))
    }

    /// p(x_{t−1} | x_t) from an already computed network output (shape checked by the caller).
    pub fn p_mean_variance_from_output(
        &self,
        model_output: Tensor<4>,
        x: Tensor<4>,
        t: &[usize],
        opts: PredictOptions<'_>,
    ) -> PMeanVariance {
        let device = x.device();
        let channels = x.dims()[1];
        let c = &self.coefs;
        let (output, variance, log_variance) = match self.var_type {
            ModelVarType::Learned | ModelVarType::LearnedRange => {
                let (output, var_values) = split_mean_and_variance(model_output, channels);
                let log_variance = if self.var_type == ModelVarType::Learned {
                    var_values
                } else {
                    let min_log = Self::extract(&c.posterior_log_variance_clipped, t, &device);
                    let max_log = Self::extract(&self.log_betas, t, &device);
                    // Eq. 15: the output v ∈ [−1, 1], mapped to [0, 1], interpolates log Σ between
                    // log β̃_t and log β_t.
                    let frac = var_values.add_scalar(1.0).div_scalar(2.0);
                    frac.clone() * max_log + one_minus(frac) * min_log
                };
                (output, log_variance.clone().exp(), log_variance)
            }
            ModelVarType::FixedLarge => (
                model_output,
                Self::extract(&self.fixed_large_variance, t, &device),
                Self::extract(&self.fixed_large_log_variance, t, &device),
            ),
            ModelVarType::FixedSmall => (
                model_output,
                Self::extract(&c.posterior_variance, t, &device),
                Self::extract(&c.posterior_log_variance_clipped, t, &device),
            ),
        };
        let process = |x0: Tensor<4>| {
            let x0 = match opts.denoised_fn {
                Some(f) => f(x0),
                None => x0,
            };
            match opts.threshold {
                Some(threshold) => threshold.apply(x0),
                None if opts.clip_denoised => x0.clamp(-1.0, 1.0),
                None => x0,
            }
        };
        let (mean, pred_xstart) = match self.mean_type {
            ModelMeanType::PreviousX => {
                let pred = process(self.predict_xstart_from_xprev(x, t, output.clone()));
                (output, pred)
            }
            ModelMeanType::StartX => {
                let pred = process(output);
                let (mean, _, _) = self.q_posterior_mean_variance(pred.clone(), x, t);
                (mean, pred)
            }
            ModelMeanType::Epsilon => {
                let pred = process(self.predict_xstart_from_eps(x.clone(), t, output));
                let (mean, _, _) = self.q_posterior_mean_variance(pred.clone(), x, t);
                (mean, pred)
            }
        };
        PMeanVariance {
            mean,
            variance,
            log_variance,
            pred_xstart,
        }
    }

    /// A `[B, 1, 1, 1]` boolean mask that is true where `t == 0`.
    pub(crate) fn is_first_step(t: &[usize], device: &Device) -> Tensor<4, Bool> {
        let values: Vec<bool> = t.iter().map(|&i| i == 0).collect();
        Tensor::from_data(TensorData::new(values, [t.len(), 1, 1, 1]), device)
    }

    /// A `[B, 1, 1, 1]` float mask that is 0 where `t == 0` and 1 elsewhere (no noise is added
    /// on the last sampling step).
    pub(crate) fn nonzero_mask(t: &[usize], device: &Device) -> Tensor<4> {
        let values: Vec<f32> = t.iter().map(|&i| if i == 0 { 0.0 } else { 1.0 }).collect();
        Tensor::from_data(TensorData::new(values, [t.len(), 1, 1, 1]), device)
    }
}

fn validate_betas(betas: &[f64]) -> Result<()> {
    if betas.is_empty() {
        return Err(DiffusionError::InvalidStepCount(0));
    }
    if let Some((i, b)) = betas
        .iter()
        .enumerate()
        .find(|(_, b)| !(**b > 0.0 && **b <= 1.0))
    {
        return Err(DiffusionError::InvalidBeta {
            index: i,
            value: *b,
        });
    }
    Ok(())
}
