//! Every kernel against burn's standard operations on random shapes (batch 1, odd sizes with
//! stride 2, 3 to 512 channels, learn_sigma's 6 output channels): forward and every gradient
//! within 1e-5 of the largest reference value.

use burn::tensor::module::conv2d as standard_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use iddpm_kernels::conv::{self, ConvGeometry};
use iddpm_kernels::ops::{self, Film};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOLERANCE: f32 = 1e-5;

fn random<const D: usize>(rng: &mut ChaCha8Rng, shape: [usize; D], device: &Device) -> Tensor<D> {
    let n = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// `max |a − b| / max |b|`, failing the test above [`TOLERANCE`].
fn assert_close(what: &str, kernel: Vec<f32>, standard: Vec<f32>) {
    assert_eq!(kernel.len(), standard.len(), "{what}: lengths");
    let scale = standard
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let err = kernel
        .iter()
        .zip(&standard)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("{what}: max error {err:.2e} (scale {scale:.2e})");
    assert!(
        kernel.iter().all(|v| v.is_finite()),
        "{what}: non-finite values"
    );
    assert!(
        err / scale <= TOLERANCE,
        "{what}: max error {err:e} against scale {scale:e}"
    );
}

/// (batch, C_in, C_out, H, W, kernel, stride, padding).
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

/// The last two are tall enough to be computed in several bands of output rows; the
/// 30×20 case runs Winograd F(2×2) and the 26×33 one F(4×4), both within the same 1e-5 as
/// im2col (measured: 6e-6 of the largest value for F(4×4); the kernels' unit tests check
/// Winograd element by element against its rounding-error bound).
const CONVS: [ConvCase; 11] = [
    (1, 32, 64, 7, 9, 3, 2, 1),
    (3, 32, 32, 8, 8, 3, 1, 1),
    (2, 64, 32, 5, 5, 1, 1, 0),
    (2, 3, 32, 6, 6, 3, 1, 1),
    (2, 32, 6, 6, 5, 3, 1, 1),
    (1, 512, 512, 2, 2, 3, 1, 1),
    (4, 128, 128, 9, 7, 3, 2, 1),
    (1, 96, 192, 4, 4, 1, 1, 0),
    (1, 256, 32, 30, 20, 3, 1, 1),
    (2, 128, 64, 33, 31, 3, 2, 1),
    (2, 64, 48, 26, 33, 3, 1, 1),
];

#[test]
fn conv2d_forward_and_gradients_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (b, ci, co, h, w, k, s, p) in CONVS {
        let x = random(&mut rng, [b, ci, h, w], &device);
        let weight = random(&mut rng, [co, ci, k, k], &device).mul_scalar(0.1);
        let bias = random(&mut rng, [co], &device);
        let run = |kernel: bool| {
            let (x, weight, bias) = (
                x.clone().require_grad(),
                weight.clone().require_grad(),
                bias.clone().require_grad(),
            );
            let y = if kernel {
                ops::conv2d(x.clone(), weight.clone(), bias.clone(), s, p)
            } else {
                standard_conv2d(
                    x.clone(),
                    weight.clone(),
                    Some(bias.clone()),
                    ConvOptions::new([s, s], [p, p], [1, 1], 1),
                )
            };
            let loss = (y.clone() * y.clone().sin()).sum();
            let grads = loss.backward();
            let g = |t: &Tensor<4>| values(t.grad(&grads).unwrap());
            (
                values(y),
                g(&x),
                g(&weight),
                values(bias.grad(&grads).unwrap()),
            )
        };
        let (kernel, standard) = (run(true), run(false));
        let g = ConvGeometry {
            batch: b,
            channels_in: ci,
            channels_out: co,
            height: h,
            width: w,
            kernel: k,
            stride: s,
            padding: p,
        };
        let case = format!(
            "conv {b}×{ci}→{co} {h}×{w} k{k} s{s} p{p} {:?}",
            conv::algorithms(&g)
        );
        assert_close(&format!("{case} forward"), kernel.0, standard.0);
        assert_close(&format!("{case} ∂x"), kernel.1, standard.1);
        assert_close(&format!("{case} ∂weight"), kernel.2, standard.2);
        assert_close(&format!("{case} ∂bias"), kernel.3, standard.3);
    }
}

/// (batch, channels, H, W, FiLM, SiLU)
const NORMS: [(usize, usize, usize, usize, bool, bool); 6] = [
    (1, 32, 7, 9, true, true),
    (3, 64, 4, 4, false, true),
    (2, 128, 5, 3, true, false),
    (2, 96, 8, 8, false, false),
    (1, 512, 2, 2, true, true),
    (4, 256, 1, 1, false, true),
];

#[test]
fn group_norm_forward_and_gradients_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (b, c, h, w, film, silu) in NORMS {
        // An offset and a spread per image, as activations have.
        let x = random(&mut rng, [b, c, h, w], &device)
            .mul_scalar(3.0)
            .add_scalar(0.5);
        let gamma = random(&mut rng, [c], &device).add_scalar(1.0);
        let beta = random(&mut rng, [c], &device);
        let scale = random(&mut rng, [b, c, 1, 1], &device);
        let shift = random(&mut rng, [b, c, 1, 1], &device);
        let run = |kernel: bool| {
            let x = x.clone().require_grad();
            let (gamma, beta) = (gamma.clone().require_grad(), beta.clone().require_grad());
            let (scale, shift) = (scale.clone().require_grad(), shift.clone().require_grad());
            let f = film.then(|| Film {
                scale: scale.clone(),
                shift: shift.clone(),
            });
            let y = if kernel {
                ops::group_norm(x.clone(), gamma.clone(), beta.clone(), f, 32, silu)
            } else {
                ops::standard_group_norm(x.clone(), gamma.clone(), beta.clone(), f, 32, silu)
            };
            let loss = (y.clone() * y.clone().cos()).sum();
            let grads = loss.backward();
            let mut out = vec![values(y), values(x.grad(&grads).unwrap())];
            out.push(values(gamma.grad(&grads).unwrap()));
            out.push(values(beta.grad(&grads).unwrap()));
            if film {
                out.push(values(scale.grad(&grads).unwrap()));
                out.push(values(shift.grad(&grads).unwrap()));
            }
            out
        };
        let (kernel, standard) = (run(true), run(false));
        let names = ["forward", "∂x", "∂γ", "∂β", "∂scale", "∂shift"];
        for ((name, a), b_) in names.iter().zip(kernel).zip(standard) {
            assert_close(
                &format!("norm {b}×{c} {h}×{w} film {film} silu {silu} {name}"),
                a,
                b_,
            );
        }
    }
}

#[test]
fn group_norm_of_a_sequence_matches_burn() {
    // The attention block normalises [B, C, T].
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Tensor<3> = random(&mut rng, [2, 64, 17], &device);
    let gamma = random(&mut rng, [64], &device);
    let beta = random(&mut rng, [64], &device);
    let kernel = ops::group_norm(x.clone(), gamma.clone(), beta.clone(), None, 32, false);
    let standard = ops::standard_group_norm(x, gamma, beta, None, 32, false);
    assert_close("norm [2, 64, 17]", values(kernel), values(standard));
}

#[test]
fn shapes_the_kernels_do_not_take_fall_back() {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // A rectangular kernel and channels that 32 groups do not divide.
    let x = random(&mut rng, [1, 4, 5, 5], &device);
    let weight = random(&mut rng, [2, 4, 3, 1], &device);
    let bias = random(&mut rng, [2], &device);
    let y = ops::conv2d(x.clone(), weight, bias, 1, 1);
    assert_eq!(y.dims(), [1, 2, 5, 7]);
    let gamma = random(&mut rng, [4], &device);
    let beta = random(&mut rng, [4], &device);
    let y = ops::group_norm(x, gamma, beta, None, 2, true);
    assert_eq!(y.dims(), [1, 4, 5, 5]);
}

#[test]
fn the_kernels_are_deterministic() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = random(&mut rng, [8, 64, 8, 8], &device);
    let weight = random(&mut rng, [64, 64, 3, 3], &device);
    let bias = random(&mut rng, [64], &device);
    let grads = || {
        let w = weight.clone().require_grad();
        let y = ops::conv2d(x.clone(), w.clone(), bias.clone(), 1, 1);
        values(w.grad(&y.sum().backward()).unwrap())
    };
    assert_eq!(grads(), grads(), "two runs give the same bits");
}

#[test]
fn fused_adamw_and_ema_equal_the_tensor_ops_bit_for_bit() {
    use iddpm_kernels::optim::AdamWStep;
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 50_001;
    let param: Tensor<1> = random(&mut rng, [n], &device);
    let grad: Tensor<1> = random(&mut rng, [n], &device).mul_scalar(0.01);
    let m: Tensor<1> = random(&mut rng, [n], &device).mul_scalar(0.001);
    let v: Tensor<1> = random(&mut rng, [n], &device).abs().mul_scalar(1e-6);
    let s = AdamWStep {
        decay: 1.0 - 1e-4 * 0.05,
        one_minus_beta1: 0.1,
        beta2: 0.999,
        one_minus_beta2: (1.0f64 - 0.999) as f32,
        sqrt_bias_correction2: (1.0f64 - 0.999f64.powi(3)).sqrt() as f32,
        eps: 1e-8,
        step_size: (1e-4 / (1.0 - 0.9f64.powi(3))) as f32,
    };
    // The tensor-op formulation the fused pass replaces.
    let m_ops = m.clone() + (grad.clone() - m.clone()).mul_scalar(s.one_minus_beta1);
    let v_ops =
        v.clone().mul_scalar(s.beta2) + (grad.clone() * grad.clone()).mul_scalar(s.one_minus_beta2);
    let denom = v_ops
        .clone()
        .sqrt()
        .div_scalar(s.sqrt_bias_correction2)
        .add_scalar(s.eps);
    let p_ops = param.clone().mul_scalar(s.decay) - (m_ops.clone() / denom).mul_scalar(s.step_size);
    let (mut p, mut m2, mut v2) = (param.clone(), m, v);
    assert!(
        ops::adamw_update(&s, &mut p, &grad, &mut m2, &mut v2),
        "Flex f32 is fusable"
    );
    assert_eq!(values(p.clone()), values(p_ops), "parameters");
    assert_eq!(values(m2), values(m_ops), "first moments");
    assert_eq!(values(v2), values(v_ops), "second moments");
    let (rate, keep) = iddpm_kernels::optim::ema_factors(0.9999);
    // PyTorch's alpha = 1 − rate is taken in f64 before rounding (README §11 of the reference).
    assert_eq!(keep, 1e-4f32);
    assert_ne!(keep, 1.0 - 0.9999f32);
    let ema_ops = param.clone().mul_scalar(rate) + p.clone().mul_scalar(keep);
    let mut ema = param;
    assert!(ops::ema_update(0.9999, &mut ema, &p), "fusable");
    assert_eq!(values(ema), values(ema_ops), "EMA");
}

#[test]
fn upsample_and_its_gradient_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for [b, c, h, w] in [[1, 32, 3, 5], [2, 64, 8, 8]] {
        let x = random(&mut rng, [b, c, h, w], &device);
        let run = |kernel: bool| {
            let x = x.clone().require_grad();
            let y = if kernel {
                ops::upsample_nearest_2x(x.clone())
            } else {
                let e: Tensor<6> = x.clone().reshape([b, c, h, 1, w, 1]);
                e.expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
            };
            let grads = (y.clone() * y.clone().sin()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        let (kernel, standard) = (run(true), run(false));
        assert_eq!(
            kernel.0, standard.0,
            "upsample {b}×{c}×{h}×{w} forward is a copy"
        );
        assert_close(
            &format!("upsample {b}×{c}×{h}×{w} ∂x"),
            kernel.1,
            standard.1,
        );
    }
}

#[test]
fn matmul_as_product_and_sum_and_its_gradients_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // (lhs, rhs): a batch on both sides, a broadcast weight (Conv1x1), a single matrix (Linear).
    for (l, r) in [
        ([3, 5, 7], [3, 7, 4]),
        ([1, 6, 8], [2, 8, 9]),
        ([1, 4, 16], [1, 16, 3]),
    ] {
        let (a, b) = (random(&mut rng, l, &device), random(&mut rng, r, &device));
        let run = |product_and_sum: bool| {
            let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
            let y = if product_and_sum {
                ops::matmul_by_product_and_sum(a.clone(), b.clone())
            } else {
                a.clone().matmul(b.clone())
            };
            let grads = (y.clone() * y.clone().sin()).sum().backward();
            let ga = values(a.grad(&grads).unwrap());
            (values(y), ga, values(b.grad(&grads).unwrap()))
        };
        let (ours, standard) = (run(true), run(false));
        let what = format!("matmul {l:?}·{r:?}");
        assert_close(&format!("{what} forward"), ours.0, standard.0);
        assert_close(&format!("{what} ∂lhs"), ours.1, standard.1);
        assert_close(&format!("{what} ∂rhs"), ours.2, standard.2);
    }
}

#[test]
fn batched_matmul_kernel_and_its_gradients_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // (lhs, rhs, lhs transposed, rhs transposed): batches on both sides, broadcast on either
    // side (Conv1x1's weight), one matrix (Linear), views with swapped axes (attention's
    // q·kᵀ and v·wᵀ), and a batch large enough to be split over the cores.
    let cases = [
        ([3, 5, 7], [3, 7, 4], false, false),
        ([1, 6, 8], [2, 8, 9], false, false),
        ([4, 6, 8], [1, 8, 9], false, false),
        ([1, 4, 16], [1, 16, 3], false, false),
        ([2, 5, 7], [2, 7, 6], true, false),
        ([2, 5, 7], [2, 7, 6], false, true),
        ([1, 33, 20], [3, 20, 17], true, true),
        ([16, 64, 16], [16, 16, 64], true, false),
        ([1, 1, 1], [5, 1, 1], false, false),
    ];
    for (l, r, lt, rt) in cases {
        // A transposed operand is made [B, cols, rows] and viewed with its last axes swapped.
        let make = |rng: &mut ChaCha8Rng, [b, m, k]: [usize; 3], t: bool| {
            if t {
                random(rng, [b, k, m], &device)
            } else {
                random(rng, [b, m, k], &device)
            }
        };
        let (a, b) = (make(&mut rng, l, lt), make(&mut rng, r, rt));
        let run = |kernel: bool| {
            let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
            let view = |t: Tensor<3>, swap: bool| if swap { t.swap_dims(1, 2) } else { t };
            let (va, vb) = (view(a.clone(), lt), view(b.clone(), rt));
            let y = if kernel {
                ops::matmul(va, vb)
            } else {
                va.matmul(vb)
            };
            let grads = (y.clone() * y.clone().sin()).sum().backward();
            let ga = values(a.grad(&grads).unwrap());
            (values(y), ga, values(b.grad(&grads).unwrap()))
        };
        let (kernel, standard) = (run(true), run(false));
        let what = format!(
            "kernel matmul {l:?}{}·{r:?}{}",
            ["", "ᵀ"][lt as usize],
            ["", "ᵀ"][rt as usize]
        );
        assert_close(&format!("{what} forward"), kernel.0, standard.0);
        assert_close(&format!("{what} ∂lhs"), kernel.1, standard.1);
        assert_close(&format!("{what} ∂rhs"), kernel.2, standard.2);
    }
}

#[test]
fn softmax_and_its_gradient_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for [n, t, s] in [[1, 1, 7], [4, 64, 64], [2, 5, 256]] {
        let x = random(&mut rng, [n, t, s], &device).mul_scalar(6.0);
        let run = |kernel: bool| {
            let x = x.clone().require_grad();
            let y = if kernel {
                ops::softmax_last_dim(x.clone())
            } else {
                burn::tensor::activation::softmax(x.clone(), 2)
            };
            let grads = (y.clone() * y.clone().mul_scalar(5.0).sin())
                .sum()
                .backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        let (kernel, standard) = (run(true), run(false));
        assert_close(
            &format!("softmax {n}×{t}×{s} forward"),
            kernel.0,
            standard.0,
        );
        assert_close(&format!("softmax {n}×{t}×{s} ∂x"), kernel.1, standard.1);
    }
}

#[test]
fn gradient_checkpointing_recomputes_the_kernels_to_the_same_gradients() {
    let grads_on = |device: Device| {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = random(&mut rng, [2, 32, 6, 6], &device).require_grad();
        let w1 = random(&mut rng, [64, 32, 3, 3], &device)
            .mul_scalar(0.1)
            .require_grad();
        let w2 = random(&mut rng, [64, 64, 3, 3], &device)
            .mul_scalar(0.1)
            .require_grad();
        let b = random(&mut rng, [64], &device).require_grad();
        let g32 = random(&mut rng, [32], &device).require_grad();
        let g64 = random(&mut rng, [64], &device).require_grad();
        let scale = random(&mut rng, [2, 64, 1, 1], &device).require_grad();
        let shift = random(&mut rng, [2, 64, 1, 1], &device).require_grad();
        let h = ops::group_norm(x.clone(), g32.clone(), g32.clone(), None, 32, true);
        let h = ops::conv2d(h, w1.clone(), b.clone(), 1, 1);
        let film = Film {
            scale: scale.clone(),
            shift: shift.clone(),
        };
        let h = ops::group_norm(h, g64.clone(), g64.clone(), Some(film), 32, true);
        let h = ops::conv2d(ops::upsample_nearest_2x(h), w2.clone(), b.clone(), 2, 1);
        let grads = (h.clone() * h.sin()).sum().backward();
        let g4 = |t: &Tensor<4>| values(t.grad(&grads).unwrap());
        let g1 = |t: &Tensor<1>| values(t.grad(&grads).unwrap());
        vec![
            g4(&x),
            g4(&w1),
            g4(&w2),
            g1(&b),
            g1(&g32),
            g1(&g64),
            g4(&scale),
            g4(&shift),
        ]
    };
    let plain = grads_on(Device::flex().autodiff());
    let checkpointed = grads_on(Device::flex().autodiff().gradient_checkpointing());
    assert_eq!(plain, checkpointed);
}
