//! 2-D convolution (groups 1, dilation 1, square kernel, equal stride and padding on both
//! axes) as im2col + GEMM, with its three gradients.
//!
//! Each image of the batch is one task: its column matrix `col[(ci, ky, kx), (oy, ox)]` feeds
//! `y_b = W · col` forward, `dcol = Wᵀ · dy_b` (scattered back into `dx_b`) and
//! `dW_b = dy_b · colᵀ` backward. Per-image weight gradients are summed in batch order, so the
//! result does not depend on how many threads ran.
//!
//! Stride-1 3×3 layers large enough to pay for the transforms go to [`crate::winograd`]
//! instead (forward and both gradients), unless `IDDPM_WINOGRAD=0`.

use rayon::prelude::*;

use crate::buffer::zeros;
use crate::matmul::{Operand, Threads, matmul, matmul_into};
use crate::winograd;

/// Whether Winograd convolutions are used where they win (default: yes; `IDDPM_WINOGRAD=0`
/// turns them off, for benchmarks and for checking one path against the other).
pub fn winograd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("IDDPM_WINOGRAD").as_deref(),
            Ok("0" | "off" | "false")
        )
    })
}

/// Winograd's tile for one pass over `g`, when it is on and wins for this shape.
fn winograd_tile(g: &ConvGeometry, pass: winograd::Pass) -> Option<&'static winograd::Tile> {
    winograd_enabled()
        .then(|| winograd::tile_for(g, pass))
        .flatten()
}

thread_local! {
    /// Each thread's column-matrix buffer, kept between calls: a fresh buffer per image would
    /// be zeroed by the kernel page by page.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a buffer of `len` values (contents unspecified: `f` overwrites them).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (not expected): use a buffer of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride on both axes.
    pub stride: usize,
    /// Zero padding on both sides of both axes.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output height, `⌊(H + 2p − k) / s⌋ + 1`.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output width.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Whether the geometry is one this module computes (non-empty, kernel inside the padded
    /// input).
    pub fn is_supported(&self) -> bool {
        self.batch > 0
            && self.channels_in > 0
            && self.channels_out > 0
            && self.kernel > 0
            && self.stride > 0
            && self.height + 2 * self.padding >= self.kernel
            && self.width + 2 * self.padding >= self.kernel
    }

    fn in_plane(&self) -> usize {
        self.height * self.width
    }

    fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Rows of the column matrix: `C_in · k · k`.
    fn patch(&self) -> usize {
        self.channels_in * self.kernel * self.kernel
    }

    /// A 1×1, stride-1, unpadded convolution: the column matrix is the image itself.
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    /// Whether images run as parallel tasks (enough of them), or one after the other with a
    /// multi-threaded GEMM each.
    fn per_image_tasks(&self) -> bool {
        self.batch >= rayon::current_num_threads()
    }
}

/// The input range `[lo, hi)` of output positions `o` whose tap `t` lands inside the image:
/// `0 ≤ o·s − p + t < len`.
fn valid_outputs(
    len: usize,
    out_len: usize,
    stride: usize,
    padding: usize,
    tap: usize,
) -> (usize, usize) {
    let lo = padding.saturating_sub(tap).div_ceil(stride);
    // o·s + t − p ≤ len − 1  ⇔  o ≤ (len − 1 + p − t) / s
    let hi = if len + padding > tap {
        ((len - 1 + padding - tap) / stride + 1).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// `col[(ci, ky, kx), (oy, ox)] = x[ci, oy·s − p + ky, ox·s − p + kx]`, zero outside, for the
/// output rows `band` (`col` holds `band.len() · W'` columns).
fn im2col(g: &ConvGeometry, x: &[f32], col: &mut [f32], band: std::ops::Range<usize>) {
    let (oh, ow, k, s, p) = (g.out_height(), g.out_width(), g.kernel, g.stride, g.padding);
    for (row, col_row) in col.chunks_exact_mut(band.len() * ow).enumerate() {
        let (ci, ky, kx) = (row / (k * k), row / k % k, row % k);
        let plane = &x[ci * g.in_plane()..(ci + 1) * g.in_plane()];
        let (x_lo, x_hi) = valid_outputs(g.width, ow, s, p, kx);
        let (y_lo, y_hi) = valid_outputs(g.height, oh, s, p, ky);
        for (oy, out) in band.clone().zip(col_row.chunks_exact_mut(ow)) {
            if oy < y_lo || oy >= y_hi {
                out.fill(0.0);
                continue;
            }
            let input = &plane[(oy * s + ky - p) * g.width..][..g.width];
            out[..x_lo].fill(0.0);
            out[x_hi..].fill(0.0);
            if s == 1 {
                let start = x_lo + kx - p;
                out[x_lo..x_hi].copy_from_slice(&input[start..start + (x_hi - x_lo)]);
            } else {
                for (ox, v) in out[x_lo..x_hi].iter_mut().enumerate() {
                    *v = input[(ox + x_lo) * s + kx - p];
                }
            }
        }
    }
}

/// The adjoint of [`im2col`] for the output rows `band`: `dx[ci, iy, ix] += dcol[(ci, ky,
/// kx), (oy, ox)]`. Bands and rows are visited in order, so each input element sums its taps
/// in a fixed order.
fn col2im(g: &ConvGeometry, dcol: &[f32], dx: &mut [f32], band: std::ops::Range<usize>) {
    let (oh, ow, k, s, p) = (g.out_height(), g.out_width(), g.kernel, g.stride, g.padding);
    for (row, col_row) in dcol.chunks_exact(band.len() * ow).enumerate() {
        let (ci, ky, kx) = (row / (k * k), row / k % k, row % k);
        let plane = &mut dx[ci * g.in_plane()..(ci + 1) * g.in_plane()];
        let (x_lo, x_hi) = valid_outputs(g.width, ow, s, p, kx);
        let (y_lo, y_hi) = valid_outputs(g.height, oh, s, p, ky);
        for oy in y_lo.max(band.start)..y_hi.min(band.end) {
            let grads = &col_row[(oy - band.start) * ow..][..ow];
            let input = &mut plane[(oy * s + ky - p) * g.width..][..g.width];
            if s == 1 {
                let start = x_lo + kx - p;
                let dst = &mut input[start..start + (x_hi - x_lo)];
                for (d, v) in dst.iter_mut().zip(&grads[x_lo..x_hi]) {
                    *d += v;
                }
            } else {
                for ox in x_lo..x_hi {
                    input[ox * s + kx - p] += grads[ox];
                }
            }
        }
    }
}

/// Output rows per band of the forward column matrix: about `BAND_VALUES` values, so that a
/// band stays in cache between im2col and the GEMM that reads it, but at least
/// `BAND_MIN_COLUMNS` columns, below which the GEMM loses more than the cache gains.
const BAND_VALUES: usize = 1 << 18;
const BAND_MIN_COLUMNS: usize = 256;

fn band_rows(g: &ConvGeometry) -> usize {
    let ow = g.out_width().max(1);
    let by_cache = BAND_VALUES / (g.patch() * ow).max(1);
    by_cache
        .max(BAND_MIN_COLUMNS.div_ceil(ow))
        .clamp(1, g.out_height())
}

/// Calls `f(first_row, columns, col)` for each band of output rows of image `x_b`, with `col`
/// its column matrix `[C_in·k·k, columns]`.
fn for_each_band(g: &ConvGeometry, x_b: &[f32], mut f: impl FnMut(usize, usize, &[f32])) {
    let (ow, rows, kk) = (g.out_width(), band_rows(g), g.patch());
    with_scratch(kk * rows * ow, |scratch| {
        for start in (0..g.out_height()).step_by(rows) {
            let band = start..(start + rows).min(g.out_height());
            let cols = band.len() * ow;
            let col = &mut scratch[..kk * cols];
            im2col(g, x_b, col, band);
            f(start, cols, col);
        }
    });
}

/// Runs `task(b, out_b)` for every image, in parallel over images or with `Threads::All`
/// inside each, whichever keeps the cores busy without nesting.
fn for_each_image<F>(g: &ConvGeometry, out: &mut [f32], per_image: usize, task: F)
where
    F: Fn(usize, &mut [f32], Threads) + Sync,
{
    if g.per_image_tasks() {
        out.par_chunks_mut(per_image)
            .enumerate()
            .for_each(|(b, o)| task(b, o, Threads::One));
    } else {
        for (b, o) in out.chunks_mut(per_image).enumerate() {
            task(b, o, Threads::All);
        }
    }
}

/// `y[b, co] = bias[co] + Σ W[co, ci, ky, kx] · x[b, ci, ·]`: x `[B, C_in, H, W]`,
/// weight `[C_out, C_in, k, k]`, bias `[C_out]` → `[B, C_out, H', W']`.
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    if let Some(tile) = winograd_tile(g, winograd::Pass::Forward) {
        return winograd::forward(tile, g, x, weight, bias);
    }
    conv2d_forward_im2col(g, x, weight, bias)
}

/// [`conv2d_forward`] by Winograd's F(m×m, 3×3) with output tiles of side `m` (2 or 4),
/// whatever the rule would choose; `None` for other `m` or shapes other than stride-1 3×3
/// with padding ≤ 2. For benchmarks and tests that compare the algorithms.
pub fn conv2d_forward_winograd(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
) -> Option<Vec<f32>> {
    let tile = winograd::tile_of_side(m)?;
    let fits = g.kernel == 3 && g.stride == 1 && g.padding <= 2 && g.is_supported();
    fits.then(|| winograd::forward(tile, g, x, weight, bias))
}

/// [`conv2d_input_grad`] by Winograd's F(m×m, 3×3) (see [`conv2d_forward_winograd`]).
pub fn conv2d_input_grad_winograd(
    g: &ConvGeometry,
    weight: &[f32],
    dy: &[f32],
    m: usize,
) -> Option<Vec<f32>> {
    let tile = winograd::tile_of_side(m)?;
    let fits = g.kernel == 3 && g.stride == 1 && g.padding <= 2 && g.is_supported();
    fits.then(|| winograd::input_grad(tile, g, weight, dy))
}

/// [`conv2d_weight_grad`] by Winograd's F(m×m, 3×3) (see [`conv2d_forward_winograd`]).
pub fn conv2d_weight_grad_winograd(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    m: usize,
) -> Option<Vec<f32>> {
    let tile = winograd::tile_of_side(m)?;
    let fits = g.kernel == 3 && g.stride == 1 && g.padding <= 2 && g.is_supported();
    fits.then(|| winograd::weight_grad(tile, g, x, dy))
}

/// The algorithms [`conv2d_forward`], [`conv2d_input_grad`] and [`conv2d_weight_grad`] use
/// for `g`, each `"F(4x4,3x3)"`, `"F(2x2,3x3)"` or `"im2col"`.
pub fn algorithms(g: &ConvGeometry) -> [&'static str; 3] {
    use winograd::Pass;
    [Pass::Forward, Pass::InputGrad, Pass::WeightGrad].map(|pass| algorithm_name(g, pass))
}

fn algorithm_name(g: &ConvGeometry, pass: winograd::Pass) -> &'static str {
    match winograd_tile(g, pass).map(|t| t.m) {
        Some(4) => "F(4x4,3x3)",
        Some(_) => "F(2x2,3x3)",
        None => "im2col",
    }
}

/// [`conv2d_forward`] by im2col + GEMM, whatever the shape.
pub fn conv2d_forward_im2col(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (n, kk, co) = (g.out_plane(), g.patch(), g.channels_out);
    let mut y = zeros(g.batch * co * n);
    let x_image = g.channels_in * g.in_plane();
    for_each_image(g, &mut y, co * n, |b, y_b, threads| {
        if let Some(bias) = bias {
            for (row, &v) in y_b.chunks_exact_mut(n).zip(bias) {
                row.fill(v);
            }
        }
        let x_b = &x[b * x_image..(b + 1) * x_image];
        let product = |y_b: &mut [f32], col: &[f32]| {
            let (lhs, rhs) = (Operand::rows(weight, kk), Operand::rows(col, n));
            matmul(y_b, (co, n, kk), lhs, rhs, bias.is_some(), threads);
        };
        if g.is_pointwise() {
            product(y_b, x_b);
            return;
        }
        let ow = g.out_width();
        for_each_band(g, x_b, |start, cols, col| {
            // y_b[:, band]: rows of the output plane `n` apart.
            let (lhs, rhs) = (Operand::rows(weight, kk), Operand::rows(col, cols));
            let dst = &mut y_b[start * ow..];
            matmul_into(dst, n, (co, cols, kk), lhs, rhs, bias.is_some(), threads);
        });
    });
    y
}

/// `∂L/∂x` from `∂L/∂y`: `dx_b = col2im(Wᵀ · dy_b)`.
pub fn conv2d_input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(tile) = winograd_tile(g, winograd::Pass::InputGrad) {
        return winograd::input_grad(tile, g, weight, dy);
    }
    conv2d_input_grad_im2col(g, weight, dy)
}

/// [`conv2d_input_grad`] by GEMM + col2im, whatever the shape.
pub fn conv2d_input_grad_im2col(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (n, kk, co) = (g.out_plane(), g.patch(), g.channels_out);
    let x_image = g.channels_in * g.in_plane();
    let mut dx = zeros(g.batch * x_image);
    for_each_image(g, &mut dx, x_image, |b, dx_b, threads| {
        let dy_b = &dy[b * co * n..(b + 1) * co * n];
        let lhs = Operand::transposed(weight, kk);
        if g.is_pointwise() {
            matmul(
                dx_b,
                (kk, n, co),
                lhs,
                Operand::rows(dy_b, n),
                false,
                threads,
            );
            return;
        }
        let (ow, rows) = (g.out_width(), band_rows(g));
        dx_b.fill(0.0);
        with_scratch(kk * rows * ow, |scratch| {
            for start in (0..g.out_height()).step_by(rows) {
                let band = start..(start + rows).min(g.out_height());
                let cols = band.len() * ow;
                let dcol = &mut scratch[..kk * cols];
                // dy_b[:, band]: rows of the gradient plane `n` apart.
                let rhs = Operand::strided(&dy_b[start * ow..], n);
                matmul(dcol, (kk, cols, co), lhs, rhs, false, threads);
                col2im(g, dcol, dx_b, band);
            }
        });
    });
    dx
}

/// `∂L/∂W = Σ_b dy_b · col_bᵀ`, summed over images in batch order.
pub fn conv2d_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(tile) = winograd_tile(g, winograd::Pass::WeightGrad) {
        return winograd::weight_grad(tile, g, x, dy);
    }
    conv2d_weight_grad_im2col(g, x, dy)
}

/// [`conv2d_weight_grad`] by im2col + GEMM, whatever the shape.
pub fn conv2d_weight_grad_im2col(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (n, kk, co) = (g.out_plane(), g.patch(), g.channels_out);
    let x_image = g.channels_in * g.in_plane();
    let mut per_image = zeros(g.batch * co * kk);
    for_each_image(g, &mut per_image, co * kk, |b, dw_b, threads| {
        let x_b = &x[b * x_image..(b + 1) * x_image];
        let dy_b = &dy[b * co * n..(b + 1) * co * n];
        let product = |dw_b: &mut [f32], col: &[f32]| {
            let (lhs, rhs) = (Operand::rows(dy_b, n), Operand::transposed(col, n));
            matmul(dw_b, (co, kk, n), lhs, rhs, false, threads);
        };
        if g.is_pointwise() {
            product(dw_b, x_b);
            return;
        }
        let ow = g.out_width();
        for_each_band(g, x_b, |start, cols, col| {
            // dW_b += dy_b[:, band] · col_bandᵀ.
            let lhs = Operand::strided(&dy_b[start * ow..], n);
            let rhs = Operand::transposed(col, cols);
            matmul(dw_b, (co, kk, cols), lhs, rhs, start > 0, threads);
        });
    });
    sum_in_order(per_image, co * kk)
}

/// `∂L/∂bias[co] = Σ_b Σ_pos dy[b, co, pos]`, summed per image, then over images in order.
pub fn conv2d_bias_grad(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    let (n, co) = (g.out_plane(), g.channels_out);
    (0..co)
        .into_par_iter()
        .map(|c| {
            (0..g.batch)
                .map(|b| {
                    dy[(b * co + c) * n..(b * co + c + 1) * n]
                        .iter()
                        .sum::<f32>()
                })
                .sum()
        })
        .collect()
}

/// `Σ_i parts[i]` over consecutive blocks of `len`, added in block order (deterministic).
pub(crate) fn sum_in_order(mut parts: Vec<f32>, len: usize) -> Vec<f32> {
    let (first, rest) = parts.split_at_mut(len);
    for block in rest.chunks_exact(len) {
        first
            .par_chunks_mut(4096)
            .zip(block.par_chunks(4096))
            .for_each(|(acc, add)| acc.iter_mut().zip(add).for_each(|(a, v)| *a += v));
    }
    parts.truncate(len);
    parts
}
