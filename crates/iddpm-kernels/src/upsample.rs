//! Nearest-neighbour ×2 upsampling of NCHW planes and its adjoint (each input pixel's
//! gradient is the sum of its 2×2 block).

use rayon::prelude::*;

use crate::buffer::zeros;

/// `[planes, H, W]` → `[planes, 2H, 2W]`, every pixel repeated into a 2×2 block.
pub fn upsample_nearest_2x(x: &[f32], height: usize, width: usize) -> Vec<f32> {
    let mut y = zeros(x.len() * 4);
    let plane = height * width;
    y.par_chunks_mut(4 * plane)
        .zip(x.par_chunks(plane))
        .for_each(|(out, input)| {
            for (row, pair) in input
                .chunks_exact(width)
                .zip(out.chunks_exact_mut(4 * width))
            {
                let (top, bottom) = pair.split_at_mut(2 * width);
                for (j, &v) in row.iter().enumerate() {
                    top[2 * j] = v;
                    top[2 * j + 1] = v;
                }
                bottom.copy_from_slice(top);
            }
        });
    y
}

/// The adjoint: `[planes, 2H, 2W]` → `[planes, H, W]`, each 2×2 block summed (top row first,
/// left to right).
pub fn upsample_nearest_2x_grad(dy: &[f32], height: usize, width: usize) -> Vec<f32> {
    let plane = height * width;
    let mut dx = zeros(dy.len() / 4);
    dx.par_chunks_mut(plane)
        .zip(dy.par_chunks(4 * plane))
        .for_each(|(out, grads)| {
            for (row, pair) in out
                .chunks_exact_mut(width)
                .zip(grads.chunks_exact(4 * width))
            {
                let (top, bottom) = pair.split_at(2 * width);
                for (j, d) in row.iter_mut().enumerate() {
                    *d = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
                }
            }
        });
    dx
}
