//! A time grid uniform in log-SNR (`--timestep_respacing logsnrN`, iddpm's own spelling): the
//! N timesteps whose half log-SNR λ_t = ½·log(ᾱ_t/(1 − ᾱ_t)) lie closest to N equally spaced
//! values from λ at t = 0 down to λ at t = T − 1. DPM-Solver (Lu et al., 2022, §3.3) steps
//! uniformly in λ; on the discrete timesteps a model was trained on, this is the nearest grid
//! (diffusers' `use_lu_lambdas` interpolates between timesteps instead).

/// The N increasing, distinct timesteps of the grid, for the training process's ᾱ.
pub fn logsnr_timesteps(alphas_cumprod: &[f64], n: usize) -> Result<Vec<usize>, String> {
    let t_count = alphas_cumprod.len();
    if n == 0 || n > t_count {
        return Err(format!(
            "a log-SNR grid needs between 1 and {t_count} steps; got {n}"
        ));
    }
    let lambda: Vec<f64> = alphas_cumprod
        .iter()
        .map(|&a| 0.5 * (a.ln() - (1.0 - a).ln()))
        .collect();
    if n == 1 {
        return Ok(vec![0]);
    }
    let (hi, lo) = (lambda[0], lambda[t_count - 1]);
    let mut steps = Vec::with_capacity(n);
    let mut first_free = 0;
    for k in 0..n {
        let target = hi + (lo - hi) * k as f64 / (n - 1) as f64;
        // Increasing and distinct, with room left for the targets after this one.
        let last_allowed = t_count - (n - k);
        let t = (first_free..=last_allowed)
            .min_by(|&a, &b| {
                (lambda[a] - target)
                    .abs()
                    .total_cmp(&(lambda[b] - target).abs())
            })
            .unwrap_or(first_free);
        steps.push(t);
        first_free = t + 1;
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::logsnr_timesteps;
    use crate::schedule::BetaSchedule;

    fn alphas_cumprod(schedule: BetaSchedule, t: usize) -> Vec<f64> {
        let mut acc = 1.0;
        schedule
            .betas(t)
            .unwrap()
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    }

    #[test]
    fn the_grid_spans_the_schedule_in_equal_log_snr_steps() {
        let ac = alphas_cumprod(BetaSchedule::Linear, 1000);
        let steps = logsnr_timesteps(&ac, 10).unwrap();
        assert_eq!(steps.len(), 10);
        assert_eq!((steps[0], steps[9]), (0, 999));
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        // Equal λ steps: the λ differences agree to within one timestep's λ change.
        let lambda = |t: usize| 0.5 * (ac[t] / (1.0 - ac[t])).ln();
        let d: Vec<f64> = steps
            .windows(2)
            .map(|w| lambda(w[0]) - lambda(w[1]))
            .collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!(d.iter().all(|x| (x - mean).abs() < 0.25 * mean), "{d:?}");
        // Unlike time-uniform spacing, the clean end gets more of the steps.
        assert!(steps[1] < 100, "{steps:?}");
    }

    #[test]
    fn every_step_count_up_to_t_gives_distinct_steps() {
        let ac = alphas_cumprod(BetaSchedule::Cosine, 100);
        for n in [1, 2, 5, 50, 99, 100] {
            let steps = logsnr_timesteps(&ac, n).unwrap();
            assert_eq!(steps.len(), n);
            assert!(steps.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(logsnr_timesteps(&ac, 101).is_err());
        assert!(logsnr_timesteps(&ac, 0).is_err());
    }
}
