//! Timestep respacing: sampling with a subset of the training timesteps.
//!
//! A model trained with T steps can be sampled with far fewer by keeping a subset of its
//! timesteps and recomputing betas so that the kept steps have the same ᾱ as before.

use crate::error::{DiffusionError, Result};

/// The sorted original timesteps kept by a respacing specification, as the reference's
/// `space_timesteps`.
///
/// `spec` is either `"ddimN"` (the smallest integer stride giving exactly N steps, as DDIM
/// uses) or comma-separated section counts such as `"10,15,20"`: T is split into that many
/// equal sections (the first `T % sections` one step longer) and each section is strided with a
/// fractional stride, rounded half-to-even as Python's `round`.
pub fn space_timesteps(num_timesteps: usize, spec: &str) -> Result<Vec<usize>> {
    let err = |reason: String| DiffusionError::InvalidRespacing {
        spec: spec.to_string(),
        num_timesteps,
        reason,
    };
    if num_timesteps == 0 {
        return Err(err("the diffusion has no steps".into()));
    }
    let spec_trim = spec.trim();
    if let Some(rest) = spec_trim.strip_prefix("ddim") {
        return ddim_steps(num_timesteps, rest).map_err(err);
    }
    if spec_trim.is_empty() {
        return Err(err(
            "empty specification; give section counts (\"250\", \"10,15,20\") or \"ddimN\"".into(),
        ));
    }
    let counts = spec_trim
        .split(',')
        .map(|part| parse_section_count(part.trim()))
        .collect::<std::result::Result<Vec<usize>, String>>()
        .map_err(err)?;
    section_steps(num_timesteps, &counts).map_err(err)
}

/// `"ddimN"` (`count` is the text after "ddim"): every stride-th step from 0, for the smallest
/// integer stride that gives exactly N steps.
fn ddim_steps(num_timesteps: usize, count: &str) -> std::result::Result<Vec<usize>, String> {
    let desired: usize = count.parse().map_err(|_| {
        format!("{count:?} is not a step count; write \"ddimN\" with N a positive integer")
    })?;
    if desired == 0 {
        return Err("the number of DDIM steps must be at least 1".into());
    }
    // The reference tries strides 1..T-1 only.
    (1..num_timesteps)
        .find(|&stride| num_timesteps.div_ceil(stride) == desired)
        .map(|stride| (0..num_timesteps).step_by(stride).collect())
        .ok_or_else(|| {
            format!(
                "no integer stride gives exactly {desired} steps out of {num_timesteps}; \
                 use a section count such as \"{desired}\" instead"
            )
        })
}

/// One section's step count of a comma-separated specification.
fn parse_section_count(part: &str) -> std::result::Result<usize, String> {
    match part.parse::<usize>() {
        Ok(0) => Err("every section count must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{part:?} is not a step count; expected comma-separated positive integers or \"ddimN\""
        )),
    }
}

/// T split into `counts.len()` equal sections (the first `T % sections` one step longer),
/// section i strided to `counts[i]` steps with a fractional stride.
fn section_steps(
    num_timesteps: usize,
    counts: &[usize],
) -> std::result::Result<Vec<usize>, String> {
    let size_per = num_timesteps / counts.len();
    let extra = num_timesteps % counts.len();
    let mut start = 0usize;
    let mut steps = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(format!(
                "section {i} has {size} steps and cannot be divided into {count}"
            ));
        }
        let frac_stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        // Accumulate by repeated addition, as the reference does: `j * stride` rounds differently.
        let mut cur = 0.0f64;
        for _ in 0..count {
            steps.push(start + cur.round_ties_even() as usize);
            cur += frac_stride;
        }
        start += size;
    }
    steps.sort_unstable();
    steps.dedup();
    Ok(steps)
}

/// The timesteps kept by a `--timestep_respacing` value, where an empty value keeps all of them.
pub fn respacing_timesteps(num_timesteps: usize, spec: &str) -> Result<Vec<usize>> {
    if spec.trim().is_empty() {
        if num_timesteps == 0 {
            return Err(DiffusionError::InvalidStepCount(0));
        }
        Ok((0..num_timesteps).collect())
    } else {
        space_timesteps(num_timesteps, spec)
    }
}

/// Betas of the respaced process over `use_timesteps` (sorted, within range), so that each kept
/// timestep keeps its ᾱ: `β_i = 1 − ᾱ_i / ᾱ_prev` over the kept steps.
pub fn respaced_betas(base_alphas_cumprod: &[f64], use_timesteps: &[usize]) -> Vec<f64> {
    let mut last = 1.0f64;
    let mut betas = Vec::with_capacity(use_timesteps.len());
    let mut keep = use_timesteps.iter().copied().peekable();
    for (i, &ac) in base_alphas_cumprod.iter().enumerate() {
        if keep.peek() == Some(&i) {
            keep.next();
            betas.push(1.0 - ac / last);
            last = ac;
        }
    }
    betas
}
