//! Reading a reference-vector directory (see `shared/reference/README.md`) and comparing
//! tensors with tolerances, reporting per group how much was checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// The directory named by `IDDPM_REFERENCE_DIR`, or `../shared/reference` from the workspace.
pub fn reference_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IDDPM_REFERENCE_DIR") {
        return PathBuf::from(dir);
    }
    // CARGO_MANIFEST_DIR is crates/iddpm; the workspace root is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference")
}

/// A loaded `.safetensors` file, every tensor converted to f64 (all stored dtypes are exact in f64).
pub struct TensorFile {
    pub name: String,
    tensors: HashMap<String, (Vec<usize>, Vec<f64>, Dtype)>,
}

impl TensorFile {
    pub fn open(dir: &Path, file: &str) -> Self {
        let path = dir.join(file);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{} is not a safetensors file: {e}", path.display()));
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::U8 => data.iter().map(|&b| b as f64).collect(),
                other => panic!("{file}: tensor {name} has unsupported dtype {other:?}"),
            };
            tensors.insert(name, (view.shape().to_vec(), values, view.dtype()));
        }
        Self {
            name: file.to_string(),
            tensors,
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn get(&self, name: &str) -> &[f64] {
        &self.entry(name).1
    }

    pub fn shape(&self, name: &str) -> &[usize] {
        &self.entry(name).0
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.get(name).iter().map(|&v| v as f32).collect()
    }

    pub fn usize(&self, name: &str) -> Vec<usize> {
        self.get(name).iter().map(|&v| v as usize).collect()
    }

    fn entry(&self, name: &str) -> &(Vec<usize>, Vec<f64>, Dtype) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: missing tensor {name}", self.name))
    }
}

pub fn read_json(dir: &Path, file: &str) -> serde_json::Value {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: bad JSON: {e}", path.display()))
}

/// How close a value must be: `|got − want| ≤ max(abs, rel·|want|)` (`either`) or
/// `≤ abs + rel·|want|` (`sum`).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
    pub sum: bool,
}

impl Tol {
    pub fn either(rel: f64, abs: f64) -> Self {
        Self {
            abs,
            rel,
            sum: false,
        }
    }
    pub fn sum(rel: f64, abs: f64) -> Self {
        Self {
            abs,
            rel,
            sum: true,
        }
    }
    pub fn abs(abs: f64) -> Self {
        Self {
            abs,
            rel: 0.0,
            sum: false,
        }
    }
    pub fn rel(rel: f64) -> Self {
        Self {
            abs: 0.0,
            rel,
            sum: false,
        }
    }
    pub fn exact() -> Self {
        Self {
            abs: 0.0,
            rel: 0.0,
            sum: false,
        }
    }
    fn allowed(&self, want: f64) -> f64 {
        if self.sum {
            self.abs + self.rel * want.abs()
        } else {
            self.abs.max(self.rel * want.abs())
        }
    }
}

/// Collects the comparisons of one group and reports them.
pub struct Group {
    name: String,
    checked: usize,
    worst_abs: f64,
    worst_abs_at: String,
    failures: Vec<String>,
}

impl Group {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            checked: 0,
            worst_abs: 0.0,
            worst_abs_at: String::new(),
            failures: Vec::new(),
        }
    }

    /// Compares `got` with `want` elementwise; `tol_at(i)` may vary per element.
    pub fn check_with(
        &mut self,
        what: &str,
        got: &[f64],
        want: &[f64],
        tol_at: impl Fn(usize) -> Tol,
    ) {
        if got.len() != want.len() {
            self.failures.push(format!(
                "{what}: {} values computed, {} expected",
                got.len(),
                want.len()
            ));
            return;
        }
        let mut bad = 0usize;
        let mut first_bad = String::new();
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            self.checked += 1;
            if g == w || (g.is_nan() && w.is_nan()) {
                continue;
            }
            let d = (g - w).abs();
            if d.is_finite() && d > self.worst_abs {
                self.worst_abs = d;
                self.worst_abs_at = format!("{what}[{i}]");
            }
            let tol = tol_at(i);
            if d.is_nan() || d > tol.allowed(w) {
                if bad == 0 {
                    first_bad = format!("[{i}] got {g:e}, want {w:e} (diff {d:e}, {tol:?})");
                }
                bad += 1;
            }
        }
        if bad > 0 {
            self.failures.push(format!(
                "{what}: {bad} of {} values out of tolerance; first {first_bad}",
                got.len()
            ));
        }
    }

    pub fn check(&mut self, what: &str, got: &[f64], want: &[f64], tol: Tol) {
        self.check_with(what, got, want, |_| tol);
    }

    pub fn check_usize(&mut self, what: &str, got: &[usize], want: &[usize]) {
        let g: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        let w: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        self.check(what, &g, &w, Tol::exact());
    }

    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Prints the summary line and returns the failures (empty when the group passed).
    pub fn finish(self) -> Vec<String> {
        println!(
            "parity group {:<28} {:>9} values checked, worst abs error {:.3e}{}{}",
            self.name,
            self.checked,
            self.worst_abs,
            if self.worst_abs_at.is_empty() {
                ""
            } else {
                " at "
            },
            self.worst_abs_at,
        );
        self.failures
            .into_iter()
            .map(|f| format!("{}: {f}", self.name))
            .collect()
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
