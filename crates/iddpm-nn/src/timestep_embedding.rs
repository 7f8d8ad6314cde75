//! Sinusoidal timestep embedding (as in Transformers' positional encodings).

use burn::tensor::{Tensor, TensorData};

/// Embeds timesteps `[B]` (fractional values allowed) into `[B, dim]`: the first half of the
/// columns are cos(t·f_i), the second half sin(t·f_i), with f_i = exp(−ln(10000)·i/half); an
/// odd `dim` gets a zero last column.
///
/// Computed in f32 in the reference's order (the frequencies are `exp((−ln 10000 · i) / half)`):
/// evaluating in f64 moves a UNet's output by several 1e-6.
pub fn timestep_embedding(timesteps: Tensor<1>, dim: usize) -> Tensor<2> {
    let device = timesteps.device();
    let batch = timesteps.dims()[0];
    let half = dim / 2;
    let neg_log = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| (neg_log * i as f32 / half as f32).exp())
        .collect();
    let freqs: Tensor<2> = Tensor::from_data(TensorData::new(freqs, [1, half]), &device);
    let args = timesteps.reshape([batch, 1]) * freqs;
    let mut parts = vec![args.clone().cos(), args.sin()];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros([batch, 1], &device));
    }
    Tensor::cat(parts, 1)
}
