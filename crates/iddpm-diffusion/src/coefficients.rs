//! Every per-timestep constant the diffusion needs, derived once from the betas in f64.

/// Per-timestep constants of a diffusion, all of length `T`, computed in f64 in the same order
/// as the reference so that they agree with it to rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionCoefficients {
    /// β_t.
    pub betas: Vec<f64>,
    /// ᾱ_t = ∏ (1 − β_s), s ≤ t.
    pub alphas_cumprod: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub alphas_cumprod_prev: Vec<f64>,
    /// ᾱ_{t+1}, with ᾱ_T = 0.
    pub alphas_cumprod_next: Vec<f64>,
    /// sqrt(ᾱ_t).
    pub sqrt_alphas_cumprod: Vec<f64>,
    /// sqrt(1 − ᾱ_t).
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    /// log(1 − ᾱ_t).
    pub log_one_minus_alphas_cumprod: Vec<f64>,
    /// sqrt(1 / ᾱ_t).
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    /// sqrt(1 / ᾱ_t − 1).
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    /// Variance of q(x_{t−1} | x_t, x_0); exactly 0 at t = 0.
    pub posterior_variance: Vec<f64>,
    /// log of the posterior variance, entry 0 replaced by entry 1 (log 0 is unusable).
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Coefficient of x_0 in the posterior mean.
    pub posterior_mean_coef1: Vec<f64>,
    /// Coefficient of x_t in the posterior mean.
    pub posterior_mean_coef2: Vec<f64>,
}

impl DiffusionCoefficients {
    /// Derives every constant from `betas` (each in (0, 1]).
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let n = betas.len();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0f64;
        for &b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod.iter().copied().take(n.saturating_sub(1)))
            .collect();
        let alphas_cumprod_next: Vec<f64> = alphas_cumprod
            .iter()
            .copied()
            .skip(1)
            .chain(std::iter::once(0.0))
            .collect();
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
        let ac = &alphas_cumprod;
        let acp = &alphas_cumprod_prev;
        let sqrt_alphas_cumprod = map(&|i| ac[i].sqrt());
        let sqrt_one_minus_alphas_cumprod = map(&|i| (1.0 - ac[i]).sqrt());
        let log_one_minus_alphas_cumprod = map(&|i| (1.0 - ac[i]).ln());
        let sqrt_recip_alphas_cumprod = map(&|i| (1.0 / ac[i]).sqrt());
        let sqrt_recipm1_alphas_cumprod = map(&|i| (1.0 / ac[i] - 1.0).sqrt());
        let posterior_variance = map(&|i| betas[i] * (1.0 - acp[i]) / (1.0 - ac[i]));
        let posterior_log_variance_clipped = map(&|i| {
            let v = if i == 0 && n > 1 {
                posterior_variance[1]
            } else {
                posterior_variance[i]
            };
            v.ln()
        });
        let posterior_mean_coef1 = map(&|i| betas[i] * acp[i].sqrt() / (1.0 - ac[i]));
        let posterior_mean_coef2 =
            map(&|i| (1.0 - acp[i]) * (1.0 - betas[i]).sqrt() / (1.0 - ac[i]));
        Self {
            betas,
            alphas_cumprod,
            alphas_cumprod_prev,
            alphas_cumprod_next,
            sqrt_alphas_cumprod,
            sqrt_one_minus_alphas_cumprod,
            log_one_minus_alphas_cumprod,
            sqrt_recip_alphas_cumprod,
            sqrt_recipm1_alphas_cumprod,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1,
            posterior_mean_coef2,
        }
    }

    /// Number of timesteps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Whether there are no timesteps (never the case for a valid diffusion).
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}
