//! Negative log-likelihood of a dataset in bits/dim (the reference's `image_nll.py`).

use iddpm_kernels::ops::DeviceKind;
use std::ops::Range;

use burn::tensor::{Device, Int, Tensor, TensorData};
use iddpm_data::{Dataset, batch_ranges};
use iddpm_diffusion::{BpdTerms, Conditioning, GaussianDiffusion};
use iddpm_kernels::to_f32_vec;
use iddpm_nn::UNetModel;

use crate::error::{Error, Result};
use crate::sample::{Shard, batch_noise};

/// The bound over a set of images.
#[derive(Debug, Clone)]
pub struct NllReport {
    /// Images evaluated.
    pub num_images: usize,
    /// Mean total bits/dim over all images.
    pub bpd: f64,
    /// Standard error of that mean: the images' sample standard deviation over √n (0 for one
    /// image).
    pub bpd_stderr: f64,
    /// Mean per-timestep vb terms (column j is timestep T−1−j, as the reference saves them).
    pub vb: Vec<f32>,
    /// Mean per-timestep ε mean-squared errors (same columns).
    pub mse: Vec<f32>,
    /// Mean per-timestep x̂_0 mean-squared errors (same columns).
    pub xstart_mse: Vec<f32>,
}

/// The bound's sums over one batch: what a process of a sharded evaluation sends.
#[derive(Debug, Clone, PartialEq)]
pub struct NllBatch {
    /// The batch's index.
    pub batch: usize,
    /// Images in it.
    pub count: usize,
    /// Sum of the images' total bits/dim.
    pub total: f64,
    /// Sum of their squares (for the standard error).
    pub total_sq: f64,
    /// Per-timestep sums of the vb terms, ε MSEs and x̂_0 MSEs.
    pub vb: Vec<f64>,
    /// See `vb`.
    pub mse: Vec<f64>,
    /// See `vb`.
    pub xstart_mse: Vec<f64>,
}

impl NllBatch {
    /// As f64 values: batch, count, total, total_sq, then the three term vectors.
    pub fn to_values(&self) -> Vec<f64> {
        let mut v = vec![
            self.batch as f64,
            self.count as f64,
            self.total,
            self.total_sq,
        ];
        v.extend(&self.vb);
        v.extend(&self.mse);
        v.extend(&self.xstart_mse);
        v
    }

    /// The inverse of [`to_values`](Self::to_values) for `t` timesteps.
    pub fn from_values(v: &[f64], t: usize) -> Option<Self> {
        if v.len() != Self::values_len(t) {
            return None;
        }
        Some(Self {
            batch: v[0] as usize,
            count: v[1] as usize,
            total: v[2],
            total_sq: v[3],
            vb: v[4..4 + t].to_vec(),
            mse: v[4 + t..4 + 2 * t].to_vec(),
            xstart_mse: v[4 + 2 * t..].to_vec(),
        })
    }

    /// Batch `k`'s sums of the bound's `terms` over its images, for `t` timesteps.
    fn from_terms(k: usize, terms: BpdTerms, t: usize) -> Self {
        let totals = to_f32_vec(terms.total_bpd);
        let mut sums = [vec![0f64; t], vec![0f64; t], vec![0f64; t]];
        for (acc, m) in sums.iter_mut().zip([terms.vb, terms.mse, terms.xstart_mse]) {
            // [b, t] → per-timestep sums over the images.
            for row in to_f32_vec(m).chunks(t) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += *v as f64;
                }
            }
        }
        let [vb, mse, xstart_mse] = sums;
        Self {
            batch: k,
            count: totals.len(),
            total: totals.iter().map(|&v| v as f64).sum(),
            total_sq: totals.iter().map(|&v| (v as f64).powi(2)).sum(),
            vb,
            mse,
            xstart_mse,
        }
    }

    /// How many values [`to_values`](Self::to_values) gives for `t` timesteps.
    pub fn values_len(t: usize) -> usize {
        4 + 3 * t
    }
}

/// Which images to evaluate, and how.
#[derive(Debug, Clone, Copy)]
pub struct NllOptions {
    /// Evaluate the first this many images of the dataset (all of them when it holds fewer).
    pub num_images: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Clamp predicted x_0 to [−1, 1] in every term of the bound.
    pub clip_denoised: bool,
    /// Seed of the forward-process noise.
    pub seed: u64,
    /// Evaluate only this share of the batches (one process of several); `None`: all.
    pub shard: Option<Shard>,
}

/// Evaluates the full variational bound on the images `opts` names (in order), calling
/// `progress(done, running_bpd)` after each batch.
pub fn evaluate_nll(
    model: &UNetModel,
    diffusion: &GaussianDiffusion,
    data: &dyn Dataset,
    opts: &NllOptions,
    device: &Device,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<NllReport> {
    let batches = evaluate_nll_batches(model, diffusion, data, opts, device, progress)?;
    combine_nll(batches, diffusion.num_timesteps())
}

/// The per-batch sums of the bound over the images `opts` names, only for the batches of
/// `opts.shard` when given (batch k belongs to process k mod count). Each batch draws its noise
/// from its own generator, so the result does not depend on how batches are shared out.
pub fn evaluate_nll_batches(
    model: &UNetModel,
    diffusion: &GaussianDiffusion,
    data: &dyn Dataset,
    opts: &NllOptions,
    device: &Device,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Vec<NllBatch>> {
    if opts.num_images == 0 || opts.batch_size == 0 {
        return Err(Error::Invalid(
            "num_images and batch_size must be at least 1".into(),
        ));
    }
    let n = opts.num_images.min(data.len());
    if n == 0 {
        return Err(Error::Invalid("the dataset is empty".into()));
    }
    if DeviceKind::of(device).is_flex() {
        let s = data.resolution();
        let batch = opts.batch_size.min(n) as u64;
        let bytes = batch.saturating_mul(model.config().activation_bytes(s, false));
        let what = format!("bits/dim in batches of {batch} images at {s}x{s}");
        crate::nn::memory::check_fits(bytes, &what).map_err(Error::Invalid)?;
    }
    let mut out = Vec::new();
    let (mut done, mut running) = (0, 0f64);
    for (k, part) in batch_ranges(n, opts.batch_size).enumerate() {
        if opts.shard.is_some_and(|sh| !sh.owns(k)) {
            continue;
        }
        let (x, cond) = load_batch(model, data, part, device)?;
        let mut noise = batch_noise(opts.seed, k);
        let terms = diffusion.calc_bpd_loop(model, x, opts.clip_denoised, &cond, &mut noise)?;
        let batch = NllBatch::from_terms(k, terms, diffusion.num_timesteps());
        done += batch.count;
        running += batch.total;
        progress(done, running / done as f64);
        out.push(batch);
    }
    Ok(out)
}

/// The images `part` of `data` as `[b, C, r, r]`, with their labels when `model` is
/// class-conditional.
fn load_batch(
    model: &UNetModel,
    data: &dyn Dataset,
    part: Range<usize>,
    device: &Device,
) -> Result<(Tensor<4>, Conditioning)> {
    let (b, r, c) = (part.len(), data.resolution(), data.channels());
    if c != model.in_channels() {
        return Err(Error::Invalid(format!(
            "the data have {c} channels per image but the network takes {} \
             (--image_channels must match the model's)",
            model.in_channels()
        )));
    }
    let mut values = Vec::with_capacity(b * c * r * r);
    let mut labels = Vec::with_capacity(b);
    for i in part {
        let (img, label) = data.get(i)?;
        values.extend(img);
        labels.extend(label);
    }
    let x = Tensor::<4>::from_data(TensorData::new(values, [b, c, r, r]), device);
    let labels = (model.is_class_conditional() && labels.len() == b).then_some(labels);
    model.check_conditioning(labels.as_deref(), c, None)?;
    let cond = match labels {
        Some(labels) => Conditioning::labels(Tensor::<1, Int>::from_data(
            TensorData::new(labels, [b]),
            device,
        )),
        None => Conditioning::none(),
    };
    Ok((x, cond))
}

/// The report of all batches (from any processes), summed in batch order.
pub fn combine_nll(mut batches: Vec<NllBatch>, t: usize) -> Result<NllReport> {
    batches.sort_by_key(|b| b.batch);
    let n: usize = batches.iter().map(|b| b.count).sum();
    if n == 0 {
        return Err(Error::Invalid("no images were evaluated".into()));
    }
    let (mut total, mut total_sq) = (0f64, 0f64);
    let mut sums = [vec![0f64; t], vec![0f64; t], vec![0f64; t]];
    for b in &batches {
        total += b.total;
        total_sq += b.total_sq;
        for (acc, part) in sums.iter_mut().zip([&b.vb, &b.mse, &b.xstart_mse]) {
            for (a, v) in acc.iter_mut().zip(part) {
                *a += v;
            }
        }
    }
    let mean = |v: &Vec<f64>| v.iter().map(|x| (x / n as f64) as f32).collect();
    let bpd = total / n as f64;
    Ok(NllReport {
        num_images: n,
        bpd,
        bpd_stderr: standard_error(bpd, total_sq, n),
        vb: mean(&sums[0]),
        mse: mean(&sums[1]),
        xstart_mse: mean(&sums[2]),
    })
}

/// Standard error of a mean from the sum of squares: √(s² / n) with the unbiased variance
/// s² = (Σx² − n·mean²) / (n − 1).
fn standard_error(mean: f64, sum_sq: f64, n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let var = ((sum_sq - n as f64 * mean * mean) / (n - 1) as f64).max(0.0);
    (var / n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(batch: usize, totals: &[f64]) -> NllBatch {
        NllBatch {
            batch,
            count: totals.len(),
            total: totals.iter().sum(),
            total_sq: totals.iter().map(|v| v * v).sum(),
            vb: vec![1.0, 2.0],
            mse: vec![3.0, 4.0],
            xstart_mse: vec![5.0, 6.0],
        }
    }

    #[test]
    fn batches_survive_the_trip_through_values() {
        let b = batch(3, &[2.5, 3.5]);
        let values = b.to_values();
        assert_eq!(values.len(), NllBatch::values_len(2));
        assert_eq!(NllBatch::from_values(&values, 2), Some(b));
        assert_eq!(NllBatch::from_values(&values[1..], 2), None);
    }

    #[test]
    fn the_standard_error_is_that_of_all_images_whatever_the_batches() {
        // Images 2, 4, 4, 4, 5, 5, 7, 9: mean 5, unbiased variance 32/7.
        let report = combine_nll(
            vec![
                batch(1, &[5.0, 5.0, 7.0, 9.0]),
                batch(0, &[2.0, 4.0, 4.0, 4.0]),
            ],
            2,
        )
        .unwrap();
        assert_eq!(report.num_images, 8);
        assert!((report.bpd - 5.0).abs() < 1e-12);
        let want = (32.0f64 / 7.0 / 8.0).sqrt();
        assert!(
            (report.bpd_stderr - want).abs() < 1e-12,
            "{}",
            report.bpd_stderr
        );
        let one = combine_nll(vec![batch(0, &[3.0])], 2).unwrap();
        assert_eq!(one.bpd_stderr, 0.0);
    }
}
