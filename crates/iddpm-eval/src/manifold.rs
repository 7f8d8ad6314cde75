//! Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds, as
//! guided-diffusion's evaluator computes them: squared Euclidean distances, the radius of a
//! point is its k-th smallest distance counting itself (k = 3), a point lies in a manifold if
//! it is within the radius of at least one of its points. Distances are computed in blocks so
//! that 50,000 × 10,000 features fit in memory.

use nalgebra::DMatrix;

/// Rows per block of the distance matrix.
const BLOCK: usize = 1024;

/// Squared norms of the `d`-dimensional rows of `features`, summed in f64.
fn squared_norms(features: &[f32], d: usize) -> Vec<f64> {
    features
        .chunks(d)
        .map(|x| x.iter().map(|&a| a as f64 * a as f64).sum::<f64>())
        .collect()
}

/// Points on the column side of distance blocks, converted once: their features as a c × d
/// f64 matrix, so that each block's dot products are one matrix product.
struct Points {
    matrix: DMatrix<f64>,
    norms: Vec<f64>,
}

impl Points {
    fn new(features: &[f32], d: usize) -> Self {
        let c = features.len() / d;
        // Converted in place: no f64 copy of all features besides the matrix itself.
        Self {
            matrix: DMatrix::from_fn(c, d, |i, j| features[i * d + j] as f64),
            norms: squared_norms(features, d),
        }
    }
}

/// Squared distances between `rows` (r × d) and `cols` (c points), row-major r × c:
/// `max(|u|² − 2u·v + |v|², 0)`. The dot products are one f64 matrix product (threaded by
/// matrixmultiply), which is what makes 10,000 × 10,000 reference radii take seconds.
fn distances(rows: &[f32], cols: &Points, d: usize) -> Vec<f64> {
    let r = rows.len() / d;
    let c = cols.norms.len();
    // d × r, one column per row point: the f32 rows laid out column-major as they are.
    let rhs = DMatrix::from_vec(d, r, rows.iter().map(|&v| v as f64).collect());
    // c × r column-major, which is r × c row-major: out[i * c + j] = u_i · v_j.
    let mut out: Vec<f64> = (&cols.matrix * rhs).data.into();
    let row_norms = squared_norms(rows, d);
    for (row, nr) in out.chunks_mut(c).zip(&row_norms) {
        for (dist, nc) in row.iter_mut().zip(&cols.norms) {
            *dist = (nr - 2.0 * *dist + nc).max(0.0);
        }
    }
    out
}

/// The same distances pair by pair, as a plain loop: the baseline that tests and the
/// `manifold_speed` example compare [`distances`] with.
#[doc(hidden)]
pub fn distances_pairwise(rows: &[f32], cols: &[f32], d: usize) -> Vec<f64> {
    let (nr, nc) = (squared_norms(rows, d), squared_norms(cols, d));
    let mut out = Vec::with_capacity(nr.len() * nc.len());
    for (u, nu) in rows.chunks(d).zip(&nr) {
        for (v, nv) in cols.chunks(d).zip(&nc) {
            let dot: f64 = u.iter().zip(v).map(|(&a, &b)| a as f64 * b as f64).sum();
            out.push((nu - 2.0 * dot + nv).max(0.0));
        }
    }
    out
}

/// [`distances`] for callers outside this module (the `manifold_speed` example).
#[doc(hidden)]
pub fn distances_blocked(rows: &[f32], cols: &[f32], d: usize) -> Vec<f64> {
    distances(rows, &Points::new(cols, d), d)
}

/// The k-NN radius of every point of `features` (n × d): its k-th smallest squared distance,
/// 0-based over the sorted row that includes its own zero distance.
pub fn manifold_radii(features: &[f32], d: usize, k: usize) -> Vec<f64> {
    let n = features.len() / d;
    let points = Points::new(features, d);
    let mut radii = Vec::with_capacity(n);
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let block = distances(&features[start * d..end * d], &points, d);
        for row in block.chunks(n) {
            let mut row = row.to_vec();
            let k = k.min(n - 1);
            row.select_nth_unstable_by(k, |a, b| a.partial_cmp(b).unwrap());
            radii.push(row[k]);
        }
    }
    radii
}

/// For each point of `eval` (m × d): whether it lies inside the manifold of `features` with
/// `radii`, its realism score `max_i radius_i / (d²_i + 1e-5)`, and its nearest feature.
pub fn evaluate(
    features: &[f32],
    radii: &[f64],
    eval: &[f32],
    d: usize,
) -> (Vec<bool>, Vec<f64>, Vec<usize>) {
    let n = features.len() / d;
    let m = eval.len() / d;
    let (mut inside, mut realism, mut nearest) = (
        Vec::with_capacity(m),
        Vec::with_capacity(m),
        Vec::with_capacity(m),
    );
    let points = Points::new(features, d);
    for start in (0..m).step_by(BLOCK) {
        let end = (start + BLOCK).min(m);
        let block = distances(&eval[start * d..end * d], &points, d);
        for row in block.chunks(n) {
            inside.push(row.iter().zip(radii).any(|(dist, r)| dist <= r));
            realism.push(
                row.iter()
                    .zip(radii)
                    .map(|(dist, r)| r / (dist + 1e-5))
                    .fold(f64::NEG_INFINITY, f64::max),
            );
            let (best, _) = row
                .iter()
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |(bi, bd), (i, &v)| if v < bd { (i, v) } else { (bi, bd) },
                );
            nearest.push(best);
        }
    }
    (inside, realism, nearest)
}

/// Precision (fraction of samples inside the reference manifold) and recall (fraction of
/// references inside the sample manifold), with k = 3.
pub fn precision_recall(reference: &[f32], samples: &[f32], d: usize) -> (f64, f64) {
    let k = 3;
    let ref_radii = manifold_radii(reference, d, k);
    let sample_radii = manifold_radii(samples, d, k);
    let (in_ref, _, _) = evaluate(reference, &ref_radii, samples, d);
    let (in_sample, _, _) = evaluate(samples, &sample_radii, reference, d);
    let frac = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64;
    (frac(&in_ref), frac(&in_sample))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Non-negative features like Inception's, with a spread of norms.
    fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * d).map(|_| rng.random_range(0.0..2.0f32)).collect()
    }

    #[test]
    fn distances_from_the_matrix_product_equal_the_pairwise_ones() {
        let d = 300;
        // 1,100 rows: a full block and a partial one.
        let (rows, cols) = (features(1100, d, 1), features(70, d, 2));
        let fast = distances_blocked(&rows, &cols, d);
        let slow = distances_pairwise(&rows, &cols, d);
        assert_eq!(fast.len(), slow.len());
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() <= 1e-9 * s.max(1.0), "{f} vs {s}");
        }
        // A point's distance to itself clamps at zero rather than going negative.
        let own = distances_blocked(&rows[..d], &rows[..d], d);
        assert_eq!(own, [0.0]);
    }
}
