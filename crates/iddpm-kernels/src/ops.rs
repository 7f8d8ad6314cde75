//! The kernels as tensor functions, chosen by device: a Flex f32 tensor runs the fused kernel,
//! anything else (CUDA, f16, a shape the kernel does not take) runs burn's standard ops, so one
//! model code serves every device.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::DispatchDevice;
use burn::tensor::activation::silu as silu_op;
use burn::tensor::module::conv2d as standard_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};

use crate::UnetKernels;
use crate::group_norm::EPS;

type Dispatch = burn::backend::Dispatch;

/// Set once from `IDDPM_KERNELS` (`0` or `off` turns the kernels off); [`set_enabled`]
/// changes it, e.g. for a benchmark that times both paths in one process.
fn switch() -> &'static AtomicBool {
    static ENABLED: OnceLock<AtomicBool> = OnceLock::new();
    ENABLED.get_or_init(|| {
        let off = matches!(
            std::env::var("IDDPM_KERNELS").as_deref(),
            Ok("0" | "off" | "false")
        );
        AtomicBool::new(!off)
    })
}

/// Whether the Flex kernels are used (default: yes).
pub fn enabled() -> bool {
    switch().load(Ordering::Relaxed)
}

/// Turns the Flex kernels on or off for the whole process.
pub fn set_enabled(on: bool) {
    switch().store(on, Ordering::Relaxed);
}

/// What kind of device a tensor lives on: the one answer to "is this the CPU?" that every
/// crate asks (memory checks, tolerances, which ops run, warnings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's Flex backend (with or without autodiff): the CPU, host memory, and iddpm's
    /// kernels.
    Flex,
    /// Any other backend burn was built with (CUDA, wgpu, CubeCL's CPU runtime): burn's
    /// standard ops, the device's own memory.
    Other,
}

impl DeviceKind {
    /// The kind of `device`.
    pub fn of(device: &Device) -> Self {
        match device.clone().inner().as_dispatch() {
            DispatchDevice::Flex(_) => Self::Flex,
            _ => Self::Other,
        }
    }

    /// Whether this is the Flex CPU backend.
    pub fn is_flex(self) -> bool {
        self == Self::Flex
    }
}

/// Whether every tensor is f32 on Flex and the kernels are on.
fn use_kernel(dtypes: &[DType], device: &Device) -> bool {
    enabled() && DeviceKind::of(device).is_flex() && dtypes.iter().all(|d| *d == DType::F32)
}

/// `conv2d(x, weight) + bias` with the same `stride` and `padding` on both axes:
/// x `[B, C_in, H, W]`, weight `[C_out, C_in, k, k]`, bias `[C_out]`.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    let (xs, ws) = (x.dims(), weight.dims());
    let fits = ws[2] == ws[3]
        && ws[1] == xs[1]
        && bias.dims()[0] == ws[0]
        && stride > 0
        && xs[2] + 2 * padding >= ws[2]
        && xs[3] + 2 * padding >= ws[3]
        && xs.iter().chain(&ws).all(|&d| d > 0);
    if fits && use_kernel(&[x.dtype(), weight.dtype(), bias.dtype()], &x.device()) {
        let y = <Dispatch as UnetKernels>::fused_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
            stride,
            padding,
        );
        return Tensor::from_dispatch(y);
    }
    let options = ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1);
    standard_conv2d(x, weight, Some(bias), options)
}

/// Batched matrix product over the last two axes, batch axis broadcast:
/// `[B | 1, M, K] · [B | 1, K, N] = [B, M, N]`.
///
/// On Flex in f32 it runs the kernels' batched product, which reads transposed views in place,
/// zeroes its output on all cores and splits the batch over them (burn-flex's matmul zero-fills
/// and copies its output on the calling thread first). CubeCL's CPU runtime (feature
/// `cubecl-cpu`) avoids burn's matmul too: there cubek's matmul kernel takes 0.2–0.5 s a call
/// in steady state even for the products of an 8×8 network, under a million multiply-adds
/// each (measured with `CUBECL_DEBUG_LOG`, issue #31; not compilation, which is cached, nor
/// autotune, whose level changes nothing), so it runs as
/// a broadcast product and a sum, two ordinary CubeCL kernels. The matmul kernels themselves
/// are checked on wgpu. Every other device runs burn's matmul.
pub fn matmul(lhs: Tensor<3>, rhs: Tensor<3>) -> Tensor<3> {
    let (ls, rs) = (lhs.dims(), rhs.dims());
    let fits = ls[2] == rs[1] && (ls[0] == rs[0] || ls[0] == 1 || rs[0] == 1);
    if matmul_as_product_and_sum(&lhs.device()) {
        matmul_by_product_and_sum(lhs, rhs)
    } else if fits && use_kernel(&[lhs.dtype(), rhs.dtype()], &lhs.device()) {
        let c = <Dispatch as UnetKernels>::fused_matmul(lhs.into_dispatch(), rhs.into_dispatch());
        Tensor::from_dispatch(c)
    } else {
        lhs.matmul(rhs)
    }
}

/// [`matmul`] as CubeCL's CPU runtime computes it: the broadcast product of every `lhs` row
/// with every `rhs` column, summed over K (memory `B·M·K·N`, for the small products where
/// that runtime needs it). Public so that its equivalence is tested on every device.
pub fn matmul_by_product_and_sum(lhs: Tensor<3>, rhs: Tensor<3>) -> Tensor<3> {
    let lhs: Tensor<4> = lhs.unsqueeze_dim(3); // [B, M, K, 1]
    let rhs: Tensor<4> = rhs.unsqueeze_dim(1); // [B, 1, K, N]
    (lhs * rhs).sum_dim(2).squeeze_dim(2) // [B, M, K, N] -> [B, M, 1, N] -> [B, M, N]
}

/// [`matmul`] of two matrices: `[M, K] · [K, N] = [M, N]`.
pub fn matmul_2d(lhs: Tensor<2>, rhs: Tensor<2>) -> Tensor<2> {
    // [1, M, K] · [1, K, N] = [1, M, N] -> [M, N]
    matmul(lhs.unsqueeze(), rhs.unsqueeze()).squeeze_dim(0)
}

/// Whether [`matmul`] avoids burn's matmul on `device` (CubeCL's CPU runtime).
#[cfg(feature = "cubecl-cpu")]
fn matmul_as_product_and_sum(device: &Device) -> bool {
    *device == Device::cpu()
}

/// Whether [`matmul`] avoids burn's matmul on `device`: never without CubeCL's CPU runtime.
#[cfg(not(feature = "cubecl-cpu"))]
fn matmul_as_product_and_sum(_device: &Device) -> bool {
    false
}

/// Softmax over the last axis of an f32 tensor (the attention weights).
pub fn softmax_last_dim<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let last = x.dims()[D - 1];
    if last > 0 && use_kernel(&[x.dtype()], &x.device()) {
        let y = <Dispatch as UnetKernels>::fused_softmax_last_dim(x.into_dispatch());
        return Tensor::from_dispatch(y);
    }
    burn::tensor::activation::softmax(x, D - 1)
}

/// Nearest-neighbour ×2 upsampling, `[B, C, H, W]` → `[B, C, 2H, 2W]`.
pub fn upsample_nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    if use_kernel(&[x.dtype()], &x.device()) {
        let y = <Dispatch as UnetKernels>::fused_upsample_nearest_2x(x.into_dispatch());
        return Tensor::from_dispatch(y);
    }
    let x: Tensor<6> = x.reshape([b, c, h, 1, w, 1]);
    x.expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
}

/// The FiLM of a ResBlock: the norm's output becomes `h · (1 + scale) + shift`, with scale and
/// shift `[B, C, 1, ...]`.
pub struct Film<const D: usize> {
    /// Multiplies the normalised value (plus one).
    pub scale: Tensor<D>,
    /// Added after the scale.
    pub shift: Tensor<D>,
}

/// GroupNorm of x `[B, C, ...]` over `groups` groups (ε = 1e-5) with γ, β `[C]`, then the
/// optional FiLM, then SiLU when `silu`. Computed in f32 (x is cast if it is not) and returned
/// in x's precision.
pub fn group_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    film: Option<Film<D>>,
    groups: usize,
    silu: bool,
) -> Tensor<D> {
    let dtype = x.dtype();
    let x = to_f32(x);
    let dims = x.dims();
    let film = film.map(|f| Film {
        scale: to_f32(f.scale),
        shift: to_f32(f.shift),
    });
    let film_fits = film.as_ref().is_none_or(|f| {
        let expected = dims[0] * dims[1];
        f.scale.shape().num_elements() == expected && f.shift.shape().num_elements() == expected
    });
    let fits = D >= 2
        && groups > 0
        && dims[1].is_multiple_of(groups)
        && dims.iter().all(|&d| d > 0)
        && film_fits;
    let mut dtypes = vec![gamma.dtype(), beta.dtype()];
    if let Some(f) = &film {
        dtypes.extend([f.scale.dtype(), f.shift.dtype()]);
    }
    let y = if fits && use_kernel(&dtypes, &x.device()) {
        let (x, gamma, beta) = (
            x.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
        );
        Tensor::from_dispatch(match film {
            None => <Dispatch as UnetKernels>::fused_group_norm(x, gamma, beta, groups, silu),
            Some(f) => <Dispatch as UnetKernels>::fused_group_norm_film(
                x,
                gamma,
                beta,
                f.scale.into_dispatch(),
                f.shift.into_dispatch(),
                groups,
                silu,
            ),
        })
    } else {
        standard_group_norm(x, gamma, beta, film, groups, silu)
    };
    if dtype == DType::F32 {
        y
    } else {
        y.cast(dtype)
    }
}

fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

/// The same chain from burn's tensor operations: the path for every other device.
pub fn standard_group_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    film: Option<Film<D>>,
    groups: usize,
    silu: bool,
) -> Tensor<D> {
    let dims = x.dims();
    let (batch, channels) = (dims[0], dims[1]);
    // [B, C, ...] -> [B, G, C/G · ...]
    let grouped: Tensor<3> = x.reshape([batch as i64, groups as i64, -1]);
    let mean = grouped.clone().mean_dim(2); // [B, G, 1]
    let centered = grouped - mean;
    let var = centered.clone().square().mean_dim(2); // [B, G, 1]
    let normed = centered / var.add_scalar(EPS).sqrt();
    let normed: Tensor<D> = normed.reshape(dims); // back to [B, C, ...]
    let mut per_channel = [1usize; D];
    per_channel[1] = channels; // [1, C, 1, ...]
    let mut h = normed * gamma.reshape(per_channel) + beta.reshape(per_channel);
    if let Some(Film { scale, shift }) = film {
        h = h * scale.add_scalar(1.0) + shift;
    }
    if silu { silu_op(h) } else { h }
}

/// The values of a 1-D f32 tensor (no copy when the tensor owns its buffer alone).
fn into_values(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("checked to be f32 before reading")
}

fn from_values(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(burn::tensor::TensorData::new(values, [n]), device)
}

/// Whether the fused optimizer passes take these flattened tensors: f32 on Flex, outside
/// autodiff, all of one length.
pub fn fusable(tensors: &[&Tensor<1>]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    let device = first.device();
    let dtypes: Vec<DType> = tensors.iter().map(|t| t.dtype()).collect();
    use_kernel(&dtypes, &device)
        && !device.is_autodiff()
        && tensors
            .iter()
            .all(|t| t.dims() == first.dims() && t.device() == device)
}

/// Takes `t` out of its place, leaving an empty tensor there until it is put back.
fn take(t: &mut Tensor<1>) -> Tensor<1> {
    let device = t.device();
    std::mem::replace(t, Tensor::empty([0], &device))
}

/// One fused AdamW update of a flattened parameter, in place on `param`, `m` and `v`.
/// Returns `false`, touching nothing, when the tensors are not [`fusable`]: the caller then
/// uses tensor operations.
pub fn adamw_update(
    step: &crate::optim::AdamWStep,
    param: &mut Tensor<1>,
    grad: &Tensor<1>,
    m: &mut Tensor<1>,
    v: &mut Tensor<1>,
) -> bool {
    if !fusable(&[param, grad, m, v]) {
        return false;
    }
    let device = param.device();
    let (mut p, g) = (into_values(take(param)), into_values(grad.clone()));
    let (mut m_values, mut v_values) = (into_values(take(m)), into_values(take(v)));
    crate::optim::adamw_update(step, &mut p, &g, &mut m_values, &mut v_values);
    *param = from_values(p, &device);
    *m = from_values(m_values, &device);
    *v = from_values(v_values, &device);
    true
}

/// One fused EMA update `ema·rate + θ·(1 − rate)` in place; `false` (nothing touched) when
/// the tensors are not [`fusable`].
pub fn ema_update(rate: f64, ema: &mut Tensor<1>, param: &Tensor<1>) -> bool {
    if !fusable(&[ema, param]) {
        return false;
    }
    let device = ema.device();
    let values = into_values(param.clone());
    let mut e = into_values(take(ema));
    crate::optim::ema_update(rate, &mut e, &values);
    *ema = from_values(e, &device);
    true
}
