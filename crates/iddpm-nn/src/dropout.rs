//! Inverted dropout with masks keyed by a stream the trainer seeds per microbatch.
//!
//! burn's `Dropout` draws its mask from the device's single generator, one value at a time on
//! one core (about 6 % of a CIFAR-10 training step). Here each call takes the next key of a
//! process-wide stream, and [`iddpm_kernels::dropout::mask`] makes the mask from the key on
//! all cores. The trainer reseeds the stream from (run seed, step, first example) before each
//! microbatch, so masks depend only on those and on the layer's place in the network: a
//! resumed run, or one split over other processes, draws the same ones.

use std::sync::Mutex;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

/// The stream: its seed and how many masks it has handed out since.
static STREAM: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Restarts the mask stream from `seed` (the trainer calls it before every microbatch).
pub fn reseed(seed: u64) {
    *STREAM.lock().unwrap_or_else(|e| e.into_inner()) = (seed, 0);
}

/// The key of the next mask.
fn next_key() -> u64 {
    let mut stream = STREAM.lock().unwrap_or_else(|e| e.into_inner());
    let (seed, calls) = *stream;
    stream.1 += 1;
    seed ^ calls.wrapping_mul(0xD1B5_4A32_D192_ED03)
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
