//! Stride-1 3×3 convolution by Winograd's minimal filtering, F(m×m, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! The output is cut into m×m tiles, each computed from an α×α input tile (α = m + 2) as
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the element-wise product
//! becomes α² independent matrix products, one per point ξ of the transformed tile:
//! `M[ξ] (C_out × T) = U[ξ] (C_out × C_in) · V[ξ] (C_in × T)`, with T the tiles of all images
//! of a chunk, so each product is large enough for the GEMM to run at full speed.
//! F(2×2) does 2.25× fewer multiplications than the direct convolution, F(4×4) 4×.
//!
//! Layouts (all row-major):
//! - `U [C_out, C_in, α²]`: the transformed weights, once per call.
//! - `V [C_in, α², T]`: the transformed input, written one channel per task.
//! - `M [α², C_out, T]`: the products, written one ξ per task.
//!
//! The transforms work on all tiles of an image at once: each 1-D transform is written out
//! for its tile size and applied position by position across the tiles, which the compiler
//! vectorises. The weights are transformed once per call (once per layer and step).

use rayon::prelude::*;

use crate::buffer::zeros;
use crate::conv::ConvGeometry;
use crate::matmul::{Operand, Threads, matmul};
use crate::simd::multiversion;

/// One Winograd tile size: output side `m`, input side `α = m + 2`, and its three matrices.
#[derive(Debug)]
pub(crate) struct Tile {
    /// Output tile side.
    pub(crate) m: usize,
    /// Input tile side, `m + 2`.
    pub(crate) alpha: usize,
    /// Input transform `Bᵀ` `[α, α]` (the kernels use it written out, in `input_1d_f*`).
    #[cfg_attr(not(test), allow(dead_code))]
    bt: &'static [f32],
    /// Filter transform `G` `[α, 3]` (written out in `filter_1d_f*`).
    #[cfg_attr(not(test), allow(dead_code))]
    g: &'static [f32],
    /// Output transform `Aᵀ` `[m, α]` (written out in `output_1d_f*`).
    #[cfg_attr(not(test), allow(dead_code))]
    at: &'static [f32],
}

/// F(2×2, 3×3), interpolation points 0, ±1, ∞.
pub(crate) static F2: Tile = Tile {
    m: 2,
    alpha: 4,
    #[rustfmt::skip]
    bt: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4×4, 3×3), interpolation points 0, ±1, ±2, ∞.
pub(crate) static F4: Tile = Tile {
    m: 4,
    alpha: 6,
    #[rustfmt::skip]
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// The tile with output side `m`, if there is one.
pub(crate) fn tile_of_side(m: usize) -> Option<&'static Tile> {
    match m {
        2 => Some(&F2),
        4 => Some(&F4),
        _ => None,
    }
}

impl Tile {
    /// `max_i Σ_j |row_i|` of each matrix: how much each transform can grow a value's
    /// magnitude along one axis (used by the error bound in the tests).
    #[cfg(test)]
    pub(crate) fn growth(&self) -> (f32, f32, f32) {
        let norm = |m: &[f32], cols: usize| {
            m.chunks_exact(cols)
                .map(|r| r.iter().map(|v| v.abs()).sum::<f32>())
                .fold(0.0, f32::max)
        };
        (
            norm(self.bt, self.alpha),
            norm(self.g, 3),
            norm(self.at, self.alpha),
        )
    }
}

/// Which of a convolution's three products is being computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// `y = W ∗ x`.
    Forward,
    /// `∂L/∂x` (the rule sees the geometry of the forward convolution).
    InputGrad,
    /// `∂L/∂W`.
    WeightGrad,
}

/// Output tiles at least, per GEMM, below which F(2×2) on 8×8 maps loses to im2col.
const MIN_SMALL_MAP_TILES: usize = 512;

/// Winograd's tile for one pass of a convolution, or `None` where im2col is faster or the
/// shape is not a stride-1 3×3 one with padding ≤ 2.
///
/// The rule comes from `cargo bench -p iddpm-kernels --bench conv` (its table is in
/// `docs/performance.md`), on the UNet's shapes at batch 8 and 32:
/// - thin layers (fewer than 16 channels in or out, e.g. the RGB input) stay on im2col: the
///   transforms cost as much as the product saves;
/// - maps of side ≥ 24 take F(4×4) (×1.5–1.8 over im2col on 128–384 channels at 32×32);
/// - side 12–23 takes F(2×2): F(4×4) has too few tiles per image there (16 at 16×16);
/// - 8×8 maps take F(2×2) for the forward pass and ∂x only when a chunk holds at least
///   [`MIN_SMALL_MAP_TILES`] tiles (batch ≥ 32); ∂W takes it from 4×4 up, because im2col's
///   per-image partial sums cost more there than the transforms.
pub(crate) fn tile_for(g: &ConvGeometry, pass: Pass) -> Option<&'static Tile> {
    if g.kernel != 3 || g.stride != 1 || g.padding > 2 || !g.is_supported() {
        return None;
    }
    if g.channels_in < 16 || g.channels_out < 16 {
        return None;
    }
    let side = g.out_height().min(g.out_width());
    let small_map_tiles = g.batch * g.out_height().div_ceil(2) * g.out_width().div_ceil(2);
    match (side, pass) {
        (24.., _) => Some(&F4),
        (12.., _) => Some(&F2),
        (4.., Pass::WeightGrad) => Some(&F2),
        (8.., _) if small_map_tiles >= MIN_SMALL_MAP_TILES => Some(&F2),
        _ => None,
    }
}

/// The tiling of one convolution's output.
struct Tiling {
    /// Tile rows and columns per image.
    rows: usize,
    cols: usize,
    /// Images per chunk (one GEMM per ξ covers the tiles of a chunk).
    images_per_chunk: usize,
}

/// Values of V and M per chunk at most (beyond this the products stop gaining).
const CHUNK_TILES: usize = 1024;

impl Tiling {
    fn new(g: &ConvGeometry, tile: &Tile) -> Self {
        let rows = g.out_height().div_ceil(tile.m);
        let cols = g.out_width().div_ceil(tile.m);
        let images_per_chunk = (CHUNK_TILES / (rows * cols)).clamp(1, g.batch);
        Self {
            rows,
            cols,
            images_per_chunk,
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }
}

thread_local! {
    /// The calling thread's V and M buffers, kept between calls (fresh ones would be
    /// page-faulted in on every convolution).
    static PRODUCTS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// Each thread's buffer for one image-channel's gathered and half-transformed tiles.
    static TILES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Grows `buf` to at least `len` and returns its first `len` values.
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Runs `f` with this thread's tile buffer of `len` values (contents unspecified).
fn with_tiles<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    TILES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(sized(&mut buf, len)),
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// `G w` of F(2×2): one axis of the filter transform.
#[inline(always)]
fn filter_1d_f2([w0, w1, w2]: [f32; 3]) -> [f32; 4] {
    let outer = 0.5 * (w0 + w2);
    [w0, outer + 0.5 * w1, outer - 0.5 * w1, w2]
}

/// `G w` of F(4×4).
#[inline(always)]
fn filter_1d_f4([w0, w1, w2]: [f32; 3]) -> [f32; 6] {
    let (outer, outer4) = (w0 + w2, w0 + 4.0 * w2);
    [
        0.25 * w0,
        -(outer + w1) / 6.0,
        -(outer - w1) / 6.0,
        (outer4 + 2.0 * w1) / 24.0,
        (outer4 - 2.0 * w1) / 24.0,
        w2,
    ]
}

/// `G g Gᵀ` of one 3×3 kernel into `out [α, α]`, with the 1-D transform `f`.
#[inline(always)]
fn filter_2d<const A: usize>(w: &[f32], out: &mut [f32], f: impl Fn([f32; 3]) -> [f32; A]) {
    // columns: t[r, kx] = (G w[·, kx])[r]
    let cols: [[f32; A]; 3] = std::array::from_fn(|kx| f([w[kx], w[3 + kx], w[6 + kx]]));
    for (r, row) in out.chunks_exact_mut(A).enumerate() {
        row.copy_from_slice(&f([cols[0][r], cols[1][r], cols[2][r]]));
    }
}

/// `U[co, ci, ξy·α + ξx] = Σ_{ky,kx} G[ξy, ky] · w[co, ci, ky, kx] · G[ξx, kx]`, one
/// output channel per task (the products read `U[·, ·, ξ]` with strides).
fn transform_weights(tile: &Tile, g: &ConvGeometry, weight: &[f32]) -> Vec<f32> {
    let (a2, ci) = (tile.alpha * tile.alpha, g.channels_in);
    let mut u = vec![0.0; a2 * g.channels_out * ci];
    u.par_chunks_mut(a2 * ci)
        .zip(weight.par_chunks(9 * ci))
        .for_each(|(u_o, w_o)| {
            for (u_oi, w) in u_o.chunks_exact_mut(a2).zip(w_o.chunks_exact(9)) {
                match tile.m {
                    2 => filter_2d(w, u_oi, filter_1d_f2),
                    _ => filter_2d(w, u_oi, filter_1d_f4),
                }
            }
        });
    u
}

/// Applies `f` to `I` streams of `n` values (`src_stride` apart in `src`) position by
/// position, writing its `O` results to streams `dst_stride` apart in `dst`: a 1-D transform
/// of all tiles at once, which the compiler vectorises over the tiles.
#[inline(always)]
fn map_streams<const I: usize, const O: usize>(
    (src, src_stride): (&[f32], usize),
    (dst, dst_stride): (&mut [f32], usize),
    n: usize,
    f: impl Fn([f32; I]) -> [f32; O],
) {
    if n == 0 {
        return;
    }
    assert!(
        src.len() >= (I - 1) * src_stride + n,
        "map_streams: source too short"
    );
    assert!(
        dst.len() >= (O - 1) * dst_stride + n,
        "map_streams: destination too short"
    );
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for t in 0..n {
        // SAFETY: k·stride + t < len for every stream k and t < n (asserted above).
        let x: [f32; I] = std::array::from_fn(|k| unsafe { *s.add(k * src_stride + t) });
        for (k, v) in f(x).into_iter().enumerate() {
            // SAFETY: as above, for the destination.
            unsafe { *d.add(k * dst_stride + t) = v };
        }
    }
}

/// `Bᵀ d` of F(2×2): one axis of the input transform.
#[inline(always)]
fn input_1d_f2([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `Bᵀ d` of F(4×4).
#[inline(always)]
fn input_1d_f4([d0, d1, d2, d3, d4, d5]: [f32; 6]) -> [f32; 6] {
    [
        4.0 * d0 - 5.0 * d2 + d4,
        d3 + d4 - 4.0 * (d1 + d2),
        d4 - d3 + 4.0 * (d1 - d2),
        d4 - d2 + 2.0 * (d3 - d1),
        d4 - d2 + 2.0 * (d1 - d3),
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// `Aᵀ m` of F(2×2): one axis of the output transform.
#[inline(always)]
fn output_1d_f2([m0, m1, m2, m3]: [f32; 4]) -> [f32; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `Aᵀ m` of F(4×4).
#[inline(always)]
fn output_1d_f4([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [
        m0 + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m5,
    ]
}

/// Where an image's tiles sit: the tiling, the image's sides, and the padding.
struct Frame<'a> {
    tile: &'a Tile,
    rows: usize,
    cols: usize,
    height: usize,
    width: usize,
    padding: usize,
}

/// Transforms one channel of one image: `plane [H, W]` → `v[ξ · stride + t]` for its tiles
/// `t`, with `scratch` of [`input_scratch_len`] values.
#[inline(always)]
fn input_tiles_generic(
    f: &Frame,
    plane: &[f32],
    v: &mut [f32],
    stride: usize,
    scratch: &mut [f32],
) {
    let (a, n) = (f.tile.alpha, f.rows * f.cols);
    let (half, rest) = scratch.split_at_mut(a * a * n);
    let (padded, phases) = rest.split_at_mut(phase_len(f) * f.tile.m);
    // half[i, ξx, t] = Σ_j Bᵀ[ξx, j] · x[ty·m − p + i, tx·m − p + j] (zero outside)
    for ty in 0..f.rows {
        for i in 0..a {
            padded.fill(0.0);
            let iy = (ty * f.tile.m + i) as isize - f.padding as isize;
            if iy >= 0 && (iy as usize) < f.height {
                let row = &plane[iy as usize * f.width..][..f.width];
                let len = f.width.min(padded.len() - f.padding);
                padded[f.padding..f.padding + len].copy_from_slice(&row[..len]);
            }
            let out = &mut half[i * a * n + ty * f.cols..];
            match a {
                4 => row_transform::<4, 2>(padded, phases, out, n, f.cols, input_1d_f2),
                _ => row_transform::<6, 4>(padded, phases, out, n, f.cols, input_1d_f4),
            }
        }
    }
    // v[ξy·α + ξx, t] = Σ_i Bᵀ[ξy, i] · half[i, ξx, t]
    for xx in 0..a {
        let (src, dst) = (&half[xx * n..], &mut v[xx * stride..]);
        match a {
            4 => map_streams((src, a * n), (dst, a * stride), n, input_1d_f2),
            _ => map_streams((src, a * n), (dst, a * stride), n, input_1d_f4),
        }
    }
}

/// Values per phase of a padded input row: tile `tx` reads phase `j mod m` at `tx + j / m`.
fn phase_len(f: &Frame) -> usize {
    f.cols + (f.tile.alpha - 1) / f.tile.m
}

/// Scratch values that [`input_tiles`] needs for one image-channel of `f`.
fn input_scratch_len(f: &Frame) -> usize {
    let a = f.tile.alpha;
    a * a * f.rows * f.cols + 2 * phase_len(f) * f.tile.m
}

/// Splits the first `count·M` values of `row` into its `M` phases:
/// `phases[c · stride + k] = row[k·M + c]`.
#[inline(always)]
fn deinterleave<const M: usize>(row: &[f32], phases: &mut [f32], stride: usize, count: usize) {
    let (groups, _) = row[..count * M].as_chunks::<M>();
    assert!(
        count == 0 || phases.len() >= (M - 1) * stride + count,
        "deinterleave: phases too short"
    );
    let p = phases.as_mut_ptr();
    for (k, group) in groups.iter().enumerate() {
        for (c, &value) in group.iter().enumerate() {
            // SAFETY: c·stride + k < phases.len() for c < M and k < count (asserted above).
            unsafe { *p.add(c * stride + k) = value };
        }
    }
}

/// The inverse of [`deinterleave`]: `row[k·M + c] = phases[c · stride + k]` for `k < count`.
#[inline(always)]
fn interleave<const M: usize>(phases: &[f32], stride: usize, row: &mut [f32], count: usize) {
    let (groups, _) = row[..count * M].as_chunks_mut::<M>();
    assert!(
        count == 0 || phases.len() >= (M - 1) * stride + count,
        "interleave: phases too short"
    );
    let p = phases.as_ptr();
    for (k, group) in groups.iter_mut().enumerate() {
        for (c, value) in group.iter_mut().enumerate() {
            // SAFETY: c·stride + k < phases.len() for c < M and k < count (asserted above).
            *value = unsafe { *p.add(c * stride + k) };
        }
    }
}

/// One padded row's 1-D transform for every tile of a tile row: `out[ξx · stride + tx] =
/// Σ_j Bᵀ[ξx, j] · padded[tx·M + j]`.
///
/// The row is first split into its `M` phases (`phases[r · len + k] = padded[k·M + r]`), so
/// that the tiles' `j`-th values are one contiguous run and the transform vectorises across
/// tiles; gathering them with stride `M` instead ran one value at a time.
#[inline(always)]
fn row_transform<const A: usize, const M: usize>(
    padded: &[f32],
    phases: &mut [f32],
    out: &mut [f32],
    stride: usize,
    cols: usize,
    f: impl Fn([f32; A]) -> [f32; A],
) {
    let len = padded.len() / M;
    deinterleave::<M>(padded, phases, len, len);
    assert!(cols + (A - 1) / M <= len, "row_transform: row too short");
    assert!(
        out.len() >= (A - 1) * stride + cols,
        "row_transform: destination too short"
    );
    let (p, d) = (phases.as_ptr(), out.as_mut_ptr());
    for tx in 0..cols {
        // SAFETY: (j mod M)·len + j / M + tx < M·len = phases' length, for j < A and tx < cols
        // (asserted above).
        let x: [f32; A] = std::array::from_fn(|j| unsafe { *p.add((j % M) * len + j / M + tx) });
        for (k, value) in f(x).into_iter().enumerate() {
            // SAFETY: k·stride + tx < out.len() (asserted above).
            unsafe { *d.add(k * stride + tx) = value };
        }
    }
}

multiversion!(
    /// [`input_tiles_generic`] for the widest SIMD this CPU has.
    input_tiles => input_tiles_generic(f: &Frame, plane: &[f32], v: &mut [f32], stride: usize, scratch: &mut [f32])
);

/// Transforms one output channel of one image back: `m[ξ · stride + t]` for its tiles →
/// `plane [H', W']` (`+ bias`), with `scratch` of `(α + m)·m·tiles` values.
#[inline(always)]
fn output_tiles_generic(
    f: &Frame,
    m_values: &[f32],
    stride: usize,
    bias: f32,
    plane: &mut [f32],
    scratch: &mut [f32],
) {
    let (a, m, n) = (f.tile.alpha, f.tile.m, f.rows * f.cols);
    let (half, out) = scratch.split_at_mut(a * m * n);
    // half[ξy, c, t] = Σ_ξx M[ξy·α + ξx, t] · Aᵀ[c, ξx]
    for xy in 0..a {
        let (src, dst) = (&m_values[xy * a * stride..], &mut half[xy * m * n..]);
        match a {
            4 => map_streams((src, stride), (dst, n), n, output_1d_f2),
            _ => map_streams((src, stride), (dst, n), n, output_1d_f4),
        }
    }
    // out[r, c, t] = bias + Σ_ξy Aᵀ[r, ξy] · half[ξy, c, t]
    for c in 0..m {
        let (src, dst) = (&half[c * n..], &mut out[c * n..]);
        let plus_bias = |y: [f32; 4]| y.map(|v| v + bias);
        match a {
            4 => map_streams((src, m * n), (dst, m * n), n, |x| {
                let [y0, y1] = output_1d_f2(x);
                [y0 + bias, y1 + bias]
            }),
            _ => map_streams((src, m * n), (dst, m * n), n, |x| {
                plus_bias(output_1d_f4(x))
            }),
        }
    }
    // plane[ty·m + r, tx·m + c] = out[r, c, t], where inside the output.
    let (oh, ow) = (f.height, f.width);
    let full_cols = ow / m;
    for ty in 0..f.rows {
        for r in 0..m.min(oh - ty * m) {
            let row = &mut plane[(ty * m + r) * ow..][..ow];
            let src = &out[r * m * n + ty * f.cols..];
            match m {
                2 => interleave::<2>(src, n, row, full_cols),
                _ => interleave::<4>(src, n, row, full_cols),
            }
            // The last tile of a row whose width m does not divide.
            if full_cols < f.cols {
                for c in 0..ow - full_cols * m {
                    row[full_cols * m + c] = src[c * n + full_cols];
                }
            }
        }
    }
}

multiversion!(
    /// [`output_tiles_generic`] for the widest SIMD this CPU has.
    output_tiles => output_tiles_generic(f: &Frame, m_values: &[f32], stride: usize, bias: f32, plane: &mut [f32], scratch: &mut [f32])
);

/// One convolution's Winograd plan: the tile, the tiling and where the tiles sit in the
/// input and the output.
struct Plan<'a> {
    tile: &'a Tile,
    g: &'a ConvGeometry,
    tiling: Tiling,
    input: Frame<'a>,
    output: Frame<'a>,
}

impl<'a> Plan<'a> {
    fn new(tile: &'a Tile, g: &'a ConvGeometry) -> Self {
        let tiling = Tiling::new(g, tile);
        let input = Frame {
            tile,
            rows: tiling.rows,
            cols: tiling.cols,
            height: g.height,
            width: g.width,
            padding: g.padding,
        };
        let output = Frame {
            height: g.out_height(),
            width: g.out_width(),
            ..input
        };
        Self {
            tile,
            g,
            tiling,
            input,
            output,
        }
    }

    fn a2(&self) -> usize {
        self.tile.alpha * self.tile.alpha
    }

    /// The image ranges of the chunks, in order.
    fn chunks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (batch, step) = (self.g.batch, self.tiling.images_per_chunk);
        (0..batch)
            .step_by(step)
            .map(move |first| first..(first + step).min(batch))
    }

    /// `V[ci, ξ, (b, t)]` for the images `chunk` of x `[B, C_in, H, W]`, one channel per
    /// task.
    fn transform_input(&self, x: &[f32], chunk: &std::ops::Range<usize>, v: &mut [f32]) {
        let (a2, ci, per_image) = (self.a2(), self.g.channels_in, self.tiling.per_image());
        let (tiles, in_plane) = (chunk.len() * per_image, self.g.height * self.g.width);
        v.par_chunks_mut(a2 * tiles)
            .enumerate()
            .for_each(|(c, v_c)| {
                with_tiles(input_scratch_len(&self.input), |scratch| {
                    for (i, b) in chunk.clone().enumerate() {
                        let plane = &x[(b * ci + c) * in_plane..][..in_plane];
                        let dst = &mut v_c[i * per_image..];
                        input_tiles(&self.input, plane, dst, tiles, scratch);
                    }
                });
            });
    }
}

/// `A yᵀ…`: the adjoint of `Aᵀ` of F(2×2), from an output tile row back to α points.
#[inline(always)]
fn output_1d_adjoint_f2([y0, y1]: [f32; 2]) -> [f32; 4] {
    [y0, y0 + y1, y0 - y1, -y1]
}

/// The adjoint of `Aᵀ` of F(4×4).
#[inline(always)]
fn output_1d_adjoint_f4([y0, y1, y2, y3]: [f32; 4]) -> [f32; 6] {
    let (even, odd) = (y0 + y2, y1 + y3);
    let (even4, odd2) = (y0 + 4.0 * y2, 2.0 * y1 + 8.0 * y3);
    [y0, even + odd, even - odd, even4 + odd2, even4 - odd2, y3]
}

/// The adjoint of [`output_tiles_generic`] without bias: one channel of one image's output
/// gradient `plane [H', W']` → `dm[ξ · stride + t]` = `A dy_t Aᵀ` for its tiles, with
/// `scratch` of `(m + α)·m·tiles` values.
#[inline(always)]
fn output_tiles_adjoint_generic(
    f: &Frame,
    plane: &[f32],
    dm: &mut [f32],
    stride: usize,
    scratch: &mut [f32],
) {
    let (a, m, n) = (f.tile.alpha, f.tile.m, f.rows * f.cols);
    let (d, half) = scratch.split_at_mut(m * m * n);
    // d[r, c, t] = dy[ty·m + r, tx·m + c] (zero past the edges).
    let (oh, ow) = (f.height, f.width);
    let full_cols = ow / m;
    for ty in 0..f.rows {
        for r in 0..m {
            let y = ty * m + r;
            let dst = &mut d[r * m * n + ty * f.cols..];
            if y >= oh {
                for c in 0..m {
                    dst[c * n..][..f.cols].fill(0.0);
                }
                continue;
            }
            let row = &plane[y * ow..][..ow];
            match m {
                2 => deinterleave::<2>(row, dst, n, full_cols),
                _ => deinterleave::<4>(row, dst, n, full_cols),
            }
            // The last tile of a row whose width m does not divide.
            if full_cols < f.cols {
                for c in 0..m {
                    let x = full_cols * m + c;
                    dst[c * n + full_cols] = if x < ow { row[x] } else { 0.0 };
                }
            }
        }
    }
    // half[r, ξx, t] = Σ_c A[ξx, c] · d[r, c, t];  dm[ξy·α + ξx, t] = Σ_r A[ξy, r] · half[r, ξx, t]
    let half = &mut half[..m * a * n];
    for r in 0..m {
        let (src, dst) = (&d[r * m * n..], &mut half[r * a * n..]);
        match a {
            4 => map_streams((src, n), (dst, n), n, output_1d_adjoint_f2),
            _ => map_streams((src, n), (dst, n), n, output_1d_adjoint_f4),
        }
    }
    for xx in 0..a {
        let (src, dst) = (&half[xx * n..], &mut dm[xx * stride..]);
        match a {
            4 => map_streams((src, a * n), (dst, a * stride), n, output_1d_adjoint_f2),
            _ => map_streams((src, a * n), (dst, a * stride), n, output_1d_adjoint_f4),
        }
    }
}

multiversion!(
    /// [`output_tiles_adjoint_generic`] for the widest SIMD this CPU has.
    output_tiles_adjoint => output_tiles_adjoint_generic(f: &Frame, plane: &[f32], dm: &mut [f32], stride: usize, scratch: &mut [f32])
);

/// `y = conv2d(x, weight) + bias` for a stride-1 3×3 geometry with `tile` (see [`tile_for`]):
/// x `[B, C_in, H, W]`, weight `[C_out, C_in, 3, 3]` → `[B, C_out, H', W']`.
pub(crate) fn forward(
    tile: &Tile,
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plan = Plan::new(tile, g);
    let (a2, ci, co) = (plan.a2(), g.channels_in, g.channels_out);
    let per_image = plan.tiling.per_image();
    let out_plane = g.out_height() * g.out_width();
    let u = transform_weights(tile, g, weight);
    let mut y = zeros(g.batch * co * out_plane);
    PRODUCTS.with(|cell| {
        let mut buffers = cell.borrow_mut();
        let (v_buf, m_buf) = &mut *buffers;
        let max_tiles = plan.tiling.images_per_chunk * per_image;
        let v_all = sized(v_buf, ci * a2 * max_tiles);
        let m_all = sized(m_buf, a2 * co * max_tiles);
        for chunk in plan.chunks() {
            let tiles = chunk.len() * per_image;
            let (v, m) = (&mut v_all[..ci * a2 * tiles], &mut m_all[..a2 * co * tiles]);
            plan.transform_input(x, &chunk, v);
            // M[ξ] = U[ξ] · V[ξ]
            let v = &*v;
            m.par_chunks_mut(co * tiles)
                .enumerate()
                .for_each(|(xi, m_xi)| {
                    // U[·, ·, ξ]: (co, ci) at co·ci·α² + ci·α² + ξ.
                    let lhs = Operand::with_strides(&u[xi..], ci * a2, a2);
                    let rhs = Operand::strided(&v[xi * tiles..], a2 * tiles);
                    matmul(m_xi, (co, tiles, ci), lhs, rhs, false, Threads::One);
                });
            // y[b, co] from M[·, co, (b, ·)]
            let m = &*m;
            let y_chunk = &mut y[chunk.start * co * out_plane..][..chunk.len() * co * out_plane];
            y_chunk
                .par_chunks_mut(out_plane)
                .enumerate()
                .for_each(|(plane_index, plane)| {
                    let (b, o) = (plane_index / co, plane_index % co);
                    let m_values = &m[o * tiles + b * per_image..];
                    let bias = bias.map_or(0.0, |bias| bias[o]);
                    let len = (tile.alpha + tile.m) * tile.m * per_image;
                    with_tiles(len, |scratch| {
                        output_tiles(&plan.output, m_values, co * tiles, bias, plane, scratch)
                    });
                });
        }
    });
    y
}

/// `∂L/∂W = Σ_tiles Gᵀ [(A dy Aᵀ) ⊙ (Bᵀ x B)]ᵀ… G`: the adjoint of [`forward`] in the
/// transformed domain. Per ξ, `dU[ξ] (C_out × C_in) = dM[ξ] (C_out × T) · V[ξ]ᵀ`, summed
/// over chunks in order; then `dW = Gᵀ dU G` per 3×3 kernel.
pub(crate) fn weight_grad(tile: &Tile, g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let plan = Plan::new(tile, g);
    let (a2, ci, co) = (plan.a2(), g.channels_in, g.channels_out);
    let per_image = plan.tiling.per_image();
    let out_plane = g.out_height() * g.out_width();
    let mut du = vec![0.0; a2 * co * ci];
    PRODUCTS.with(|cell| {
        let mut buffers = cell.borrow_mut();
        let (v_buf, m_buf) = &mut *buffers;
        let max_tiles = plan.tiling.images_per_chunk * per_image;
        let v_all = sized(v_buf, ci * a2 * max_tiles);
        let m_all = sized(m_buf, co * a2 * max_tiles);
        for (index, chunk) in plan.chunks().enumerate() {
            let tiles = chunk.len() * per_image;
            let (v, dm) = (&mut v_all[..ci * a2 * tiles], &mut m_all[..co * a2 * tiles]);
            plan.transform_input(x, &chunk, v);
            // dM[co, ξ, (b, t)] = A dy_tile Aᵀ
            dm.par_chunks_mut(a2 * tiles)
                .enumerate()
                .for_each(|(o, dm_o)| {
                    with_tiles((tile.m + tile.alpha) * tile.m * per_image, |scratch| {
                        for (i, b) in chunk.clone().enumerate() {
                            let plane = &dy[(b * co + o) * out_plane..][..out_plane];
                            let dst = &mut dm_o[i * per_image..];
                            output_tiles_adjoint(&plan.output, plane, dst, tiles, scratch);
                        }
                    });
                });
            // dU[ξ] (+)= dM[ξ] · V[ξ]ᵀ
            let (v, dm) = (&*v, &*dm);
            du.par_chunks_mut(co * ci)
                .enumerate()
                .for_each(|(xi, du_xi)| {
                    let lhs = Operand::strided(&dm[xi * tiles..], a2 * tiles);
                    let rhs = Operand::with_strides(&v[xi * tiles..], 1, a2 * tiles);
                    matmul(du_xi, (co, ci, tiles), lhs, rhs, index > 0, Threads::One);
                });
        }
    });
    untransform_weight_grad(tile, g, &du)
}

/// `Gᵀ v` of F(2×2): the adjoint of [`filter_1d_f2`].
#[inline(always)]
fn filter_1d_adjoint_f2([v0, v1, v2, v3]: [f32; 4]) -> [f32; 3] {
    let outer = 0.5 * (v1 + v2);
    [v0 + outer, 0.5 * (v1 - v2), outer + v3]
}

/// `Gᵀ v` of F(4×4): the adjoint of [`filter_1d_f4`].
#[inline(always)]
fn filter_1d_adjoint_f4([v0, v1, v2, v3, v4, v5]: [f32; 6]) -> [f32; 3] {
    let (s12, d12, s34, d34) = (v1 + v2, v1 - v2, v3 + v4, v3 - v4);
    [
        0.25 * v0 - s12 / 6.0 + s34 / 24.0,
        d34 / 12.0 - d12 / 6.0,
        (s34 - s12) / 6.0 + v5,
    ]
}

/// `Gᵀ dU G` of one kernel's `[α, α]` gradient into `out [3, 3]`, with the 1-D adjoint `f`.
#[inline(always)]
fn filter_2d_adjoint<const A: usize>(
    du: &[[f32; A]; A],
    out: &mut [f32],
    f: impl Fn([f32; A]) -> [f32; 3],
) {
    // rows: t[ξy, kx] = (Gᵀ du[ξy, ·])[kx]
    let rows: [[f32; 3]; A] = std::array::from_fn(|r| f(du[r]));
    for kx in 0..3 {
        let column = f(std::array::from_fn(|r| rows[r][kx]));
        for ky in 0..3 {
            out[ky * 3 + kx] = column[ky];
        }
    }
}

/// `dW[co, ci, ky, kx] = Σ_ξ G[ξy, ky] · dU[ξ, co, ci] · G[ξx, kx]`, one output channel per
/// task.
fn untransform_weight_grad(tile: &Tile, g: &ConvGeometry, du: &[f32]) -> Vec<f32> {
    let (ci, co) = (g.channels_in, g.channels_out);
    let mut dw = vec![0.0; co * ci * 9];
    dw.par_chunks_mut(ci * 9).enumerate().for_each(|(o, dw_o)| {
        for (i, k) in dw_o.chunks_exact_mut(9).enumerate() {
            let at = |xi: usize| du[(xi * co + o) * ci + i];
            match tile.m {
                2 => {
                    let v: [[f32; 4]; 4] =
                        std::array::from_fn(|r| std::array::from_fn(|c| at(r * 4 + c)));
                    filter_2d_adjoint(&v, k, filter_1d_adjoint_f2);
                }
                _ => {
                    let v: [[f32; 6]; 6] =
                        std::array::from_fn(|r| std::array::from_fn(|c| at(r * 6 + c)));
                    filter_2d_adjoint(&v, k, filter_1d_adjoint_f4);
                }
            }
        }
    });
    dw
}

/// `∂L/∂x` of a stride-1 3×3 convolution with padding p: the convolution of `dy` with the
/// weights flipped in space and transposed in channels, padded by `2 − p`.
pub(crate) fn input_grad(tile: &Tile, g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let transposed = transposed_geometry(g);
    let (ci, co) = (g.channels_in, g.channels_out);
    let mut flipped = vec![0.0; weight.len()];
    for o in 0..co {
        for i in 0..ci {
            let src = &weight[(o * ci + i) * 9..][..9];
            let dst = &mut flipped[(i * co + o) * 9..][..9];
            for k in 0..9 {
                dst[k] = src[8 - k];
            }
        }
    }
    forward(tile, &transposed, dy, &flipped, None)
}

/// The geometry of the convolution that computes a stride-1 3×3 convolution's input
/// gradient: `dy` as input, channels swapped, padding `2 − p`.
pub(crate) fn transposed_geometry(g: &ConvGeometry) -> ConvGeometry {
    ConvGeometry {
        batch: g.batch,
        channels_in: g.channels_out,
        channels_out: g.channels_in,
        height: g.out_height(),
        width: g.out_width(),
        kernel: 3,
        stride: 1,
        padding: 2 - g.padding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{conv2d_forward_im2col, conv2d_input_grad_im2col, conv2d_weight_grad_im2col};

    /// A deterministic stream of values in [−1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
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

    /// In f64, `Aᵀ[(G g) ⊙ (Bᵀ d)]` is the correlation of d with g, up to G's entries
    /// (1/6, 1/24) being stored in f32 (a relative 3e-8): the matrices are right.
    #[test]
    fn the_matrices_compute_a_1d_correlation() {
        for tile in [&F2, &F4] {
            let (a, m) = (tile.alpha, tile.m);
            let d: Vec<f64> = values(a, 3).iter().map(|&v| v as f64).collect();
            let w: Vec<f64> = values(3, 4).iter().map(|&v| v as f64).collect();
            let gw: Vec<f64> = (0..a)
                .map(|r| (0..3).map(|k| tile.g[r * 3 + k] as f64 * w[k]).sum())
                .collect();
            let bd: Vec<f64> = (0..a)
                .map(|r| (0..a).map(|k| tile.bt[r * a + k] as f64 * d[k]).sum())
                .collect();
            for i in 0..m {
                let y: f64 = (0..a)
                    .map(|k| tile.at[i * a + k] as f64 * gw[k] * bd[k])
                    .sum();
                let direct: f64 = (0..3).map(|k| d[i + k] * w[k]).sum();
                assert!((y - direct).abs() < 1e-6, "F({m}): {y} vs {direct}");
            }
        }
    }

    /// The error bound of one output: `(ρ + 2K) · u · S`, where `S = Σ |w| |x|` over its
    /// receptive field, `u = 2⁻²⁴`, K the GEMM's depth (each of its sums rounds at most K
    /// times, for both algorithms), and `ρ = (‖Aᵀ‖ ‖G‖ ‖Bᵀ‖)²` with ∞-norms: how far one
    /// rounding in the transformed domain can be amplified on its way back, along both axes
    /// (Lavin & Gray §5; Barabasz et al. 2020). ρ is 81 for F(2×2) and 36,100 for F(4×4).
    fn bound(tile: &Tile, depth: usize, s: f32) -> f32 {
        let (b, g, a) = tile.growth();
        let rho = (a * g * b).powi(2);
        (rho + 2.0 * depth as f32) * f32::EPSILON / 2.0 * s
    }

    /// Checks Winograd against im2col on one geometry: forward and both gradients.
    fn check(tile: &Tile, g: ConvGeometry) {
        let (ci, co) = (g.channels_in, g.channels_out);
        let x = values(g.batch * ci * g.height * g.width, 1);
        let w: Vec<f32> = values(co * ci * 9, 2).iter().map(|v| v * 0.1).collect();
        let bias = values(co, 5);
        let abs = |v: &[f32]| v.iter().map(|v| v.abs()).collect::<Vec<_>>();
        // Σ|w||x| per output: the same convolution of magnitudes.
        let s = conv2d_forward_im2col(&g, &abs(&x), &abs(&w), None);
        let direct = conv2d_forward_im2col(&g, &x, &w, Some(&bias));
        let ours = forward(tile, &g, &x, &w, Some(&bias));
        let worst = |ours: &[f32], direct: &[f32], s: &[f32], depth| {
            ours.iter()
                .zip(direct)
                .zip(s)
                .map(|((o, d), s)| (o - d).abs() / bound(tile, depth, *s).max(f32::MIN_POSITIVE))
                .fold(0.0f32, f32::max)
        };
        let share = worst(&ours, &direct, &s, ci);
        eprintln!(
            "F({}) {g:?}: forward error {share:.1e} of its bound",
            tile.m
        );
        assert!(
            share <= 1.0,
            "F({}) forward {g:?}: {share} of the bound",
            tile.m
        );
        let dy = values(direct.len(), 6);
        let t = transposed_geometry(&g);
        let flipped_abs = {
            // Σ|w||dy| per input element: the transposed convolution of magnitudes.
            let mut f = vec![0.0; w.len()];
            for o in 0..co {
                for i in 0..ci {
                    for k in 0..9 {
                        f[(i * co + o) * 9 + k] = w[(o * ci + i) * 9 + 8 - k].abs();
                    }
                }
            }
            conv2d_forward_im2col(&t, &abs(&dy), &f, None)
        };
        let dx_direct = conv2d_input_grad_im2col(&g, &w, &dy);
        let dx = input_grad(tile, &g, &w, &dy);
        let share = worst(&dx, &dx_direct, &flipped_abs, co);
        eprintln!("F({}) {g:?}: ∂x error {share:.1e} of its bound", tile.m);
        assert!(share <= 1.0, "F({}) ∂x {g:?}: {share} of the bound", tile.m);
        // ∂W[co, ci, k] = Σ_(b, pos) dy · x: its magnitude sum is the same product of |dy|, |x|.
        let dw_direct = conv2d_weight_grad_im2col(&g, &x, &dy);
        let dw = weight_grad(tile, &g, &x, &dy);
        let dw_abs = conv2d_weight_grad_im2col(&g, &abs(&x), &abs(&dy));
        let depth = g.batch * g.out_height() * g.out_width();
        let share = worst(&dw, &dw_direct, &dw_abs, depth);
        eprintln!("F({}) {g:?}: ∂W error {share:.1e} of its bound", tile.m);
        assert!(share <= 1.0, "F({}) ∂W {g:?}: {share} of the bound", tile.m);
    }

    fn geometry(batch: usize, ci: usize, co: usize, h: usize, w: usize, p: usize) -> ConvGeometry {
        ConvGeometry {
            batch,
            channels_in: ci,
            channels_out: co,
            height: h,
            width: w,
            kernel: 3,
            stride: 1,
            padding: p,
        }
    }

    #[test]
    fn winograd_matches_im2col_within_its_error_bound() {
        // Batch 1, odd and rectangular sides, paddings 0–2, 3 to 512 channels, and a batch
        // large enough to take several chunks.
        let cases = [
            geometry(1, 3, 5, 7, 9, 1),
            geometry(2, 16, 32, 8, 8, 1),
            geometry(1, 32, 17, 13, 6, 0),
            geometry(3, 24, 8, 5, 11, 2),
            geometry(1, 512, 64, 4, 4, 1),
            geometry(2, 64, 512, 6, 5, 1),
            geometry(20, 16, 16, 32, 32, 1),
        ];
        for g in cases {
            for tile in [&F2, &F4] {
                check(tile, g);
            }
        }
    }

    #[test]
    fn the_rule_sends_only_large_stride_1_3x3_layers_to_winograd() {
        let side = |g: &ConvGeometry, pass| tile_for(g, pass).map(|t| t.m);
        let g = geometry(8, 128, 128, 32, 32, 1);
        assert_eq!(side(&g, Pass::Forward), Some(4));
        assert_eq!(
            side(&geometry(8, 256, 256, 16, 16, 1), Pass::InputGrad),
            Some(2)
        );
        assert_eq!(side(&geometry(8, 256, 256, 8, 8, 1), Pass::Forward), None);
        assert_eq!(
            side(&geometry(32, 256, 256, 8, 8, 1), Pass::Forward),
            Some(2)
        );
        assert_eq!(
            side(&geometry(8, 256, 256, 4, 4, 1), Pass::WeightGrad),
            Some(2)
        );
        assert_eq!(side(&geometry(8, 256, 256, 4, 4, 1), Pass::Forward), None);
        assert_eq!(side(&geometry(8, 3, 128, 32, 32, 1), Pass::Forward), None);
        assert_eq!(side(&ConvGeometry { stride: 2, ..g }, Pass::Forward), None);
        let pointwise = ConvGeometry {
            kernel: 1,
            padding: 0,
            ..g
        };
        assert_eq!(side(&pointwise, Pass::WeightGrad), None);
    }
}
