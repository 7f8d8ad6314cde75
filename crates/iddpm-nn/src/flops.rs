//! The arithmetic of one forward pass, counted from the network's shape: what achieved
//! TFLOP/s are measured against.
//!
//! Counts the multiply-adds of convolutions, linear layers and attention's two matrix
//! products (2 floating-point operations each), as the usual model-FLOP counts do; norms,
//! activations and additions (a few percent) are left out.

use crate::config::UNetConfig;

/// Floating-point operations of a `k`×`k` convolution from `c_in` to `c_out` channels whose
/// output is `side`×`side`.
fn conv(k: usize, c_in: usize, c_out: usize, side: usize) -> f64 {
    2.0 * (k * k * c_in * c_out) as f64 * (side * side) as f64
}

/// A residual block at `side`×`side` (its timestep projection included).
fn res_block(config: &UNetConfig, c_in: usize, c_out: usize, side: usize) -> f64 {
    let temb = 4 * config.model_channels;
    let film = if config.use_scale_shift_norm { 2 } else { 1 };
    let skip = if c_in == c_out {
        0.0
    } else {
        conv(1, c_in, c_out, side)
    };
    conv(3, c_in, c_out, side)
        + conv(3, c_out, c_out, side)
        + skip
        + 2.0 * (temb * film * c_out) as f64
}

/// Self-attention over the `side`² positions of `c` channels: the qkv and output
/// projections, and the two products QKᵀ and AV (each 2·T²·C over all heads).
fn attention(c: usize, side: usize) -> f64 {
    let t = (side * side) as f64;
    conv(1, c, 3 * c, side) + conv(1, c, c, side) + 4.0 * t * t * c as f64
}

impl UNetConfig {
    /// Floating-point operations of one forward pass on one `image_size`² image. A training
    /// step costs about three times this per image (forward, and a backward of twice the work).
    pub fn forward_flops(&self, image_size: usize) -> f64 {
        let mc = self.model_channels;
        let temb = 4 * mc;
        let mut total = 2.0 * (mc * temb + temb * temb) as f64;
        let mut side = image_size;
        total += conv(3, self.in_channels, mc, side);
        let (mut ch, mut ds) = (mc, 1);
        let mut chans = vec![mc];
        let levels = self.channel_mult.len();
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            for _ in 0..self.num_res_blocks {
                total += res_block(self, ch, mult * mc, side);
                ch = mult * mc;
                if self.attention_resolutions.contains(&ds) {
                    total += attention(ch, side);
                }
                chans.push(ch);
            }
            if level + 1 != levels {
                side /= 2;
                total += conv(3, ch, ch, side);
                chans.push(ch);
                ds *= 2;
            }
        }
        total += 2.0 * res_block(self, ch, ch, side) + attention(ch, side);
        for (level, &mult) in self.channel_mult.iter().enumerate().rev() {
            for i in 0..=self.num_res_blocks {
                let skip = chans.pop().expect("one skip per block");
                total += res_block(self, ch + skip, mult * mc, side);
                ch = mult * mc;
                if self.attention_resolutions.contains(&ds) {
                    total += attention(ch, side);
                }
                if level > 0 && i == self.num_res_blocks {
                    side *= 2;
                    total += conv(3, ch, ch, side);
                    ds /= 2;
                }
            }
        }
        total + conv(3, mc, self.out_channels, side)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ModelFlags;

    /// One level, one block, no attention: every term by hand.
    #[test]
    fn a_one_level_network_counts_by_hand() {
        let config = ModelFlags {
            image_size: 8,
            num_channels: 32,
            num_res_blocks: 1,
            attention_resolutions: "".into(),
            channel_mult: Some(vec![1]),
            ..ModelFlags::default()
        }
        .unet_config(false)
        .unwrap();
        let conv3 = |a: f64, b: f64| 2.0 * 9.0 * a * b * 64.0;
        let res = 2.0 * conv3(32.0, 32.0) + 2.0 * 128.0 * 64.0;
        let res_skip = |cin: f64| {
            conv3(cin, 32.0) + conv3(32.0, 32.0) + 2.0 * cin * 32.0 * 64.0 + 2.0 * 128.0 * 64.0
        };
        let middle_attn =
            2.0 * 32.0 * 96.0 * 64.0 + 2.0 * 32.0 * 32.0 * 64.0 + 4.0 * 64.0 * 64.0 * 32.0;
        let want = 2.0 * (32.0 * 128.0 + 128.0 * 128.0)
            + conv3(3.0, 32.0)
            + res
            + 2.0 * res
            + middle_attn
            + 2.0 * res_skip(64.0)
            + conv3(32.0, 3.0);
        assert_eq!(config.forward_flops(8), want);
    }

    /// The released CIFAR-10 network (128 channels, mult 1,2,2,2, 3 blocks, attention at 16
    /// and 8): its 3×3 convolutions alone, 14 or more per level at 0.3 GFLOP each on the two
    /// upper levels and less below, come to about 10 GFLOP; with the wider first convolution
    /// of each output block and attention at 16×16, about 17.
    #[test]
    fn the_cifar10_network_is_about_17_gflop() {
        let g = crate::config::test_configs::cifar10().forward_flops(32) / 1e9;
        assert!((14.0..20.0).contains(&g), "{g} GFLOP");
    }
}
