//! DPM-Solver++ (Lu et al., 2022, arXiv 2211.01095): multistep solvers of the diffusion ODE in
//! the data prediction x̂_0, with step h = λ_next − λ_now in half log-SNR, and its stochastic
//! variant (SDE-DPM-Solver++). Orders 2 and 3 use the x̂_0 of the previous grid points
//! ("2M", "3M"); the first steps and the last ones fall back to lower orders.
//!
//! Equivalent diffusers configuration (checked by `crates/iddpm/tests/samplers_vs_diffusers.rs`):
//! `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++" | "sde-dpmsolver++",
//! solver_order=2 | 3, solver_type="midpoint", lower_order_final=True, euler_at_final=False,
//! final_sigmas_type="zero", thresholding=False)` with `set_timesteps(timesteps=...)` given
//! iddpm's respaced timesteps (`--clip_denoised True` is `thresholding=True,
//! sample_max_value=1.0`; `--dynamic_threshold` sets `dynamic_thresholding_ratio`).

use burn::tensor::Tensor;

use super::{NoiseLevel, ReverseSolver, SamplerEntry, SolverInput};
use crate::error::Result;
use crate::tensor_math::weighted_sum;

pub(super) const DPMPP_2M: SamplerEntry = SamplerEntry {
    name: "dpm++2m",
    about: "DPM-Solver++(2M), deterministic, second order multistep in log-SNR",
    build: |_| Ok(Box::new(DpmSolverPp::new(2, false))),
};

pub(super) const DPMPP_3M: SamplerEntry = SamplerEntry {
    name: "dpm++3m",
    about: "DPM-Solver++(3M), deterministic, third order multistep in log-SNR",
    build: |_| Ok(Box::new(DpmSolverPp::new(3, false))),
};

pub(super) const SDE_DPMPP_2M: SamplerEntry = SamplerEntry {
    name: "sde-dpm++2m",
    about: "SDE-DPM-Solver++(2M), stochastic, second order multistep in log-SNR",
    build: |_| Ok(Box::new(DpmSolverPp::new(2, true))),
};

/// diffusers lowers the order of the second-to-last step too, for runs shorter than this.
const SHORT_RUN: usize = 15;

struct DpmSolverPp {
    order: usize,
    stochastic: bool,
    /// The x̂_0 of the previous grid points and their levels, oldest first.
    history: Vec<(Tensor<4>, NoiseLevel)>,
}

impl DpmSolverPp {
    fn new(order: usize, stochastic: bool) -> Self {
        Self {
            order,
            stochastic,
            history: Vec::new(),
        }
    }

    /// The order of this step: lower while the history is short, first order for the last
    /// step (it lands on σ = 0), second order for the one before in runs of < 15 steps.
    fn order_now(&self, t: usize, steps: usize) -> usize {
        let earlier = self.history.len();
        if self.order == 1 || earlier < 1 || t == 0 {
            1
        } else if self.order == 2 || earlier < 2 || (t == 1 && steps < SHORT_RUN) {
            2
        } else {
            3
        }
    }
}

impl ReverseSolver for DpmSolverPp {
    fn step(&mut self, input: SolverInput<'_>) -> Result<Tensor<4>> {
        let d = input.diffusion;
        let t = input.timestep();
        let (now, next) = (NoiseLevel::at(d, t), NoiseLevel::after(d, t));
        let m0 = input.prediction.pred_xstart.clone();
        let x = input.x;
        // The stochastic solver draws its noise at every step, the last one included.
        let z = if self.stochastic {
            Some(input.noise.sample(x.dims(), &x.device())?)
        } else {
            None
        };
        let h = next.lambda - now.lambda;
        let (ca, cd) = if self.stochastic {
            sde_coefficients(now, next, h)
        } else {
            ode_coefficients(now, next, h)
        };
        let order = self.order_now(t, d.num_timesteps());
        let mut terms: Vec<(f64, &Tensor<4>)> = vec![(ca, &x)];
        let earlier: Vec<(&Tensor<4>, f64)> = self
            .history
            .iter()
            .rev()
            .map(|(m, level)| (m, level.lambda))
            .collect();
        let weights = differences(order, h, now.lambda, &earlier, cd, self.stochastic, next);
        terms.push((weights[0], &m0));
        for (w, (m, _)) in weights[1..].iter().zip(&earlier) {
            terms.push((*w, m));
        }
        if let Some(z) = &z {
            let e2 = (-2.0 * h).exp();
            terms.push((next.sigma * (1.0 - e2).max(0.0).sqrt(), z));
        }
        let sample = weighted_sum(&terms);
        self.history.push((m0, now));
        if self.history.len() >= self.order {
            self.history.remove(0);
        }
        Ok(sample)
    }
}

/// The coefficients of x_t and of x̂_0 in the first-order ODE step:
/// x_next = (σ_next/σ_now)·x_t + α_next·(1 − e^{−h})·x̂_0.
fn ode_coefficients(now: NoiseLevel, next: NoiseLevel, h: f64) -> (f64, f64) {
    (next.sigma / now.sigma, -next.alpha * (-h).exp_m1())
}

/// The same for the SDE step: x_next = (σ_next/σ_now)e^{−h}·x_t + α_next(1 − e^{−2h})·x̂_0
/// + σ_next√(1 − e^{−2h})·z.
fn sde_coefficients(now: NoiseLevel, next: NoiseLevel, h: f64) -> (f64, f64) {
    (
        next.sigma / now.sigma * (-h).exp(),
        -next.alpha * (-2.0 * h).exp_m1(),
    )
}

/// The weights of x̂_0 now and of the earlier x̂_0 (newest first) in a step of `order`, given
/// the first-order weight `cd` of x̂_0: the multistep corrections D1 (and D2) expanded into the
/// predictions they are differences of.
fn differences(
    order: usize,
    h: f64,
    lambda_now: f64,
    earlier: &[(&Tensor<4>, f64)],
    cd: f64,
    stochastic: bool,
    next: NoiseLevel,
) -> Vec<f64> {
    match order {
        1 => vec![cd],
        2 => {
            // D1 = (m0 − m1)/r0, r0 = h_0/h; midpoint: weight cd/2 on D1.
            let r0 = (lambda_now - earlier[0].1) / h;
            let c1 = 0.5 * cd / r0;
            vec![cd + c1, -c1]
        }
        _ => {
            let (l1, l2) = (earlier[0].1, earlier[1].1);
            let (r0, r1) = ((lambda_now - l1) / h, (l1 - l2) / h);
            let (c1, c2) = third_order_weights(h, next.alpha, stochastic);
            // D1 = (1 + k)·D1_0 − k·D1_1, D2 = (D1_0 − D1_1)/(r0 + r1), k = r0/(r0 + r1),
            // with D1_0 = (m0 − m1)/r0 and D1_1 = (m1 − m2)/r1.
            let k = r0 / (r0 + r1);
            let on_d10 = c1 * (1.0 + k) + c2 / (r0 + r1);
            let on_d11 = -c1 * k - c2 / (r0 + r1);
            vec![cd + on_d10 / r0, -on_d10 / r0 + on_d11 / r1, -on_d11 / r1]
        }
    }
}

/// The weights of D1 and D2 in the third-order step.
fn third_order_weights(h: f64, alpha: f64, stochastic: bool) -> (f64, f64) {
    if stochastic {
        let e2m1 = (-2.0 * h).exp_m1();
        (
            alpha * (-e2m1 / (-2.0 * h) + 1.0),
            alpha * ((-e2m1 - 2.0 * h) / (2.0 * h).powi(2) - 0.5),
        )
    } else {
        let em1 = (-h).exp_m1();
        (
            alpha * (em1 / h + 1.0),
            -alpha * ((em1 + h) / (h * h) - 0.5),
        )
    }
}
