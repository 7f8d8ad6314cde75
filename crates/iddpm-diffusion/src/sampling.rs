//! Samplers: ancestral sampling from p, and DDIM (deterministic for η = 0).

use burn::tensor::{Device, Tensor};

use crate::error::{DiffusionError, Result};
use crate::gaussian_diffusion::{GaussianDiffusion, PredictOptions};
use crate::model::{Conditioning, DiffusionModel};
use crate::noise::NoiseSource;
use crate::tensor_math::{ddim_sigma, one_minus};

/// The result of one reverse step.
#[derive(Debug, Clone)]
pub struct SampleStep {
    /// The timestep this step started from (x_t → x_{t−1}).
    pub t: usize,
    /// The new sample x_{t−1} (x_{t+1} for reverse DDIM).
    pub sample: Tensor<4>,
    /// The network's estimate of x_0 at this step.
    pub pred_xstart: Tensor<4>,
}

/// Which reverse step a sampling loop takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling: x_{t−1} ~ p(x_{t−1} | x_t).
    Ancestral,
    /// DDIM with the given η (0 = deterministic).
    Ddim {
        /// Amount of fresh noise, 0 ≤ η ≤ 1 (η = 1 matches the ancestral variance).
        eta: f64,
    },
}

impl GaussianDiffusion {
    /// One ancestral step x_t → x_{t−1}; no noise is added where t = 0.
    pub fn p_sample<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x: Tensor<4>,
        t: &[usize],
        opts: PredictOptions<'_>,
        cond: &Conditioning,
        noise: &mut dyn NoiseSource,
    ) -> Result<SampleStep> {
        let device = x.device();
        let dims = x.dims();
        let out = self.p_mean_variance(model, x, t, opts, cond)?;
        let z = noise.sample(dims, &device)?;
        let std = out.log_variance.mul_scalar(0.5).exp();
        let sample = out.mean + Self::nonzero_mask(t, &device) * std * z;
        Ok(SampleStep {
            t: t.first().copied().unwrap_or(0),
            sample,
            pred_xstart: out.pred_xstart,
        })
    }

    /// One DDIM step x_t → x_{t−1} with noise level `eta`. Fresh noise is drawn only when
    /// η > 0 (with η = 0 it would be multiplied by zero). The arguments are the reference's
    /// `ddim_sample`'s, one for one.
    #[allow(clippy::too_many_arguments)]
    pub fn ddim_sample<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x: Tensor<4>,
        t: &[usize],
        opts: PredictOptions<'_>,
        cond: &Conditioning,
        eta: f64,
        noise: &mut dyn NoiseSource,
    ) -> Result<SampleStep> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(DiffusionError::Shape(format!(
                "DDIM eta must lie in [0, 1]; got {eta}"
            )));
        }
        let device = x.device();
        let dims = x.dims();
        let out = self.p_mean_variance(model, x.clone(), t, opts, cond)?;
        let eps = self.predict_eps_from_xstart(x, t, out.pred_xstart.clone());
        let c = self.coefficients();
        let alpha_bar = Self::extract(&c.alphas_cumprod, t, &device);
        let alpha_bar_prev = Self::extract(&c.alphas_cumprod_prev, t, &device);
        // DDIM's Eq. 12: x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z.
        let mut mean = out.pred_xstart.clone() * alpha_bar_prev.clone().sqrt();
        if eta == 0.0 {
            mean = mean + one_minus(alpha_bar_prev).sqrt() * eps;
            return Ok(SampleStep {
                t: t.first().copied().unwrap_or(0),
                sample: mean,
                pred_xstart: out.pred_xstart,
            });
        }
        let sigma = ddim_sigma(alpha_bar, alpha_bar_prev.clone(), eta);
        let z = noise.sample(dims, &device)?;
        mean = mean + (one_minus(alpha_bar_prev) - sigma.clone() * sigma.clone()).sqrt() * eps;
        let sample = mean + Self::nonzero_mask(t, &device) * sigma * z;
        Ok(SampleStep {
            t: t.first().copied().unwrap_or(0),
            sample,
            pred_xstart: out.pred_xstart,
        })
    }

    /// One deterministic reverse-DDIM step x_t → x_{t+1} (encoding an image into noise).
    pub fn ddim_reverse_sample<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x: Tensor<4>,
        t: &[usize],
        opts: PredictOptions<'_>,
        cond: &Conditioning,
    ) -> Result<SampleStep> {
        let device = x.device();
        let out = self.p_mean_variance(model, x.clone(), t, opts, cond)?;
        let eps = self.predict_eps_from_xstart(x, t, out.pred_xstart.clone());
        let alpha_bar_next = Self::extract(&self.coefficients().alphas_cumprod_next, t, &device);
        let sample = out.pred_xstart.clone() * alpha_bar_next.clone().sqrt()
            + one_minus(alpha_bar_next).sqrt() * eps;
        Ok(SampleStep {
            t: t.first().copied().unwrap_or(0),
            sample,
            pred_xstart: out.pred_xstart,
        })
    }

    /// A sampling loop from x_T down to x_0 that yields every step (the reference's
    /// `p_sample_loop_progressive` and `ddim_sample_loop_progressive`).
    pub fn sample_loop_progressive<'a, M: DiffusionModel + ?Sized>(
        &'a self,
        model: &'a M,
        request: SampleRequest<'a>,
    ) -> Result<SampleLoop<'a, M>> {
        let SampleRequest {
            sampler,
            shape,
            start,
            options,
            conditioning,
            noise,
            device,
        } = request;
        let x = match start {
            Some(x) if x.dims() != shape => {
                return Err(DiffusionError::Shape(format!(
                    "start noise has shape {:?}, expected {shape:?}",
                    x.dims()
                )));
            }
            Some(x) => x.to_device(&device),
            None => noise.sample(shape, &device)?,
        };
        Ok(SampleLoop {
            diffusion: self,
            model,
            sampler,
            x: Some(x),
            next_t: self.num_timesteps(),
            opts: options,
            cond: conditioning,
            noise,
        })
    }

    /// Runs a whole sampling loop and returns the final x_0 (the reference's `p_sample_loop`,
    /// or `ddim_sample_loop` with [`Sampler::Ddim`]).
    pub fn sample_loop<'a, M: DiffusionModel + ?Sized>(
        &'a self,
        model: &'a M,
        request: SampleRequest<'a>,
    ) -> Result<Tensor<4>> {
        let mut last = None;
        for step in self.sample_loop_progressive(model, request)? {
            last = Some(step?.sample);
        }
        Ok(last.expect("a diffusion has at least one step"))
    }
}

/// One sampling job: everything a sampling loop needs besides the diffusion and the model.
pub struct SampleRequest<'a> {
    /// Which reverse step to take.
    pub sampler: Sampler,
    /// `[batch, channels, height, width]` of the samples.
    pub shape: [usize; 4],
    /// The start noise x_T; drawn from `noise` when `None`.
    pub start: Option<Tensor<4>>,
    /// Clipping of the predicted x_0, and an optional function applied to it.
    pub options: PredictOptions<'a>,
    /// Class labels and low-resolution images the model is conditioned on.
    pub conditioning: &'a Conditioning,
    /// Where x_T (when not given) and every step's fresh noise come from.
    pub noise: &'a mut dyn NoiseSource,
    /// Where the samples are computed.
    pub device: Device,
}

impl<'a> SampleRequest<'a> {
    /// Samples of `shape` with clipped predictions of x_0, starting from noise drawn from
    /// `noise`.
    pub fn new(
        sampler: Sampler,
        shape: [usize; 4],
        conditioning: &'a Conditioning,
        noise: &'a mut dyn NoiseSource,
        device: &Device,
    ) -> Self {
        Self {
            sampler,
            shape,
            start: None,
            options: PredictOptions::clipped(),
            conditioning,
            noise,
            device: device.clone(),
        }
    }

    /// Starts from the given x_T instead of drawing it.
    pub fn starting_from(mut self, x_t: Tensor<4>) -> Self {
        self.start = Some(x_t);
        self
    }

    /// Post-processes the predicted x_0 with `options` instead of clipping it.
    pub fn with_options(mut self, options: PredictOptions<'a>) -> Self {
        self.options = options;
        self
    }
}

/// An iterator over the steps of a sampling loop, from t = T−1 down to 0.
pub struct SampleLoop<'a, M: DiffusionModel + ?Sized> {
    diffusion: &'a GaussianDiffusion,
    model: &'a M,
    sampler: Sampler,
    x: Option<Tensor<4>>,
    next_t: usize,
    opts: PredictOptions<'a>,
    cond: &'a Conditioning,
    noise: &'a mut dyn NoiseSource,
}

impl<M: DiffusionModel + ?Sized> SampleLoop<'_, M> {
    /// How many steps are left.
    pub fn remaining(&self) -> usize {
        self.next_t
    }
}

impl<M: DiffusionModel + ?Sized> Iterator for SampleLoop<'_, M> {
    type Item = Result<SampleStep>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_t == 0 {
            return None;
        }
        let x = self.x.take()?;
        self.next_t -= 1;
        let t = vec![self.next_t; x.dims()[0]];
        let d = self.diffusion;
        let step = match self.sampler {
            Sampler::Ancestral => d.p_sample(self.model, x, &t, self.opts, self.cond, self.noise),
            Sampler::Ddim { eta } => {
                d.ddim_sample(self.model, x, &t, self.opts, self.cond, eta, self.noise)
            }
        };
        match step {
            Ok(step) => {
                self.x = Some(step.sample.clone());
                Some(Ok(step))
            }
            Err(e) => {
                self.next_t = 0;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.next_t, Some(self.next_t))
    }
}
