//! pytorch-fid's FID variant of InceptionV3 (pool3, 2048 features), loaded from its state dict
//! (`pt_inception-2015-12-05` names such as `Mixed_7c.branch_pool.conv.weight`).
//!
//! Every BasicConv2d is conv (no bias) → BatchNorm (eval, eps 1e-3) → ReLU; the batch norm is
//! folded into the convolution when loading. Input: RGB in [0, 1], resized to 299×299 with
//! half-pixel bilinear sampling, then mapped to [−1, 1].

use std::collections::HashMap;

use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use iddpm_checkpoint::StateDict;
use iddpm_kernels::to_f32_vec;

use crate::resize::{INCEPTION_SIZE, bilinear_resize};

const BN_EPS: f64 = 1e-3;

struct BasicConv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: [usize; 2],
}

impl BasicConv {
    /// The convolution (the CPU kernel for square kernels with equal padding, burn's
    /// convolution for the 1×7 / 7×1 ones), then ReLU.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, kh, kw] = self.weight.dims();
        let (weight, bias) = (self.weight.clone(), self.bias.clone());
        if kh == kw && self.padding[0] == self.padding[1] {
            return relu(iddpm_kernels::ops::conv2d(
                x,
                weight,
                bias,
                self.stride,
                self.padding[0],
            ));
        }
        let options = ConvOptions::new([self.stride; 2], self.padding, [1, 1], 1);
        relu(conv2d(x, weight, Some(bias), options))
    }
}

/// Every convolution of the network: name, stride, padding.
fn layout() -> Vec<(String, usize, [usize; 2])> {
    let mut l: Vec<(String, usize, [usize; 2])> = vec![
        ("Conv2d_1a_3x3".into(), 2, [0, 0]),
        ("Conv2d_2a_3x3".into(), 1, [0, 0]),
        ("Conv2d_2b_3x3".into(), 1, [1, 1]),
        ("Conv2d_3b_1x1".into(), 1, [0, 0]),
        ("Conv2d_4a_3x3".into(), 1, [0, 0]),
    ];
    let mut add = |block: &str, convs: &[(&str, usize, [usize; 2])]| {
        for (name, stride, pad) in convs {
            l.push((format!("{block}.{name}"), *stride, *pad));
        }
    };
    for block in ["Mixed_5b", "Mixed_5c", "Mixed_5d"] {
        add(
            block,
            &[
                ("branch1x1", 1, [0, 0]),
                ("branch5x5_1", 1, [0, 0]),
                ("branch5x5_2", 1, [2, 2]),
                ("branch3x3dbl_1", 1, [0, 0]),
                ("branch3x3dbl_2", 1, [1, 1]),
                ("branch3x3dbl_3", 1, [1, 1]),
                ("branch_pool", 1, [0, 0]),
            ],
        );
    }
    add(
        "Mixed_6a",
        &[
            ("branch3x3", 2, [0, 0]),
            ("branch3x3dbl_1", 1, [0, 0]),
            ("branch3x3dbl_2", 1, [1, 1]),
            ("branch3x3dbl_3", 2, [0, 0]),
        ],
    );
    for block in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"] {
        add(
            block,
            &[
                ("branch1x1", 1, [0, 0]),
                ("branch7x7_1", 1, [0, 0]),
                ("branch7x7_2", 1, [0, 3]),
                ("branch7x7_3", 1, [3, 0]),
                ("branch7x7dbl_1", 1, [0, 0]),
                ("branch7x7dbl_2", 1, [3, 0]),
                ("branch7x7dbl_3", 1, [0, 3]),
                ("branch7x7dbl_4", 1, [3, 0]),
                ("branch7x7dbl_5", 1, [0, 3]),
                ("branch_pool", 1, [0, 0]),
            ],
        );
    }
    add(
        "Mixed_7a",
        &[
            ("branch3x3_1", 1, [0, 0]),
            ("branch3x3_2", 2, [0, 0]),
            ("branch7x7x3_1", 1, [0, 0]),
            ("branch7x7x3_2", 1, [0, 3]),
            ("branch7x7x3_3", 1, [3, 0]),
            ("branch7x7x3_4", 2, [0, 0]),
        ],
    );
    for block in ["Mixed_7b", "Mixed_7c"] {
        add(
            block,
            &[
                ("branch1x1", 1, [0, 0]),
                ("branch3x3_1", 1, [0, 0]),
                ("branch3x3_2a", 1, [0, 1]),
                ("branch3x3_2b", 1, [1, 0]),
                ("branch3x3dbl_1", 1, [0, 0]),
                ("branch3x3dbl_2", 1, [1, 1]),
                ("branch3x3dbl_3a", 1, [0, 1]),
                ("branch3x3dbl_3b", 1, [1, 0]),
                ("branch_pool", 1, [0, 0]),
            ],
        );
    }
    l
}

/// Channels of `mixed_6/conv` that sFID keeps (guided-diffusion's evaluator).
pub const SPATIAL_CHANNELS: usize = 7;

/// Length of one image's sFID features: 7 channels at 17×17.
pub const SPATIAL_FEATURES: usize = SPATIAL_CHANNELS * 17 * 17;

/// The FID Inception of pytorch-fid, ready to extract pool3 features.
pub struct FidInception {
    convs: HashMap<String, BasicConv>,
    /// The logits layer's weight transposed, `[2048, classes]`, when the weights have one.
    logits: Option<Tensor<2>>,
    device: Device,
}

impl FidInception {
    /// Builds the network from a pytorch-fid state dict; the error names the first missing or
    /// misshapen tensor.
    pub fn from_state_dict(dict: &StateDict, device: &Device) -> Result<Self, String> {
        let mut convs = HashMap::new();
        for (name, stride, padding) in layout() {
            let get = |suffix: &str| {
                dict.get(&format!("{name}.{suffix}")).ok_or_else(|| {
                    format!(
                        "missing tensor {name}.{suffix}: not a pytorch-fid Inception state dict"
                    )
                })
            };
            let w = get("conv.weight")?;
            let (gamma, beta, mean, var) = (
                get("bn.weight")?,
                get("bn.bias")?,
                get("bn.running_mean")?,
                get("bn.running_var")?,
            );
            let out = w.shape[0];
            if w.shape.len() != 4
                || [gamma, beta, mean, var]
                    .iter()
                    .any(|t| t.values.len() != out)
            {
                return Err(format!(
                    "{name}: inconsistent convolution and batch-norm shapes"
                ));
            }
            let per = w.values.len() / out;
            let mut folded = Vec::with_capacity(w.values.len());
            let mut bias = Vec::with_capacity(out);
            for o in 0..out {
                let scale = gamma.values[o] as f64 / (var.values[o] as f64 + BN_EPS).sqrt();
                folded.extend(
                    w.values[o * per..(o + 1) * per]
                        .iter()
                        .map(|&v| (v as f64 * scale) as f32),
                );
                bias.push((beta.values[o] as f64 - mean.values[o] as f64 * scale) as f32);
            }
            let shape = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
            convs.insert(
                name,
                BasicConv {
                    weight: Tensor::from_data(TensorData::new(folded, shape), device),
                    bias: Tensor::from_data(TensorData::new(bias, [out]), device),
                    stride,
                    padding,
                },
            );
        }
        let logits = match dict.get(crate::nvidia_weights::LOGITS_WEIGHT) {
            Some(w) if w.shape.len() == 2 && w.shape[1] == 2048 => {
                let weight: Tensor<2> = Tensor::from_data(
                    TensorData::new(w.values.clone(), [w.shape[0], w.shape[1]]),
                    device,
                );
                Some(weight.transpose())
            }
            Some(w) => {
                return Err(format!(
                    "{}: shape {:?}, expected [classes, 2048]",
                    crate::nvidia_weights::LOGITS_WEIGHT,
                    w.shape
                ));
            }
            None => None,
        };
        Ok(Self {
            convs,
            logits,
            device: device.clone(),
        })
    }

    /// The logits `[n, classes]` of pool features `[n, 2048]` (no bias, as guided-diffusion's
    /// evaluator takes them), when the weights include the logits layer.
    pub fn logits(&self, pool: &[f32], n: usize) -> Option<(Vec<f32>, usize)> {
        let w = self.logits.as_ref()?;
        let classes = w.dims()[1];
        let x: Tensor<2> =
            Tensor::from_data(TensorData::new(pool.to_vec(), [n, 2048]), &self.device);
        Some((to_f32_vec(x.matmul(w.clone())), classes))
    }

    fn c(&self, name: &str, x: Tensor<4>) -> Tensor<4> {
        self.convs[name].forward(x)
    }

    fn max_pool(x: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
        max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([stride; 2])
                .with_padding([pad; 2]),
        )
    }

    fn avg_pool(x: Tensor<4>) -> Tensor<4> {
        avg_pool2d(
            x,
            AvgPoolOptions::new([3, 3])
                .with_stride([1, 1])
                .with_padding([1, 1])
                .with_count_include_pad(false),
        )
    }

    fn block_a(&self, b: &str, x: Tensor<4>) -> Tensor<4> {
        let n = |s: &str| format!("{b}.{s}");
        let b1 = self.c(&n("branch1x1"), x.clone());
        let b5 = self.c(&n("branch5x5_2"), self.c(&n("branch5x5_1"), x.clone()));
        let b3 = self.c(
            &n("branch3x3dbl_3"),
            self.c(
                &n("branch3x3dbl_2"),
                self.c(&n("branch3x3dbl_1"), x.clone()),
            ),
        );
        let bp = self.c(&n("branch_pool"), Self::avg_pool(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }

    fn block_b(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.c("Mixed_6a.branch3x3", x.clone());
        let bd = self.c(
            "Mixed_6a.branch3x3dbl_3",
            self.c(
                "Mixed_6a.branch3x3dbl_2",
                self.c("Mixed_6a.branch3x3dbl_1", x.clone()),
            ),
        );
        Tensor::cat(vec![b3, bd, Self::max_pool(x, 2, 0)], 1)
    }

    /// An Inception-C block; `spatial` receives its 1×1 branch's output (the evaluator's
    /// `mixed_6/conv` for Mixed_6d).
    fn block_c(&self, b: &str, x: Tensor<4>, spatial: Option<&mut Option<Tensor<4>>>) -> Tensor<4> {
        let n = |s: &str| format!("{b}.{s}");
        let b1 = self.c(&n("branch1x1"), x.clone());
        if let Some(out) = spatial {
            *out = Some(b1.clone());
        }
        let mut b7 = x.clone();
        for s in ["branch7x7_1", "branch7x7_2", "branch7x7_3"] {
            b7 = self.c(&n(s), b7);
        }
        let mut bd = x.clone();
        for s in [
            "branch7x7dbl_1",
            "branch7x7dbl_2",
            "branch7x7dbl_3",
            "branch7x7dbl_4",
            "branch7x7dbl_5",
        ] {
            bd = self.c(&n(s), bd);
        }
        let bp = self.c(&n("branch_pool"), Self::avg_pool(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }

    fn block_d(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.c(
            "Mixed_7a.branch3x3_2",
            self.c("Mixed_7a.branch3x3_1", x.clone()),
        );
        let mut b7 = x.clone();
        for s in [
            "branch7x7x3_1",
            "branch7x7x3_2",
            "branch7x7x3_3",
            "branch7x7x3_4",
        ] {
            b7 = self.c(&format!("Mixed_7a.{s}"), b7);
        }
        Tensor::cat(vec![b3, b7, Self::max_pool(x, 2, 0)], 1)
    }

    fn block_e(&self, b: &str, x: Tensor<4>, max_pool: bool) -> Tensor<4> {
        let n = |s: &str| format!("{b}.{s}");
        let b1 = self.c(&n("branch1x1"), x.clone());
        let t = self.c(&n("branch3x3_1"), x.clone());
        let b3 = Tensor::cat(
            vec![
                self.c(&n("branch3x3_2a"), t.clone()),
                self.c(&n("branch3x3_2b"), t),
            ],
            1,
        );
        let t = self.c(
            &n("branch3x3dbl_2"),
            self.c(&n("branch3x3dbl_1"), x.clone()),
        );
        let bd = Tensor::cat(
            vec![
                self.c(&n("branch3x3dbl_3a"), t.clone()),
                self.c(&n("branch3x3dbl_3b"), t),
            ],
            1,
        );
        let pooled = if max_pool {
            Self::max_pool(x, 1, 1)
        } else {
            Self::avg_pool(x)
        };
        let bp = self.c(&n("branch_pool"), pooled);
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }

    /// Pool3 features `[n, 2048]` of images `[n, 3, h, w]` in [0, 1] (row-major f32), with
    /// pytorch-fid's preprocessing: half-pixel bilinear resize, then `2x − 1`.
    pub fn features(&self, images: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let s = INCEPTION_SIZE;
        let resized = bilinear_resize(images, [n, 3, h, w], [s, s], true);
        let x = Tensor::<4>::from_data(TensorData::new(resized, [n, 3, s, s]), &self.device)
            .mul_scalar(2.0)
            .sub_scalar(1.0);
        self.pool3(x)
    }

    /// Pool3 features `[n, 2048]` of uint8 NHWC RGB images with NVIDIA's preprocessing (the
    /// standard FID): TF-style bilinear resize to 299, then `(x − 128) / 128`.
    pub fn features_uint8(&self, images: &[u8], n: usize, h: usize, w: usize) -> Vec<f32> {
        self.pool3(self.preprocess_uint8(images, n, h, w))
    }

    /// [`features_uint8`](Self::features_uint8) and the spatial features of sFID `[n, 2023]`:
    /// the first 7 channels of `mixed_6/conv` (Mixed_6d's 1×1 branch, 17×17), flattened, as
    /// guided-diffusion's evaluator takes them.
    pub fn features_and_spatial_uint8(
        &self,
        images: &[u8],
        n: usize,
        h: usize,
        w: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut spatial = None;
        let pool = self.forward(self.preprocess_uint8(images, n, h, w), Some(&mut spatial));
        let spatial = spatial.expect("Mixed_6d ran");
        let [b, _, sh, sw] = spatial.dims();
        let first: Tensor<4> = spatial.narrow(1, 0, SPATIAL_CHANNELS); // [b, 7, 17, 17]
        let flat: Tensor<2> = first.reshape([b, SPATIAL_CHANNELS * sh * sw]);
        (pool, to_f32_vec(flat))
    }

    /// uint8 NHWC images → `[n, 3, 299, 299]` network input in [−1, 1).
    fn preprocess_uint8(&self, images: &[u8], n: usize, h: usize, w: usize) -> Tensor<4> {
        let s = INCEPTION_SIZE;
        let resized = crate::resize::tf_resize_299(images, n, h, w);
        Tensor::<4>::from_data(TensorData::new(resized, [n, 3, s, s]), &self.device)
            .sub_scalar(128.0)
            .div_scalar(128.0)
    }

    fn pool3(&self, x: Tensor<4>) -> Vec<f32> {
        self.forward(x, None)
    }

    /// Pool3 features, and Mixed_6d's 1×1 branch into `spatial` when asked.
    fn forward(&self, x: Tensor<4>, mut spatial: Option<&mut Option<Tensor<4>>>) -> Vec<f32> {
        let mut x = self.c(
            "Conv2d_2b_3x3",
            self.c("Conv2d_2a_3x3", self.c("Conv2d_1a_3x3", x)),
        );
        x = Self::max_pool(x, 2, 0);
        x = self.c("Conv2d_4a_3x3", self.c("Conv2d_3b_1x1", x));
        x = Self::max_pool(x, 2, 0);
        for b in ["Mixed_5b", "Mixed_5c", "Mixed_5d"] {
            x = self.block_a(b, x);
        }
        x = self.block_b(x);
        for b in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"] {
            let tap = if b == "Mixed_6d" {
                spatial.take()
            } else {
                None
            };
            x = self.block_c(b, x, tap);
        }
        x = self.block_d(x);
        x = self.block_e("Mixed_7b", x, false);
        x = self.block_e("Mixed_7c", x, true);
        let [b, c, _, _] = x.dims();
        let pooled: Tensor<2> = x
            .reshape([b as i64, c as i64, -1])
            .mean_dim(2)
            .reshape([b, c]);
        to_f32_vec(pooled)
    }
}
