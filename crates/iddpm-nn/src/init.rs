//! Where a network's initial weights come from.
//!
//! burn's random generators are process-wide: seeding one cannot make a network's initial
//! weights reproducible while another thread draws from it (two trainers in one process, or
//! tests running in parallel). A seeded construction ([`with_seed`]) therefore draws from its
//! own generator, owned by the constructing thread, on the host, which also gives the same
//! weights on every device. Unseeded construction keeps using the device's generator.

use std::cell::RefCell;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal, Uniform};

thread_local! {
    /// The generator of the seeded construction running on this thread, if any.
    static SEEDED: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Restores the thread's previous generator when a seeded construction ends, even by a panic.
struct Restore(Option<ChaCha8Rng>);

impl Drop for Restore {
    fn drop(&mut self) {
        SEEDED.set(self.0.take());
    }
}

/// Runs `build` with every initial weight it creates on this thread drawn, in creation order,
/// from a generator seeded with `seed`.
pub fn with_seed<R>(seed: u64, build: impl FnOnce() -> R) -> R {
    let _restore = Restore(SEEDED.replace(Some(ChaCha8Rng::seed_from_u64(seed))));
    build()
}

/// A tensor of `shape` with values from `distribution`: from the seeded generator inside
/// [`with_seed`], from the device's generator outside it.
pub(crate) fn random<const D: usize>(
    shape: [usize; D],
    distribution: Distribution,
    device: &Device,
) -> Tensor<D> {
    SEEDED.with_borrow_mut(|seeded| match seeded {
        Some(rng) => {
            let values = draw(rng, shape.iter().product(), distribution);
            Tensor::from_data(TensorData::new(values, shape), device)
        }
        None => Tensor::random(shape, distribution, device),
    })
}

/// `n` values of `distribution` (uniform or normal, the two the UNet uses).
fn draw(rng: &mut ChaCha8Rng, n: usize, distribution: Distribution) -> Vec<f32> {
    match distribution {
        Distribution::Uniform(low, high) => {
            let uniform = Uniform::new(low, high).expect("an initialisation bound is positive");
            (0..n).map(|_| uniform.sample(rng) as f32).collect()
        }
        Distribution::Normal(mean, std) => {
            let normal = Normal::new(mean, std).expect("a finite standard deviation");
            (0..n).map(|_| normal.sample(rng) as f32).collect()
        }
        other => unreachable!("the UNet initialises with no {other:?}"),
    }
}
