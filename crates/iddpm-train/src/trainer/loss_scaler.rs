//! Dynamic loss scaling for mixed-precision training (the reference's `lg_loss_scale`).

use burn::tensor::Tensor;

/// Multiplies the loss by 2^lg before the backward pass, so that small gradients survive f16;
/// halves the scale when the gradients overflow and raises it a little after every good step.
/// Without mixed precision it scales by 1 and never changes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossScaler {
    enabled: bool,
    lg_scale: f64,
    growth: f64,
}

impl LossScaler {
    /// A scaler starting at 2^`lg_scale` that grows by `growth` in lg after each good step.
    pub(crate) fn new(enabled: bool, lg_scale: f64, growth: f64) -> Self {
        Self {
            enabled,
            lg_scale,
            growth,
        }
    }

    /// Whether the run uses mixed precision.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The factor the loss is multiplied by: 2^lg with mixed precision, else 1.
    pub(crate) fn scale(&self) -> f64 {
        if self.enabled {
            self.lg_scale.exp2()
        } else {
            1.0
        }
    }

    /// log2 of the scale (kept, and checkpointed, even when disabled).
    pub(crate) fn lg_scale(&self) -> f64 {
        self.lg_scale
    }

    /// Continues from a checkpoint's scale.
    pub(crate) fn set_lg_scale(&mut self, lg_scale: f64) {
        self.lg_scale = lg_scale;
    }

    /// Judges the gradients by the norm of the scaled ones. An overflow in f16 makes the
    /// squared norm inf or NaN (finite f16 values cannot overflow it in f32): then the update
    /// must be skipped, and the scale is halved. Returns whether to apply the gradients.
    pub(crate) fn accept(&mut self, scaled_norm: f64) -> bool {
        if self.enabled && !scaled_norm.is_finite() {
            self.lg_scale -= 1.0;
            return false;
        }
        true
    }

    /// Divides accepted gradients by the scale again (nothing to do without mixed precision).
    pub(crate) fn unscale(&self, grads: &mut [Option<Tensor<1>>]) {
        if !self.enabled {
            return;
        }
        let unscale = (1.0 / self.scale()) as f32;
        for g in grads.iter_mut().flatten() {
            *g = g.clone().mul_scalar(unscale);
        }
    }

    /// Raises the scale after an applied step; returns the new lg with mixed precision.
    pub(crate) fn grow(&mut self) -> Option<f64> {
        self.enabled.then(|| {
            self.lg_scale += self.growth;
            self.lg_scale
        })
    }
}
