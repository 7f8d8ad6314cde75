//! Inverted dropout with masks keyed by a stream the trainer seeds per microbatch.
//!
//! burn's `Dropout` draws its mask from the device's single generator, one value at a time on
//! one core (about 6 % of a CIFAR-10 training step). Here each call takes the next key of the
//! calling thread's stream, and [`iddpm_kernels::dropout::mask`] makes the mask from the key
//! on all cores. The trainer reseeds the stream from (run seed, step, first example) before
//! each microbatch, so masks depend only on those and on the layer's place in the network: a
//! resumed run, or one split over other processes, draws the same ones. The stream is the
//! thread's own, so two models trained on two threads do not share it.

use std::cell::Cell;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

thread_local! {
    /// This thread's stream: its seed and how many masks it has handed out since.
    static STREAM: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Restarts this thread's mask stream from `seed` (the trainer calls it before every
/// microbatch).
pub fn reseed(seed: u64) {
    STREAM.with(|s| s.set((seed, 0)));
}

/// The key of the next mask.
fn next_key() -> u64 {
    STREAM.with(|s| {
        let (seed, calls) = s.get();
        s.set((seed, calls + 1));
        seed ^ calls.wrapping_mul(0xD1B5_4A32_D192_ED03)
    })
}

/// Inverted dropout: zeroes each value with probability `prob` and scales the rest by
/// `1/(1 − prob)`, on devices that train (autodiff); the identity elsewhere.
#[derive(Module, Debug)]
pub struct KeyedDropout {
    prob: f64,
}

impl KeyedDropout {
    /// Dropout with probability `prob` (checked in `[0, 1)` by the model flags).
    pub fn new(prob: f64) -> Self {
        Self { prob }
    }

    /// `x · mask`, with a fresh mask from the stream.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        if self.prob == 0.0 || !device.is_autodiff() {
            return x;
        }
        let shape = x.shape();
        let values = iddpm_kernels::dropout::mask(next_key(), shape.num_elements(), self.prob);
        let mask = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
        let dtype = x.dtype();
        x * mask.cast(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn ones(device: &Device) -> Tensor<2> {
        Tensor::ones([64, 1024], device)
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    #[test]
    fn training_drops_and_rescales_and_a_reseed_replays_the_masks() {
        let device = Device::flex().autodiff();
        let dropout = KeyedDropout::new(0.25);
        reseed(42);
        let first = values(dropout.forward(ones(&device)));
        let kept = first.iter().filter(|&&v| v != 0.0).count() as f64 / first.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        assert!(
            first
                .iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        // The stream moves on: the next call draws another mask.
        let second = values(dropout.forward(ones(&device)));
        assert_ne!(first, second);
        // Reseeded, it replays both.
        reseed(42);
        assert_eq!(values(dropout.forward(ones(&device))), first);
        assert_eq!(values(dropout.forward(ones(&device))), second);
    }

    #[test]
    fn inference_leaves_the_input_alone() {
        let device = Device::flex();
        let out = values(KeyedDropout::new(0.5).forward(ones(&device)));
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
