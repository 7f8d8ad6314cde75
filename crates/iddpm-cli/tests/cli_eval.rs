//! `iddpm eval` end to end with the real FID weights, and its errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use iddpm::io::{NpyArray, NpyData, write_npz};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("iddpm-cli-eval-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn weights() -> Option<PathBuf> {
    std::env::var("IDDPM_INCEPTION_WEIGHTS")
        .ok()
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/default_1.pt");
            p.exists().then_some(p)
        })
}

/// The weights, or `None` after saying SKIPPED (an error when IDDPM_REQUIRE_INCEPTION is set).
fn weights_or_skip() -> Option<PathBuf> {
    let w = weights();
    if w.is_none() {
        assert!(
            std::env::var("IDDPM_REQUIRE_INCEPTION").is_err(),
            "real Inception weights not found"
        );
        println!("SKIPPED: FID weights not found (run .ci/run or set IDDPM_INCEPTION_WEIGHTS)");
    }
    w
}

fn iddpm(args: &[&str]) -> (bool, String) {
    iddpm_with_home(args, None)
}

/// Runs the CLI with `HOME` (where reference statistics are cached) set to `home`, or to a
/// scratch folder, so that tests never fill the user's cache.
fn iddpm_with_home(args: &[&str], home: Option<&Path>) -> (bool, String) {
    let scratch = std::env::temp_dir().join(format!("iddpm-cli-eval-{}-home", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iddpm"));
    cmd.env("HOME", home.unwrap_or(&scratch));
    let o = cmd.args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn npz(path: &Path, shape: Vec<usize>, data: NpyData) {
    write_npz(path, &[("arr_0", &NpyArray { shape, data })]).unwrap();
}

/// Stripes and checkerboards: two clearly different sets of 3 images of 16×16.
fn sets(dir: &Path) -> (PathBuf, PathBuf) {
    let stripes: Vec<u8> = (0..3 * 16 * 16 * 3)
        .map(|i| {
            if (i / 3 / 2) % 2 == 0 {
                255
            } else {
                (i % 7 * 30) as u8
            }
        })
        .collect();
    let checks: Vec<u8> = (0..3 * 16 * 16 * 3)
        .map(|i| {
            let p = i / 3;
            if (p % 16 / 4 + p / 16 / 4) % 2 == 0 {
                0
            } else {
                200 + (i % 5) as u8
            }
        })
        .collect();
    let (a, b) = (dir.join("a.npz"), dir.join("b.npz"));
    npz(&a, vec![3, 16, 16, 3], NpyData::U8(stripes));
    npz(&b, vec![3, 16, 16, 3], NpyData::U8(checks));
    (a, b)
}

/// Runs `iddpm eval` and returns the JSON it wrote and its FID.
fn eval_json(weights: &Path, reference: &Path, samples: &Path, out: &Path) -> (String, f64) {
    eval_json_with_home(weights, reference, samples, out, None)
}

fn eval_json_with_home(
    weights: &Path,
    reference: &Path,
    samples: &Path,
    out: &Path,
    home: Option<&Path>,
) -> (String, f64) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "eval".to_string(),
        "--ref_batch".into(),
        s(reference),
        "--sample_batch".into(),
        s(samples),
        "--inception_path".into(),
        s(weights),
        "--output".into(),
        s(out),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = iddpm_with_home(&refs, home);
    assert!(ok, "{text}");
    let json = std::fs::read_to_string(out).unwrap();
    let line = json.lines().find(|l| l.contains("\"fid\"")).unwrap();
    let fid = line
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap();
    (json, fid)
}

#[test]
fn fid_precision_recall_between_two_sets() {
    let Some(w) = weights_or_skip() else {
        return;
    };
    let dir = tmp("ok");
    let (a, b) = sets(&dir);
    let out = dir.join("r.json");
    let (json, fid) = eval_json(&w, &a, &b, &out);
    assert!(fid > 1.0, "different sets must be far apart: {json}");
    assert!(
        json.contains("\"precision\"") && json.contains("\"recall\""),
        "{json}"
    );
    let sfid = |json: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert!(v["inception_score"].is_null(), "{json}");
        v["sfid"].as_f64().unwrap()
    };
    assert!(
        sfid(&json) > 1.0,
        "different sets differ in sFID too: {json}"
    );
    // A set against itself: FID ≈ 0, sFID ≈ 0, precision = recall = 1.
    let (json, fid) = eval_json(&w, &a, &a, &out);
    assert!(fid.abs() < 1e-2, "{json}");
    assert!(sfid(&json).abs() < 1e-2, "{json}");
    assert!(
        json.contains("\"precision\": 1") && json.contains("\"recall\": 1"),
        "{json}"
    );
}

#[test]
fn the_fid_bootstrap_reports_a_spread_without_moving_the_fid() {
    let Some(w) = weights_or_skip() else {
        return;
    };
    let dir = tmp("bootstrap");
    let (a, b) = sets(&dir);
    let plain_out = dir.join("plain.json");
    let (plain, fid) = eval_json(&w, &a, &b, &plain_out);
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert!(plain["fid_std"].is_null(), "{plain}");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = dir.join("boot.json");
    let (ok, text) = iddpm(&[
        "eval",
        "--ref_batch",
        &s(&a),
        "--sample_batch",
        &s(&b),
        "--inception_path",
        &s(&w),
        "--fid_bootstrap",
        "8",
        "--output",
        &s(&out),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("bootstrap s.d."), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!((json["fid"].as_f64().unwrap() - fid).abs() < 1e-9, "{json}");
    assert_eq!(json["fid_bootstrap"], 8, "{json}");
    let sd = json["fid_std"].as_f64().unwrap();
    assert!(sd.is_finite() && sd > 0.0, "{json}");
}

fn cached_files(home: &Path) -> Vec<PathBuf> {
    let dir = home.join(".cache/iddpm/ref-stats");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Reference statistics are cached and reused, and a reference given as statistics only
/// (`mu`, `sigma`) gives the same FID, with precision and recall reported as unavailable.
#[test]
fn reference_statistics_are_cached_and_can_be_given_alone() {
    let Some(w) = weights_or_skip() else {
        return;
    };
    let dir = tmp("cache");
    let home = dir.join("home");
    let (a, b) = sets(&dir);
    let out = dir.join("r.json");
    let (_, fid_ab) = eval_json_with_home(&w, &a, &b, &out, Some(&home));
    let first = cached_files(&home);
    assert_eq!(
        first.len(),
        1,
        "one cache entry for the reference a: {first:?}"
    );
    // b as the reference adds b's entry.
    let (_, fid_ba) = eval_json_with_home(&w, &b, &a, &out, Some(&home));
    assert!(
        (fid_ab - fid_ba).abs() < 1e-3 * fid_ab,
        "FID is symmetric: {fid_ab} {fid_ba}"
    );
    let both = cached_files(&home);
    assert_eq!(both.len(), 2);
    let b_entry = both.iter().find(|p| !first.contains(p)).unwrap().clone();

    // Statistics only: the same FID, no precision/recall.
    let cached = iddpm::io::read_npz(&first[0]).unwrap();
    let get = |k: &str| cached.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let stats_only = dir.join("a_stats.npz");
    write_npz(&stats_only, &[("mu", &get("mu")), ("sigma", &get("sigma"))]).unwrap();
    let (json, fid) = eval_json_with_home(&w, &stats_only, &b, &out, Some(&home));
    assert!(
        (fid - fid_ab).abs() < 1e-6 * fid_ab.max(1.0),
        "{fid} vs {fid_ab}"
    );
    assert!(json.contains("\"precision\": null"), "{json}");
    assert!(
        json.contains("\"sfid\": null"),
        "no mu_s/sigma_s given: {json}"
    );
    // With the spatial statistics too (as guided-diffusion's reference batches), the sFID.
    let with_spatial = dir.join("a_stats_spatial.npz");
    let arrays = ["mu", "sigma", "mu_s", "sigma_s"].map(|k| (k, get(k)));
    let refs: Vec<(&str, &iddpm::io::NpyArray)> = arrays.iter().map(|(k, a)| (*k, a)).collect();
    write_npz(&with_spatial, &refs).unwrap();
    let (json, _) = eval_json_with_home(&w, &with_spatial, &b, &out, Some(&home));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let (full, _) = eval_json_with_home(&w, &a, &b, &out, Some(&home));
    let full: serde_json::Value = serde_json::from_str(&full).unwrap();
    assert_eq!(v["sfid"], full["sfid"], "{json}");
    assert_eq!(
        cached_files(&home).len(),
        2,
        "statistics files are not cached"
    );

    // The cache is really read: with b's statistics filed under a, a looks exactly like b.
    std::fs::copy(&b_entry, &first[0]).unwrap();
    let (json, fid) = eval_json_with_home(&w, &a, &b, &out, Some(&home));
    assert!(
        fid.abs() < 1e-2,
        "a's cached statistics were not used: {json}"
    );
}

#[test]
fn bad_batches_are_clear_errors() {
    let dir = tmp("bad");
    let (a, _) = sets(&dir);
    let check = |sample: &PathBuf, needle: &str| {
        let (ok, text) = iddpm(&[
            "eval",
            "--ref_batch",
            a.to_str().unwrap(),
            "--sample_batch",
            sample.to_str().unwrap(),
            "--inception_path",
            "/nonexistent.pt",
        ]);
        assert!(
            !ok && text.contains(needle) && !text.contains("panicked"),
            "{needle}: {text}"
        );
    };
    let floats = dir.join("floats.npz");
    npz(&floats, vec![2, 4, 4, 3], NpyData::F32(vec![0.5; 96]));
    check(&floats, "expected uint8");
    let one = dir.join("one.npz");
    npz(&one, vec![1, 4, 4, 3], NpyData::U8(vec![1; 48]));
    check(&one, "at least 2");
    let other = dir.join("other.npz");
    write_npz(
        &other,
        &[(
            "images",
            &NpyArray {
                shape: vec![2, 4, 4, 3],
                data: NpyData::U8(vec![1; 96]),
            },
        )],
    )
    .unwrap();
    check(&other, "no array named arr_0");
    // Statistics of the wrong size as the reference: an error naming them (before the weights
    // are looked for), not a panic.
    let tiny_stats = dir.join("tiny_stats.npz");
    let stats = |shape: Vec<usize>| NpyArray {
        data: NpyData::F64(vec![0.0; shape.iter().product()]),
        shape,
    };
    write_npz(
        &tiny_stats,
        &[("mu", &stats(vec![3])), ("sigma", &stats(vec![3, 3]))],
    )
    .unwrap();
    let (ok, text) = iddpm(&[
        "eval",
        "--ref_batch",
        tiny_stats.to_str().unwrap(),
        "--sample_batch",
        a.to_str().unwrap(),
        "--inception_path",
        "/nonexistent.pt",
    ]);
    assert!(
        !ok && text.contains("tiny_stats.npz")
            && text.contains("[2048]")
            && !text.contains("panicked"),
        "{text}"
    );
    // Valid batches but no weights: the error says where to get them.
    let (ok, text) = iddpm(&[
        "eval",
        "--ref_batch",
        a.to_str().unwrap(),
        "--sample_batch",
        a.to_str().unwrap(),
        "--inception_path",
        "/nonexistent.pt",
    ]);
    assert!(!ok && text.contains("/nonexistent.pt"), "{text}");
}
