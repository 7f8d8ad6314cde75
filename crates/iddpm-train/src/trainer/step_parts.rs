//! What one training step adds up over its microbatches: losses, gradients and the objective.

use burn::tensor::{Gradients, Tensor};
use iddpm_diffusion::TrainingLosses;
use iddpm_kernels::to_f32_vec;
use iddpm_nn::UNetModel;

use super::for_each_param;

/// The sums over a step's microbatches.
#[derive(Default)]
pub(crate) struct StepAccumulator {
    /// Each parameter's gradient, summed (`None` until one arrives).
    pub(crate) grads: Vec<Option<Tensor<1>>>,
    /// Every example's loss terms, unweighted, in batch order (`loss` first).
    pub(crate) terms: Vec<(&'static str, Vec<f32>)>,
    /// The microbatches' shares of the weighted mean loss, added up.
    pub(crate) objective: f64,
}

impl StepAccumulator {
    /// Records one microbatch's per-example losses.
    pub(crate) fn add_losses(&mut self, losses: &TrainingLosses) {
        let mut terms = vec![("loss", to_f32_vec(losses.loss.clone().inner()))];
        if let Some(mse) = &losses.mse {
            terms.push(("mse", to_f32_vec(mse.clone().inner())));
        }
        if let Some(vb) = &losses.vb {
            terms.push(("vb", to_f32_vec(vb.clone().inner())));
        }
        for (key, values) in terms {
            match self.terms.iter_mut().find(|(k, _)| *k == key) {
                Some((_, all)) => all.extend(values),
                None => self.terms.push((key, values)),
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
