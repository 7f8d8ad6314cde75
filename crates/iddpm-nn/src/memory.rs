//! Whether a batch can fit: the memory a batch's activations take, counted from the network's
//! shape, against what the machine has available. A batch far too large is then refused with
//! an error that names it, instead of the process aborting when an allocation fails.
//!
//! The counts are lower bounds (the largest tensors only), so a refusal is certain to be
//! right; a batch that passes may still be too large by a small factor.

use crate::config::UNetConfig;

/// Bytes of an f32 activation.
const BYTES: f64 = 4.0;

impl UNetConfig {
    /// Bytes of activations one `image_size`² image needs in a forward pass: with `training`,
    /// the block outputs and normalised inputs kept for the backward pass (at least three
    /// tensors per convolution's output, and each attention's weights); without, the skip
    /// connections held for the output blocks and the largest block's working tensors.
    /// Counted in f64, so that absurd shapes saturate instead of overflowing.
    pub fn activation_bytes(&self, image_size: usize, training: bool) -> u64 {
        let mc = self.model_channels as f64;
        let mut side = image_size as f64;
        let (mut kept, mut largest) = (0f64, 0f64);
        let mut skips = mc * side * side;
        let mut ds = 1;
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            let c = mult as f64 * mc;
            for _ in 0..self.num_res_blocks {
                let attention = if self.attention_resolutions.contains(&ds) {
                    self.num_heads as f64 * (side * side).powi(2)
                } else {
                    0.0
                };
                let outputs = c * side * side;
                kept += 3.0 * outputs + attention;
                largest = largest.max(4.0 * outputs + attention);
                skips += outputs;
            }
            if level + 1 != self.channel_mult.len() {
                side = (side / 2.0).floor();
                skips += c * side * side;
                ds *= 2;
            }
        }
        // The output blocks mirror the input blocks with one more block per level.
        let elements = if training {
            2.0 * kept
        } else {
            skips + largest
        };
        (elements * BYTES) as u64
    }
}

/// Memory the operating system can give this process now (Linux's `MemAvailable`); `None`
/// where it is not known.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// An error naming `what` when `bytes` is more than the machine has available.
pub fn check_fits(bytes: u64, what: &str) -> Result<(), String> {
    match available_memory() {
        Some(free) if bytes > free => Err(format!(
            "{what} needs at least {:.1} GiB of memory, and {:.1} GiB are available; \
             use a smaller batch (or --microbatch when training)",
            bytes as f64 / (1u64 << 30) as f64,
            free as f64 / (1u64 << 30) as f64
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference trains the CIFAR-10 network at 128 images a batch on one 16 GB GPU
    /// (with 2 split over processes of 64), so one image's training activations stay well
    /// under 16 GiB / 64; sampling needs far less than training.
    #[test]
    fn the_counts_are_lower_bounds_of_the_right_size() {
        let c = crate::config::test_configs::cifar10();
        let train = c.activation_bytes(32, true);
        let infer = c.activation_bytes(32, false);
        assert!(train > 10 << 20 && train < (16u64 << 30) / 64, "{train}");
        assert!(infer > 1 << 20 && infer < train / 4, "{infer} vs {train}");
    }

    #[test]
    fn a_batch_beyond_the_machine_is_refused_by_name() {
        let Some(free) = available_memory() else {
            return; // not Linux
        };
        let err = check_fits(free.saturating_mul(2), "a batch of 10^9 images").unwrap_err();
        assert!(
            err.contains("a batch of 10^9 images needs at least"),
            "{err}"
        );
        assert!(check_fits(1 << 20, "a small batch").is_ok());
        // The largest network the flags allow saturates instead of overflowing.
        let mut huge = crate::config::test_configs::cifar10();
        huge.num_heads = 16384;
        assert!(huge.activation_bytes(4096, true) > free);
    }
}
