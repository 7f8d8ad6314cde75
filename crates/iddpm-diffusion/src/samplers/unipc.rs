//! UniPC (Zhao et al., 2023, arXiv 2302.04867): a multistep predictor in the data prediction
//! x̂_0, and a corrector that reuses the network evaluation of the next step to refine each
//! step after the fact, so it costs no extra evaluation. Variant B(h) = e^{h} − 1 ("bh2"),
//! order 2, the last step first order.
//!
//! Equivalent diffusers configuration (checked by `crates/iddpm/tests/samplers_vs_diffusers.rs`):
//! `UniPCMultistepScheduler(solver_order=2, solver_type="bh2", predict_x0=True,
//! lower_order_final=True, disable_corrector=[], final_sigmas_type="zero")` on iddpm's
//! respaced timesteps.

use burn::tensor::Tensor;

use super::{NoiseLevel, ReverseSolver, SamplerEntry, SolverInput};
use crate::error::Result;
use crate::tensor_math::weighted_sum;

pub(super) const ENTRY: SamplerEntry = SamplerEntry {
    name: "unipc",
    about: "UniPC (bh2), second order predictor-corrector multistep in log-SNR",
    build: |_| Ok(Box::new(UniPc::new(2))),
};

struct UniPc {
    order: usize,
    /// The x̂_0 of the previous grid points and their levels, oldest first.
    history: Vec<(Tensor<4>, NoiseLevel)>,
    /// The previous step's input and the order its predictor used (for the corrector).
    last: Option<(Tensor<4>, usize)>,
}

impl UniPc {
    fn new(order: usize) -> Self {
        Self {
            order,
            history: Vec::new(),
            last: None,
        }
    }
}

impl ReverseSolver for UniPc {
    fn step(&mut self, input: SolverInput<'_>) -> Result<Tensor<4>> {
        let d = input.diffusion;
        let t = input.timestep();
        let (now, next) = (NoiseLevel::at(d, t), NoiseLevel::after(d, t));
        let m_now = input.prediction.pred_xstart.clone();
        let mut x = input.x;
        if let Some((last_x, order)) = self.last.take() {
            x = self.corrector(&last_x, &m_now, now, order);
        }
        self.history.push((m_now, now));
        if self.history.len() > self.order {
            self.history.remove(0);
        }
        // The last steps use lower orders (t + 1 steps are left), and so do the first ones.
        let order = self.order.min(t + 1).min(self.history.len());
        let sample = self.predictor(&x, next, order);
        self.last = Some((x, order));
        Ok(sample)
    }
}

impl UniPc {
    /// The predictor from the newest history entry (at x) to `target`.
    fn predictor(&self, x: &Tensor<4>, target: NoiseLevel, order: usize) -> Tensor<4> {
        let n = self.history.len();
        let (m0, s0) = (&self.history[n - 1].0, self.history[n - 1].1);
        let h = target.lambda - s0.lambda;
        let (earlier, rks) = self.earlier(n - 1, order, s0.lambda, h);
        let b = Coefficients::new(h, order);
        let rhos: Vec<f64> = match order {
            1 => Vec::new(),
            2 => vec![0.5],
            _ => solve(&b.matrix(&rks, order - 1), &b.b[..order - 1]),
        };
        combine(x, m0, (s0, target), &b, &earlier, &rhos, &rks, None)
    }

    /// The corrector of the previous step: `last_x` → the current point, now that the
    /// network's x̂_0 there (`m_now`) is known.
    fn corrector(
        &self,
        last_x: &Tensor<4>,
        m_now: &Tensor<4>,
        now: NoiseLevel,
        order: usize,
    ) -> Tensor<4> {
        let n = self.history.len();
        let (m0, s0) = (&self.history[n - 1].0, self.history[n - 1].1);
        let h = now.lambda - s0.lambda;
        let (earlier, mut rks) = self.earlier(n - 1, order, s0.lambda, h);
        rks.push(1.0);
        let b = Coefficients::new(h, order);
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve(&b.matrix(&rks, order), &b.b[..order])
        };
        let last_rho = rhos[rhos.len() - 1];
        combine(
            last_x,
            m0,
            (s0, now),
            &b,
            &earlier,
            &rhos[..rhos.len() - 1],
            &rks,
            Some((m_now, last_rho)),
        )
    }

    /// The `order − 1` entries before history entry `newest` (newest first), with their
    /// r_k = (λ_k − λ_s0)/h.
    fn earlier(
        &self,
        newest: usize,
        order: usize,
        lambda_s0: f64,
        h: f64,
    ) -> (Vec<&Tensor<4>>, Vec<f64>) {
        (1..order)
            .map(|i| {
                let (m, level) = &self.history[newest - i];
                (m, (level.lambda - lambda_s0) / h)
            })
            .unzip()
    }
}

/// x_next = (σ_t/σ_s0)·x − α_t·(e^{−h} − 1)·m0 − α_t·B(h)·(Σ ρ_k·(m_k − m0)/r_k
/// [+ ρ_last·(m_t − m0) for the corrector]).
#[allow(clippy::too_many_arguments)]
fn combine(
    x: &Tensor<4>,
    m0: &Tensor<4>,
    (s0, target): (NoiseLevel, NoiseLevel),
    b: &Coefficients,
    earlier: &[&Tensor<4>],
    rhos: &[f64],
    rks: &[f64],
    corrected: Option<(&Tensor<4>, f64)>,
) -> Tensor<4> {
    let scale = target.alpha * b.b_h;
    let mut on_m0 = -target.alpha * b.h_phi_1;
    let mut terms: Vec<(f64, &Tensor<4>)> = vec![(target.sigma / s0.sigma, x)];
    for ((m, rho), rk) in earlier.iter().zip(rhos).zip(rks) {
        let w = -scale * rho / rk;
        terms.push((w, m));
        on_m0 -= w;
    }
    if let Some((m_t, rho)) = corrected {
        terms.push((-scale * rho, m_t));
        on_m0 += scale * rho;
    }
    terms.push((on_m0, m0));
    weighted_sum(&terms)
}

/// h·φ_1(h), B(h) and the right-hand side b of UniPC's order conditions, with ĥ = −h.
struct Coefficients {
    h_phi_1: f64,
    b_h: f64,
    b: Vec<f64>,
}

impl Coefficients {
    fn new(h: f64, order: usize) -> Self {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        Self { h_phi_1, b_h, b }
    }

    /// R_{ij} = r_j^i for the first `size` rows and columns.
    fn matrix(&self, rks: &[f64], size: usize) -> Vec<Vec<f64>> {
        (0..size)
            .map(|i| rks[..size].iter().map(|r| r.powi(i as i32)).collect())
            .collect()
    }
}

/// Solves the small system `a·x = b` (Gaussian elimination with partial pivoting).
fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| row.iter().copied().chain([bi]).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for row in m.iter_mut().skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][n] - s) / m[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::solve;

    #[test]
    fn small_systems_are_solved() {
        let x = solve(&[vec![1.0, 1.0], vec![0.5, 1.0]], &[3.0, 2.0]);
        assert!(
            (x[0] - 2.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12,
            "{x:?}"
        );
    }
}
