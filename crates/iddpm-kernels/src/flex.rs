//! The kernels on Flex tensors: contiguous f32 buffers in, fresh buffers out.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_flex::{FlexTensor, Layout};
use burn_std::Bytes;

use crate::UnetKernels;
use crate::batched_matmul::{MatrixBatch, batched_matmul};
use crate::conv::{ConvGeometry, conv2d_forward};
use crate::group_norm::{NormAffine, NormGeometry, group_norm_forward};
use crate::softmax::softmax_rows;
use crate::upsample::upsample_nearest_2x;

/// A contiguous copy of `t` (no copy when it already is one).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

/// The values of a contiguous f32 tensor.
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("iddpm-kernels: tensors are made contiguous f32 before a kernel reads them")
}

/// A 3-D f32 tensor as the matrices it holds, read in place through its strides; `None` for
/// a layout the product cannot step through (negative strides), which the caller copies.
pub(crate) fn matrix_batch(t: &FlexTensor) -> Option<MatrixBatch<'_>> {
    let layout = t.layout();
    let dims = layout.shape();
    if dims.num_dims() != 3 {
        return None;
    }
    MatrixBatch::new(
        t.storage::<f32>(),
        layout.start_offset(),
        layout.strides(),
        [dims[0], dims[1], dims[2]],
    )
}

/// `t` itself when [`matrix_batch`] can read it, else a contiguous copy.
pub(crate) fn readable_matrices(t: FlexTensor) -> FlexTensor {
    if matrix_batch(&t).is_some() {
        t
    } else {
        contiguous(t)
    }
}

/// A contiguous f32 tensor of `shape` holding `data`.
pub(crate) fn tensor(data: Vec<f32>, shape: Shape) -> FlexTensor {
    debug_assert_eq!(data.len(), shape.num_elements());
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// The geometry of `conv2d(x, weight)`.
pub(crate) fn conv_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: usize,
    padding: usize,
) -> ConvGeometry {
    let (xs, ws) = (x.shape(), weight.shape());
    ConvGeometry {
        batch: xs[0],
        channels_in: xs[1],
        channels_out: ws[0],
        height: xs[2],
        width: xs[3],
        kernel: ws[2],
        stride,
        padding,
    }
}

/// The geometry of a GroupNorm of x `[B, C, ...]`.
pub(crate) fn norm_geometry(x: &FlexTensor, groups: usize) -> NormGeometry {
    let shape = x.shape();
    NormGeometry {
        batch: shape[0],
        channels: shape[1],
        positions: shape.iter().skip(2).product(),
        groups,
    }
}

impl UnetKernels for Flex {
    fn fused_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        padding: usize,
    ) -> FlexTensor {
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let g = conv_geometry(&x, &weight, stride, padding);
        let y = conv2d_forward(&g, values(&x), values(&weight), Some(values(&bias)));
        let shape = Shape::from(vec![g.batch, g.channels_out, g.out_height(), g.out_width()]);
        tensor(y, shape)
    }

    fn fused_group_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        silu: bool,
    ) -> FlexTensor {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let g = norm_geometry(&x, groups);
        let affine = NormAffine {
            gamma: values(&gamma),
            beta: values(&beta),
            film: None,
            silu,
        };
        let y = group_norm_forward(&g, values(&x), &affine);
        tensor(y, x.shape())
    }

    fn fused_group_norm_film(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        groups: usize,
        silu: bool,
    ) -> FlexTensor {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let (scale, shift) = (contiguous(scale), contiguous(shift));
        let g = norm_geometry(&x, groups);
        let affine = NormAffine {
            gamma: values(&gamma),
            beta: values(&beta),
            film: Some((values(&scale), values(&shift))),
            silu,
        };
        let y = group_norm_forward(&g, values(&x), &affine);
        tensor(y, x.shape())
    }

    fn fused_upsample_nearest_2x(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let s = x.shape();
        let y = upsample_nearest_2x(values(&x), s[2], s[3]);
        tensor(y, Shape::from(vec![s[0], s[1], 2 * s[2], 2 * s[3]]))
    }

    fn fused_matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        let (lhs, rhs) = (readable_matrices(lhs), readable_matrices(rhs));
        let (a, b) = (
            matrix_batch(&lhs).expect("a contiguous tensor is readable"),
            matrix_batch(&rhs).expect("a contiguous tensor is readable"),
        );
        let (ls, rs) = (lhs.shape(), rhs.shape());
        let shape = Shape::from(vec![ls[0].max(rs[0]), ls[1], rs[2]]);
        tensor(batched_matmul(&a, &b), shape)
    }

    fn fused_softmax_last_dim(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let shape = x.shape();
        let len = shape[shape.num_dims() - 1];
        tensor(softmax_rows(values(&x), len), shape)
    }
}
