//! Sampling loops: the network evaluated at each timestep from T−1 down to 0, and a solver
//! ([`crate::samplers`]) stepping from its predictions; the reference's single steps
//! (`p_sample`, `ddim_sample`, `ddim_reverse_sample`) as methods.

use burn::tensor::{Device, Tensor};

use crate::error::{DiffusionError, Result};
use crate::gaussian_diffusion::{GaussianDiffusion, PredictOptions};
use crate::model::{Conditioning, DiffusionModel};
use crate::noise::NoiseSource;
use crate::samplers::{ReverseSolver, Sampler, SolverInput, check_eta};
use crate::tensor_math::one_minus;

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
        let out = self.p_mean_variance(model, x, t, opts, cond)?;
        let sample = self.ancestral_update(t, &out, noise)?;
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
        check_eta(eta)?;
        let out = self.p_mean_variance(model, x.clone(), t, opts, cond)?;
        let sample = self.ddim_update(x, t, &out, eta, noise)?;
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
            solver: sampler.build()?,
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
    solver: Box<dyn ReverseSolver>,
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

    /// One network evaluation at (x, t), and the solver's step from it.
    fn step(&mut self, x: Tensor<4>, t: &[usize]) -> Result<SampleStep> {
        let d = self.diffusion;
        let prediction = d.p_mean_variance(self.model, x.clone(), t, self.opts, self.cond)?;
        let sample = self.solver.step(SolverInput {
            diffusion: d,
            x,
            t,
            prediction: &prediction,
            noise: self.noise,
        })?;
        Ok(SampleStep {
            t: t.first().copied().unwrap_or(0),
            sample,
            pred_xstart: prediction.pred_xstart,
        })
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
        let step = self.step(x, &t);
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
