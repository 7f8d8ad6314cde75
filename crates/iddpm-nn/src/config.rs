//! Network configurations: the reference's `create_model` flags and the UNet they build.

use thiserror::Error;

use crate::layers::NORM_GROUPS;

/// Number of classes of class-conditional models (the reference hard-codes ImageNet's 1000).
pub const NUM_CLASSES: usize = 1000;

/// Why a network configuration was rejected; each names the flag to change.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// No default channel multipliers exist for this image size.
    #[error(
        "no default channel multipliers for image size {0}: the reference knows 32, 64 and 256; \
         pass --channel_mult (e.g. \"1,2,2\" for 28 or \"1,1,2,3,4\" for 128)"
    )]
    NoChannelMult(usize),
    /// A channel count cannot be split into GroupNorm's 32 groups.
    #[error(
        "{channels} channels ({what}) cannot be split into GroupNorm's 32 groups: \
         --num_channels times every --channel_mult entry must be a multiple of 32"
    )]
    GroupNorm {
        /// The offending channel count.
        channels: usize,
        /// Where it occurs.
        what: String,
    },
    /// The attention channels do not split into the requested heads.
    #[error(
        "{channels} attention channels cannot be split into {heads} heads (--num_heads / --num_heads_upsample)"
    )]
    Heads {
        /// Channels at an attention layer.
        channels: usize,
        /// Requested heads.
        heads: usize,
    },
    /// The image size does not survive the downsampling.
    #[error(
        "image size {size} cannot be halved {halvings} times (one per --channel_mult level after the first); \
         choose a size divisible by {divisor} or fewer levels"
    )]
    ImageSize {
        /// The image size.
        size: usize,
        /// How many times the UNet halves it.
        halvings: usize,
        /// What the size must be divisible by.
        divisor: usize,
    },
    /// A flag value could not be parsed or is out of range.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag name.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The architecture of a [`UNetModel`](crate::UNetModel), as the reference's constructor takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Input channels (3, or 6 for super-resolution, which concatenates the upsampled input).
    pub in_channels: usize,
    /// Base channel count.
    pub model_channels: usize,
    /// Output channels (3, or 6 with learned variances).
    pub out_channels: usize,
    /// Residual blocks per resolution.
    pub num_res_blocks: usize,
    /// Downsample rates (1, 2, 4, ...) at which attention is used.
    pub attention_resolutions: Vec<usize>,
    /// Dropout probability inside residual blocks.
    pub dropout: f64,
    /// Channel multiplier of each resolution level.
    pub channel_mult: Vec<usize>,
    /// Number of classes for class-conditional models.
    pub num_classes: Option<usize>,
    /// Recompute activations in the backward pass to save memory.
    pub use_checkpoint: bool,
    /// Attention heads in the input and middle blocks.
    pub num_heads: usize,
    /// Attention heads in the output blocks (`None`: same as `num_heads`).
    pub num_heads_upsample: Option<usize>,
    /// FiLM-style conditioning of the residual blocks' second norm.
    pub use_scale_shift_norm: bool,
}

impl UNetConfig {
    /// Heads used in the output blocks.
    pub fn heads_upsample(&self) -> usize {
        self.num_heads_upsample.unwrap_or(self.num_heads)
    }

    /// Checks every channel count against GroupNorm(32) and the attention heads, and the
    /// sizes against [`MAX_CHANNELS`], [`MAX_LEVELS`] and [`MAX_RES_BLOCKS`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.model_channels == 0
            || self.channel_mult.is_empty()
            || self.channel_mult.contains(&0)
        {
            return Err(ConfigError::Flag {
                flag: "channel_mult",
                message: "channel counts and multipliers must be positive".into(),
            });
        }
        self.check_sizes()?;
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            let ch = mult * self.model_channels;
            if !ch.is_multiple_of(NORM_GROUPS) {
                return Err(ConfigError::GroupNorm {
                    channels: ch,
                    what: format!("level {level}: {} x {mult}", self.model_channels),
                });
            }
            let ds = 1usize << level;
            if self.attention_resolutions.contains(&ds) {
                for heads in [self.num_heads, self.heads_upsample()] {
                    if heads == 0 || !ch.is_multiple_of(heads) {
                        return Err(ConfigError::Heads {
                            channels: ch,
                            heads,
                        });
                    }
                }
            }
        }
        let top = self.channel_mult[self.channel_mult.len() - 1] * self.model_channels;
        if self.num_heads == 0 || !top.is_multiple_of(self.num_heads) {
            return Err(ConfigError::Heads {
                channels: top,
                heads: self.num_heads,
            });
        }
        Ok(())
    }

    /// Refuses networks far beyond any real one before their weights are allocated: a typo
    /// must be an error, not an out-of-memory abort.
    fn check_sizes(&self) -> Result<(), ConfigError> {
        let widest = self
            .channel_mult
            .iter()
            .map(|&m| m.saturating_mul(self.model_channels))
            .max()
            .unwrap_or(0);
        let limits = [
            ("num_channels", "the widest layer has", widest, MAX_CHANNELS),
            (
                "channel_mult",
                "levels:",
                self.channel_mult.len(),
                MAX_LEVELS,
            ),
            (
                "num_res_blocks",
                "blocks per level:",
                self.num_res_blocks,
                MAX_RES_BLOCKS,
            ),
        ];
        for (flag, what, value, limit) in limits {
            if value > limit {
                return Err(ConfigError::Flag {
                    flag,
                    message: format!("{what} {value}; iddpm builds at most {limit}"),
                });
            }
        }
        Ok(())
    }

    /// Checks that images of `size` pass through the down- and upsampling unchanged, and
    /// that `size` is at most [`MAX_IMAGE_SIZE`].
    pub fn check_image_size(&self, size: usize) -> Result<(), ConfigError> {
        if size > MAX_IMAGE_SIZE {
            return Err(ConfigError::Flag {
                flag: "image_size",
                message: format!("{size} is larger than iddpm's limit of {MAX_IMAGE_SIZE}"),
            });
        }
        let halvings = self.channel_mult.len() - 1;
        let divisor = 1usize << halvings;
        if size == 0 || !size.is_multiple_of(divisor) {
            return Err(ConfigError::ImageSize {
                size,
                halvings,
                divisor,
            });
        }
        Ok(())
    }
}

/// The widest layer iddpm builds (the released models reach 1,024 channels).
pub const MAX_CHANNELS: usize = 16_384;
/// The most resolution levels (`channel_mult` entries; the released models have up to 6).
pub const MAX_LEVELS: usize = 16;
/// The most residual blocks per level (the released models have up to 3).
pub const MAX_RES_BLOCKS: usize = 64;
/// The largest image side (the released models reach 256).
pub const MAX_IMAGE_SIZE: usize = 4096;

/// The reference's channel multipliers for an image size (32, 64, 256).
pub fn default_channel_mult(image_size: usize) -> Option<Vec<usize>> {
    match image_size {
        256 => Some(vec![1, 1, 2, 2, 4, 4]),
        64 => Some(vec![1, 2, 3, 4]),
        32 => Some(vec![1, 2, 2, 2]),
        _ => None,
    }
}

/// Parses a comma list of positive integers such as `"1,2,2,2"` or `"16,8"`.
pub fn parse_usize_list(flag: &'static str, s: &str) -> Result<Vec<usize>, ConfigError> {
    s.split(',')
        .map(|part| {
            part.trim()
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| ConfigError::Flag {
                    flag,
                    message: format!("{part:?} in {s:?} is not a positive integer"),
                })
        })
        .collect()
}

/// The most image channels a network takes (hyperspectral stacks have a few dozen).
pub const MAX_IMAGE_CHANNELS: usize = 64;

/// The model flags of the reference scripts (`model_and_diffusion_defaults`), plus
/// `channel_mult` to go beyond the sizes the reference knows.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFlags {
    /// `--image_size` (for super-resolution: `--large_size`).
    pub image_size: usize,
    /// `--image_channels`: channels of the images (3 for RGB, 1 for greyscale). The
    /// reference's `UNetModel` takes any; its scripts fix 3.
    pub image_channels: usize,
    /// `--num_channels`.
    pub num_channels: usize,
    /// `--num_res_blocks`.
    pub num_res_blocks: usize,
    /// `--num_heads`.
    pub num_heads: usize,
    /// `--num_heads_upsample` (−1: same as `num_heads`).
    pub num_heads_upsample: i64,
    /// `--attention_resolutions`: image resolutions with attention, e.g. `"16,8"`.
    pub attention_resolutions: String,
    /// `--dropout`.
    pub dropout: f64,
    /// `--learn_sigma`: six output channels.
    pub learn_sigma: bool,
    /// `--class_cond`: a label embedding for 1000 classes.
    pub class_cond: bool,
    /// `--use_checkpoint`: gradient checkpointing.
    pub use_checkpoint: bool,
    /// `--use_scale_shift_norm`.
    pub use_scale_shift_norm: bool,
    /// `--channel_mult`: explicit multipliers (default: from the image size).
    pub channel_mult: Option<Vec<usize>>,
}

impl Default for ModelFlags {
    fn default() -> Self {
        Self {
            image_size: 64,
            image_channels: 3,
            num_channels: 128,
            num_res_blocks: 2,
            num_heads: 4,
            num_heads_upsample: -1,
            attention_resolutions: "16,8".into(),
            dropout: 0.0,
            learn_sigma: false,
            class_cond: false,
            use_checkpoint: false,
            use_scale_shift_norm: true,
            channel_mult: None,
        }
    }
}

impl ModelFlags {
    /// The UNet these flags build (`super_res`: the super-resolution model, which takes the
    /// upsampled low-resolution image as extra input channels).
    pub fn unet_config(&self, super_res: bool) -> Result<UNetConfig, ConfigError> {
        let channel_mult = match &self.channel_mult {
            Some(m) => m.clone(),
            None => default_channel_mult(self.image_size)
                .ok_or(ConfigError::NoChannelMult(self.image_size))?,
        };
        let attention_resolutions = if self.attention_resolutions.trim().is_empty() {
            Vec::new()
        } else {
            parse_usize_list("attention_resolutions", &self.attention_resolutions)?
                .into_iter()
                .map(|res| self.image_size / res)
                .collect()
        };
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::Flag {
                flag: "dropout",
                message: format!("{} is not a probability in [0, 1)", self.dropout),
            });
        }
        let num_heads_upsample = match self.num_heads_upsample {
            -1 => None,
            n if n > 0 => Some(n as usize),
            n => {
                return Err(ConfigError::Flag {
                    flag: "num_heads_upsample",
                    message: format!("{n} is neither -1 nor a positive count"),
                });
            }
        };
        let c = self.image_channels;
        if c == 0 || c > MAX_IMAGE_CHANNELS {
            return Err(ConfigError::Flag {
                flag: "image_channels",
                message: format!("{c} is not between 1 and {MAX_IMAGE_CHANNELS}"),
            });
        }
        let config = UNetConfig {
            in_channels: if super_res { 2 * c } else { c },
            model_channels: self.num_channels,
            out_channels: if self.learn_sigma { 2 * c } else { c },
            num_res_blocks: self.num_res_blocks,
            attention_resolutions,
            dropout: self.dropout,
            channel_mult,
            num_classes: self.class_cond.then_some(NUM_CLASSES),
            use_checkpoint: self.use_checkpoint,
            num_heads: self.num_heads,
            num_heads_upsample,
            use_scale_shift_norm: self.use_scale_shift_norm,
        };
        config.validate()?;
        config.check_image_size(self.image_size)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_mult_follows_the_reference_and_can_be_given() {
        let f = ModelFlags {
            image_size: 32,
            ..ModelFlags::default()
        };
        assert_eq!(f.unet_config(false).unwrap().channel_mult, vec![1, 2, 2, 2]);
        let f = ModelFlags {
            image_size: 28,
            ..ModelFlags::default()
        };
        assert!(
            f.unet_config(false)
                .unwrap_err()
                .to_string()
                .contains("--channel_mult")
        );
        let f = ModelFlags {
            image_size: 28,
            channel_mult: Some(vec![1, 2, 2]),
            ..ModelFlags::default()
        };
        let c = f.unet_config(false).unwrap();
        // "16,8" at 28 px: 28 / 16 = 1 and 28 / 8 = 3, as the reference's integer division.
        assert_eq!(c.attention_resolutions, vec![1, 3]);
    }

    #[test]
    fn impossible_networks_are_errors_naming_the_flag() {
        let f = ModelFlags {
            image_size: 32,
            num_channels: 48,
            ..ModelFlags::default()
        };
        let e = f.unet_config(false).unwrap_err().to_string();
        assert!(e.contains("48") && e.contains("--num_channels"), "{e}");
        let f = ModelFlags {
            image_size: 32,
            num_heads: 3,
            ..ModelFlags::default()
        };
        assert!(
            f.unet_config(false)
                .unwrap_err()
                .to_string()
                .contains("3 heads")
        );
        let f = ModelFlags {
            image_size: 30,
            channel_mult: Some(vec![1, 2, 2]),
            ..ModelFlags::default()
        };
        assert!(
            f.unet_config(false)
                .unwrap_err()
                .to_string()
                .contains("image size 30")
        );
        let f = ModelFlags {
            image_size: 32,
            attention_resolutions: "16,x".into(),
            ..ModelFlags::default()
        };
        assert!(
            f.unet_config(false)
                .unwrap_err()
                .to_string()
                .contains("--attention_resolutions")
        );
    }
}

/// Networks the unit tests of other modules share.
#[cfg(test)]
pub(crate) mod test_configs {
    use super::{ModelFlags, UNetConfig};

    /// The released CIFAR-10 network: 128 channels, mult 1,2,2,2, 3 blocks, attention at 16
    /// and 8, learned variances.
    pub(crate) fn cifar10() -> UNetConfig {
        ModelFlags {
            image_size: 32,
            num_channels: 128,
            num_res_blocks: 3,
            learn_sigma: true,
            ..ModelFlags::default()
        }
        .unet_config(false)
        .unwrap()
    }
}
