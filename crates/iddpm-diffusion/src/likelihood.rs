//! Negative log-likelihood in bits/dim: the full variational bound, one timestep at a time.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::gaussian_diffusion::{GaussianDiffusion, PredictOptions};
use crate::losses::{mean_flat, normal_kl_standard};
use crate::model::{Conditioning, DiffusionModel};
use crate::noise::NoiseSource;

/// The terms of the variational bound of a batch, in bits/dim.
#[derive(Debug, Clone)]
pub struct BpdTerms {
    /// The full bound per example `[B]`: the sum of `vb` plus `prior_bpd`.
    pub total_bpd: Tensor<1>,
    /// KL(q(x_T | x_0) ‖ N(0, I)) per example `[B]`.
    pub prior_bpd: Tensor<1>,
    /// `[B, T]`: column j is timestep T−1−j (the loop's order, as the reference stacks it);
    /// the t = 0 column is the decoder NLL, the others KL terms.
    pub vb: Tensor<2>,
    /// `[B, T]`, same columns: mean squared error of the predicted x_0.
    pub xstart_mse: Tensor<2>,
    /// `[B, T]`, same columns: mean squared error of ε re-derived from the predicted x_0.
    pub mse: Tensor<2>,
}

impl GaussianDiffusion {
    /// The prior term KL(q(x_T | x_0) ‖ N(0, I)) per example, in bits/dim. It does not depend on
    /// the network and is small for any reasonable schedule.
    pub fn prior_bpd(&self, x_start: Tensor<4>) -> Tensor<1> {
        let batch = x_start.dims()[0];
        let t = vec![self.num_timesteps() - 1; batch];
        let (mean, _, log_variance) = self.q_mean_variance(x_start.clone(), &t);
        let log_variance = log_variance.expand(x_start.dims());
        mean_flat(normal_kl_standard(mean, log_variance)).div_scalar(std::f64::consts::LN_2)
    }

    /// The whole variational bound of `x_start` (images in [−1, 1]), evaluating every timestep
    /// from T−1 down to 0 with forward noise drawn from `noise` in that order.
    pub fn calc_bpd_loop<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x_start: Tensor<4>,
        clip_denoised: bool,
        cond: &Conditioning,
        noise: &mut dyn NoiseSource,
    ) -> Result<BpdTerms> {
        self.calc_bpd_loop_with_progress(model, x_start, clip_denoised, cond, noise, &mut |_| {})
    }

    /// [`calc_bpd_loop`](Self::calc_bpd_loop), calling `progress(t)` after each timestep.
    pub fn calc_bpd_loop_with_progress<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x_start: Tensor<4>,
        clip_denoised: bool,
        cond: &Conditioning,
        noise: &mut dyn NoiseSource,
        progress: &mut dyn FnMut(usize),
    ) -> Result<BpdTerms> {
        let device = x_start.device();
        let dims = x_start.dims();
        let batch = dims[0];
        let mut vb = Vec::with_capacity(self.num_timesteps());
        let mut xstart_mse = Vec::with_capacity(self.num_timesteps());
        let mut mse = Vec::with_capacity(self.num_timesteps());
        for step in (0..self.num_timesteps()).rev() {
            let t = vec![step; batch];
            let eps = noise.sample(dims, &device)?;
            let x_t = self.q_sample(x_start.clone(), &t, eps.clone());
            let (terms, pred_xstart) = self.vb_terms_bpd_with_model(
                model,
                x_start.clone(),
                x_t.clone(),
                &t,
                PredictOptions::clip(clip_denoised),
                cond,
            )?;
            vb.push(terms);
            let err = pred_xstart.clone() - x_start.clone();
            xstart_mse.push(mean_flat(err.clone() * err));
            let eps_hat = self.predict_eps_from_xstart(x_t, &t, pred_xstart);
            let err = eps_hat - eps;
            mse.push(mean_flat(err.clone() * err));
            progress(step);
        }
        let vb: Tensor<2> = Tensor::stack(vb, 1);
        let prior_bpd = self.prior_bpd(x_start);
        let total_bpd = vb.clone().sum_dim(1).reshape([batch]) + prior_bpd.clone();
        Ok(BpdTerms {
            total_bpd,
            prior_bpd,
            vb,
            xstart_mse: Tensor::stack(xstart_mse, 1),
            mse: Tensor::stack(mse, 1),
        })
    }
}
