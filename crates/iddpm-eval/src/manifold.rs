//! Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds, as
//! guided-diffusion's evaluator computes them: squared Euclidean distances, the radius of a
//! point is its k-th smallest distance counting itself (k = 3), a point lies in a manifold if
//! it is within the radius of at least one of its points. Distances are computed in blocks so
//! that 50,000 × 10,000 features fit in memory.

/// Rows per block of the distance matrix.
const BLOCK: usize = 1024;

/// Squared distances between `rows` (r × d) and `cols` (c × d): `max(|u|² − 2u·v + |v|², 0)`.
fn distances(rows: &[f32], cols: &[f32], d: usize) -> Vec<f64> {
    let r = rows.len() / d;
    let c = cols.len() / d;
    let norm = |v: &[f32]| {
        v.chunks(d)
            .map(|x| x.iter().map(|&a| a as f64 * a as f64).sum::<f64>())
            .collect::<Vec<_>>()
    };
    let (nr, nc) = (norm(rows), norm(cols));
    let mut out = vec![0f64; r * c];
    for i in 0..r {
        let u = &rows[i * d..(i + 1) * d];
        for j in 0..c {
            let v = &cols[j * d..(j + 1) * d];
            let dot: f64 = u.iter().zip(v).map(|(&a, &b)| a as f64 * b as f64).sum();
            out[i * c + j] = (nr[i] - 2.0 * dot + nc[j]).max(0.0);
        }
    }
    out
}

/// The k-NN radius of every point of `features` (n × d): its k-th smallest squared distance,
/// 0-based over the sorted row that includes its own zero distance.
pub fn manifold_radii(features: &[f32], d: usize, k: usize) -> Vec<f64> {
    let n = features.len() / d;
    let mut radii = Vec::with_capacity(n);
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let block = distances(&features[start * d..end * d], features, d);
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
    for start in (0..m).step_by(BLOCK) {
        let end = (start + BLOCK).min(m);
        let block = distances(&eval[start * d..end * d], features, d);
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
