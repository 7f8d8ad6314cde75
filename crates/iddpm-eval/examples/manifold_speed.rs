//! Distance blocks of precision/recall: one f64 matrix product per block against the
//! pair-by-pair loop it replaced, side by side on the same features, median of 5 runs each.
//!
//! `cargo run --release -p iddpm-eval --example manifold_speed [ROWS] [COLS]`
//! (default 1024 × 4000 at d = 2048: one block of the reference radii of a 4,000-image set).

use std::time::Instant;

use iddpm_eval::manifold::{distances_blocked, distances_pairwise};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Median wall seconds of `runs` calls of `f`.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (r, c, d) = (arg(1, 1024), arg(2, 4000), 2048);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut features =
        |n: usize| -> Vec<f32> { (0..n * d).map(|_| rng.random_range(0.0..2.0f32)).collect() };
    let (rows, cols) = (features(r), features(c));
    let largest_difference = distances_blocked(&rows, &cols, d)
        .iter()
        .zip(distances_pairwise(&rows, &cols, d))
        .map(|(a, b)| (a - b).abs() / b.max(1.0))
        .fold(0.0, f64::max);
    let pairwise = median_seconds(5, || {
        std::hint::black_box(distances_pairwise(&rows, &cols, d));
    });
    let blocked = median_seconds(5, || {
        std::hint::black_box(distances_blocked(&rows, &cols, d));
    });
    println!("{r} x {c} squared distances, d = {d} (median of 5 runs)");
    println!("pair by pair (baseline): {pairwise:.3} s");
    println!("matrix product:          {blocked:.3} s");
    println!("speed-up: {:.1}x", pairwise / blocked);
    println!("largest relative difference: {largest_difference:.1e}");
}
