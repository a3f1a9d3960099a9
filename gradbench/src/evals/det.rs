//! det: the determinant of an `ell x ell` matrix by expansion in minors along the first
//! row (cmpad's `det_of_minor`, as GradBench's `det.hpp`: rows and columns are removed by
//! relinking two index lists, without moving data); `gradient` is its gradient with
//! respect to the matrix's entries (the cofactor matrix).
//!
//! Each minor's determinant is one fused dot node: its first row's entries (negated in the
//! odd columns, from a copy of the matrix negated once) against the determinants of its
//! sub-minors. At `ell = 11` that is 29 million nodes and 137 million edges.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::Scalar;

use crate::runs::{Evaluation, Runs, repeat};

use super::{Strategy, expect_len, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    #[serde(rename = "A")]
    a: Vec<f64>,
    ell: usize,
}

/// The matrix (row-major), its negation, and the buffers of the expansion.
struct Minors<'a, T> {
    a: &'a [T],
    neg_a: Vec<T>,
    n: usize,
    /// `r[i]`: the row after row `i` in the current minor (`r[n]` its first row).
    r: Vec<usize>,
    /// The same for columns.
    c: Vec<usize>,
    /// Per minor size `m`, its first row's signed entries and its sub-minors' determinants.
    factors: Vec<(Vec<T>, Vec<T>)>,
}

impl<T: Scalar> Minors<'_, T> {
    /// The determinant of the `m x m` minor that `r` and `c` describe.
    fn det(&mut self, m: usize) -> T {
        let n = self.n;
        let r0 = self.r[n];
        let mut cj = self.c[n];
        if m == 1 {
            return self.a[r0 * n + cj];
        }
        let (mut entries, mut dets) = std::mem::take(&mut self.factors[m]);
        entries.clear();
        dets.clear();
        // Remove the minor's first row from all its sub-minors.
        self.r[n] = self.r[r0];
        // The index in `c` of the column before column j.
        let mut cj1 = n;
        for j in 0..m {
            entries.push(if j % 2 == 0 {
                self.a[r0 * n + cj]
            } else {
                self.neg_a[r0 * n + cj]
            });
            // Remove column j, take the sub-minor's determinant, put the column back.
            self.c[cj1] = self.c[cj];
            dets.push(self.det(m - 1));
            self.c[cj1] = cj;
            cj1 = cj;
            cj = self.c[cj];
        }
        self.r[n] = r0;
        let det = T::dot(&entries, &dets);
        self.factors[m] = (entries, dets);
        det
    }
}

/// The determinant of the row-major `ell x ell` matrix `a`, by expansion in minors.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::det::primal;
/// assert_eq!(primal(&[1.0, 2.0, 3.0, 4.0], 2), -2.0);
/// assert_eq!(primal(&[2.0, 0.0, 1.0, 1.0, 3.0, 2.0, 1.0, 1.0, 2.0], 3), 6.0);
/// ```
pub fn primal<T: Scalar>(a: &[T], ell: usize) -> T {
    let mut minors = Minors {
        a,
        neg_a: a.iter().map(|&x| -x).collect(),
        n: ell,
        r: (1..=ell).chain([0]).collect(),
        c: (1..=ell).chain([0]).collect(),
        factors: (0..=ell)
            .map(|m| (Vec::with_capacity(m), Vec::with_capacity(m)))
            .collect(),
    };
    minors.det(ell)
}

/// Evaluates `primal` or `gradient`.
///
/// # Errors
///
/// An unknown function, or `A` without `ell * ell` entries.
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { a, ell } = parse("det", input)?;
    if ell == 0 {
        return Err("det: ell is 0".into());
    }
    expect_len("det", "A", a.len(), ell * ell)?;
    match function {
        "primal" => {
            let (y, timings) = repeat(runs, || primal(&a, ell));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "gradient" => {
            let (gradient, timings) = super::gradient(strategy, runs, &a, |a| primal(a, ell))?;
            Ok(Evaluation {
                output: json!(gradient),
                timings,
            })
        }
        _ => Err(unknown_function("det", function, &["primal", "gradient"])),
    }
}
