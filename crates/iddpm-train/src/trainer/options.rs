//! The options of a training run and what each step reports.

use std::path::PathBuf;
use std::str::FromStr;

use iddpm_diffusion::Sampler;

use crate::ema::EmaWarmup;

use crate::error::{Result, TrainError};

/// How training timesteps are drawn (`--schedule_sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Uniformly.
    Uniform,
    /// Importance sampling by the second moment of recent losses (for L_vlb).
    LossSecondMoment,
}

impl FromStr for SamplerKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "loss-second-moment" => Ok(Self::LossSecondMoment),
            other => Err(TrainError::Config(format!(
                "schedule sampler {other:?}: expected uniform or loss-second-moment"
            ))),
        }
    }
}

impl std::fmt::Display for SamplerKind {
    /// The `--schedule_sampler` spelling.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uniform => "uniform",
            Self::LossSecondMoment => "loss-second-moment",
        })
    }
}

/// The training flags of the reference (`image_train.py`) plus iddpm's own.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Decay the learning rate linearly to 0 over this many steps, then stop (0: constant).
    pub lr_anneal_steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Images per forward/backward (0: the whole batch); gradients are accumulated so the
    /// update equals the full batch's.
    pub microbatch: usize,
    /// EMA rates.
    pub ema_rates: Vec<f64>,
    /// diffusers' EMA warm-up (`--ema_warmup True`); `None`: the reference's constant rates.
    pub ema_warmup: Option<EmaWarmup>,
    /// Steps between log dumps.
    pub log_interval: u64,
    /// Steps between checkpoints.
    pub save_interval: u64,
    /// Stop after this many steps in total (resumed steps included).
    pub max_steps: Option<u64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Timestep sampler.
    pub schedule_sampler: SamplerKind,
    /// Where logs, checkpoints and pictures go.
    pub log_dir: PathBuf,
    /// Images in the preview grid written at each save (0: none).
    pub preview_samples: usize,
    /// Sampling steps of the preview (respaced from the training steps).
    pub preview_steps: usize,
    /// The solver of the preview (the reference's trainer has none; iddpm's default is
    /// deterministic DDIM). Ancestral sampling uses the learned variances, and gives cleaner
    /// pictures early in training.
    pub preview_sampler: Sampler,
    /// Super-resolution: the side of the low-resolution input.
    pub small_size: Option<usize>,
    /// Do not print the log table.
    pub quiet: bool,
    /// Mixed precision (`--use_fp16`): the UNet's torso computes in f16, the f32 parameters
    /// are the master weights, and the loss is scaled by 2^lg_loss_scale before the backward
    /// pass (dynamic loss scaling). Meant for CUDA devices; on a CPU f16 is only slower.
    pub use_fp16: bool,
    /// Added to lg_loss_scale after every step without overflow (`--fp16_scale_growth`).
    pub fp16_scale_growth: f64,
    /// lg_loss_scale at the start of a run (the reference's 20).
    pub initial_lg_loss_scale: f64,
    /// Resume from a checkpoint's weights alone (`--resume_weights_only`): the optimizer and
    /// EMAs start afresh, as when fine-tuning a reference `.pt`. Without it a resume needs the
    /// companion files saved with the model, unchanged.
    pub resume_weights_only: bool,
    /// Extra safetensors metadata for every model and EMA file (the CLI puts the model's
    /// settings and iddpm's version here, so that a checkpoint describes itself).
    pub checkpoint_metadata: Vec<(String, String)>,
}

/// The reference's starting log2 loss scale: big enough that small f16 gradients do not
/// underflow, and it falls by one at each overflow.
pub const INITIAL_LG_LOSS_SCALE: f64 = 20.0;

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.0,
            lr_anneal_steps: 0,
            batch_size: 1,
            microbatch: 0,
            ema_rates: vec![0.9999],
            ema_warmup: None,
            log_interval: 10,
            save_interval: 10000,
            max_steps: None,
            seed: 0,
            schedule_sampler: SamplerKind::Uniform,
            log_dir: PathBuf::from("runs"),
            preview_samples: 16,
            preview_steps: 25,
            preview_sampler: Sampler::ddim(0.0),
            small_size: None,
            quiet: false,
            use_fp16: false,
            fp16_scale_growth: 1e-3,
            initial_lg_loss_scale: INITIAL_LG_LOSS_SCALE,
            resume_weights_only: false,
            checkpoint_metadata: Vec::new(),
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Steps completed so far.
    pub step: u64,
    /// Mean (unweighted) loss of the batch.
    pub loss: f64,
    /// Global gradient norm (of the unscaled gradients; 0 for a skipped step).
    pub grad_norm: f64,
    /// Mixed precision only: the gradients overflowed, so the parameters and EMAs were left as
    /// they were and the loss scale was halved.
    pub skipped: bool,
    /// Mixed precision only: log2 of the loss scale for the next step.
    pub lg_loss_scale: Option<f64>,
}
