//! What one training step gathers: the examples it draws, and the losses and gradients its
//! microbatches add up.

use burn::tensor::{Gradients, Tensor};
use iddpm_diffusion::TrainingLosses;
use iddpm_kernels::to_f32_vec;
use iddpm_nn::UNetModel;

use super::for_each_param;

/// This process's examples of one step: timestep, importance weight and forward-process noise.
pub(crate) struct Examples {
    /// Timestep of each example.
    pub(crate) timesteps: Vec<usize>,
    /// Importance weight of each example (1 for uniform sampling).
    pub(crate) weights: Vec<f32>,
    /// The noise ε of each example, `[b, 3, r, r]` flattened.
    pub(crate) noise: Vec<f32>,
}

/// The sums over a step's microbatches.
#[derive(Default)]
pub(crate) struct StepAccumulator {
    /// Each parameter's gradient, summed (`None` until one arrives).
    pub(crate) grads: Vec<Option<Tensor<1>>>,
    /// Every example's unweighted loss, in batch order.
    pub(crate) raw_loss: Vec<f32>,
    /// Every example's logged terms, weighted as the reference logs them.
    pub(crate) terms: Vec<(&'static str, Vec<f32>)>,
}

impl StepAccumulator {
    /// Records one microbatch's per-example losses, with importance weights `w`.
    pub(crate) fn add_losses(&mut self, losses: &TrainingLosses, w: &[f32]) {
        let loss_values = to_f32_vec(losses.loss.clone().inner());
        self.raw_loss.extend(loss_values.iter().copied());
        let mut logged = vec![("loss", loss_values)];
        if let Some(mse) = &losses.mse {
            logged.push(("mse", to_f32_vec(mse.clone().inner())));
        }
        if let Some(vb) = &losses.vb {
            logged.push(("vb", to_f32_vec(vb.clone().inner())));
        }
        for (key, values) in logged {
            let weighted = values.iter().zip(w).map(|(v, w)| v * w);
            match self.terms.iter_mut().find(|(k, _)| *k == key) {
                Some((_, all)) => all.extend(weighted),
                None => self.terms.push((key, weighted.collect())),
            }
        }
    }

    /// Adds one backward pass's gradients of `model`'s parameters.
    pub(crate) fn add_gradients(&mut self, model: &mut UNetModel, grads: Gradients) {
        let acc = &mut self.grads;
        if acc.is_empty() {
            for_each_param(model, |_, _, _| acc.push(None));
        }
        for_each_param(model, |i, _, p| {
            if let Some(g) = p.grad_flat(&grads) {
                acc[i] = Some(match acc[i].take() {
                    Some(a) => a + g,
                    None => g,
                });
            }
        });
    }
}

/// The L2 norm of all gradients together (0 when there are none), summed in f32 as one tensor.
pub(crate) fn global_norm(grads: &[Option<Tensor<1>>]) -> f64 {
    let squares: Vec<Tensor<1>> = grads
        .iter()
        .flatten()
        .map(|g| (g.clone() * g.clone()).sum())
        .collect();
    if squares.is_empty() {
        return 0.0;
    }
    let total: f32 = Tensor::cat(squares, 0).sum().into_scalar();
    (total as f64).sqrt()
}
