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
