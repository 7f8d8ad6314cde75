//! Exponential moving averages of the parameters (the reference's `update_ema`).

use burn::tensor::Tensor;

/// One EMA: `ema ← rate·ema + (1 − rate)·θ` after every optimizer step.
pub struct Ema {
    /// The decay rate, e.g. 0.9999.
    pub rate: f64,
    /// `(name, flattened value)` in parameter order.
    pub params: Vec<(String, Tensor<1>)>,
}

impl Ema {
    /// An EMA starting from the given parameter values.
    pub fn new(rate: f64, params: Vec<(String, Tensor<1>)>) -> Self {
        Self { rate, params }
    }

    /// Moves the average towards `current` (same order and shapes).
    pub fn update(&mut self, current: &[Tensor<1>]) {
        let (r, keep) = iddpm_kernels::optim::ema_factors(self.rate);
        for ((_, ema), p) in self.params.iter_mut().zip(current) {
            // One pass on the CPU, the same f32 operations as the tensor ops otherwise.
            if !iddpm_kernels::ops::ema_update(self.rate, ema, p) {
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
