//! The sample grids written at each save, from the first EMA's weights.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use iddpm_data::pictures::{as_rgb, save_grid_with_columns, to_uint8_nhwc};
use iddpm_diffusion::{Conditioning, SampleRequest, SeededNoise};
use iddpm_kernels::to_f32_vec;
use iddpm_nn::UNetModel;

use super::{Trainer, for_each_param};
use crate::error::Result;

impl Trainer<'_> {
    /// A network on the plain device holding the first EMA's weights (or the model's).
    pub fn inference_model(&mut self) -> Result<&UNetModel> {
        if self.preview_model.is_none() {
            self.preview_model = Some(UNetModel::new(&self.unet_config, &self.device));
        }
        let flats: Vec<Tensor<1>> = match self.emas.first() {
            Some(ema) => ema.params.iter().map(|(_, t)| t.clone()).collect(),
            None => {
                let mut v = Vec::new();
                for_each_param(&mut self.model, |_, _, p| v.push(p.flat()));
                v
            }
        };
        let model = self.preview_model.as_mut().expect("created above");
        for_each_param(model, |i, _, p| p.set_flat(flats[i].clone()));
        Ok(self.preview_model.as_ref().expect("created above"))
    }

    /// Writes a grid of `preview_samples` samples drawn with `preview_steps` respaced steps
    /// from the first EMA; for super-resolution, each sample sits between its low-resolution
    /// input and the original.
    pub(super) fn preview(&mut self, path: &Path) -> Result<()> {
        let n = self.opts.preview_samples;
        let r = self.resolution;
        let steps = self
            .opts
            .preview_steps
            .min(self.diffusion_config.diffusion_steps)
            .max(1);
        let diffusion = self
            .diffusion_config
            .build_with_respacing(&steps.to_string())?;
        let device = self.device.clone();
        // Super-resolution upsamples the first training images, shown beside the result.
        let originals = match self.opts.small_size {
            Some(_) => Some(self.first_training_images(n)?),
            None => None,
        };
        let cond = self.preview_conditioning(n, originals.as_ref());
        // A few steps over the respaced timesteps.
        let sampler = self.opts.preview_sampler;
        let c = self.image_channels();
        let model = self.inference_model()?;
        let mut noise = SeededNoise::new(12345);
        let request = SampleRequest::new(sampler, [n, c, r, r], &cond, &mut noise, &device);
        let x = diffusion.sample_loop(model, request)?;
        let samples = as_rgb(&to_uint8_nhwc(&to_f32_vec(x), n, c, r, r), c);
        match (originals, cond.low_res) {
            (Some((x, _)), Some(low)) => {
                let small = low.dims()[2];
                let blown = nearest_upsample(
                    &as_rgb(&to_uint8_nhwc(&to_f32_vec(low), n, c, small, small), c),
                    n,
                    small,
                    r,
                );
                let truth = as_rgb(&to_uint8_nhwc(&to_f32_vec(x), n, c, r, r), c);
                let rows = interleave(&[&blown, &samples, &truth], n);
                save_grid_with_columns(path, &rows, 3 * n, r, r, Some(3))?;
            }
            _ => save_grid_with_columns(path, &samples, n, r, r, None)?,
        }
        Ok(())
    }

    /// The first `n` training images (repeated if the data has fewer) as `[n, C, r, r]`, with
    /// their labels (or 0..9 in turn for unlabelled data).
    fn first_training_images(&self, n: usize) -> Result<(Tensor<4>, Vec<i64>)> {
        let r = self.resolution;
        let data = self.loader.data();
        let c = self.image_channels();
        let mut values = Vec::with_capacity(n * c * r * r);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let (image, label) = data.get(i % data.len())?;
            values.extend(image);
            labels.push(label.unwrap_or((i % 10) as i64));
        }
        let images = Tensor::<4>::from_data(TensorData::new(values, [n, c, r, r]), &self.device);
        Ok((images, labels))
    }

    /// Labels for a class-conditional model (the originals', or 0..9 in turn) and, for
    /// super-resolution, the originals brought down to the low resolution.
    fn preview_conditioning(
        &self,
        n: usize,
        originals: Option<&(Tensor<4>, Vec<i64>)>,
    ) -> Conditioning {
        let mut cond = Conditioning::none();
        if self.unet_config.num_classes.is_some() {
            let labels: Vec<i64> = match originals {
                Some((_, l)) => l.clone(),
                None => (0..n as i64).map(|i| i % 10).collect(),
            };
            cond.labels = Some(Tensor::<1, Int>::from_data(
                TensorData::new(labels, [n]),
                &self.device,
            ));
        }
        if let Some((x, _)) = originals {
            cond.low_res = self.low_res(x);
        }
        cond
    }
}

/// Image i of every part in turn (rows of `parts.len()` images), for `n` equally sized images
/// per part.
fn interleave(parts: &[&[u8]], n: usize) -> Vec<u8> {
    let per = parts[0].len() / n.max(1);
    let mut rows = Vec::with_capacity(parts.len() * parts[0].len());
    for i in 0..n {
        for part in parts {
            rows.extend_from_slice(&part[i * per..(i + 1) * per]);
        }
    }
    rows
}

/// NHWC uint8 images of side `small` blown up to side `large` by pixel repetition.
fn nearest_upsample(images: &[u8], n: usize, small: usize, large: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * large * large * 3);
    for i in 0..n {
        for y in 0..large {
            for x in 0..large {
                let at = ((i * small + y * small / large) * small + x * small / large) * 3;
                out.extend_from_slice(&images[at..at + 3]);
            }
        }
    }
    out
}
