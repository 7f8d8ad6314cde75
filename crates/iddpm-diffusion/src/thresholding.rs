//! Dynamic thresholding of the predicted x_0 (Saharia et al., 2022, Imagen §2.3): per image,
//! s = the `ratio` quantile of |x̂_0|, clamped to [1, max]; x̂_0 is clipped to [−s, s] and
//! divided by s. With max = 1 it is the reference's clipping to [−1, 1]. diffusers'
//! `thresholding=True` with `dynamic_thresholding_ratio` and `sample_max_value`.

use burn::tensor::{Tensor, TensorData};

use crate::error::{DiffusionError, Result};

/// The settings of dynamic thresholding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicThreshold {
    /// Which quantile of |x̂_0| sets the threshold (Imagen: 0.995).
    pub ratio: f64,
    /// The largest threshold (diffusers' `sample_max_value`; 1 clips as the reference does).
    pub max: f64,
}

impl DynamicThreshold {
    /// The default largest threshold: 1, so that the threshold never exceeds the reference's
    /// clip.
    pub const DEFAULT_MAX: f64 = 1.0;

    /// Checked settings: ratio in (0, 1], max ≥ 1.
    pub fn new(ratio: f64, max: f64) -> Result<Self> {
        if !(ratio > 0.0 && ratio <= 1.0 && max >= 1.0 && max.is_finite()) {
            return Err(DiffusionError::Shape(format!(
                "dynamic thresholding needs a ratio in (0, 1] and a maximum of at least 1; \
                 got ratio {ratio}, maximum {max}"
            )));
        }
        Ok(Self { ratio, max })
    }

    /// x̂_0 `[B, C, H, W]` thresholded image by image.
    pub fn apply(&self, x0: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x0.dims();
        let device = x0.device();
        let values: Vec<f32> = x0
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap_or_default();
        let per_image = c * h * w;
        let s: Vec<f32> = values
            .chunks(per_image.max(1))
            .map(|img| quantile_abs(img, self.ratio).clamp(1.0, self.max) as f32)
            .collect();
        let s =
            Tensor::<4>::from_data(TensorData::new(s, [b, 1, 1, 1]), &device).expand([b, c, h, w]);
        x0.max_pair(s.clone().neg()).min_pair(s.clone()) / s
    }
}

/// The `q` quantile of |v| with linear interpolation between order statistics (as
/// `torch.quantile`).
fn quantile_abs(v: &[f32], q: f64) -> f64 {
    let mut a: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    a.sort_by(f32::total_cmp);
    let pos = q * (a.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (vl, vh) = (f64::from(a[lo]), f64::from(a[hi]));
    vl + (vh - vl) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::quantile_abs;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let v = [-4.0, 1.0, 2.0, -3.0];
        assert_eq!(quantile_abs(&v, 1.0), 4.0);
        assert_eq!(quantile_abs(&v, 0.5), 2.5);
        assert!((quantile_abs(&v, 0.9) - 3.7).abs() < 1e-12);
    }
}
