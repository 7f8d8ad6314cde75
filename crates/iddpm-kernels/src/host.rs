//! Reading tensors back into host memory, the one way every crate does it.

use burn::tensor::Tensor;

/// A float tensor's values as f32, row-major, whatever its dtype (f16 and bf16 are widened).
///
/// # Panics
/// Only when the device cannot read the tensor back at all (a lost GPU): there is nothing a
/// caller could do about that but stop.
pub fn to_f32_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>()
        .unwrap_or_else(|e| panic!("reading a tensor back to the host failed: {e:?}"))
}
