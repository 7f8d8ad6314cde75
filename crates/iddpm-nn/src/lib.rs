//! The networks of Improved DDPM. So far: the sinusoidal timestep embedding that conditions
//! the UNet on the diffusion step.

pub mod timestep_embedding;

pub use timestep_embedding::timestep_embedding;
