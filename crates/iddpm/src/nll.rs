//! Negative log-likelihood of a dataset in bits/dim (the reference's `image_nll.py`).

use burn::tensor::{Device, Int, Tensor, TensorData};
use iddpm_data::Dataset;
use iddpm_diffusion::{Conditioning, GaussianDiffusion};
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
    /// Mean per-timestep vb terms (column j is timestep T−1−j, as the reference saves them).
    pub vb: Vec<f32>,
    /// Mean per-timestep ε mean-squared errors (same columns).
    pub mse: Vec<f32>,
    /// Mean per-timestep x̂_0 mean-squared errors (same columns).
    pub xstart_mse: Vec<f32>,
}

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("cannot read results: {e:?}")))
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
    /// Per-timestep sums of the vb terms, ε MSEs and x̂_0 MSEs.
    pub vb: Vec<f64>,
    /// See `vb`.
    pub mse: Vec<f64>,
    /// See `vb`.
    pub xstart_mse: Vec<f64>,
}

impl NllBatch {
    /// As f64 values: batch, count, total, then the three term vectors.
    pub fn to_values(&self) -> Vec<f64> {
        let mut v = vec![self.batch as f64, self.count as f64, self.total];
        v.extend(&self.vb);
        v.extend(&self.mse);
        v.extend(&self.xstart_mse);
        v
    }

    /// The inverse of [`to_values`](Self::to_values) for `t` timesteps.
    pub fn from_values(v: &[f64], t: usize) -> Option<Self> {
        if v.len() != 3 + 3 * t {
            return None;
        }
        Some(Self {
            batch: v[0] as usize,
            count: v[1] as usize,
            total: v[2],
            vb: v[3..3 + t].to_vec(),
            mse: v[3 + t..3 + 2 * t].to_vec(),
            xstart_mse: v[3 + 2 * t..].to_vec(),
        })
    }
}

/// Evaluates the full variational bound on the first `num_images` images of `data` (in order),
/// calling `progress(done, running_bpd)` after each batch.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_nll(
    model: &UNetModel,
    diffusion: &GaussianDiffusion,
    data: &dyn Dataset,
    num_images: usize,
    batch_size: usize,
    clip_denoised: bool,
    seed: u64,
    device: &Device,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<NllReport> {
    let batches = evaluate_nll_batches(
        model,
        diffusion,
        data,
        num_images,
        batch_size,
        clip_denoised,
        seed,
        None,
        device,
        progress,
    )?;
    combine_nll(batches, diffusion.num_timesteps())
}

/// The per-batch sums of the bound over the first `num_images` images, only for the batches of
/// `shard` when given (batch k belongs to process k mod count). Each batch draws its noise from
/// its own generator, so the result does not depend on how batches are shared out.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_nll_batches(
    model: &UNetModel,
    diffusion: &GaussianDiffusion,
    data: &dyn Dataset,
    num_images: usize,
    batch_size: usize,
    clip_denoised: bool,
    seed: u64,
    shard: Option<Shard>,
    device: &Device,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Vec<NllBatch>> {
    if num_images == 0 || batch_size == 0 {
        return Err(Error::Invalid(
            "--num_samples and --batch_size must be at least 1".into(),
        ));
    }
    let n = num_images.min(data.len());
    if n == 0 {
        return Err(Error::Invalid("the dataset is empty".into()));
    }
    let r = data.resolution();
    let t = diffusion.num_timesteps();
    let mut out = Vec::new();
    let (mut done, mut running) = (0, 0f64);
    for k in 0..n.div_ceil(batch_size) {
        if shard.is_some_and(|sh| !sh.owns(k)) {
            continue;
        }
        let first = k * batch_size;
        let b = batch_size.min(n - first);
        let mut values = Vec::with_capacity(b * 3 * r * r);
        let mut labels = Vec::with_capacity(b);
        for i in first..first + b {
            let (img, label) = data.get(i)?;
            values.extend(img);
            labels.push(label.unwrap_or(0));
        }
        let x = Tensor::<4>::from_data(TensorData::new(values, [b, 3, r, r]), device);
        let cond = if model.is_class_conditional() {
            Conditioning::labels(Tensor::<1, Int>::from_data(
                TensorData::new(labels, [b]),
                device,
            ))
        } else {
            Conditioning::none()
        };
        let mut noise = batch_noise(seed, k);
        let terms = diffusion.calc_bpd_loop(model, x, clip_denoised, &cond, &mut noise)?;
        let totals = terms
            .total_bpd
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("{e:?}")))?;
        let mut sums = [vec![0f64; t], vec![0f64; t], vec![0f64; t]];
        for (acc, m) in sums.iter_mut().zip([terms.vb, terms.mse, terms.xstart_mse]) {
            for row in host(m)?.chunks(t) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += *v as f64;
                }
            }
        }
        let [vb, mse, xstart_mse] = sums;
        let total = totals.iter().map(|&v| v as f64).sum::<f64>();
        done += b;
        running += total;
        progress(done, running / done as f64);
        out.push(NllBatch {
            batch: k,
            count: b,
            total,
            vb,
            mse,
            xstart_mse,
        });
    }
    Ok(out)
}

/// The report of all batches (from any processes), summed in batch order.
pub fn combine_nll(mut batches: Vec<NllBatch>, t: usize) -> Result<NllReport> {
    batches.sort_by_key(|b| b.batch);
    let n: usize = batches.iter().map(|b| b.count).sum();
    if n == 0 {
        return Err(Error::Invalid("no images were evaluated".into()));
    }
    let mut total = 0f64;
    let mut sums = [vec![0f64; t], vec![0f64; t], vec![0f64; t]];
    for b in &batches {
        total += b.total;
        for (acc, part) in sums.iter_mut().zip([&b.vb, &b.mse, &b.xstart_mse]) {
            for (a, v) in acc.iter_mut().zip(part) {
                *a += v;
            }
        }
    }
    let mean = |v: &Vec<f64>| v.iter().map(|x| (x / n as f64) as f32).collect();
    Ok(NllReport {
        num_images: n,
        bpd: total / n as f64,
        vb: mean(&sums[0]),
        mse: mean(&sums[1]),
        xstart_mse: mean(&sums[2]),
    })
}
