//! The parity suite's view of a reference-vector directory (see `tests/reference/README.md`):
//! the library's reader and comparisons (`iddpm::reference_check`), failing the test on a
//! missing file or tensor, and printing each group's report.

use std::path::{Path, PathBuf};

use iddpm::reference_check::{CheckGroup, VectorFile};

pub use iddpm::reference_check::Tolerance as Tol;

/// One group of comparisons.
pub type Group = CheckGroup;

/// The directory named by `IDDPM_REFERENCE_DIR`, or the repository's `tests/reference`.
pub fn reference_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IDDPM_REFERENCE_DIR") {
        return PathBuf::from(dir);
    }
    // CARGO_MANIFEST_DIR is crates/iddpm; the workspace root is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference")
}

/// A loaded `.safetensors` file of reference vectors; a missing tensor fails the test.
pub struct TensorFile(VectorFile);

impl TensorFile {
    pub fn open(dir: &Path, file: &str) -> Self {
        Self(VectorFile::open(dir, file).unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.has(name)
    }

    pub fn get(&self, name: &str) -> &[f64] {
        self.0.get(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn shape(&self, name: &str) -> &[usize] {
        self.0.shape(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.0.f32(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn usize(&self, name: &str) -> Vec<usize> {
        self.0.usize(name).unwrap_or_else(|e| panic!("{e}"))
    }
}

pub fn read_json(dir: &Path, file: &str) -> serde_json::Value {
    iddpm::reference_check::read_json(dir, file).unwrap_or_else(|e| panic!("{e}"))
}

/// Ends a group: prints its report line and hands back its failures.
pub trait Finish {
    fn finish(self) -> Vec<String>;
}

impl Finish for Group {
    fn finish(self) -> Vec<String> {
        println!(
            "parity group {}; worst error {:.3} of its tolerance",
            self.summary(),
            self.worst_fraction
        );
        self.failures()
    }
}

/// Fails the test with every collected failure, or does nothing.
pub fn assert_no_failures(failures: Vec<String>) {
    if !failures.is_empty() {
        panic!(
            "{} parity failure(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
}

pub fn json_usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("JSON array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}
