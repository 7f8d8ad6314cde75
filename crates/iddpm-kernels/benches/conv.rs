//! The convolution algorithms on the UNet's layer shapes, side by side in one run: im2col +
//! GEMM, Winograd F(2×2, 3×3) and F(4×4, 3×3), forward and input gradient, and burn's
//! standard convolution, with GFLOP/s counted as the direct convolution's `2·B·C_out·H'·W'·C_in·k²`
//! (so Winograd can exceed the GEMM's own rate), and the algorithm the rule picks
//! (`cargo bench -p iddpm-kernels --bench conv`).

use std::time::Instant;

use burn::tensor::module::conv2d as standard_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use iddpm_kernels::conv::{self, ConvGeometry};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `f` over `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn main() {
    let device = Device::flex();
    let n = 1024;
    let a: Tensor<2> = Tensor::random([n, n], Distribution::Default, &device);
    let b: Tensor<2> = Tensor::random([n, n], Distribution::Default, &device);
    let s = time(5, || {
        let _ = a.clone().matmul(b.clone()).into_data();
    });
    println!(
        "sgemm {n}³ on all threads: {:.1} GFLOP/s",
        2.0 * (n * n * n) as f64 / s / 1e9
    );
    println!(
        "forward, ∂x and ∂W in ms; GFLOP/s of the fastest forward, counted as a direct convolution\n{:<20} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:<11}",
        "(B, Cin→Cout, H)",
        "burn",
        "im2col",
        "F(2x2)",
        "F(4x4)",
        "∂x i2c",
        "∂x F2",
        "∂x F4",
        "∂W i2c",
        "∂W F2",
        "∂W F4",
        "GFLOP/s",
        "rule fwd/∂x/∂W"
    );
    let reps = 5;
    for (batch, ci, co, h) in [
        (8, 32, 32, 32),
        (8, 64, 64, 16),
        (8, 64, 64, 8),
        (8, 128, 128, 32),
        (8, 256, 256, 16),
        (8, 256, 256, 8),
        (8, 256, 256, 4),
        (8, 384, 128, 32),
        (8, 512, 256, 16),
        (32, 128, 128, 32),
        (32, 256, 256, 8),
    ] {
        let g = ConvGeometry {
            batch,
            channels_in: ci,
            channels_out: co,
            height: h,
            width: h,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let (x, w, bias) = (
            random(batch * ci * h * h, 1),
            random(co * ci * 9, 2),
            random(co, 3),
        );
        let dy = random(batch * co * h * h, 4);
        let xt: Tensor<4> = Tensor::random([batch, ci, h, h], Distribution::Default, &device);
        let wt: Tensor<4> = Tensor::random([co, ci, 3, 3], Distribution::Default, &device);
        let bt: Tensor<1> = Tensor::random([co], Distribution::Default, &device);
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let burn = time(reps, || {
            let _ = standard_conv2d(xt.clone(), wt.clone(), Some(bt.clone()), options.clone())
                .into_data();
        });
        let im2col = time(reps, || {
            let _ = conv::conv2d_forward_im2col(&g, &x, &w, Some(&bias));
        });
        let wino = |m| {
            time(reps, || {
                let _ = conv::conv2d_forward_winograd(&g, &x, &w, Some(&bias), m);
            })
        };
        let (f2, f4) = (wino(2), wino(4));
        let dx_im2col = time(reps, || {
            let _ = conv::conv2d_input_grad_im2col(&g, &w, &dy);
        });
        let dx_wino = |m| {
            time(reps, || {
                let _ = conv::conv2d_input_grad_winograd(&g, &w, &dy, m);
            })
        };
        let (dx2, dx4) = (dx_wino(2), dx_wino(4));
        let dw_im2col = time(reps, || {
            let _ = conv::conv2d_weight_grad_im2col(&g, &x, &dy);
        });
        let dw_wino = |m| {
            time(reps, || {
                let _ = conv::conv2d_weight_grad_winograd(&g, &x, &dy, m);
            })
        };
        let (dw2, dw4) = (dw_wino(2), dw_wino(4));
        let flops = 2.0 * (batch * co * h * h * ci * 9) as f64;
        let best = im2col.min(f2).min(f4);
        println!(
            "{:<20} {:>7.2} {:>7.2} {:>7.2} {:>7.2} | {:>7.2} {:>7.2} {:>7.2} | {:>7.2} {:>7.2} {:>7.2} | {:>7.0} {:<11}",
            format!("({batch}, {ci}→{co}, {h})"),
            burn * 1e3,
            im2col * 1e3,
            f2 * 1e3,
            f4 * 1e3,
            dx_im2col * 1e3,
            dx2 * 1e3,
            dx4 * 1e3,
            dw_im2col * 1e3,
            dw2 * 1e3,
            dw4 * 1e3,
            flops / best / 1e9,
            conv::algorithms(&g)
                .map(|a| a.trim_end_matches(",3x3)").trim_start_matches("F("))
                .join("/")
        );
    }
}
