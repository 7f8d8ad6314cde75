//! Replays the fuzz targets' committed inputs (`fuzz/seeds`, and `fuzz/regressions` where the
//! fuzzers found crashes) through the same entry points, so that CI checks them on stable Rust.

use std::path::{Path, PathBuf};

use iddpm_data::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_is_handled_without_panicking() {
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for file in seeds.iter().chain(&inputs("regressions", target)) {
            let bytes = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
            replayed += 1;
        }
    }
    println!("replayed {replayed} inputs");
}

#[test]
fn the_seeds_are_valid_files_of_their_kind() {
    let seed = |target: &str, name: &str| {
        std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).unwrap()
    };
    let p = Path::new("seed");
    let dict = iddpm_checkpoint::state_dict_from_bytes(&seed("torch_archive", "state_dict.pt"), p)
        .unwrap();
    assert_eq!(dict.get("view").unwrap().values, vec![1.0, 3.0, 2.0, 4.0]);
    let deflated = seed("torch_archive", "state_dict_deflated.pt");
    assert_eq!(
        iddpm_checkpoint::state_dict_from_bytes(&deflated, p).unwrap(),
        dict
    );
    let st = iddpm_checkpoint::read_safetensors(p, &seed("safetensors", "small.safetensors"));
    assert_eq!(st.unwrap().get("b").unwrap().values, vec![0.5, -2.0]);
    for name in ["data_batch.pkl", "records.bin"] {
        let records = iddpm_data::convert::cifar10_records(&seed("cifar", name), p).unwrap();
        assert_eq!(records.len(), 2, "{name}");
    }
    let npz = iddpm_data::npz::read_npz_bytes(&seed("npz", "samples_deflated.npz"), p).unwrap();
    assert_eq!(npz.len(), 2);
    let gz = iddpm_data::idx::parse_idx(&seed("idx", "images.idx.gz"), p).unwrap();
    assert_eq!(gz.dims, vec![2, 2, 3]);
}
