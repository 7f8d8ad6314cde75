//! sFID's spatial features (`mixed_6/conv`, first 7 channels at 17×17) against PyTorch running
//! the FID Inception TorchScript file layer by layer (`bench/make_spatial_fixture.py`), on three
//! formula-made 299×299 images. Needs the real weights (`default_1.pt`), as the parity suite's
//! real-Inception group does.

use std::path::{Path, PathBuf};

use iddpm::eval::fid_inception::{FidInception, SPATIAL_FEATURES};
use iddpm::reference_check::{CheckGroup, Tolerance, VectorFile};

const SIZE: usize = 299;

/// The fixture's images, uint8 NHWC: triangle waves (the same formula as the script).
fn images(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * SIZE * SIZE * 3);
    for i in 0..count {
        for y in 0..SIZE {
            for x in 0..SIZE {
                for c in 0..3 {
                    let u = (x * (i + 1) + 2 * y + 50 * c + 37 * i) % 256;
                    out.push((2 * u.abs_diff(128)).min(255) as u8);
                }
            }
        }
    }
    out
}

fn weights() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("IDDPM_INCEPTION_WEIGHTS") {
        return Some(p.into());
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/default_1.pt");
    p.exists().then_some(p)
}

#[test]
fn spatial_features_match_the_torchscript_network() {
    let Some(weights) = weights() else {
        assert!(
            std::env::var("IDDPM_REQUIRE_INCEPTION").is_err(),
            "real Inception weights not found"
        );
        println!("SKIPPED: FID weights not found (run .ci/run or set IDDPM_INCEPTION_WEIGHTS)");
        return;
    };
    let dict = iddpm::eval::nvidia_weights::load_inception_weights(&weights).unwrap();
    let net = FidInception::from_state_dict(&dict, &iddpm::default_device()).unwrap();
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let want = VectorFile::open(dir, "spatial_features.safetensors").unwrap();
    let (pool, spatial) = net.features_and_spatial_uint8(&images(3), 3, SIZE, SIZE);
    assert_eq!(spatial.len(), 3 * SPATIAL_FEATURES);
    let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    let mut group = CheckGroup::new("sFID features");
    // The parity suite's tolerance for the pool features of the real network (1e-3 absolute
    // on values up to ~6); the spatial features sit 11 layers deep, of size up to ~4.5.
    group.check(
        "spatial",
        &f64s(&spatial),
        want.get("spatial").unwrap(),
        Tolerance::abs(1e-3),
    );
    group.check(
        "pool",
        &f64s(&pool),
        want.get("pool").unwrap(),
        Tolerance::abs(1e-3),
    );
    println!(
        "{}, worst {:.3} of the tolerance",
        group.summary(),
        group.worst_fraction
    );
    assert!(group.passed(), "{:?}", group.failures());
}

/// The Inception Score through the network's logits layer, on seeded random weights (the
/// parity suite's random pytorch-fid network plus a seeded 1008 × 2048 logits layer), against
/// a direct f64 computation of pool3 · Wᵀ, the softmax and exp(mean KL).
#[test]
fn the_inception_score_of_a_logits_layer_matches_a_direct_computation() {
    use rand::{Rng, SeedableRng};
    let dir = std::env::var("IDDPM_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference"));
    let Some(file) = iddpm::reference_check::random_inception_weights(&dir) else {
        assert!(
            std::env::var("IDDPM_REQUIRE_RANDOM_INCEPTION").is_err(),
            "fid_inception_random_f16.safetensors not found: set IDDPM_RANDOM_INCEPTION"
        );
        println!(
            "SKIPPED: fid_inception_random_f16.safetensors not found (IDDPM_RANDOM_INCEPTION)"
        );
        return;
    };
    let mut dict = iddpm::checkpoint::load_state_dict(&file).unwrap();
    let (classes, d) = (1008, 2048);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let w: Vec<f32> = (0..classes * d)
        .map(|_| rng.random_range(-0.05..0.05))
        .collect();
    dict.insert(
        iddpm::eval::nvidia_weights::LOGITS_WEIGHT,
        vec![classes, d],
        w.clone(),
    );
    let net = FidInception::from_state_dict(&dict, &iddpm::default_device()).unwrap();
    let n = 3;
    let (pool, _) = net.features_and_spatial_uint8(&images(n), n, SIZE, SIZE);
    let (logits, k) = net.logits(&pool, n).unwrap();
    assert_eq!(k, classes);
    // Each logit with Σ|p_j w_j|: an f32 sum of d products is within d·2⁻²⁴·Σ|p_j w_j| of
    // the exact one (the worst case of recursive summation; blocked sums do better).
    let (direct, bound): (Vec<f64>, Vec<f64>) = (0..n)
        .flat_map(|i| {
            let (pool, w) = (&pool, &w);
            (0..classes).map(move |c| {
                let products = (0..d).map(|j| f64::from(pool[i * d + j]) * f64::from(w[c * d + j]));
                let (sum, abs) = products.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                (sum, abs * d as f64 * f64::from(f32::EPSILON) / 2.0)
            })
        })
        .unzip();
    let mut group = CheckGroup::new("logits");
    let got: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    group.check_with("logits", &got, &direct, |i| Tolerance::abs(bound[i]));
    println!(
        "{}, worst {:.3} of the bound",
        group.summary(),
        group.worst_fraction
    );
    assert!(group.passed(), "{:?}", group.failures());
    let probs: Vec<Vec<f64>> = direct
        .chunks(classes)
        .map(|row| {
            let e: Vec<f64> = row.iter().map(|v| v.exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        })
        .collect();
    let marginal: Vec<f64> = (0..classes)
        .map(|c| probs.iter().map(|p| p[c]).sum::<f64>() / n as f64)
        .collect();
    let kl: f64 = probs
        .iter()
        .map(|p| {
            (0..classes)
                .map(|c| p[c] * (p[c] / marginal[c]).ln())
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    let want = kl.exp();
    let score = iddpm::eval::inception_score(&logits, n, classes, 5000);
    println!("Inception Score of 3 images on random weights: {score:.6} (direct {want:.6})");
    assert!((score - want).abs() < 1e-5 * want, "{score} vs {want}");
    assert!(
        score > 1.0 + 1e-6,
        "three different images carry some information: {score}"
    );
}
