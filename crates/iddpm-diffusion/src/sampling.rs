//! Samplers: ancestral sampling from p, and DDIM (deterministic for η = 0).

use burn::tensor::{Device, Tensor};

use crate::error::{DiffusionError, Result};
use crate::gaussian_diffusion::{GaussianDiffusion, PredictOptions};
use crate::model::{Conditioning, DiffusionModel};
use crate::noise::NoiseSource;

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
    /// η > 0 (with η = 0 it would be multiplied by zero).
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
        let mut mean = out.pred_xstart.clone() * alpha_bar_prev.clone().sqrt();
        if eta == 0.0 {
            mean = mean + alpha_bar_prev.neg().add_scalar(1.0).sqrt() * eps;
            return Ok(SampleStep {
                t: t.first().copied().unwrap_or(0),
                sample: mean,
                pred_xstart: out.pred_xstart,
            });
        }
        let sigma = ((alpha_bar_prev.clone().neg().add_scalar(1.0)
            / alpha_bar.clone().neg().add_scalar(1.0))
        .sqrt()
            * (alpha_bar / alpha_bar_prev.clone())
                .neg()
                .add_scalar(1.0)
                .sqrt())
        .mul_scalar(eta as f32);
        let z = noise.sample(dims, &device)?;
        mean = mean
            + (alpha_bar_prev.neg().add_scalar(1.0) - sigma.clone() * sigma.clone()).sqrt() * eps;
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
            + alpha_bar_next.neg().add_scalar(1.0).sqrt() * eps;
        Ok(SampleStep {
            t: t.first().copied().unwrap_or(0),
            sample,
            pred_xstart: out.pred_xstart,
        })
    }

    /// A sampling loop from x_T down to x_0 that yields every step (the reference's
    /// `*_progressive`). `x_t` is the start noise; when `None` it is drawn from `noise`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_loop_progressive<'a, M: DiffusionModel + ?Sized>(
        &'a self,
        model: &'a M,
        sampler: Sampler,
        shape: [usize; 4],
        x_t: Option<Tensor<4>>,
        opts: PredictOptions<'a>,
        cond: &'a Conditioning,
        noise: &'a mut dyn NoiseSource,
        device: &Device,
    ) -> Result<SampleLoop<'a, M>> {
        let x = match x_t {
            Some(x) => {
                if x.dims() != shape {
                    return Err(DiffusionError::Shape(format!(
                        "start noise has shape {:?}, expected {shape:?}",
                        x.dims()
                    )));
                }
                x.to_device(device)
            }
            None => noise.sample(shape, device)?,
        };
        Ok(SampleLoop {
            diffusion: self,
            model,
            sampler,
            x: Some(x),
            next_t: self.num_timesteps(),
            opts,
            cond,
            noise,
        })
    }

    /// Runs a whole sampling loop and returns the final x_0.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_loop<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        sampler: Sampler,
        shape: [usize; 4],
        x_t: Option<Tensor<4>>,
        opts: PredictOptions<'_>,
        cond: &Conditioning,
        noise: &mut dyn NoiseSource,
        device: &Device,
    ) -> Result<Tensor<4>> {
        let steps =
            self.sample_loop_progressive(model, sampler, shape, x_t, opts, cond, noise, device)?;
        let mut last = None;
        for step in steps {
            last = Some(step?.sample);
        }
        Ok(last.expect("a diffusion has at least one step"))
    }

    /// Ancestral sampling from x_T to x_0 (the reference's `p_sample_loop`).
    #[allow(clippy::too_many_arguments)]
    pub fn p_sample_loop<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        shape: [usize; 4],
        x_t: Option<Tensor<4>>,
        opts: PredictOptions<'_>,
        cond: &Conditioning,
        noise: &mut dyn NoiseSource,
        device: &Device,
    ) -> Result<Tensor<4>> {
        self.sample_loop(
            model,
            Sampler::Ancestral,
            shape,
            x_t,
            opts,
            cond,
            noise,
            device,
        )
    }

    /// DDIM sampling from x_T to x_0 (the reference's `ddim_sample_loop`).
    #[allow(clippy::too_many_arguments)]
    pub fn ddim_sample_loop<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        shape: [usize; 4],
        x_t: Option<Tensor<4>>,
        opts: PredictOptions<'_>,
        cond: &Conditioning,
        eta: f64,
        noise: &mut dyn NoiseSource,
        device: &Device,
    ) -> Result<Tensor<4>> {
        self.sample_loop(
            model,
            Sampler::Ddim { eta },
            shape,
            x_t,
            opts,
            cond,
            noise,
            device,
        )
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
