//! GFLOP/s of one-thread `sgemm` in the `gemm` crate and in OpenBLAS, on the shapes of the
//! Winograd and im2col GEMMs of iddpm's convolutions, with the ratio between them. iddpm's
//! kernels call `gemm` on one thread inside their own parallel loops, so this is the speed
//! that matters to them.

use std::time::Instant;

#[link(name = "openblas")]
unsafe extern "C" {
    fn cblas_sgemm(
        order: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
    fn openblas_set_num_threads(n: i32);
}

const ROW_MAJOR: i32 = 101;
const NO_TRANSPOSE: i32 = 111;

/// (M, N, K): C_out × tiles × C_in of Winograd layers, then im2col-sized and square products.
const SHAPES: [(usize, usize, usize); 8] = [
    (128, 1024, 128),
    (128, 1024, 384),
    (256, 1024, 512),
    (512, 256, 512),
    (64, 1024, 64),
    (32, 512, 32),
    (128, 1024, 1152),
    (1024, 1024, 1024),
];

/// Median seconds per call of `f`, over 7 timings of enough calls to take ~0.1 s each.
fn seconds_per_call(flop: f64, mut f: impl FnMut()) -> f64 {
    let calls = (2e10 / flop).clamp(3.0, 10_000.0) as usize;
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            (0..calls).for_each(|_| f());
            start.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

fn main() {
    // SAFETY: a plain setter of OpenBLAS's thread count.
    unsafe { openblas_set_num_threads(1) };
    println!("| M×N×K | gemm GFLOP/s | OpenBLAS GFLOP/s | gemm / OpenBLAS |");
    println!("|---|---|---|---|");
    for (m, n, k) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let ours = seconds_per_call(flop, || {
            // SAFETY: a, b, c are row-major m×k, k×n and m×n buffers of those sizes.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        });
        let blas = seconds_per_call(flop, || {
            // SAFETY: as above, with leading dimensions k, n and n.
            unsafe {
                cblas_sgemm(
                    ROW_MAJOR,
                    NO_TRANSPOSE,
                    NO_TRANSPOSE,
                    m as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    a.as_ptr(),
                    k as i32,
                    b.as_ptr(),
                    n as i32,
                    0.0,
                    c.as_mut_ptr(),
                    n as i32,
                )
            }
        });
        let rate = |s: f64| flop / s / 1e9;
        println!(
            "| {m}×{n}×{k} | {:.0} | {:.0} | ×{:.2} |",
            rate(ours),
            rate(blas),
            blas / ours
        );
    }
}
