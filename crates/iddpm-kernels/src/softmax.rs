//! Softmax over the last axis (attention weights), rows in parallel, and its backward
//! `dx = y ⊙ (dy − Σ dy ⊙ y)`.

use rayon::prelude::*;

use crate::activation::softmax_in_place;

/// Softmax of each row of `len` values.
pub fn softmax_rows(x: &[f32], len: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(len).for_each(softmax_in_place);
    y
}

/// The gradient of the softmax input from its output `y` and the output gradient `dy`.
pub fn softmax_rows_grad(y: &[f32], dy: &[f32], len: usize) -> Vec<f32> {
    let mut dx = dy.to_vec();
    dx.par_chunks_mut(len)
        .zip(y.par_chunks(len))
        .for_each(|(d, y)| {
            let dot: f32 = d.iter().zip(y).map(|(a, b)| a * b).sum();
            for (d, &y) in d.iter_mut().zip(y) {
                *d = y * (*d - dot);
            }
        });
    dx
}
