//! The convolution kernels on the UNet's layer shapes, against burn's standard convolution
//! in the same run, with the achieved GFLOP/s and this machine's sgemm rate
//! (`cargo bench -p iddpm-kernels --bench conv`).

use std::time::Instant;

use burn::tensor::module::conv2d as standard_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use iddpm_kernels::ops;

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
        "{:<28} {:>10} {:>10} {:>8} {:>9}",
        "conv (B, Cin→Cout, H, k, s)", "kernel ms", "burn ms", "ratio", "GFLOP/s"
    );
    for (batch, ci, co, h, k, stride) in [
        (8, 32, 32, 32, 3, 1),
        (8, 128, 128, 32, 3, 1),
        (8, 256, 256, 16, 3, 1),
        (8, 256, 256, 8, 3, 1),
        (8, 128, 128, 32, 3, 2),
        (8, 384, 256, 16, 1, 1),
    ] {
        let x: Tensor<4> = Tensor::random([batch, ci, h, h], Distribution::Default, &device);
        let w: Tensor<4> = Tensor::random([co, ci, k, k], Distribution::Default, &device);
        let bias: Tensor<1> = Tensor::random([co], Distribution::Default, &device);
        let pad = k / 2;
        let ours = time(5, || {
            let _ = ops::conv2d(x.clone(), w.clone(), bias.clone(), stride, pad).into_data();
        });
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let theirs = time(5, || {
            let _ = standard_conv2d(x.clone(), w.clone(), Some(bias.clone()), options.clone())
                .into_data();
        });
        let out = h.div_ceil(stride);
        let flops = 2.0 * (batch * co * out * out * ci * k * k) as f64;
        println!(
            "{:<28} {:>10.2} {:>10.2} {:>8.2} {:>9.1}",
            format!("({batch}, {ci}→{co}, {h}, {k}, {stride})"),
            ours * 1e3,
            theirs * 1e3,
            ours / theirs,
            flops / ours / 1e9
        );
    }
}
