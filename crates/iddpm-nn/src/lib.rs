//! The networks of Improved DDPM: the UNet (`UNetModel`) and its super-resolution variant,
//! with parameters addressable by the reference's PyTorch names.

#![warn(missing_docs)]

pub mod attention;
pub mod checkpoint;
pub mod conditioning;
pub mod config;
pub mod dropout;
pub mod flops;
pub mod init;
pub mod layers;
pub mod memory;
mod model;
pub mod params;
pub mod resample;
pub mod resblock;
pub mod timestep_embedding;
pub mod unet;

pub use checkpoint::{
    LoadError, Mismatch, apply_state_dict, load_weights, save_weights, state_dict_of,
};
pub use conditioning::ConditioningError;
pub use config::{
    ConfigError, MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_LEVELS, MAX_RES_BLOCKS, ModelFlags, NUM_CLASSES,
    UNetConfig, default_channel_mult,
};
pub use params::{ParamSlot, ParamVisitor, VisitParams, param_count, param_names};
pub use timestep_embedding::timestep_embedding;
pub use unet::{UNetModel, UNetTrace};
