//! Second and higher derivatives: Hessians, Hessian-vector products, Jacobians (of
//! recorded outputs, and of a [`Function`] in forward or reverse mode), and a second-order
//! gradient checker. Built on the engine's public API (and `check`'s report types);
//! releases what it records.
//!
//! The second derivatives are built on [`Var::grad`], the differentiable backward: it
//! records the reverse sweep's own arithmetic on the graph, so a gradient is a `Var` that
//! can be differentiated again, by the same derivative rules (`op.rs`) as the first
//! gradient. [`jvp`] and [`jacobian_of`] take a [`Function`] written once over
//! [`Scalar`](crate::Scalar) and evaluate it with [`Dual`](crate::Dual) numbers (forward
//! mode), or record it (reverse mode) where that takes fewer passes.
//!
//! | entry point | what it returns | cost |
//! |---|---|---|
//! | [`Var::grad`] | `dy/dx_i` as `Var`s (differentiable again) | one recorded reverse sweep |
//! | [`hvp`] | `H v` for a direction `v` | one recorded sweep + one plain sweep |
//! | [`hessian`] | the `n x n` matrix `d2y / dx_i dx_j` | one recorded sweep + `n` plain sweeps |
//! | [`jacobian`] | the `m x n` matrix `dy_i / dx_j` | `m` plain sweeps |
//! | [`jvp`] | `f(x)` and `J v` for a [`Function`] | one forward pass with dual numbers |
//! | [`jacobian_of`] | the Jacobian of a [`Function`], forward or reverse by its shape | `min(m, n / 8)` passes, or so |
//! | [`gradgradcheck`] | the tape's Hessian beside central differences of the gradient | a Hessian + `2n` gradients |
//! | [`hvpcheck`] | the tape's `H v` beside a central difference of the gradient along `v` | an HVP + 2 gradients |
//!
//! # Memory: what these helpers leave on the graph
//!
//! [`hessian`] and [`hvp`] take a [`Mark`](crate::Mark) when they start, record the
//! gradient graph after it, read the numbers they return, and then
//! [release](crate::Graph::release) the graph to that mark: the tape is exactly as long
//! afterwards as before, so calling them in a loop (Newton's method) runs in constant
//! memory. This is safe because every node after the mark was recorded by the helper
//! itself; the caller's `Var`s, all recorded before the mark, stay valid. [`jacobian`]
//! records nothing. [`Var::grad`] alone does not release: its results are `Var`s the caller
//! goes on using; release them with a mark of your own when done.
//!
//! # Examples
//!
//! ```
//! use tapegrad::{Graph, higher};
//!
//! let g = Graph::new();
//! let (x, y) = (g.var(1.0), g.var(2.0));
//! let f = x * x * y + y.exp();
//! // f_xx = 2y, f_xy = 2x, f_yy = e^y
//! let h = higher::hessian(f, &[x, y]);
//! assert_eq!(h, vec![vec![4.0, 2.0], vec![2.0, 2f64.exp()]]);
//! // H (1, -1) without forming H
//! assert_eq!(higher::hvp(f, &[x, y], &[1.0, -1.0]), vec![2.0, 2.0 - 2f64.exp()]);
//! ```

use std::fmt;

pub use crate::forward::{Function, jacobian_of, jvp};

use crate::check::{Entry, Evaluator, Tolerance};
use crate::engine::Error;
use crate::engine::Gradients;
use crate::engine::Graph;
use crate::engine::{Var, or_panic};

/// The Hessian `H[i][j] = d2 y / dx_i dx_j` of the scalar `y` with respect to `xs`, row by
/// row.
///
/// Records `y`'s gradient with respect to `xs` once ([`Var::grad`]), then runs one plain
/// reverse sweep from each gradient entry: row `i` is the gradient of `dy/dx_i`. The
/// recorded nodes are released before it returns (see the module docs). The result is
/// symmetric up to rounding (the two orders of differentiation round differently). Both
/// sweeps apply the crate's one rule at singular points (see the crate docs), so row `i`
/// equals `grad` of `grad` (`dy/dx_i` differentiated by [`Var::grad`]) to the bit, at
/// every point.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::hessian};
///
/// let g = Graph::new();
/// let (x, y) = (g.var(0.5), g.var(-1.5));
/// let f = x.sin() * y.powi(2);
/// let before = g.len();
/// let h = hessian(f, &[x, y]);
/// // f_xx = -sin(x) y^2, f_xy = 2 y cos(x), f_yy = 2 sin(x)
/// approx::assert_relative_eq!(h[0][0], -0.5f64.sin() * 2.25, max_relative = 1e-15);
/// approx::assert_relative_eq!(h[0][1], -3.0 * 0.5f64.cos(), max_relative = 1e-15);
/// approx::assert_relative_eq!(h[1][1], 2.0 * 0.5f64.sin(), max_relative = 1e-15);
/// assert_eq!(g.len(), before); // nothing left behind
/// ```
///
/// # Panics
///
/// If `y` or an input is released or from another graph (see [`try_hessian`]).
#[track_caller]
pub fn hessian<'g>(y: Var<'g>, xs: &[Var<'g>]) -> Vec<Vec<f64>> {
    or_panic(try_hessian(y, xs))
}

/// [`hessian`], returning an error instead of panicking.
///
/// # Errors
///
/// [`Error::Released`] or [`Error::ForeignHandle`] for `y` or an input; in anomaly mode,
/// [`Error::Anomaly`] if a NaN or infinity appears. Nothing is left recorded.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::try_hessian};
/// let (g, h) = (Graph::new(), Graph::new());
/// let x = g.var(1.0);
/// assert!(try_hessian(x.exp(), &[h.var(1.0)]).is_err());
/// assert_eq!(try_hessian(x.exp(), &[x]), Ok(vec![vec![1f64.exp()]]));
/// ```
#[track_caller]
pub fn try_hessian<'g>(y: Var<'g>, xs: &[Var<'g>]) -> Result<Vec<Vec<f64>>, Error> {
    let graph = y.graph();
    let mark = graph.mark();
    let result = y.try_grad(xs).and_then(|dy| try_jacobian(&dy, xs));
    graph.release(mark);
    result
}

/// The Hessian-vector product `H v = sum_j (d2 y / dx_i dx_j) v_j`, without forming `H`.
///
/// Reverse over reverse: the gradient `g = dy/dxs` is recorded once ([`Var::grad`]), then
/// one plain reverse sweep from `g . v` gives `d(g . v)/dxs = H v`. The cost is a small
/// multiple of one gradient, whatever the number of inputs; the recorded nodes are released
/// before it returns (see the module docs).
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::hvp};
///
/// let g = Graph::new();
/// let xs = g.vars(&[1.0, 2.0, 3.0]);
/// // f = x0 x1 x2: H = [[0, x2, x1], [x2, 0, x0], [x1, x0, 0]]
/// let f = xs[0] * xs[1] * xs[2];
/// assert_eq!(hvp(f, &xs, &[1.0, 0.0, -1.0]), vec![-2.0, 2.0, 2.0]);
/// ```
///
/// # Panics
///
/// If `v` and `xs` differ in length, or `y` or an input is released or from another graph
/// (see [`try_hvp`]).
#[track_caller]
pub fn hvp<'g>(y: Var<'g>, xs: &[Var<'g>], v: &[f64]) -> Vec<f64> {
    or_panic(try_hvp(y, xs, v))
}

/// [`hvp`], returning an error instead of panicking.
///
/// # Errors
///
/// [`Error::BadOperands`] if `v` and `xs` differ in length; [`Error::Released`] or
/// [`Error::ForeignHandle`] for `y` or an input; in anomaly mode, [`Error::Anomaly`] if a
/// NaN or infinity appears. Nothing is left recorded.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::try_hvp};
/// let g = Graph::new();
/// let x = g.var(2.0);
/// assert!(try_hvp(x.powi(3), &[x], &[1.0, 2.0]).is_err());
/// assert_eq!(try_hvp(x.powi(3), &[x], &[0.5]), Ok(vec![6.0])); // 6x * 0.5
/// ```
#[track_caller]
pub fn try_hvp<'g>(y: Var<'g>, xs: &[Var<'g>], v: &[f64]) -> Result<Vec<f64>, Error> {
    if v.len() != xs.len() {
        return Err(Error::BadOperands {
            op: "hvp",
            why: format!(
                "the direction has {} entries for {} inputs; it needs one per input",
                v.len(),
                xs.len()
            ),
        });
    }
    let graph = y.graph();
    let mark = graph.mark();
    let result = hvp_recorded(y, xs, v);
    graph.release(mark);
    result
}

/// [`try_hvp`]'s recording part: `d(g . v)/dxs` with `g = dy/dxs` recorded (and left on
/// the graph for the caller to release).
#[track_caller]
fn hvp_recorded<'g>(y: Var<'g>, xs: &[Var<'g>], v: &[f64]) -> Result<Vec<f64>, Error> {
    let dy = y.try_grad(xs)?;
    let gv = y.graph().try_dot(&dy, v)?;
    let grads = gv.try_backward()?;
    xs.iter().map(|&x| grads.try_wrt(x)).collect()
}

/// The Jacobian `J[i][j] = d ys[i] / d xs[j]` of several outputs, row by row: one plain
/// reverse sweep per output over the already recorded graph (reusing one gradient store).
/// It records nothing.
///
/// With the outputs of [`Var::grad`] as `ys`, it is a Hessian; with a softmax's outputs,
/// the softmax Jacobian `diag(p) - p p^T`.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::jacobian};
///
/// let g = Graph::new();
/// let (r, t) = (g.var(2.0), g.var(0.5));
/// // polar to cartesian: d(x, y)/d(r, t) = [[cos t, -r sin t], [sin t, r cos t]]
/// let j = jacobian(&[r * t.cos(), r * t.sin()], &[r, t]);
/// assert_eq!(j[0], vec![0.5f64.cos(), -2.0 * 0.5f64.sin()]);
/// assert_eq!(j[1], vec![0.5f64.sin(), 2.0 * 0.5f64.cos()]);
/// ```
///
/// # Panics
///
/// If an output or input is released or from another graph (see [`try_jacobian`]).
#[track_caller]
pub fn jacobian<'g>(ys: &[Var<'g>], xs: &[Var<'g>]) -> Vec<Vec<f64>> {
    or_panic(try_jacobian(ys, xs))
}

/// [`jacobian`], returning an error instead of panicking.
///
/// # Errors
///
/// [`Error::Released`] or [`Error::ForeignHandle`] for an output or an input; in anomaly
/// mode, [`Error::Anomaly`] if a NaN or infinity appears.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::try_jacobian};
/// let g = Graph::new();
/// let mark = g.mark();
/// let x = g.var(1.0);
/// let y = x.exp();
/// assert_eq!(try_jacobian(&[y, x], &[x]), Ok(vec![vec![1f64.exp()], vec![1.0]]));
/// g.release(mark);
/// assert!(try_jacobian(&[y], &[x]).is_err());
/// ```
pub fn try_jacobian<'g>(ys: &[Var<'g>], xs: &[Var<'g>]) -> Result<Vec<Vec<f64>>, Error> {
    let mut grads = Gradients::new();
    ys.iter()
        .map(|&y| {
            y.try_backward_into(&mut grads)?;
            xs.iter().map(|&x| grads.try_wrt(x)).collect()
        })
        .collect()
}

/// One second derivative in a [`GradGradReport`]: the tape's value beside the central
/// difference of the tape's first derivative.
///
/// # Examples
///
/// ```
/// use tapegrad::check::Tolerance;
/// use tapegrad::higher::SecondOrderEntry;
///
/// let e = SecondOrderEntry::new(1, Some(0), 2.0, 2.5);
/// assert_eq!((e.abs_err, e.rel_err), (0.5, 0.2));
/// assert!(!e.passes(&Tolerance::default()));
/// assert_eq!(e.to_string(), "H[1][0] (tape 2.000000000000e0, numeric 2.500000000000e0)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SecondOrderEntry {
    /// `i`: the component of the gradient that was differentiated.
    pub row: usize,
    /// `Some(j)`: the input that was stepped (the entry is `H[i][j]`); `None`: the entry
    /// is `(H v)[i]`, the gradient stepped along the direction `v` ([`hvpcheck`]).
    pub col: Option<usize>,
    /// The second derivative the tape computed.
    pub tape: f64,
    /// The central difference of the tape's first derivative.
    pub numeric: f64,
    /// `|tape - numeric|`.
    pub abs_err: f64,
    /// `abs_err / |numeric|` (0 where both are 0, infinite where only `numeric` is).
    pub rel_err: f64,
}

impl SecondOrderEntry {
    /// The comparison of `tape` with `numeric` at `(row, col)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = tapegrad::higher::SecondOrderEntry::new(0, None, 1.0, 1.0);
    /// assert_eq!((e.abs_err, e.rel_err), (0.0, 0.0));
    /// ```
    pub fn new(row: usize, col: Option<usize>, tape: f64, numeric: f64) -> Self {
        // The same error measures as the first-order checker's entries.
        let e = Entry::new(row, tape, numeric);
        SecondOrderEntry {
            row,
            col,
            tape,
            numeric,
            abs_err: e.abs_err,
            rel_err: e.rel_err,
        }
    }

    /// Whether `abs_err <= tol.abs + tol.rel * |numeric|`. A NaN anywhere fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{check::Tolerance, higher::SecondOrderEntry};
    /// assert!(SecondOrderEntry::new(0, Some(0), 1.0, 1.0 + 1e-9).passes(&Tolerance::default()));
    /// assert!(!SecondOrderEntry::new(0, Some(0), f64::NAN, 1.0).passes(&Tolerance::default()));
    /// ```
    pub fn passes(&self, tol: &Tolerance) -> bool {
        self.abs_err <= tol.allowed(self.numeric)
    }

    /// How far the error goes into the allowance (above 1 fails; NaN counts as infinite).
    fn excess(&self, tol: &Tolerance) -> f64 {
        let ratio = self.abs_err / tol.allowed(self.numeric);
        match (ratio.is_nan(), self.abs_err == 0.0) {
            (false, _) => ratio,
            (true, true) => 0.0,
            (true, false) => f64::INFINITY,
        }
    }
}

impl fmt::Display for SecondOrderEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.col {
            Some(j) => write!(f, "H[{}][{j}]", self.row)?,
            None => write!(f, "(H v)[{}]", self.row)?,
        }
        write!(
            f,
            " (tape {:.12e}, numeric {:.12e})",
            self.tape, self.numeric
        )
    }
}

/// What [`gradgradcheck`] or [`hvpcheck`] found.
///
/// # Examples
///
/// ```
/// use tapegrad::{check::Tolerance, higher::gradgradcheck};
///
/// let report = gradgradcheck(|_, x| x[0].exp() * x[1], &[0.5, 2.0], Tolerance::default());
/// assert!(report.passed());
/// assert_eq!(report.entries.len(), 4); // the 2 x 2 Hessian, row by row
/// // d2/dx0 dx1 (e^x0 x1) = e^x0
/// assert_eq!(report.entries[1].tape, 0.5f64.exp());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GradGradReport {
    /// The compared second derivatives: the Hessian row by row ([`gradgradcheck`]), or
    /// `H v` entry by entry ([`hvpcheck`]).
    pub entries: Vec<SecondOrderEntry>,
    /// The tolerance the entries were judged by.
    pub tolerance: Tolerance,
    /// The function's value at the point.
    pub value: f64,
    /// The largest `|H[i][j] - H[j][i]|` of the tape's Hessian (0 for [`hvpcheck`], which
    /// does not form it). Differentiating in the two orders rounds differently, so a few
    /// ulps are normal; more points at a wrong rule.
    pub asymmetry: f64,
}

impl GradGradReport {
    /// Whether every entry passes the tolerance.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{check::Tolerance, higher::gradgradcheck};
    /// assert!(gradgradcheck(|_, x| x[0].sin(), &[1.0], Tolerance::default()).passed());
    /// ```
    pub fn passed(&self) -> bool {
        self.entries.iter().all(|e| e.passes(&self.tolerance))
    }

    /// The entries that fail, furthest beyond the tolerance first.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{check::Tolerance, higher::gradgradcheck};
    /// // x relu(x) is x^2 on the right and 0 on the left: at 0 its second derivative jumps
    /// // from 0 to 2. The tape takes relu's derivative at 0 as 0; the central difference of
    /// // the first derivative sees (2h - 0) / 2h = 1.
    /// let r = gradgradcheck(|_, x| x[0] * x[0].relu(), &[0.0], Tolerance::default());
    /// let bad = r.failures();
    /// assert_eq!((bad[0].row, bad[0].col, bad[0].tape), (0, Some(0), 0.0));
    /// approx::assert_relative_eq!(bad[0].numeric, 1.0);
    /// ```
    pub fn failures(&self) -> Vec<&SecondOrderEntry> {
        let tol = &self.tolerance;
        let mut failing: Vec<_> = self.entries.iter().filter(|e| !e.passes(tol)).collect();
        failing.sort_by(|a, b| b.excess(tol).total_cmp(&a.excess(tol)));
        failing
    }

    /// The entry with the largest absolute error (NaN counts as the largest).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{check::Tolerance, higher::gradgradcheck};
    /// let r = gradgradcheck(|_, x| x[0] * x[1], &[1.0, 2.0], Tolerance::default());
    /// assert!(r.worst_abs().abs_err < 1e-9);
    /// ```
    ///
    /// # Panics
    ///
    /// If `entries` is empty (a report from the checkers never is).
    pub fn worst_abs(&self) -> &SecondOrderEntry {
        let key = |e: &SecondOrderEntry| {
            if e.abs_err.is_nan() {
                f64::INFINITY
            } else {
                e.abs_err
            }
        };
        self.entries
            .iter()
            .reduce(|worst, e| if key(e) > key(worst) { e } else { worst })
            .expect("second-order report has no entries")
    }

    /// Panics with this report's `Display` unless every entry passed.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{check::Tolerance, higher::gradgradcheck};
    /// gradgradcheck(|_, x| x[0].tanh() * x[1].sigmoid(), &[0.3, -0.2], Tolerance::default())
    ///     .assert_passed();
    /// ```
    ///
    /// # Panics
    ///
    /// If any entry failed; the message is the whole report.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }
}

impl fmt::Display for GradGradReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tol = &self.tolerance;
        let failures = self.failures();
        let verdict = if failures.is_empty() {
            "PASSED"
        } else {
            "FAILED"
        };
        write!(
            f,
            "gradgradcheck {verdict}: {} second derivative(s), f = {:.10e}, Hessian asymmetry {:.3e}",
            self.entries.len(),
            self.value,
            self.asymmetry
        )?;
        if !self.entries.is_empty() {
            let worst = self.worst_abs();
            write!(
                f,
                "\n  worst absolute error {:.3e} at {worst}",
                worst.abs_err
            )?;
        }
        write!(
            f,
            "\n  tolerance: |tape - numeric| <= {:e} + {:e} * |numeric|, step {:e} * max(1, |x|)",
            tol.abs, tol.rel, tol.step
        )?;
        if !failures.is_empty() {
            write!(
                f,
                "\n  {} of {} fail; furthest beyond the tolerance:",
                failures.len(),
                self.entries.len()
            )?;
            for e in failures.iter().take(5) {
                write!(
                    f,
                    "\n    {e}: |error| {:.3e} > allowed {:.3e}",
                    e.abs_err,
                    tol.allowed(e.numeric)
                )?;
            }
            if failures.len() > 5 {
                write!(f, "\n    ... and {} more", failures.len() - 5)?;
            }
        }
        Ok(())
    }
}

/// Checks `f`'s tape Hessian at `at` against central differences of the tape's own first
/// derivative, like PyTorch's `gradgradcheck`: entry `H[i][j]` is compared with
/// `(g_i(x + h e_j) - g_i(x - h e_j)) / 2h`, where `g` is the gradient from plain backward.
///
/// The first derivative is trusted here (check it with
/// [`gradcheck`](crate::check::gradcheck)); what is tested is the differentiable backward,
/// i.e. every op's second derivative. `f` is recorded once for the Hessian ([`hessian`]),
/// then `2n` times for the gradients, all on one graph released to a mark after each
/// evaluation. The step for input `j` is `tol.step * max(1, |x_j|)`, and the difference
/// divides by the distance actually stepped. The report also gives the tape Hessian's
/// asymmetry.
///
/// # Examples
///
/// ```
/// use tapegrad::{check::Tolerance, higher::gradgradcheck};
///
/// // f(x, y) = x^2 e^y / (1 + y^2)
/// let report = gradgradcheck(
///     |_, v| v[0].powi(2) * v[1].exp() / (v[1].powi(2) + 1.0),
///     &[0.7, -1.3],
///     Tolerance::default(),
/// );
/// report.assert_passed();
/// assert!(report.asymmetry < 1e-15);
/// ```
///
/// # Panics
///
/// If `at` is empty or not finite, if `tol` has a step that is not positive and finite or
/// a negative (or NaN) tolerance, or if `f` returns a `Var` of another graph (or panics).
#[track_caller]
pub fn gradgradcheck<F>(f: F, at: &[f64], tol: Tolerance) -> GradGradReport
where
    F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
{
    crate::check::validate("gradgradcheck", at, &tol);
    let n = at.len();
    let g = Graph::new();
    let start = g.mark();
    let (value, tape) = {
        let xs = g.vars(at);
        let y = f(&g, &xs);
        (y.value(), hessian(y, &xs))
    };
    g.release(start);

    let mut evaluator = Evaluator::new(&f, at);
    let mut point = at.to_vec();
    let mut entries = vec![SecondOrderEntry::new(0, None, 0.0, 0.0); n * n];
    for j in 0..n {
        let x = at[j];
        let h = tol.step * x.abs().max(1.0);
        let (hi, lo) = (x + h, x - h);
        point[j] = hi;
        let g_hi = evaluator.gradient_at(&f, &point);
        point[j] = lo;
        let g_lo = evaluator.gradient_at(&f, &point);
        point[j] = x;
        for i in 0..n {
            let numeric = (g_hi[i] - g_lo[i]) / (hi - lo);
            entries[i * n + j] = SecondOrderEntry::new(i, Some(j), tape[i][j], numeric);
        }
    }
    let asymmetry = (0..n)
        .flat_map(|i| (0..i).map(move |j| (i, j)))
        .map(|(i, j)| (tape[i][j] - tape[j][i]).abs())
        .fold(0.0, f64::max);
    GradGradReport {
        entries,
        tolerance: tol,
        value,
        asymmetry,
    }
}

/// [`gradgradcheck`] along one direction: compares the tape's Hessian-vector product
/// ([`hvp`]) with `(g(x + h v) - g(x - h v)) / 2h`, entry by entry, where `g` is the
/// gradient from plain backward. It costs one HVP and two gradients whatever the number of
/// inputs, so it suits functions too large for a full Hessian; a few random directions
/// catch a wrong rule almost surely.
///
/// The step is `h = tol.step * max(1, max_i |x_i|) / max_i |v_i|`, so the largest
/// component of the step is the one [`gradgradcheck`] would take.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Var, check::Tolerance, higher::hvpcheck};
///
/// // The chained Rosenbrock valley: sum_i (x_{i+1} - x_i^2)^2.
/// fn valley<'g>(g: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
///     g.sum(x.windows(2).map(|w| (w[1] - w[0].powi(2)).powi(2)))
/// }
/// let v = [1.0, -2.0, 0.5, 0.25];
/// let report = hvpcheck(valley, &[0.5, -0.3, 1.2, 0.8], &v, Tolerance::default());
/// report.assert_passed();
/// assert_eq!(report.entries.len(), 4);
/// ```
///
/// # Panics
///
/// As [`gradgradcheck`]; also if `v` and `at` differ in length, or `v` is zero or not
/// finite.
#[track_caller]
pub fn hvpcheck<F>(f: F, at: &[f64], v: &[f64], tol: Tolerance) -> GradGradReport
where
    F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
{
    crate::check::validate("hvpcheck", at, &tol);
    assert_eq!(
        v.len(),
        at.len(),
        "hvpcheck: the direction has {} entries for {} inputs; it needs one per input",
        v.len(),
        at.len()
    );
    let v_max = v.iter().fold(0.0, |m: f64, c| m.max(c.abs()));
    assert!(
        v_max > 0.0 && v_max.is_finite() && v.iter().all(|c| c.is_finite()),
        "hvpcheck: the direction must be finite and not zero, got {v:?}"
    );
    let g = Graph::new();
    let start = g.mark();
    let (value, tape) = {
        let xs = g.vars(at);
        let y = f(&g, &xs);
        (y.value(), hvp(y, &xs, v))
    };
    g.release(start);

    let x_max = at.iter().fold(1.0, |m: f64, c| m.max(c.abs()));
    let h = tol.step * x_max / v_max;
    let step =
        |sign: f64| -> Vec<f64> { at.iter().zip(v).map(|(x, v)| x + sign * h * v).collect() };
    let mut evaluator = Evaluator::new(&f, at);
    let (g_hi, g_lo) = (
        evaluator.gradient_at(&f, &step(1.0)),
        evaluator.gradient_at(&f, &step(-1.0)),
    );
    let entries = (0..at.len())
        .map(|i| SecondOrderEntry::new(i, None, tape[i], (g_hi[i] - g_lo[i]) / (2.0 * h)))
        .collect();
    GradGradReport {
        entries,
        tolerance: tol,
        value,
        asymmetry: 0.0,
    }
}
