//! The sample grids written at each save, from the first EMA's weights.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use iddpm_data::pictures::{save_grid_with_columns, to_uint8_nhwc};
use iddpm_diffusion::{Conditioning, SampleRequest, Sampler, SeededNoise};
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
        let class_cond = self.unet_config.num_classes.is_some();
        // Super-resolution upsamples the first training images, shown beside the result.
        let originals = match self.opts.small_size {
            Some(_) => {
                let data = self.loader.data();
                let mut values = Vec::with_capacity(n * 3 * r * r);
                let mut labels = Vec::with_capacity(n);
                for i in 0..n {
                    let (image, label) = data.get(i % data.len())?;
                    values.extend(image);
                    labels.push(label.unwrap_or((i % 10) as i64));
                }
                Some((
                    Tensor::<4>::from_data(TensorData::new(values, [n, 3, r, r]), &device),
                    labels,
                ))
            }
            None => None,
        };
        let mut cond = Conditioning::none();
        if class_cond {
            let labels: Vec<i64> = match &originals {
                Some((_, l)) => l.clone(),
                None => (0..n as i64).map(|i| i % 10).collect(),
            };
            cond.labels = Some(Tensor::<1, Int>::from_data(
                TensorData::new(labels, [n]),
                &device,
            ));
        }
        if let Some((x, _)) = &originals {
            cond.low_res = self.low_res(x);
        }
        // A few steps over the respaced timesteps, deterministic with DDIM.
        let sampler = if self.opts.preview_ddim {
            Sampler::Ddim { eta: 0.0 }
        } else {
            Sampler::Ancestral
        };
        let model = self.inference_model()?;
        let mut noise = SeededNoise::new(12345);
        let request = SampleRequest::new(sampler, [n, 3, r, r], &cond, &mut noise, &device);
        let x = diffusion.sample_loop(model, request)?;
        let mut images = to_uint8_nhwc(&to_f32_vec(x), n, 3, r, r);
        let mut count = n;
        if let (Some((x, _)), Some(low)) = (originals, cond.low_res) {
            // Rows of three: the low-resolution input (blown up), the sample, the original.
            let small = low.dims()[2];
            let blown = nearest_upsample(
                &to_uint8_nhwc(&to_f32_vec(low), n, 3, small, small),
                n,
                small,
                r,
            );
            let truth = to_uint8_nhwc(&to_f32_vec(x), n, 3, r, r);
            let per = r * r * 3;
            let mut rows = Vec::with_capacity(3 * n * per);
            for i in 0..n {
                for part in [&blown, &images, &truth] {
                    rows.extend_from_slice(&part[i * per..(i + 1) * per]);
                }
            }
            images = rows;
            count = 3 * n;
        }
        save_grid_with_columns(
            path,
            &images,
            count,
            r,
            r,
            if count == n { None } else { Some(3) },
        )?;
        Ok(())
    }
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
