//! Where the Gaussian noise of samplers and of the likelihood loop comes from.
//!
//! Every random draw goes through a [`NoiseSource`], so a run can be replayed exactly from
//! noise recorded elsewhere (for instance by the reference implementation), while normal use
//! draws from a seeded, portable RNG.

use std::collections::VecDeque;

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{DiffusionError, Result};

/// A stream of standard-normal tensors.
pub trait NoiseSource {
    /// The next standard-normal tensor of the given shape.
    fn sample(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor<4>>;
}

/// Standard-normal noise from a seeded ChaCha8 generator: the same seed gives the same noise
/// on every platform and device.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: ChaCha8Rng,
}

impl SeededNoise {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The underlying generator (to save or restore its position).
    pub fn rng_mut(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// `n` standard-normal f32 values.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect()
    }
}

impl NoiseSource for SeededNoise {
    fn sample(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor<4>> {
        let values = self.normal_vec(shape.iter().product());
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }
}

/// Replays previously recorded noise tensors in order; an error once they run out or when a
/// recorded tensor does not have the requested shape.
#[derive(Debug, Clone, Default)]
pub struct RecordedNoise {
    queue: VecDeque<Tensor<4>>,
    served: usize,
}

impl RecordedNoise {
    /// Replays `tensors` front to back.
    pub fn new(tensors: impl IntoIterator<Item = Tensor<4>>) -> Self {
        Self {
            queue: tensors.into_iter().collect(),
            served: 0,
        }
    }

    /// How many recorded tensors have not been used yet.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for RecordedNoise {
    fn sample(&mut self, shape: [usize; 4], device: &Device) -> Result<Tensor<4>> {
        let next = self.queue.pop_front().ok_or_else(|| {
            DiffusionError::Noise(format!(
                "recorded noise exhausted after {} draws",
                self.served
            ))
        })?;
        if next.dims() != shape {
            return Err(DiffusionError::Noise(format!(
                "recorded noise draw {} has shape {:?}, but {:?} was requested",
                self.served,
                next.dims(),
                shape
            )));
        }
        self.served += 1;
        Ok(next.to_device(device))
    }
}

/// The golden-ratio increment of splitmix64: multiplying a counter by it spreads consecutive
/// values over all 64 bits.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function (Steele, Lea and Flood, 2014): a bijective mix of 64 bits, so
/// that seeds derived from nearby counters are unrelated.
pub fn splitmix64_mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
