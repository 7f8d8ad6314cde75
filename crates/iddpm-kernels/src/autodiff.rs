//! The kernels under burn's autodiff: each forward records a backward step that calls the
//! matching gradient kernels. Inputs are saved through the checkpointer, as burn's own conv2d
//! does, so gradient checkpointing can drop and recompute them.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Shape;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::retro_forward::RetroForward;
use burn_autodiff::checkpoint::state::BackwardStates;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};
use burn_flex::FlexTensor;

use crate::UnetKernels;
use crate::batched_matmul::{MatrixBatch, batched_matmul_lhs_grad, batched_matmul_rhs_grad};
use crate::conv::{conv2d_bias_grad, conv2d_input_grad, conv2d_weight_grad};
use crate::flex::{
    contiguous, conv_geometry, matrix_batch, norm_geometry, readable_matrices, tensor, values,
};
use crate::group_norm::{NormAffine, group_norm_backward};
use crate::softmax::softmax_rows_grad;
use crate::upsample::upsample_nearest_2x_grad;

type Ad<C> = Autodiff<Flex, C>;

/// Backward of [`UnetKernels::fused_conv2d`]: parents x, weight, bias.
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    /// Saved x and weight, stride, padding.
    type State = (NodeId, NodeId, usize, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (x_id, w_id, stride, padding) = ops.state;
        let x = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(x_id));
        let w = contiguous(checkpointer.retrieve_node_output::<FlexTensor>(w_id));
        let g = conv_geometry(&x, &w, stride, padding);
        if let Some(node) = node_x {
            let dx = conv2d_input_grad(&g, values(&w), values(&dy));
            grads.register::<Flex>(node.id, tensor(dx, x.shape()));
        }
        if let Some(node) = node_w {
            let dw = conv2d_weight_grad(&g, values(&x), values(&dy));
            grads.register::<Flex>(node.id, tensor(dw, w.shape()));
        }
        if let Some(node) = node_b {
            let db = conv2d_bias_grad(&g, values(&dy));
            grads.register::<Flex>(node.id, tensor(db, Shape::from(vec![g.channels_out])));
        }
    }
}

/// Backward of [`UnetKernels::fused_matmul`]: parents lhs, rhs.
#[derive(Debug)]
struct MatmulBackward;

impl Backward<Flex, 2> for MatmulBackward {
    /// Saved lhs and rhs.
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_a, node_b] = ops.parents;
        let dc = contiguous(grads.consume::<Flex>(&ops.node));
        let (a_id, b_id) = ops.state;
        let a = readable_matrices(checkpointer.retrieve_node_output::<FlexTensor>(a_id));
        let b = readable_matrices(checkpointer.retrieve_node_output::<FlexTensor>(b_id));
        let (a_shape, b_shape, dc_shape) = (a.shape(), b.shape(), dc.shape());
        let dc_view = MatrixBatch::contiguous(values(&dc), [dc_shape[0], dc_shape[1], dc_shape[2]]);
        let view = |t| matrix_batch(t).expect("readable_matrices made it readable");
        if let Some(node) = node_a {
            let da = batched_matmul_lhs_grad(&dc_view, &view(&b), a_shape[0]);
            grads.register::<Flex>(node.id, tensor(da, a_shape));
        }
        if let Some(node) = node_b {
            let db = batched_matmul_rhs_grad(&view(&a), &dc_view, b_shape[0]);
            grads.register::<Flex>(node.id, tensor(db, b_shape));
        }
    }
}

/// Backward of both fused norms: parents x, γ, β (and scale, shift with FiLM).
#[derive(Debug)]
struct NormBackward;

/// Saved inputs of a fused norm: x, γ, β, optional (scale, shift), groups, silu.
type NormState = (
    NodeId,
    NodeId,
    NodeId,
    Option<(NodeId, NodeId)>,
    usize,
    bool,
);

impl NormBackward {
    fn run<const N: usize>(
        ops: Ops<NormState, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (x_id, gamma_id, beta_id, film_ids, groups, silu) = ops.state;
        let mut fetch = |id| contiguous(checkpointer.retrieve_node_output::<FlexTensor>(id));
        let (x, gamma, beta) = (fetch(x_id), fetch(gamma_id), fetch(beta_id));
        let film = film_ids.map(|(s, t)| (fetch(s), fetch(t)));
        let affine = NormAffine {
            gamma: values(&gamma),
            beta: values(&beta),
            film: film.as_ref().map(|(s, t)| (values(s), values(t))),
            silu,
        };
        let d = group_norm_backward(&norm_geometry(&x, groups), values(&x), &affine, values(&dy));
        let mut outputs = vec![
            (d.x, x.shape()),
            (d.gamma, gamma.shape()),
            (d.beta, beta.shape()),
        ];
        if let (Some((ds, dt)), Some((s, t))) = (d.film, &film) {
            outputs.push((ds, s.shape()));
            outputs.push((dt, t.shape()));
        }
        for (parent, (grad, shape)) in ops.parents.into_iter().zip(outputs) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, tensor(grad, shape));
            }
        }
    }
}

/// N = 3 for the plain norm, N = 5 with FiLM.
impl<const N: usize> Backward<Flex, N> for NormBackward {
    type State = NormState;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        Self::run(ops, grads, checkpointer);
    }
}

/// The fused norm on its Flex inputs (x, γ, β and optionally scale, shift).
fn norm_forward(inputs: Vec<FlexTensor>, groups: usize, silu: bool) -> FlexTensor {
    let mut it = inputs.into_iter();
    let (x, gamma, beta) = (it.next(), it.next(), it.next());
    let (x, gamma, beta) = (x.expect("x"), gamma.expect("γ"), beta.expect("β"));
    match (it.next(), it.next()) {
        (Some(scale), Some(shift)) => {
            Flex::fused_group_norm_film(x, gamma, beta, scale, shift, groups, silu)
        }
        _ => Flex::fused_group_norm(x, gamma, beta, groups, silu),
    }
}

/// A fused norm of `[x, γ, β]` (N = 3) or `[x, γ, β, scale, shift]` (N = 5), recorded for
/// backward as a memory-bound op that gradient checkpointing may recompute.
fn tracked_norm<C: CheckpointStrategy, const N: usize>(
    inputs: [FloatTensor<Ad<C>>; N],
    groups: usize,
    silu: bool,
) -> FloatTensor<Ad<C>> {
    let nodes = inputs.each_ref().map(|t| t.node());
    let ids = inputs.iter().map(|t| t.node().id()).collect();
    let retro = RetroNorm {
        inputs: ids,
        groups,
        silu,
    };
    let prep = NormBackward
        .prepare::<C>(nodes)
        .memory_bound()
        .retro_forward(retro)
        .parents(&inputs);
    let forward = |inputs: [FloatTensor<Ad<C>>; N]| {
        norm_forward(inputs.map(|t| t.into_primitive()).into(), groups, silu)
    };
    match prep.stateful() {
        OpsKind::Tracked(mut prep) => {
            let ids: Vec<NodeId> = inputs.iter().map(|t| prep.checkpoint(t)).collect();
            let film = (N == 5).then(|| (ids[3], ids[4]));
            prep.finish(
                (ids[0], ids[1], ids[2], film, groups, silu),
                forward(inputs),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(inputs)),
    }
}

/// Recomputes a fused norm's output from its inputs when gradient checkpointing dropped it:
/// the norm is cheap next to the convolution that reads its output.
#[derive(Debug)]
struct RetroNorm {
    inputs: Vec<NodeId>,
    groups: usize,
    silu: bool,
}

impl RetroForward for RetroNorm {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let inputs = self
            .inputs
            .iter()
            .map(|id| states.get_state::<FlexTensor>(id))
            .collect();
        states.save(out_node, norm_forward(inputs, self.groups, self.silu));
    }
}

/// Recomputes an upsampled tensor from its input.
#[derive(Debug)]
struct RetroUpsample {
    input: NodeId,
}

impl RetroForward for RetroUpsample {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let x = states.get_state::<FlexTensor>(&self.input);
        states.save(out_node, Flex::fused_upsample_nearest_2x(x));
    }
}

/// Backward of [`UnetKernels::fused_upsample_nearest_2x`]: sums each 2×2 block.
#[derive(Debug)]
struct UpsampleBackward;

impl Backward<Flex, 1> for UpsampleBackward {
    type State = ();

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_x] = ops.parents;
        if let Some(node) = node_x {
            let s = dy.shape();
            let dx = upsample_nearest_2x_grad(values(&dy), s[2] / 2, s[3] / 2);
            grads.register::<Flex>(
                node.id,
                tensor(dx, Shape::from(vec![s[0], s[1], s[2] / 2, s[3] / 2])),
            );
        }
    }
}

/// Backward of [`UnetKernels::fused_softmax_last_dim`], from the saved output.
#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = FlexTensor;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_x] = ops.parents;
        if let Some(node) = node_x {
            let y = ops.state;
            let shape = y.shape();
            let len = shape[shape.num_dims() - 1];
            let dx = softmax_rows_grad(values(&y), values(&dy), len);
            grads.register::<Flex>(node.id, tensor(dx, shape));
        }
    }
}

impl<C: CheckpointStrategy> UnetKernels for Ad<C> {
    fn fused_softmax_last_dim(x: FloatTensor<Ad<C>>) -> FloatTensor<Ad<C>> {
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = Flex::fused_softmax_last_dim(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::fused_softmax_last_dim(x.into_primitive()))
            }
        }
    }

    fn fused_matmul(lhs: FloatTensor<Ad<C>>, rhs: FloatTensor<Ad<C>>) -> FloatTensor<Ad<C>> {
        let nodes = [lhs.node(), rhs.node()];
        match MatmulBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&lhs), prep.checkpoint(&rhs));
                prep.finish(
                    state,
                    Flex::fused_matmul(lhs.into_primitive(), rhs.into_primitive()),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_matmul(
                lhs.into_primitive(),
                rhs.into_primitive(),
            )),
        }
    }

    fn fused_upsample_nearest_2x(x: FloatTensor<Ad<C>>) -> FloatTensor<Ad<C>> {
        let retro = RetroUpsample {
            input: x.node().id(),
        };
        let prep = UpsampleBackward
            .prepare::<C>([x.node()])
            .memory_bound()
            .retro_forward(retro);
        prep.parents([&x])
            .stateless(Flex::fused_upsample_nearest_2x(x.into_primitive()))
    }

    fn fused_conv2d(
        x: FloatTensor<Ad<C>>,
        weight: FloatTensor<Ad<C>>,
        bias: FloatTensor<Ad<C>>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Ad<C>> {
        let nodes = [x.node(), weight.node(), bias.node()];
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    stride,
                    padding,
                );
                let y = Flex::fused_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    stride,
                    padding,
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                stride,
                padding,
            )),
        }
    }

    fn fused_group_norm(
        x: FloatTensor<Ad<C>>,
        gamma: FloatTensor<Ad<C>>,
        beta: FloatTensor<Ad<C>>,
        groups: usize,
        silu: bool,
    ) -> FloatTensor<Ad<C>> {
        tracked_norm::<C, 3>([x, gamma, beta], groups, silu)
    }

    fn fused_group_norm_film(
        x: FloatTensor<Ad<C>>,
        gamma: FloatTensor<Ad<C>>,
        beta: FloatTensor<Ad<C>>,
        scale: FloatTensor<Ad<C>>,
        shift: FloatTensor<Ad<C>>,
        groups: usize,
        silu: bool,
    ) -> FloatTensor<Ad<C>> {
        tracked_norm::<C, 5>([x, gamma, beta, scale, shift], groups, silu)
    }
}
