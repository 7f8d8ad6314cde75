//! Training Improved DDPM models, as the reference's `TrainLoop`: AdamW (eps 1e-8), several
//! EMAs, microbatches with gradient accumulation, uniform or loss-second-moment timestep
//! sampling, linear learning-rate annealing, logs, loss curves, preview grids, and
//! checkpoints that resume exactly; data-parallel across processes ([`ProcessGroup`]).

#![warn(missing_docs)]

pub mod adamw;
pub mod distributed;
pub mod ema;
pub mod error;
pub mod logger;
pub mod plot;
pub mod tensorboard;
pub mod trainer;

pub use adamw::AdamW;
pub use distributed::{CommStats, ProcessGroup};
pub use ema::{Ema, EmaWarmup};
pub use error::{Result, TrainError};
pub use logger::Logger;
pub use trainer::{
    LoopSummary, SamplerKind, StepGradients, StepInputs, StepReport, TrainEvent, TrainOptions,
    Trainer, for_each_param, parse_resume_step,
};
