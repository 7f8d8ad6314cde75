//! The Inception Score (Salimans et al., 2016) as guided-diffusion's evaluator computes it:
//! the softmax of the 1008-way logits of pool3 (no bias), then for each split of 5,000
//! images exp(mean over the split of KL(p(y|x) ‖ p(y))), averaged over the splits (10 splits
//! for the usual 50,000 samples; one for fewer than 5,000).

/// Images per split (guided-diffusion's `split_size`).
pub const SPLIT_SIZE: usize = 5000;

/// The score of `n` rows of `classes` logits (row-major), `split_size` rows per split.
pub fn inception_score(logits: &[f32], n: usize, classes: usize, split_size: usize) -> f64 {
    let probs: Vec<Vec<f64>> = logits.chunks(classes).take(n).map(softmax).collect();
    let scores: Vec<f64> = probs
        .chunks(split_size.max(1))
        .map(|part| {
            let marginal: Vec<f64> = (0..classes)
                .map(|k| part.iter().map(|p| p[k]).sum::<f64>() / part.len() as f64)
                .collect();
            let mean_kl = part
                .iter()
                .map(|p| {
                    p.iter()
                        .zip(&marginal)
                        .filter(|(pk, _)| **pk > 0.0)
                        .map(|(pk, mk)| pk * (pk.ln() - mk.ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / part.len() as f64;
            mean_kl.exp()
        })
        .collect();
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

#[cfg(test)]
mod tests {
    use super::inception_score;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn confident_distinct_classes_score_the_class_count() {
        // One-hot predictions over 4 equally used classes: KL = log 4 for every image.
        let mut logits = vec![0f32; 8 * 4];
        for i in 0..8 {
            logits[i * 4 + i % 4] = 100.0;
        }
        assert!((inception_score(&logits, 8, 4, 5000) - 4.0).abs() < 1e-9);
        // The same prediction for every image: no information, score 1.
        let same = [1.0f32, 2.0, 3.0, 4.0].repeat(8);
        assert!((inception_score(&same, 8, 4, 5000) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn seeded_logits_match_a_direct_computation_split_by_split() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (n, k, split) = (25, 7, 10);
        let logits: Vec<f32> = (0..n * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        // Splits of 10, 10 and 5 rows, each scored on its own marginal, then averaged.
        let mut scores = Vec::new();
        for rows in [0..10, 10..20, 20..25] {
            let p: Vec<Vec<f64>> = rows
                .clone()
                .map(|i| {
                    let e: Vec<f64> = (0..k).map(|j| f64::from(logits[i * k + j]).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.into_iter().map(|v| v / s).collect()
                })
                .collect();
            let m: Vec<f64> = (0..k)
                .map(|j| p.iter().map(|r| r[j]).sum::<f64>() / p.len() as f64)
                .collect();
            let kl: f64 = p
                .iter()
                .map(|r| (0..k).map(|j| r[j] * (r[j] / m[j]).ln()).sum::<f64>())
                .sum::<f64>()
                / p.len() as f64;
            scores.push(kl.exp());
        }
        let want = scores.iter().sum::<f64>() / 3.0;
        let got = inception_score(&logits, n, k, split);
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
    }
}
