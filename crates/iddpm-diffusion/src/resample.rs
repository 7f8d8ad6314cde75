//! Schedule samplers: which timesteps a training batch uses, and the importance weights that
//! keep the loss unbiased.

use rand::Rng;

/// Draws training timesteps from a distribution over `0..T` that may adapt to the losses seen.
pub trait ScheduleSampler {
    /// Unnormalised probability of each timestep.
    fn weights(&self) -> Vec<f64>;

    /// The current distribution, to draw from many times.
    fn distribution(&self) -> TimestepDistribution {
        TimestepDistribution::new(&self.weights())
    }

    /// Draws `batch_size` timesteps and their importance weights `1 / (T · p_t)`, so that the
    /// weighted loss is an unbiased estimate of the uniform-timestep loss.
    fn sample(&self, batch_size: usize, rng: &mut dyn rand::RngCore) -> (Vec<usize>, Vec<f32>) {
        let d = self.distribution();
        (0..batch_size).map(|_| d.draw(rng)).unzip()
    }

    /// Feeds back the per-example losses of a batch (no-op for fixed samplers).
    fn update_with_all_losses(&mut self, _ts: &[usize], _losses: &[f64]) {}
}

/// A distribution over timesteps, prepared once (probabilities and their running sums) so that
/// drawing costs a binary search.
#[derive(Debug, Clone)]
pub struct TimestepDistribution {
    p: Vec<f64>,
    cdf: Vec<f64>,
}

impl TimestepDistribution {
    /// From unnormalised weights (at least one, summing to more than 0).
    pub fn new(weights: &[f64]) -> Self {
        let total: f64 = weights.iter().sum();
        let p: Vec<f64> = weights.iter().map(|x| x / total).collect();
        let mut cdf = Vec::with_capacity(p.len());
        let mut acc = 0.0;
        for &pi in &p {
            acc += pi;
            cdf.push(acc);
        }
        Self { p, cdf }
    }

    /// One timestep and its importance weight `1 / (T · p_t)`.
    pub fn draw(&self, rng: &mut dyn rand::RngCore) -> (usize, f32) {
        let n = self.p.len();
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let u: f64 = rng.random::<f64>() * total;
        let idx = self.cdf.partition_point(|&c| c <= u).min(n - 1);
        (idx, (1.0 / (n as f64 * self.p[idx])) as f32)
    }
}

/// Every timestep equally likely.
#[derive(Debug, Clone)]
pub struct UniformSampler {
    num_timesteps: usize,
}

impl UniformSampler {
    /// Uniform over `0..num_timesteps`.
    pub fn new(num_timesteps: usize) -> Self {
        Self { num_timesteps }
    }
}

impl ScheduleSampler for UniformSampler {
    fn weights(&self) -> Vec<f64> {
        vec![1.0; self.num_timesteps]
    }
}

/// Importance sampling for L_vlb (Improved DDPM §3.3): p_t ∝ sqrt(E(L_t²)) over the last
/// `history_per_term` losses of each timestep, mixed with a little uniform probability; uniform
/// until every timestep has a full history.
#[derive(Debug, Clone, PartialEq)]
pub struct LossSecondMomentResampler {
    history_per_term: usize,
    uniform_prob: f64,
    /// `[T][history_per_term]`, oldest first once full.
    loss_history: Vec<Vec<f64>>,
    loss_counts: Vec<usize>,
}

impl LossSecondMomentResampler {
    /// The reference's defaults: 10 losses per timestep, uniform probability 0.001.
    pub fn new(num_timesteps: usize) -> Self {
        Self::with_params(num_timesteps, 10, 0.001)
    }

    /// A resampler with explicit history length and uniform mixing.
    pub fn with_params(num_timesteps: usize, history_per_term: usize, uniform_prob: f64) -> Self {
        Self {
            history_per_term,
            uniform_prob,
            loss_history: vec![vec![0.0; history_per_term]; num_timesteps],
            loss_counts: vec![0; num_timesteps],
        }
    }

    /// Whether every timestep has a full history.
    pub fn warmed_up(&self) -> bool {
        self.loss_counts.iter().all(|&c| c == self.history_per_term)
    }

    /// The stored losses, `[T][history_per_term]`.
    pub fn loss_history(&self) -> &[Vec<f64>] {
        &self.loss_history
    }

    /// How many losses each timestep has stored.
    pub fn loss_counts(&self) -> &[usize] {
        &self.loss_counts
    }

    /// Restores a saved state (for resuming training). Returns `false` and changes nothing if
    /// the shapes do not fit this sampler.
    pub fn restore(&mut self, loss_history: Vec<Vec<f64>>, loss_counts: Vec<usize>) -> bool {
        let fits = loss_history.len() == self.loss_counts.len()
            && loss_counts.len() == self.loss_counts.len()
            && loss_history
                .iter()
                .all(|h| h.len() == self.history_per_term)
            && loss_counts.iter().all(|&c| c <= self.history_per_term);
        if fits {
            self.loss_history = loss_history;
            self.loss_counts = loss_counts;
        }
        fits
    }
}

impl ScheduleSampler for LossSecondMomentResampler {
    fn weights(&self) -> Vec<f64> {
        let n = self.loss_counts.len();
        if !self.warmed_up() {
            return vec![1.0; n];
        }
        let mut w: Vec<f64> = self
            .loss_history
            .iter()
            .map(|h| {
                let squares: Vec<f64> = h.iter().map(|x| x * x).collect();
                (numpy_sum(&squares) / squares.len() as f64).sqrt()
            })
            .collect();
        let total = numpy_sum(&w);
        for x in &mut w {
            *x /= total;
            *x *= 1.0 - self.uniform_prob;
            *x += self.uniform_prob / n as f64;
        }
        w
    }

    fn update_with_all_losses(&mut self, ts: &[usize], losses: &[f64]) {
        for (&t, &loss) in ts.iter().zip(losses) {
            let Some(count) = self.loss_counts.get_mut(t) else {
                continue;
            };
            let history = &mut self.loss_history[t];
            if *count == self.history_per_term {
                history.rotate_left(1);
                history[self.history_per_term - 1] = loss;
            } else {
                history[*count] = loss;
                *count += 1;
            }
        }
    }
}

/// NumPy's pairwise summation of a contiguous f64 array (`np.sum`), so that weights agree with
/// the reference to the last bit.
pub fn numpy_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}
