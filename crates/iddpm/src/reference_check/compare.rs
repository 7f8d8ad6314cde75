//! Comparing computed values with reference values under a stated tolerance, and collecting
//! what one group of comparisons found.

/// How close a value must be: `|got − want| ≤ max(abs, rel·|want|)`, or `≤ abs + rel·|want|`
/// for [`Tolerance::sum`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The absolute part.
    pub abs: f64,
    /// The part relative to the reference value.
    pub rel: f64,
    /// Whether the two parts add (otherwise the larger one applies).
    pub sum: bool,
}

impl Tolerance {
    /// The larger of `rel·|want|` and `abs`.
    pub fn either(rel: f64, abs: f64) -> Self {
        Self {
            abs,
            rel,
            sum: false,
        }
    }

    /// `abs + rel·|want|`.
    pub fn sum(rel: f64, abs: f64) -> Self {
        Self {
            abs,
            rel,
            sum: true,
        }
    }

    /// `abs` alone.
    pub fn abs(abs: f64) -> Self {
        Self::either(0.0, abs)
    }

    /// `rel·|want|` alone.
    pub fn rel(rel: f64) -> Self {
        Self::either(rel, 0.0)
    }

    /// Equality.
    pub fn exact() -> Self {
        Self::either(0.0, 0.0)
    }

    /// This tolerance made `factor` times looser (a device whose f32 arithmetic associates
    /// differently).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            abs: self.abs * factor,
            rel: self.rel * factor,
            sum: self.sum,
        }
    }

    /// The largest error allowed at the reference value `want`.
    pub fn allowed(&self, want: f64) -> f64 {
        if self.sum {
            self.abs + self.rel * want.abs()
        } else {
            self.abs.max(self.rel * want.abs())
        }
    }
}

/// The comparisons of one group: how many values, the worst error, and every failure.
#[derive(Clone, Debug)]
pub struct CheckGroup {
    /// The group's name.
    pub name: String,
    /// How many values were compared.
    pub checked: usize,
    /// The largest absolute error seen.
    pub worst_abs: f64,
    /// Where it was, `what[index]`.
    pub worst_abs_at: String,
    /// The largest error as a fraction of what its tolerance allowed (≤ 1 passes).
    pub worst_fraction: f64,
    failures: Vec<String>,
}

impl CheckGroup {
    /// An empty group.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            checked: 0,
            worst_abs: 0.0,
            worst_abs_at: String::new(),
            worst_fraction: 0.0,
            failures: Vec::new(),
        }
    }

    /// Compares `got` with `want` elementwise; `tol_at(i)` may vary per element.
    pub fn check_with(
        &mut self,
        what: &str,
        got: &[f64],
        want: &[f64],
        tol_at: impl Fn(usize) -> Tolerance,
    ) {
        if got.len() != want.len() {
            self.fail(format!(
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
            let allowed = tol.allowed(w);
            let fraction = if allowed > 0.0 {
                d / allowed
            } else {
                f64::INFINITY
            };
            if fraction.is_finite() {
                self.worst_fraction = self.worst_fraction.max(fraction);
            }
            if d.is_nan() || d > allowed {
                if bad == 0 {
                    first_bad = format!("[{i}] got {g:e}, want {w:e} (diff {d:e}, {tol:?})");
                }
                bad += 1;
            }
        }
        if bad > 0 {
            self.fail(format!(
                "{what}: {bad} of {} values out of tolerance; first {first_bad}",
                got.len()
            ));
        }
    }

    /// Compares `got` with `want` under one tolerance.
    pub fn check(&mut self, what: &str, got: &[f64], want: &[f64], tol: Tolerance) {
        self.check_with(what, got, want, |_| tol);
    }

    /// Compares indices exactly.
    pub fn check_usize(&mut self, what: &str, got: &[usize], want: &[usize]) {
        let g: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        let w: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        self.check(what, &g, &w, Tolerance::exact());
    }

    /// Records a failure that is not a comparison (a missing tensor, an error).
    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Whether every comparison passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line: values checked and the worst error.
    pub fn summary(&self) -> String {
        let at = if self.worst_abs_at.is_empty() {
            String::new()
        } else {
            format!(" at {}", self.worst_abs_at)
        };
        format!(
            "{:<28} {:>9} values checked, worst abs error {:.3e}{at}",
            self.name, self.checked, self.worst_abs
        )
    }

    /// The failures, each prefixed with the group's name.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|f| format!("{}: {f}", self.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_add_or_take_the_larger_part() {
        assert_eq!(Tolerance::either(0.1, 1.0).allowed(20.0), 2.0);
        assert_eq!(Tolerance::sum(0.1, 1.0).allowed(-20.0), 3.0);
        assert_eq!(Tolerance::abs(1e-4).scaled(10.0).allowed(5.0), 1e-3);
    }

    #[test]
    fn a_group_reports_the_values_out_of_tolerance() {
        let mut g = CheckGroup::new("g");
        g.check(
            "x",
            &[1.0, 2.0, 3.5],
            &[1.0, 2.05, 3.0],
            Tolerance::abs(0.1),
        );
        assert!(!g.passed());
        assert_eq!(g.checked, 3);
        assert_eq!(g.worst_abs, 0.5);
        assert_eq!(g.worst_abs_at, "x[2]");
        assert!((g.worst_fraction - 5.0).abs() < 1e-12);
        assert!(g.failures()[0].starts_with("g: x: 1 of 3 values out of tolerance"));
        let mut ok = CheckGroup::new("ok");
        ok.check("y", &[f64::NAN], &[f64::NAN], Tolerance::exact());
        ok.check("z", &[1.0], &[2.0, 3.0], Tolerance::abs(1.0));
        assert_eq!(ok.failures(), vec!["ok: z: 1 values computed, 2 expected"]);
    }
}
