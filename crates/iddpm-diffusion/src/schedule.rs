//! Beta schedules: how much noise each forward step adds.
//!
//! Both schedules are computed in f64, exactly as the reference computes them with NumPy, so
//! that respacing and every coefficient derived from them agree to the last bits.

use std::fmt;
use std::str::FromStr;

use crate::error::{DiffusionError, Result};

/// The two named schedules of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// Ho et al.'s linear schedule, scaled so that any step count spans the same range.
    Linear,
    /// The cosine schedule of Improved DDPM (ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)), betas capped at 0.999.
    Cosine,
}

impl FromStr for BetaSchedule {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            other => Err(DiffusionError::UnknownSchedule(other.to_string())),
        }
    }
}

impl fmt::Display for BetaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linear => "linear",
            Self::Cosine => "cosine",
        })
    }
}

impl BetaSchedule {
    /// The betas of this schedule for `num_timesteps` steps.
    pub fn betas(self, num_timesteps: usize) -> Result<Vec<f64>> {
        if num_timesteps == 0 {
            return Err(DiffusionError::InvalidStepCount(num_timesteps));
        }
        match self {
            Self::Linear => linear_betas(num_timesteps),
            Self::Cosine => Ok(betas_for_alpha_bar(
                num_timesteps,
                |t| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                },
                0.999,
            )),
        }
    }
}

/// Betas of a named schedule (`"linear"` or `"cosine"`), as the reference's
/// `get_named_beta_schedule`.
pub fn named_beta_schedule(name: &str, num_timesteps: usize) -> Result<Vec<f64>> {
    name.parse::<BetaSchedule>()?.betas(num_timesteps)
}

/// `np.linspace(scale * 1e-4, scale * 0.02, T)` with `scale = 1000 / T`.
fn linear_betas(num_timesteps: usize) -> Result<Vec<f64>> {
    if num_timesteps < 20 {
        return Err(DiffusionError::LinearScheduleTooShort(num_timesteps));
    }
    let scale = 1000.0 / num_timesteps as f64;
    Ok(linspace(scale * 0.0001, scale * 0.02, num_timesteps))
}

/// NumPy's `linspace` (endpoint included), reproducing its arithmetic: `start + i * step`,
/// with the last element set to `stop` exactly.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let div = (num - 1) as f64;
            let delta = stop - start;
            let step = delta / div;
            let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            out[num - 1] = stop;
            out
        }
    }
}

/// Discretises a continuous ᾱ(t) on [0, 1] into `num_timesteps` betas,
/// `β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), max_beta)`.
pub fn betas_for_alpha_bar(
    num_timesteps: usize,
    alpha_bar: impl Fn(f64) -> f64,
    max_beta: f64,
) -> Vec<f64> {
    (0..num_timesteps)
        .map(|i| {
            let t1 = i as f64 / num_timesteps as f64;
            let t2 = (i + 1) as f64 / num_timesteps as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}
