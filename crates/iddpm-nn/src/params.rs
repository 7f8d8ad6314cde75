//! Parameters by their PyTorch names, so that the reference's checkpoints load as they are.

use burn::module::Param;
use burn::tensor::{Gradients, Tensor, TensorData};

/// Visits every parameter of a network under its PyTorch state-dict name.
pub trait ParamVisitor {
    /// One parameter: its full name, its shape in the PyTorch state dict, and the parameter
    /// (whose own shape may differ only by unit dimensions, e.g. 1×1 convolutions).
    fn visit(&mut self, name: &str, torch_shape: &[usize], param: &mut dyn ParamSlot);
}

/// A parameter whose value can be read and replaced regardless of its rank.
pub trait ParamSlot {
    /// The current value as f32 data, flattened in row-major order.
    fn to_data(&self) -> TensorData;
    /// Replaces the value with `values` (row-major, same number of elements), keeping the
    /// parameter's identity, device and gradient requirement.
    fn set(&mut self, values: Vec<f32>);
    /// Number of elements.
    fn numel(&self) -> usize;
    /// The current value, flattened and without autodiff (for optimizers and EMAs).
    fn flat(&self) -> Tensor<1>;
    /// The gradient of this parameter in `grads`, flattened, if it has one.
    fn grad_flat(&self, grads: &Gradients) -> Option<Tensor<1>>;
    /// Replaces the value by `value` (flattened, without autodiff), keeping the parameter's
    /// identity and whether it is trained. No host round trip: the data stays on its device.
    fn set_flat(&mut self, value: Tensor<1>);
}

impl<const D: usize> ParamSlot for Param<Tensor<D>> {
    fn to_data(&self) -> TensorData {
        self.val().into_data().convert::<f32>()
    }

    fn set(&mut self, values: Vec<f32>) {
        let dims = self.val().dims();
        let old = self.clone();
        *self = old.map(|tensor| {
            let device = tensor.device();
            let require_grad = tensor.is_require_grad();
            let fresh = Tensor::<D>::from_data(TensorData::new(values, dims), &device);
            if require_grad {
                fresh.require_grad()
            } else {
                fresh
            }
        });
    }

    fn numel(&self) -> usize {
        self.val().dims().iter().product()
    }

    fn flat(&self) -> Tensor<1> {
        let v = self.val().inner();
        let n = v.dims().iter().product::<usize>();
        v.reshape([n])
    }

    fn grad_flat(&self, grads: &Gradients) -> Option<Tensor<1>> {
        let g = self.val().grad(grads)?;
        let n = g.dims().iter().product::<usize>();
        Some(g.reshape([n]))
    }

    fn set_flat(&mut self, value: Tensor<1>) {
        let old = self.clone();
        *self = old.map(|tensor| {
            let dims = tensor.dims();
            let value: Tensor<D> = value.reshape(dims);
            if tensor.is_autodiff() {
                // A new leaf with the parameter's own gradient-checkpointing strategy.
                let mut fresh = Tensor::from_inner(value);
                if let Some(strategy) = tensor.gradient_checkpointing_strategy() {
                    fresh = fresh.with_gradient_checkpointing_strategy(strategy);
                }
                if tensor.is_require_grad() {
                    fresh.require_grad()
                } else {
                    fresh
                }
            } else {
                value
            }
        });
    }
}

/// A network (or part of one) whose parameters can be visited by PyTorch name.
pub trait VisitParams {
    /// Calls `visitor` for each parameter, names prefixed by `prefix` (e.g. `"input_blocks.1.0."`).
    fn visit_params(&mut self, prefix: &str, visitor: &mut dyn ParamVisitor);
}

/// Collects the names and PyTorch shapes of all parameters, in visiting order.
pub fn param_names<M: VisitParams + ?Sized>(module: &mut M) -> Vec<(String, Vec<usize>)> {
    struct Names(Vec<(String, Vec<usize>)>);
    impl ParamVisitor for Names {
        fn visit(&mut self, name: &str, shape: &[usize], _p: &mut dyn ParamSlot) {
            self.0.push((name.to_string(), shape.to_vec()));
        }
    }
    let mut names = Names(Vec::new());
    module.visit_params("", &mut names);
    names.0
}

/// Total number of parameters.
pub fn param_count<M: VisitParams + ?Sized>(module: &mut M) -> usize {
    param_names(module)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}
