//! The first half of a step (the reference's `forward_backward`): the examples it trains on,
//! their losses and the gradients, microbatch by microbatch, summed over processes.

use std::ops::Range;

use burn::tensor::{Int, Tensor, TensorData};
use iddpm_data::{Batch, batch_ranges};
use iddpm_diffusion::{Conditioning, ScheduleSampler};
use rand_distr::{Distribution, StandardNormal};

use super::step_parts::StepAccumulator;
use super::{TimestepSampler, Trainer, dropout_seed, example_rng};
use crate::error::Result;

/// What one step trains on: this process's part of the global batch and each example's
/// timestep, importance weight and noise. [`Trainer::next_inputs`] draws them; a caller may
/// build them itself, e.g. to replay a step recorded elsewhere.
#[derive(Debug, Clone)]
pub struct StepInputs {
    /// The images (`[b, C, r, r]` flattened) and their labels.
    pub batch: Batch,
    /// Where the first example stands in the global batch (it keys the dropout masks).
    pub first: usize,
    /// Each example's timestep.
    pub timesteps: Vec<usize>,
    /// Each example's importance weight (1 for uniform sampling).
    pub weights: Vec<f32>,
    /// The forward-process noise ε of each example, shaped as the images.
    pub noise: Vec<f32>,
}

/// What the forward and backward passes of one step computed.
#[derive(Debug, Clone)]
pub struct StepGradients {
    /// Each parameter's gradient in parameter order (`None` where it has none), summed over
    /// microbatches and processes: the gradient of the global batch's weighted mean loss,
    /// times the loss scale under mixed precision.
    pub grads: Vec<Option<Tensor<1>>>,
    /// The global batch's mean of `loss·weight`, as logged (the plain mean loss under
    /// uniform timestep sampling).
    pub loss: f64,
    /// This process's share of the objective that was differentiated, `Σ loss·weight / B`
    /// over its examples (B the global batch; the whole objective on one process).
    pub objective: f64,
    /// This process's examples' loss terms, unweighted, in batch order: `loss`, then `mse`
    /// and `vb` where the loss type has them.
    pub terms: Vec<(&'static str, Vec<f32>)>,
}

impl Trainer<'_> {
    /// This process's part of the next global batch, with each example's draws.
    pub fn next_inputs(&mut self) -> Result<StepInputs> {
        let b = self.opts.batch_size;
        let first = self.group.rank() * b;
        let batch = self.loader.next_batch_part(first..first + b)?;
        let chw = batch.images.len() / b.max(1);
        let mut inputs = StepInputs {
            batch,
            first,
            timesteps: Vec::with_capacity(b),
            weights: Vec::with_capacity(b),
            noise: Vec::with_capacity(b * chw),
        };
        self.draw_examples(&mut inputs, chw);
        Ok(inputs)
    }

    /// Each example's timestep, importance weight and noise, drawn from a generator keyed by
    /// the example's index in the global batch.
    fn draw_examples(&self, inputs: &mut StepInputs, chw: usize) {
        let distribution = self.sampler.get().distribution();
        for i in 0..inputs.batch.size {
            let mut rng = example_rng(self.opts.seed, self.step, (inputs.first + i) as u64);
            let (t, w) = distribution.draw(&mut rng);
            inputs.timesteps.push(t);
            inputs.weights.push(w);
            let noise = (0..chw).map(|_| -> f32 { StandardNormal.sample(&mut rng) });
            inputs.noise.extend(noise);
        }
    }

    /// Losses and gradients of `inputs`, microbatch by microbatch; the gradients are summed
    /// over processes, the losses shared, logged and fed to the timestep sampler.
    pub fn forward_backward(&mut self, inputs: &StepInputs) -> Result<StepGradients> {
        let b = self.opts.batch_size;
        self.check_inputs(inputs)?;
        let micro = match self.opts.microbatch {
            0 => b,
            m => m,
        };
        let mut acc = StepAccumulator::default();
        for part in batch_ranges(b, micro) {
            self.microbatch_backward(inputs, part, &mut acc)?;
        }
        let loss = self.share_losses(b, &inputs.timesteps, &inputs.weights, &acc.terms)?;
        if self.group.world_size() > 1 {
            self.all_reduce_gradients(&mut acc.grads)?;
        }
        Ok(StepGradients {
            grads: acc.grads,
            loss,
            objective: acc.objective,
            terms: acc.terms,
        })
    }

    /// Refuses inputs whose sizes do not fit this run's batch and images.
    fn check_inputs(&self, inputs: &StepInputs) -> Result<()> {
        let b = self.opts.batch_size;
        let chw = self.image_channels() * self.resolution * self.resolution;
        let batch = &inputs.batch;
        let sizes_ok = batch.size == b
            && batch.resolution == self.resolution
            && batch.images.len() == b * chw
            && inputs.noise.len() == b * chw
            && inputs.timesteps.len() == b
            && inputs.weights.len() == b
            && batch.labels.as_ref().is_none_or(|l| l.len() == b);
        if !sizes_ok {
            return Err(crate::TrainError::Config(format!(
                "step inputs of {} images ({} values, {} noise values, {} timesteps, {} weights) \
                 do not fit a batch of {b} images of {chw} values",
                batch.size,
                batch.images.len(),
                inputs.noise.len(),
                inputs.timesteps.len(),
                inputs.weights.len()
            )));
        }
        let t_max = self.diffusion.num_timesteps();
        if let Some(t) = inputs.timesteps.iter().find(|&&t| t >= t_max) {
            return Err(crate::TrainError::Config(format!(
                "timestep {t} is out of range: the diffusion has {t_max} steps"
            )));
        }
        Ok(())
    }

    /// Forward and backward pass of the examples `part` of `inputs`; adds their gradients,
    /// losses and share of the objective to `acc`.
    fn microbatch_backward(
        &mut self,
        inputs: &StepInputs,
        part: Range<usize>,
        acc: &mut StepAccumulator,
    ) -> Result<()> {
        let batch = &inputs.batch;
        let (start, m, r) = (part.start, part.len(), batch.resolution);
        let c = self.image_channels();
        let chw = c * r * r;
        let pixels = start * chw..part.end * chw;
        let x = Tensor::<4>::from_data(
            TensorData::new(batch.images[pixels.clone()].to_vec(), [m, c, r, r]),
            &self.train_device,
        );
        let eps = Tensor::<4>::from_data(
            TensorData::new(inputs.noise[pixels].to_vec(), [m, c, r, r]),
            &self.train_device,
        );
        // Dropout's masks come from a keyed stream: reseeding it from the step and the
        // example's global index makes them reproducible, so a resumed run replays them
        // exactly, whatever the split into processes. The device's generator is reseeded
        // too, for any other random op on it.
        let offset = (inputs.first + start) as u64;
        let seed = dropout_seed(self.opts.seed, self.step, offset);
        iddpm_nn::dropout::reseed(seed);
        self.train_device.seed(seed);
        let cond = self.conditioning(batch, part.clone(), &x)?;
        let t = &inputs.timesteps[part.clone()];
        let losses = self
            .diffusion
            .training_losses(&self.model, x, t, eps, &cond)?;
        acc.add_losses(&losses);
        let w = &inputs.weights[part];
        let wt = Tensor::<1>::from_data(TensorData::new(w.to_vec(), [m]), &self.train_device);
        // Scaled so that the gradients summed over microbatches and processes are the
        // global batch's mean (times the loss scale of mixed precision, undone in `optimize`).
        let global_b = self.opts.batch_size * self.group.world_size();
        let part_share = m as f64 / global_b as f64;
        let weighted = (losses.loss * wt).mean();
        acc.objective += f64::from(weighted.clone().into_scalar::<f32>()) * part_share;
        let loss = weighted.mul_scalar((part_share * self.scaler.scale()) as f32);
        acc.add_gradients(&mut self.model, loss.backward());
        Ok(())
    }

    /// The labels (for a class-conditional model; an unconditional one ignores the data's)
    /// and low-resolution images of the examples `part` of `batch`, whose images are `x`.
    /// Missing or out-of-range labels are errors.
    fn conditioning(
        &self,
        batch: &Batch,
        part: Range<usize>,
        x: &Tensor<4>,
    ) -> Result<Conditioning> {
        let labels = batch
            .labels
            .as_ref()
            .filter(|_| self.model.is_class_conditional())
            .map(|l| &l[part.clone()]);
        let low_res = self.low_res(x);
        let low_res_channels = low_res.as_ref().map(|l| l.dims()[1]);
        self.model
            .check_conditioning(labels, x.dims()[1], low_res_channels)?;
        Ok(Conditioning {
            labels: labels.map(|l| {
                Tensor::<1, Int>::from_data(
                    TensorData::new(l.to_vec(), [part.len()]),
                    &self.train_device,
                )
            }),
            low_res,
        })
    }

    /// Shares every example's timestep and losses with all processes (in global order), feeds
    /// the loss-aware sampler, logs the terms (weighted, as the reference logs them) and their
    /// quartiles; returns the global batch's mean loss.
    fn share_losses(
        &mut self,
        b: usize,
        ts: &[usize],
        weights: &[f32],
        terms: &[(&'static str, Vec<f32>)],
    ) -> Result<f64> {
        // Every process sees every example's timestep, weight and losses, in global order.
        let mut local = Vec::with_capacity(b * (2 + terms.len()));
        local.extend(ts.iter().map(|&t| t as f32));
        local.extend(weights);
        for (_, values) in terms {
            local.extend(values);
        }
        let all = self.group.all_gather(&local)?;
        let per_rank = local.len();
        let column = |k: usize| -> Vec<f32> {
            all.chunks(per_rank)
                .flat_map(|c| c[k * b..(k + 1) * b].to_vec())
                .collect()
        };
        let all_t: Vec<usize> = column(0).iter().map(|&t| t as usize).collect();
        let all_w = column(1);
        if let TimestepSampler::LossSecondMoment(s) = &mut self.sampler {
            // Terms come first with the loss itself.
            let all_loss: Vec<f64> = column(2).iter().map(|&v| f64::from(v)).collect();
            s.update_with_all_losses(&all_t, &all_loss);
        }
        let t_total = self.diffusion.num_timesteps();
        let mut loss = 0.0;
        for (k, (key, _)) in terms.iter().enumerate() {
            let values: Vec<f64> = column(2 + k)
                .iter()
                .zip(&all_w)
                .map(|(&v, &w)| f64::from(v * w))
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            if *key == "loss" {
                loss = mean;
            }
            self.logger.log_mean(key, mean);
            for (&ti, &v) in all_t.iter().zip(&values) {
                let quartile = 4 * ti / t_total;
                self.logger.log_mean(&format!("{key}_q{quartile}"), v);
            }
        }
        Ok(loss)
    }
}
