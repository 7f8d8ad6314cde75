//! The bilinear resizes in front of the FID Inception networks, in closed form (f64).
//!
//! - [`tf_resize_299`]: NVIDIA's TorchScript port (the standard FID numbers): TF1
//!   `resize_bilinear` without half-pixel centres, output pixel i samples source i·W/299.
//! - [`bilinear_resize`] with `half_pixel = true`: `F.interpolate(..., mode="bilinear",
//!   align_corners=False)` as pytorch-fid uses it (no antialiasing).

/// Side of the Inception input.
pub const INCEPTION_SIZE: usize = 299;

/// Source taps `(i0, i1, frac)` of each of `out` output positions over `input` positions.
fn taps(input: usize, out: usize, half_pixel: bool) -> Vec<(usize, usize, f64)> {
    let scale = input as f64 / out as f64;
    (0..out)
        .map(|i| {
            let s = if half_pixel {
                ((i as f64 + 0.5) * scale - 0.5).max(0.0)
            } else {
                i as f64 * scale
            };
            let i0 = (s.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, s - i0 as f64)
        })
        .collect()
}

/// Resizes NCHW images of shape `[n, c, h, w]` to `[n, c, oh, ow]` bilinearly (separable, no
/// antialiasing); `half_pixel` aligns pixel centres rather than corners.
pub fn bilinear_resize(
    values: &[f32],
    [n, c, h, w]: [usize; 4],
    [oh, ow]: [usize; 2],
    half_pixel: bool,
) -> Vec<f32> {
    let ty = taps(h, oh, half_pixel);
    let tx = taps(w, ow, half_pixel);
    let mut out = vec![0f32; n * c * oh * ow];
    for plane in 0..n * c {
        let src = &values[plane * h * w..(plane + 1) * h * w];
        let dst = &mut out[plane * oh * ow..(plane + 1) * oh * ow];
        for (y, &(y0, y1, fy)) in ty.iter().enumerate() {
            for (x, &(x0, x1, fx)) in tx.iter().enumerate() {
                let p = |yy: usize, xx: usize| src[yy * w + xx] as f64;
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                dst[y * ow + x] = (top * (1.0 - fy) + bottom * fy) as f32;
            }
        }
    }
    out
}

/// uint8 NHWC RGB images to the NCHW 0…255 input of NVIDIA's Inception at 299×299.
pub fn tf_resize_299(images: &[u8], n: usize, h: usize, w: usize) -> Vec<f32> {
    let mut nchw = vec![0f32; n * 3 * h * w];
    for b in 0..n {
        for p in 0..h * w {
            for c in 0..3 {
                nchw[(b * 3 + c) * h * w + p] = images[(b * h * w + p) * 3 + c] as f32;
            }
        }
    }
    bilinear_resize(&nchw, [n, 3, h, w], [INCEPTION_SIZE; 2], false)
}
