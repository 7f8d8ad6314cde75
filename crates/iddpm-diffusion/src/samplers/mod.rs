//! The reverse-process solvers a sampling loop can take, one file each, behind one trait.
//!
//! A sampling loop ([`crate::SampleLoop`]) evaluates the network once per step, at every
//! timestep of the (respaced) diffusion from T−1 down to 0, and hands the prediction to a
//! [`ReverseSolver`], which moves x to the next lower timestep (to x_0 after t = 0). A solver
//! may keep state between steps, e.g. the earlier predictions a multistep method uses.
//!
//! Every solver here steps on the same time grid, the timesteps the diffusion keeps
//! (`--timestep_respacing`: `N`, the reference's `space_timesteps`, uniform in t; `ddimN`; or
//! `logsnrN`, uniform in log-SNR), so N steps cost N network evaluations whatever the solver.
//!
//! Adding a solver: one file with a `SamplerEntry`, and its name in [`REGISTRY`].

mod ancestral;
mod ddim;
mod dpm_solver_pp;
mod noise_level;
mod unipc;

use burn::tensor::Tensor;

use crate::error::{DiffusionError, Result};
use crate::gaussian_diffusion::{GaussianDiffusion, PMeanVariance};
use crate::noise::NoiseSource;

pub(crate) use ddim::check_eta;
pub use noise_level::NoiseLevel;

/// What a solver gets at one step.
pub struct SolverInput<'a> {
    /// The diffusion (its coefficients are the respaced ones).
    pub diffusion: &'a GaussianDiffusion,
    /// The current sample x_t, `[B, C, H, W]`.
    pub x: Tensor<4>,
    /// The timestep of every image (the same for all: the loop steps the batch together).
    pub t: &'a [usize],
    /// The network's prediction at (x_t, t): p's mean and variance, and x̂_0 after clipping
    /// or thresholding.
    pub prediction: &'a PMeanVariance,
    /// Where fresh noise comes from (stochastic solvers draw one tensor per step).
    pub noise: &'a mut dyn NoiseSource,
}

impl SolverInput<'_> {
    /// The timestep of this step.
    pub fn timestep(&self) -> usize {
        self.t.first().copied().unwrap_or(0)
    }
}

/// One reverse-process method: takes x_t to the next lower timestep of the grid.
pub trait ReverseSolver {
    /// The sample at the next lower timestep (x_0 after t = 0).
    fn step(&mut self, input: SolverInput<'_>) -> Result<Tensor<4>>;
}

/// A solver as the registry lists it.
pub struct SamplerEntry {
    /// The name `--sampler` takes.
    pub name: &'static str,
    /// One line for `--help` and errors: what it is, its equivalent in diffusers.
    pub about: &'static str,
    /// Builds a fresh solver (its state is empty) for one sampling loop.
    pub build: fn(&Sampler) -> Result<Box<dyn ReverseSolver>>,
}

/// Every solver, by name.
pub static REGISTRY: &[SamplerEntry] = &[
    ancestral::ENTRY,
    ddim::ENTRY,
    dpm_solver_pp::DPMPP_2M,
    dpm_solver_pp::DPMPP_3M,
    dpm_solver_pp::SDE_DPMPP_2M,
    unipc::ENTRY,
];

/// Which solver a sampling loop takes, with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// The solver's name in [`REGISTRY`].
    pub name: &'static str,
    /// Amount of fresh noise for the solvers that take one (DDIM's η, 0 = deterministic).
    pub eta: f64,
}

impl Sampler {
    /// Ancestral sampling from p(x_{t−1} | x_t), the reference's `p_sample_loop`.
    pub const ANCESTRAL: Self = Self {
        name: ancestral::ENTRY.name,
        eta: 0.0,
    };

    /// DDIM with noise level η (the reference's `ddim_sample_loop`).
    pub fn ddim(eta: f64) -> Self {
        Self {
            name: ddim::ENTRY.name,
            eta,
        }
    }

    /// The solver called `name` (see [`REGISTRY`]), with η = 0.
    pub fn named(name: &str) -> Result<Self> {
        Ok(Self {
            name: entry(name)?.name,
            eta: 0.0,
        })
    }

    /// The same solver with noise level `eta`.
    pub fn with_eta(self, eta: f64) -> Self {
        Self { eta, ..self }
    }

    /// A fresh solver for one sampling loop.
    pub fn build(&self) -> Result<Box<dyn ReverseSolver>> {
        (entry(self.name)?.build)(self)
    }
}

/// The registry's entry called `name`.
fn entry(name: &str) -> Result<&'static SamplerEntry> {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| DiffusionError::UnknownSampler {
            name: name.to_string(),
            known: REGISTRY
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl Default for Sampler {
    fn default() -> Self {
        Self::ANCESTRAL
    }
}
