//! AdamW with PyTorch's arithmetic (decoupled weight decay, bias correction, eps 1e-8), its
//! state kept by parameter name so that it saves to and loads from safetensors.

use std::collections::HashMap;

use burn::tensor::Tensor;
use iddpm_checkpoint::StateDict;
use iddpm_kernels::ops as kernels;
use iddpm_kernels::optim::AdamWStep;
use iddpm_kernels::to_f32_vec;

/// AdamW hyper-parameters and moment estimates.
pub struct AdamW {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε (PyTorch's default 1e-8, which the reference uses).
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Number of steps taken.
    pub step: u64,
    moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

impl AdamW {
    /// The reference's optimizer: β = (0.9, 0.999), ε = 1e-8.
    pub fn new(weight_decay: f64) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// Begins a step: increments the step counter. Call [`update`](Self::update) for each
    /// parameter afterwards.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// The new value of parameter `name` (flattened) given its gradient, at learning rate `lr`.
    pub fn update(&mut self, name: &str, param: Tensor<1>, grad: Tensor<1>, lr: f64) -> Tensor<1> {
        let (m, v) = self
            .moments
            .remove(name)
            .unwrap_or_else(|| (param.zeros_like(), param.zeros_like()));
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        let step_size = lr / bc1;
        let fused = AdamWStep {
            decay: (1.0 - lr * self.weight_decay) as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            sqrt_bias_correction2: bc2.sqrt() as f32,
            eps: self.eps as f32,
            step_size: step_size as f32,
        };
        // One pass per tensor on the CPU; the same f32 operations as the tensor ops below.
        let (mut param, mut m, mut v) = (param, m, v);
        if kernels::adamw_update(&fused, &mut param, &grad, &mut m, &mut v) {
            self.moments.insert(name.to_string(), (m, v));
            return param;
        }
        let param = param.mul_scalar(fused.decay);
        let m = m.clone() + (grad.clone() - m).mul_scalar(fused.one_minus_beta1);
        let v = v.mul_scalar(fused.beta2) + (grad.clone() * grad).mul_scalar(fused.one_minus_beta2);
        let denom = v
            .clone()
            .sqrt()
            .div_scalar(fused.sqrt_bias_correction2)
            .add_scalar(fused.eps);
        let new = param - (m.clone() / denom).mul_scalar(fused.step_size);
        self.moments.insert(name.to_string(), (m, v));
        new
    }

    /// The moments as a state dict (`<param>.exp_avg`, `<param>.exp_avg_sq`), with their shapes
    /// taken from `shapes` (name → PyTorch shape).
    pub fn state_dict(&self, shapes: &[(String, Vec<usize>)]) -> StateDict {
        let mut dict = StateDict::new();
        for (name, shape) in shapes {
            if let Some((m, v)) = self.moments.get(name) {
                dict.insert(
                    format!("{name}.exp_avg"),
                    shape.clone(),
                    to_f32_vec(m.clone()),
                );
                dict.insert(
                    format!("{name}.exp_avg_sq"),
                    shape.clone(),
                    to_f32_vec(v.clone()),
                );
            }
        }
        dict
    }

    /// Restores moments saved by [`state_dict`](Self::state_dict); returns the names of
    /// parameters without saved moments (none are expected before the first update, e.g. when
    /// every mixed-precision step so far overflowed).
    pub fn load_state_dict(
        &mut self,
        dict: &StateDict,
        names: &[(String, Vec<usize>)],
        device: &burn::tensor::Device,
        step: u64,
    ) -> Vec<String> {
        let mut missing = Vec::new();
        self.moments.clear();
        for (name, _) in names {
            match (
                dict.get(&format!("{name}.exp_avg")),
                dict.get(&format!("{name}.exp_avg_sq")),
            ) {
                (Some(m), Some(v)) => {
                    let t = |e: &iddpm_checkpoint::TensorEntry| {
                        Tensor::<1>::from_data(
                            burn::tensor::TensorData::new(e.values.clone(), [e.values.len()]),
                            device,
                        )
                    };
                    self.moments.insert(name.clone(), (t(m), t(v)));
                }
                _ if step > 0 => missing.push(name.clone()),
                _ => {}
            }
        }
        self.step = step;
        missing
    }
}
