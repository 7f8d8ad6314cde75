//! Output buffers zeroed by all threads at once: a large `vec![0.0; n]` is otherwise filled
//! on the calling thread while the others wait.

use rayon::prelude::*;

/// Below this many values one thread zeroes faster than a fork-join.
const PARALLEL_FROM: usize = 1 << 16;

/// `n` zeros.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < PARALLEL_FROM {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0.0f32, n));
    v
}
