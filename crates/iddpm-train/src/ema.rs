//! Exponential moving averages of the parameters (the reference's `update_ema`).

use burn::tensor::Tensor;

/// One EMA: `ema ← rate·ema + (1 − rate)·θ` after every optimizer step.
pub struct Ema {
    /// The decay rate, e.g. 0.9999.
    pub rate: f64,
    /// `(name, flattened value)` in parameter order.
    pub params: Vec<(String, Tensor<1>)>,
}

/// diffusers' EMA warm-up: the decay after optimizer step `step` (1, 2, …) is
/// `min(rate, 1 − (1 + (step − 1)/inv_gamma)^−power)`, so a short run's average forgets its
/// random initial weights (the first update copies the weights outright). Off by default: the
/// reference decays at the full rate from the first step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmaWarmup {
    /// Steps scale (diffusers' default 1).
    pub inv_gamma: f64,
    /// Growth exponent (diffusers' default 2/3; 3/4 for shorter runs).
    pub power: f64,
}

impl Default for EmaWarmup {
    /// diffusers' defaults: inv_gamma 1, power 2/3.
    fn default() -> Self {
        Self {
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
        }
    }
}

impl EmaWarmup {
    /// The decay of an EMA of `rate` at optimizer step `step` (counted from 1).
    pub fn decay(&self, rate: f64, step: u64) -> f64 {
        let s = step.saturating_sub(1) as f64;
        if s == 0.0 {
            return 0.0;
        }
        (1.0 - (1.0 + s / self.inv_gamma).powf(-self.power)).clamp(0.0, rate)
    }
}

impl Ema {
    /// An EMA starting from the given parameter values.
    pub fn new(rate: f64, params: Vec<(String, Tensor<1>)>) -> Self {
        Self { rate, params }
    }

    /// Moves the average towards `current` (same order and shapes) at the EMA's rate.
    pub fn update(&mut self, current: &[Tensor<1>]) {
        self.update_at(self.rate, current);
    }

    /// Moves the average towards `current` with decay `rate` (a warm-up's, for one step).
    pub fn update_at(&mut self, rate: f64, current: &[Tensor<1>]) {
        let (r, keep) = iddpm_kernels::optim::ema_factors(rate);
        for ((_, ema), p) in self.params.iter_mut().zip(current) {
            // One pass on the CPU, the same f32 operations as the tensor ops otherwise.
            if !iddpm_kernels::ops::ema_update(rate, ema, p) {
                *ema = ema.clone().mul_scalar(r) + p.clone().mul_scalar(keep);
            }
        }
    }

    /// The rate as the reference writes it in file names (`ema_0.9999_000100.pt`).
    pub fn rate_label(&self) -> String {
        format_rate(self.rate)
    }
}

/// Formats a rate as Python's `str(float)` does for typical values (0.9999, 0.999, 0.5).
pub fn format_rate(rate: f64) -> String {
    let s = format!("{rate}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}
