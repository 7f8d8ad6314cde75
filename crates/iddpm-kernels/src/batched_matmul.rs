//! Batched matrix products `[B | 1, M, K] · [B | 1, K, N] = [B, M, N]` read straight from the
//! operands' strides (transposed views included), and their two gradients.
//!
//! burn-flex's matmul zero-fills its output on the calling thread and copies it into an
//! aligned buffer before the product; here the output is zeroed on all cores and the batch is
//! split over the cores. A gradient whose operand was broadcast over the batch is summed over
//! the batch in order, so it does not depend on how many threads ran.

use rayon::prelude::*;

use crate::buffer::zeros;
use crate::matmul::{Operand, Threads, matmul};

/// One operand as it lies in memory: its matrices `[batch, rows, cols]` at
/// `data[offset + b·strides[0] + i·strides[1] + j·strides[2]]`.
#[derive(Clone, Copy)]
pub(crate) struct MatrixBatch<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 3],
    /// `[batch, rows, cols]`.
    dims: [usize; 3],
}

impl<'a> MatrixBatch<'a> {
    /// The view of `data` with `dims`, `strides` and `offset`, when every element it names
    /// lies inside `data` (`None` otherwise, or for negative strides).
    pub(crate) fn new(
        data: &'a [f32],
        offset: usize,
        strides: &[isize],
        dims: [usize; 3],
    ) -> Option<Self> {
        let strides: [usize; 3] = [
            usize::try_from(*strides.first()?).ok()?,
            usize::try_from(*strides.get(1)?).ok()?,
            usize::try_from(*strides.get(2)?).ok()?,
        ];
        if dims.contains(&0) {
            return Some(Self {
                data,
                offset,
                strides,
                dims,
            });
        }
        let last = dims.iter().zip(strides).try_fold(offset, |end, (&d, s)| {
            end.checked_add((d - 1).checked_mul(s)?)
        })?;
        (last < data.len()).then_some(Self {
            data,
            offset,
            strides,
            dims,
        })
    }

    /// A contiguous `[batch, rows, cols]` buffer.
    pub(crate) fn contiguous(data: &'a [f32], dims: [usize; 3]) -> Self {
        Self {
            data,
            offset: 0,
            strides: [dims[1] * dims[2], dims[2], 1],
            dims,
        }
    }

    fn batch(&self) -> usize {
        self.dims[0]
    }

    /// Matrix `b` (matrix 0 when the batch is broadcast), or its transpose.
    fn matrix(&self, b: usize, transposed: bool) -> Operand {
        let b = if self.dims[0] == 1 { 0 } else { b };
        let start = &self.data[self.offset + b * self.strides[0]..];
        let (rows, cols) = (self.strides[1], self.strides[2]);
        if transposed {
            Operand::with_strides(start, cols, rows)
        } else {
            Operand::with_strides(start, rows, cols)
        }
    }
}

/// `[B, m, n]` with matrix `b` = `lhs(b) · rhs(b)` (inner size `k`), over all cores.
fn products(
    batch: usize,
    (m, n, k): (usize, usize, usize),
    lhs: impl Fn(usize) -> Operand + Sync,
    rhs: impl Fn(usize) -> Operand + Sync,
) -> Vec<f32> {
    let mut out = zeros(batch * m * n);
    if batch == 1 || m * n == 0 {
        if m * n > 0 {
            matmul(&mut out, (m, n, k), lhs(0), rhs(0), false, Threads::All);
        }
        return out;
    }
    out.par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(b, out_b)| matmul(out_b, (m, n, k), lhs(b), rhs(b), false, Threads::One));
    out
}

/// `[m, n]` = `Σ_b lhs(b) · rhs(b)`, in batch order.
fn summed_products(
    batch: usize,
    (m, n, k): (usize, usize, usize),
    lhs: impl Fn(usize) -> Operand,
    rhs: impl Fn(usize) -> Operand,
) -> Vec<f32> {
    let mut out = zeros(m * n);
    for b in 0..batch {
        matmul(&mut out, (m, n, k), lhs(b), rhs(b), b > 0, Threads::All);
    }
    out
}

/// `c = a · b`: `[B, M, N]` from a `[B | 1, M, K]` and b `[B | 1, K, N]`.
pub(crate) fn batched_matmul(a: &MatrixBatch, b: &MatrixBatch) -> Vec<f32> {
    let batch = a.batch().max(b.batch());
    let (m, k, n) = (a.dims[1], a.dims[2], b.dims[2]);
    products(
        batch,
        (m, n, k),
        |i| a.matrix(i, false),
        |i| b.matrix(i, false),
    )
}

/// One gradient's products over the batch of `dc`: kept per batch element, or summed over
/// the batch in order when the operand it belongs to (batch `operand_batch`) was broadcast.
fn gradient_products(
    dc_batch: usize,
    operand_batch: usize,
    dims: (usize, usize, usize),
    lhs: impl Fn(usize) -> Operand + Sync,
    rhs: impl Fn(usize) -> Operand + Sync,
) -> Vec<f32> {
    if operand_batch == 1 && dc_batch > 1 {
        summed_products(dc_batch, dims, lhs, rhs)
    } else {
        products(dc_batch, dims, lhs, rhs)
    }
}

/// `∂L/∂a = ∂L/∂c · bᵀ`, `[a's batch, M, K]`, summed over the batch when a was broadcast.
pub(crate) fn batched_matmul_lhs_grad(
    dc: &MatrixBatch,
    b: &MatrixBatch,
    a_batch: usize,
) -> Vec<f32> {
    let (m, n, k) = (dc.dims[1], dc.dims[2], b.dims[1]);
    let (lhs, rhs) = (|i| dc.matrix(i, false), |i| b.matrix(i, true));
    gradient_products(dc.batch(), a_batch, (m, k, n), lhs, rhs)
}

/// `∂L/∂b = aᵀ · ∂L/∂c`, `[b's batch, K, N]`, summed over the batch when b was broadcast.
pub(crate) fn batched_matmul_rhs_grad(
    a: &MatrixBatch,
    dc: &MatrixBatch,
    b_batch: usize,
) -> Vec<f32> {
    let (m, k, n) = (a.dims[1], a.dims[2], dc.dims[2]);
    let (lhs, rhs) = (|i| a.matrix(i, true), |i| dc.matrix(i, false));
    gradient_products(dc.batch(), b_batch, (k, n, m), lhs, rhs)
}
