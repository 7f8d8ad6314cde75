//! Negative log-likelihood of a dataset in bits/dim (the reference's `image_nll.py`).

use burn::tensor::{Device, Int, Tensor, TensorData};
use iddpm_data::Dataset;
use iddpm_diffusion::{Conditioning, GaussianDiffusion, SeededNoise};
use iddpm_nn::UNetModel;

use crate::error::{Error, Result};

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
    let mut noise = SeededNoise::new(seed);
    let (mut vb, mut mse, mut xmse) = (vec![0f64; t], vec![0f64; t], vec![0f64; t]);
    let mut total = 0f64;
    let mut done = 0;
    while done < n {
        let b = batch_size.min(n - done);
        let mut values = Vec::with_capacity(b * 3 * r * r);
        let mut labels = Vec::with_capacity(b);
        for i in done..done + b {
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
        let terms = diffusion.calc_bpd_loop(model, x, clip_denoised, &cond, &mut noise)?;
        let totals = terms
            .total_bpd
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("{e:?}")))?;
        total += totals.iter().map(|&v| v as f64).sum::<f64>();
        for (acc, m) in [
            (&mut vb, terms.vb),
            (&mut mse, terms.mse),
            (&mut xmse, terms.xstart_mse),
        ] {
            let values = host(m)?;
            for row in values.chunks(t) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += *v as f64;
                }
            }
        }
        done += b;
        progress(done, total / done as f64);
    }
    let mean = |v: Vec<f64>| v.into_iter().map(|x| (x / n as f64) as f32).collect();
    Ok(NllReport {
        num_images: n,
        bpd: total / n as f64,
        vb: mean(vb),
        mse: mean(mse),
        xstart_mse: mean(xmse),
    })
}
