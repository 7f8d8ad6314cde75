//! The second half of a step (the reference's `optimize`): loss scaling, AdamW, the EMAs,
//! and the gradients' sum over processes.

use burn::tensor::{Tensor, TensorData};
use iddpm_kernels::to_f32_vec;

use super::forward_backward::StepGradients;
use super::step_parts::global_norm;
use super::{StepReport, Trainer, for_each_param};
use crate::error::Result;

impl Trainer<'_> {
    /// Applies one step's gradients at the current learning rate, updates the EMAs and ends
    /// the step (its counter and logs). Under mixed precision, gradients that overflowed
    /// leave the parameters and EMAs as they were and lower the loss scale.
    pub fn optimize(&mut self, gradients: StepGradients) -> StepReport {
        let StepGradients {
            mut grads, loss, ..
        } = gradients;
        let lr = self.current_lr();
        let grad_norm = self.update(&mut grads, lr);
        self.step += 1;
        self.loss_points.push((self.step as f64, loss));
        self.log_step_counts(self.opts.batch_size * self.group.world_size(), lr);
        let lg_loss_scale = match grad_norm {
            Some(_) => self.scaler.grow(),
            None => Some(self.scaler.lg_scale()),
        };
        StepReport {
            step: self.step,
            loss,
            grad_norm: grad_norm.unwrap_or(0.0),
            skipped: grad_norm.is_none(),
            lg_loss_scale,
        }
    }

    /// Applies the gradients with learning rate `lr` (and updates the EMAs); returns their
    /// global norm, or `None` when mixed precision found them overflowed and skipped the step.
    fn update(&mut self, grads: &mut [Option<Tensor<1>>], lr: f64) -> Option<f64> {
        let scaled_norm = global_norm(grads);
        if self.scaler.enabled() {
            self.logger.log("lg_loss_scale", self.scaler.lg_scale());
        }
        if !self.scaler.accept(scaled_norm) {
            return None;
        }
        self.scaler.unscale(grads);
        let grad_norm = scaled_norm / self.scaler.scale();
        self.apply_gradients(grads, lr);
        self.logger.log_mean("grad_norm", grad_norm);
        Some(grad_norm)
    }

    /// One AdamW update of every parameter with the accumulated gradients, then the EMAs.
    fn apply_gradients(&mut self, acc: &mut [Option<Tensor<1>>], lr: f64) {
        self.opt.begin_step();
        let opt = &mut self.opt;
        let mut new_flats = Vec::with_capacity(acc.len());
        for_each_param(&mut self.model, |i, name, p| {
            let current = p.flat();
            let updated = match acc[i].take() {
                Some(g) => opt.update(name, current, g, lr),
                None => current,
            };
            p.set_flat(updated.clone());
            new_flats.push(updated);
        });
        // The step being taken is `self.step + 1`.
        let step = self.step + 1;
        for ema in &mut self.emas {
            match self.opts.ema_warmup {
                Some(w) => ema.update_at(w.decay(ema.rate, step), &new_flats),
                None => ema.update(&new_flats),
            }
        }
    }

    /// Sums the accumulated gradients over all processes (one host round trip).
    pub(super) fn all_reduce_gradients(&mut self, acc: &mut [Option<Tensor<1>>]) -> Result<()> {
        let present: Vec<usize> = (0..acc.len()).filter(|&i| acc[i].is_some()).collect();
        if present.is_empty() {
            return Ok(());
        }
        let sizes: Vec<usize> = present
            .iter()
            .map(|&i| acc[i].as_ref().expect("present").dims()[0])
            .collect();
        let flat = Tensor::cat(
            present
                .iter()
                .map(|&i| acc[i].take().expect("present"))
                .collect(),
            0,
        );
        let device = flat.device();
        // Moved, not cloned: a tensor held once can hand its buffer over without a copy.
        let mut host = to_f32_vec(flat);
        self.group.all_reduce_sum(&mut host)?;
        let len = host.len();
        let summed = Tensor::<1>::from_data(TensorData::new(host, [len]), &device);
        let mut offset = 0;
        for (&i, &n) in present.iter().zip(&sizes) {
            acc[i] = Some(summed.clone().narrow(0, offset, n));
            offset += n;
        }
        Ok(())
    }
}
