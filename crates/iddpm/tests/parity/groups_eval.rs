//! Evaluation groups of `fid.safetensors` / `fid.json`: the Fréchet distance and
//! precision/recall. (The Inception network tensors of the same file are checked once the
//! network exists; see the evaluation issue.)

use iddpm::eval::{FeatureStats, evaluate, fid, manifold_radii, precision_recall};

use crate::reference::{
    Finish, Group, TensorFile, Tol, assert_no_failures, read_json, reference_dir,
};

#[test]
fn frechet_distance_and_precision_recall() {
    let dir = reference_dir();
    if !dir.join("fid.safetensors").exists() {
        return;
    }
    let f = TensorFile::open(&dir, "fid.safetensors");
    let meta = read_json(&dir, "fid.json");
    let mut group = Group::new("fid (distance, pr)");
    if f.has("fd.features1") {
        let stats = |name: &str| {
            let s = f.shape(name);
            FeatureStats::from_features(f.get(name), s[0], s[1]).expect("two or more rows")
        };
        let (a, b) = (stats("fd.features1"), stats("fd.features2"));
        group.check(
            "fd.mu1",
            a.mu.as_slice(),
            f.get("fd.mu1"),
            Tol::either(1e-12, 1e-14),
        );
        group.check(
            "fd.sigma1",
            a.sigma.as_slice(),
            f.get("fd.sigma1"),
            Tol::either(1e-10, 1e-14),
        );
        group.check(
            "fd.sigma2",
            b.sigma.as_slice(),
            f.get("fd.sigma2"),
            Tol::either(1e-10, 1e-14),
        );
        group.check(
            "fd.value",
            &[fid(&a, &b)],
            f.get("fd.value"),
            Tol::rel(1e-6),
        );
        if let Some(same) = meta
            .pointer("/frechet_distance/value_same_stats")
            .and_then(|v| v.as_f64())
        {
            // The reference gets ≈ −1e-11 from sqrtm round-off; any |value| that small is zero.
            group.check("fd(self)", &[fid(&a, &a)], &[same], Tol::abs(1e-8));
        }
    }
    if f.has("pr.features_ref") {
        let d = f.shape("pr.features_ref")[1];
        let reference = f.f32("pr.features_ref");
        let samples = f.f32("pr.features_sample");
        let r_ref = manifold_radii(&reference, d, 3);
        let r_sample = manifold_radii(&samples, d, 3);
        group.check("pr.radii_ref", &r_ref, f.get("pr.radii_ref"), Tol::exact());
        group.check(
            "pr.radii_sample",
            &r_sample,
            f.get("pr.radii_sample"),
            Tol::exact(),
        );
        let (inside, realism, nearest) = evaluate(&reference, &r_ref, &samples, d);
        let inside: Vec<f64> = inside.iter().map(|&b| b as u8 as f64).collect();
        group.check(
            "pr.evaluate_sample_batch_predictions",
            &inside,
            f.get("pr.evaluate_sample_batch_predictions"),
            Tol::exact(),
        );
        group.check(
            "pr.evaluate_sample_max_realism_score",
            &realism,
            f.get("pr.evaluate_sample_max_realism_score"),
            Tol::rel(1e-6),
        );
        let nearest: Vec<f64> = nearest.iter().map(|&i| i as f64).collect();
        group.check(
            "pr.evaluate_sample_nearest_indices",
            &nearest,
            f.get("pr.evaluate_sample_nearest_indices"),
            Tol::exact(),
        );
        let (p, r) = precision_recall(&reference, &samples, d);
        group.check("pr.precision", &[p], f.get("pr.precision"), Tol::exact());
        group.check("pr.recall", &[r], f.get("pr.recall"), Tol::exact());
    }
    assert_no_failures(group.finish());
}

fn crop12(resized: &[f32], n: usize) -> Vec<f64> {
    let s = iddpm::eval::resize::INCEPTION_SIZE;
    let mut out = Vec::new();
    for plane in 0..n * 3 {
        for y in 0..12 {
            for x in 0..12 {
                out.push(resized[plane * s * s + y * s + x] as f64);
            }
        }
    }
    out
}

fn channel_means(resized: &[f32], n: usize) -> Vec<f64> {
    let s = iddpm::eval::resize::INCEPTION_SIZE;
    resized
        .chunks(s * s)
        .take(n * 3)
        .map(|p| p.iter().map(|&v| v as f64).sum::<f64>() / (s * s) as f64)
        .collect()
}

/// The resizes in front of both Inception networks (the networks themselves come later).
#[test]
fn inception_input_resizes() {
    let dir = reference_dir();
    let mut group = Group::new("inception resizes");
    if dir.join("inception_real.safetensors").exists() {
        let f = TensorFile::open(&dir, "inception_real.safetensors");
        for set in ["fmnist28", "fmnist32", "natural64"] {
            let key = format!("{set}.images");
            if !f.has(&key) {
                continue;
            }
            let shape = f.shape(&key).to_vec();
            let pixels: Vec<u8> = f.get(&key).iter().map(|&v| v as u8).collect();
            let resized = iddpm::eval::resize::tf_resize_299(&pixels, shape[0], shape[1], shape[2]);
            let s = iddpm::eval::resize::INCEPTION_SIZE;
            let tol = Tol::abs(1e-3); // grey levels, README §8
            let full0: Vec<f64> = resized[..3 * s * s].iter().map(|&v| v as f64).collect();
            group.check(
                &format!("{set}.resized_full0"),
                &full0,
                f.get(&format!("{set}.resized_full0")),
                tol,
            );
            group.check(
                &format!("{set}.resized_crop"),
                &crop12(&resized, shape[0]),
                f.get(&format!("{set}.resized_crop")),
                tol,
            );
            group.check(
                &format!("{set}.resized_channel_mean"),
                &channel_means(&resized, shape[0]),
                f.get(&format!("{set}.resized_channel_mean")),
                tol,
            );
        }
    }
    if dir.join("fid.safetensors").exists() {
        let f = TensorFile::open(&dir, "fid.safetensors");
        if f.has("inception.images") {
            let sh = f.shape("inception.images").to_vec();
            let s = iddpm::eval::resize::INCEPTION_SIZE;
            let resized = iddpm::eval::resize::bilinear_resize(
                &f.f32("inception.images"),
                [sh[0], sh[1], sh[2], sh[3]],
                [s, s],
                true,
            );
            group.check(
                "inception.resized_input_crop",
                &crop12(&resized, sh[0]),
                f.get("inception.resized_input_crop"),
                Tol::abs(1e-5),
            );
            group.check(
                "inception.resized_input_channel_mean",
                &channel_means(&resized, sh[0]),
                f.get("inception.resized_input_channel_mean"),
                Tol::abs(1e-5),
            );
        }
    }
    assert_no_failures(group.finish());
}

/// pytorch-fid's FID Inception with the seeded random F16 weights of the reference set.
#[test]
fn pytorch_fid_inception_features() {
    let dir = reference_dir();
    if !dir.join("fid.safetensors").exists() {
        return;
    }
    let Some(weights) = iddpm::reference_check::random_inception_weights(&dir) else {
        // The repository's copy of the vectors leaves this 43.7 MB file out (tests/reference);
        // the real-weights group covers the network. CI supplies it.
        assert!(
            std::env::var("IDDPM_REQUIRE_RANDOM_INCEPTION").is_err(),
            "fid_inception_random_f16.safetensors not found: set IDDPM_RANDOM_INCEPTION"
        );
        println!(
            "parity group inception (random weights): SKIPPED, fid_inception_random_f16.safetensors not found (set IDDPM_RANDOM_INCEPTION)"
        );
        return;
    };
    let f = TensorFile::open(&dir, "fid.safetensors");
    let dict = iddpm::checkpoint::load_state_dict(&weights).unwrap();
    let net =
        iddpm::eval::fid_inception::FidInception::from_state_dict(&dict, &crate::device()).unwrap();
    let sh = f.shape("inception.images").to_vec();
    let feats = net.features(&f.f32("inception.images"), sh[0], sh[2], sh[3]);
    let mut group = Group::new("inception (pytorch-fid)");
    group.check(
        "inception.pool3",
        &feats.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        f.get("inception.pool3"),
        Tol::abs(1e-3),
    );
    assert_no_failures(group.finish());
}

/// Where the real FID weights are: `IDDPM_INCEPTION_WEIGHTS`, or `.cache/default_1.pt` in the
/// workspace (what `.ci/run` downloads).
fn real_inception_weights() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("IDDPM_INCEPTION_WEIGHTS") {
        return Some(p.into());
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/default_1.pt");
    p.exists().then_some(p)
}

/// The standard FID network with the real NVIDIA weights (`inception_real.*`, README §8).
#[test]
fn real_fid_inception_features() {
    let dir = reference_dir();
    if !dir.join("inception_real.safetensors").exists() {
        return;
    }
    let Some(weights) = real_inception_weights() else {
        // Weights are downloaded by .ci/run (where IDDPM_REQUIRE_INCEPTION=1 makes this fatal);
        // tests themselves never download.
        assert!(
            std::env::var("IDDPM_REQUIRE_INCEPTION").is_err(),
            "real Inception weights not found"
        );
        println!(
            "parity group inception (real): SKIPPED, weights not found (run .ci/run or set IDDPM_INCEPTION_WEIGHTS)"
        );
        return;
    };
    let dict = iddpm::eval::nvidia_weights::load_inception_weights(&weights).unwrap();
    let net =
        iddpm::eval::fid_inception::FidInception::from_state_dict(&dict, &crate::device()).unwrap();
    let f = TensorFile::open(&dir, "inception_real.safetensors");
    let mut group = Group::new("inception (real weights)");
    for set in ["fmnist28", "fmnist32", "natural64"] {
        let key = format!("{set}.images");
        if !f.has(&key) {
            continue;
        }
        let sh = f.shape(&key).to_vec();
        let pixels: Vec<u8> = f.get(&key).iter().map(|&v| v as u8).collect();
        let feats = net.features_uint8(&pixels, sh[0], sh[1], sh[2]);
        let feats: Vec<f64> = feats.iter().map(|&v| v as f64).collect();
        group.check(
            &format!("{set}.features"),
            &feats,
            f.get(&format!("{set}.features")),
            Tol::abs(1e-3),
        );
    }
    assert_no_failures(group.finish());
}
