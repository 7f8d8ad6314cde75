//! Row-major single-precision matrix products on top of the `gemm` crate.
//!
//! `gemm` picks its AVX-512 (`x86-v4`), AVX2/FMA or scalar micro-kernel at run time, so one
//! binary uses the widest vectors the CPU has.

/// A matrix operand: a pointer to its first element and how to step through it.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

impl Operand {
    /// `data` read as a row-major `[rows, cols]` matrix.
    pub(crate) fn rows(data: &[f32], cols: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// `data` read as a matrix whose rows start `row_stride` values apart (a block of columns
    /// of a larger row-major matrix).
    pub(crate) fn strided(data: &[f32], row_stride: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: row_stride as isize,
            col_stride: 1,
        }
    }

    /// `data` read as a matrix whose element (r, c) sits at `r·row_stride + c·col_stride`.
    pub(crate) fn with_strides(data: &[f32], row_stride: usize, col_stride: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: row_stride as isize,
            col_stride: col_stride as isize,
        }
    }

    /// The transpose of `data` read as a row-major `[rows, cols]` matrix: a `[cols, rows]`
    /// operand, with no copy.
    pub(crate) fn transposed(data: &[f32], cols: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: 1,
            col_stride: cols as isize,
        }
    }
}

/// Whether the product may spread over the rayon pool (it must not when the caller already
/// runs inside a parallel loop: nested parallelism only oversubscribes the cores).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// On the calling thread.
    One,
    /// Across rayon's pool.
    All,
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, `dst` row-major; accumulates when `accumulate`.
///
/// The caller guarantees that `lhs` and `rhs` describe `m×k` and `k×n` matrices inside live
/// slices: the constructors of [`Operand`] take the slices, and every caller passes the same
/// dimensions it sized them with.
pub(crate) fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
    threads: Threads,
) {
    matmul_into(dst, n, (m, n, k), lhs, rhs, accumulate, threads);
}

/// [`matmul`] into a block of a larger row-major matrix whose rows are `dst_stride` apart.
pub(crate) fn matmul_into(
    dst: &mut [f32],
    dst_stride: usize,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
    threads: Threads,
) {
    assert!(dst_stride >= n, "matmul: rows overlap");
    assert!(
        m == 0 || dst.len() >= (m - 1) * dst_stride + n,
        "matmul: destination too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::All if m * n * k >= 1 << 18 => gemm::Parallelism::Rayon(0),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: dst holds m rows of n elements, `dst_stride` apart (asserted); lhs/rhs address m×k and k×n elements of the
    // slices they were built from (the caller's contract above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
