//! The training objectives: L_simple, L_hybrid and L_vlb, per batch element.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::gaussian_diffusion::{GaussianDiffusion, PMeanVariance, PredictOptions};
use crate::losses::{discretized_gaussian_log_likelihood, mean_flat, normal_kl};
use crate::model::{Conditioning, DiffusionModel};
use crate::options::{LossType, ModelMeanType};
use crate::tensor_math::split_mean_and_variance;

/// Per-example loss terms `[B]` of one training batch.
#[derive(Debug, Clone)]
pub struct TrainingLosses {
    /// The loss to minimise (mse + vb for L_hybrid, vb alone for L_vlb).
    pub loss: Tensor<1>,
    /// Mean squared error of the network's prediction (MSE losses only).
    pub mse: Option<Tensor<1>>,
    /// The variational-bound term in bits/dim (learned variances and KL losses).
    pub vb: Option<Tensor<1>>,
}

impl GaussianDiffusion {
    /// The L_vlb term of each example in bits/dim: KL(q(x_{t−1}|x_t,x_0) ‖ p(x_{t−1}|x_t)) for
    /// t > 0 and the discretised decoder NLL at t = 0, given the reverse process `p`.
    pub fn vb_terms_bpd(
        &self,
        p: &PMeanVariance,
        x_start: Tensor<4>,
        x_t: Tensor<4>,
        t: &[usize],
    ) -> Tensor<1> {
        let device = x_start.device();
        let (true_mean, _, true_log_variance) =
            self.q_posterior_mean_variance(x_start.clone(), x_t, t);
        let kl = normal_kl(
            true_mean,
            true_log_variance,
            p.mean.clone(),
            p.log_variance.clone(),
        );
        let kl = mean_flat(kl).div_scalar(std::f64::consts::LN_2);
        let decoder_nll = discretized_gaussian_log_likelihood(
            x_start,
            p.mean.clone(),
            p.log_variance.clone().mul_scalar(0.5),
        )
        .neg();
        let decoder_nll = mean_flat(decoder_nll).div_scalar(std::f64::consts::LN_2);
        let first = Self::is_first_step(t, &device).reshape([t.len()]);
        kl.mask_where(first, decoder_nll)
    }

    /// Runs the network and returns the L_vlb term (bits/dim) and the predicted x_0.
    pub fn vb_terms_bpd_with_model<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x_start: Tensor<4>,
        x_t: Tensor<4>,
        t: &[usize],
        opts: PredictOptions<'_>,
        cond: &Conditioning,
    ) -> Result<(Tensor<1>, Tensor<4>)> {
        let p = self.p_mean_variance(model, x_t.clone(), t, opts, cond)?;
        let vb = self.vb_terms_bpd(&p, x_start, x_t, t);
        Ok((vb, p.pred_xstart))
    }

    /// The training losses of one batch at timesteps `t` with the forward-process `noise`.
    ///
    /// With a learned variance and an MSE loss this is L_hybrid: the vb term sees the mean part
    /// of the output with its gradient stopped, so it trains only the variance, and it is
    /// scaled by T/1000 for RESCALED_MSE.
    pub fn training_losses<M: DiffusionModel + ?Sized>(
        &self,
        model: &M,
        x_start: Tensor<4>,
        t: &[usize],
        noise: Tensor<4>,
        cond: &Conditioning,
    ) -> Result<TrainingLosses> {
        let x_t = self.q_sample(x_start.clone(), t, noise.clone());
        if self.loss_type().is_vb() {
            let (mut vb, _) = self.vb_terms_bpd_with_model(
                model,
                x_start,
                x_t,
                t,
                PredictOptions::unclipped(),
                cond,
            )?;
            if self.loss_type() == LossType::RescaledKl {
                vb = vb.mul_scalar(self.num_timesteps() as f32);
            }
            return Ok(TrainingLosses {
                loss: vb.clone(),
                mse: None,
                vb: Some(vb),
            });
        }
        let model_output = self.run_model(model, x_t.clone(), t, cond)?;
        let channels = x_t.dims()[1];
        let (prediction, vb) = if self.var_type().is_learned() {
            let (prediction, var_values) = split_mean_and_variance(model_output, channels);
            let frozen = Tensor::cat(vec![prediction.clone().detach(), var_values], 1);
            let p = self.p_mean_variance_from_output(
                frozen,
                x_t.clone(),
                t,
                PredictOptions::unclipped(),
            );
            let mut vb = self.vb_terms_bpd(&p, x_start.clone(), x_t.clone(), t);
            if self.loss_type() == LossType::RescaledMse {
                // The paper's λ = 0.001 was tuned at T = 1000; keep the same weight per step.
                vb = vb.mul_scalar((self.num_timesteps() as f64 / 1000.0) as f32);
            }
            (prediction, Some(vb))
        } else {
            (model_output, None)
        };
        let target = match self.mean_type() {
            ModelMeanType::PreviousX => self.q_posterior_mean_variance(x_start, x_t, t).0,
            ModelMeanType::StartX => x_start,
            ModelMeanType::Epsilon => noise,
        };
        let diff = target - prediction;
        let mse = mean_flat(diff.clone() * diff);
        let loss = match &vb {
            Some(vb) => mse.clone() + vb.clone(),
            None => mse.clone(),
        };
        Ok(TrainingLosses {
            loss,
            mse: Some(mse),
            vb,
        })
    }
}
