//! The finite-difference gradient checker, tapegrad's `gradcheck`. Built on the engine's
//! public API only; not on the hot path (it records a function once per check).
//!
//! [`gradcheck`] records a function once on a tape, runs backward, and compares every
//! input's tape gradient with a central difference `(f(x + h) - f(x - h)) / 2h`, where
//! `f` is re-evaluated by a [`Replay`] of that one recording (bit for bit what recording it
//! again gives; where a replay cannot answer, by recording it again on the same graph,
//! released to a mark after each evaluation), so checking thousands of inputs costs `2n`
//! replayed forward passes and no growth in memory. The
//! [`Report`] says whether every input passed and which input was worst, and its
//! `Display` reads well in a test failure.
//!
//! A check can only pass or fail where `f` is smooth: at a kink the one-sided derivatives
//! differ and the tape reports one chosen subgradient while the central difference
//! averages the two sides (`relu` at 0: tape 0, central difference 1/2), so the check
//! fails there, and rightly says the two numbers disagree. A kink that is symmetric (`abs`
//! at 0: tape 0, central difference 0) passes.

use std::fmt;

use crate::engine::Graph;
use crate::engine::Var;
use crate::engine::{Replay, ReplayWorkspace};

/// How [`gradcheck`] differentiates numerically and what it accepts.
///
/// An input passes when `|tape - numeric| <= abs + rel * |numeric|`, the test of numpy's
/// `allclose(tape, numeric, rtol = rel, atol = abs)`: `abs` governs gradients near zero,
/// `rel` large ones.
///
/// The step for input `i` is `step * max(1, |x_i|)`, relative for large inputs so that
/// `x_i ± h` still differs from `x_i` in enough bits.
///
/// # Examples
///
/// ```
/// use tapegrad::check::Tolerance;
///
/// let tol = Tolerance::default();
/// assert_eq!((tol.step, tol.abs, tol.rel), (1e-6, 1e-6, 1e-5));
/// let strict = Tolerance { abs: 1e-9, ..Tolerance::default() };
/// assert_eq!(strict.rel, 1e-5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The finite-difference step `h` (scaled by `max(1, |x_i|)`).
    pub step: f64,
    /// The absolute tolerance.
    pub abs: f64,
    /// The relative tolerance, a fraction of `|numeric|`.
    pub rel: f64,
}

impl Default for Tolerance {
    /// `step 1e-6, abs 1e-6, rel 1e-5`.
    ///
    /// Why: a central difference errs by about `h^2 |f'''| / 6` (truncation) plus
    /// `eps |f| / h` (rounding, `eps = 2.2e-16`). With `h = 1e-6` that is about `1e-13`
    /// plus `2e-10 |f|`, close to the best possible (the two balance near
    /// `h = eps^(1/3) = 6e-6`). The tolerances sit about four orders of magnitude above that
    /// error for `|f|` of order 1, so a correct gradient does not fail by bad luck, and far
    /// below the size of a typical wrong rule (a missing factor, a wrong sign), which is of
    /// the order of the gradient itself. PyTorch's `gradcheck` uses the same step with
    /// `atol 1e-5, rtol 1e-3`; tapegrad is always `f64`, so it can demand more.
    ///
    /// # Examples
    ///
    /// ```
    /// let tol = tapegrad::check::Tolerance::default();
    /// assert!(tol.abs > 0.0 && tol.rel > 0.0 && tol.step > 0.0);
    /// ```
    fn default() -> Self {
        Tolerance {
            step: 1e-6,
            abs: 1e-6,
            rel: 1e-5,
        }
    }
}

impl Tolerance {
    /// The largest `|tape - numeric|` accepted when the numerical derivative is `numeric`:
    /// `abs + rel * |numeric|`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::Tolerance;
    /// let tol = Tolerance { step: 1e-6, abs: 1e-6, rel: 1e-5 };
    /// assert_eq!(tol.allowed(-2.0), 1e-6 + 2e-5);
    /// ```
    pub fn allowed(&self, numeric: f64) -> f64 {
        self.abs + self.rel * numeric.abs()
    }
}

impl fmt::Display for Tolerance {
    /// The pass test and the step, as a report prints them.
    ///
    /// # Examples
    ///
    /// ```
    /// let tol = tapegrad::check::Tolerance::default();
    /// assert_eq!(
    ///     tol.to_string(),
    ///     "|tape - numeric| <= 1e-6 + 1e-5 * |numeric|, step 1e-6 * max(1, |x|)"
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "|tape - numeric| <= {:e} + {:e} * |numeric|, step {:e} * max(1, |x|)",
            self.abs, self.rel, self.step
        )
    }
}

/// One input's comparison: the tape gradient beside the central difference.
///
/// # Examples
///
/// ```
/// use tapegrad::check::{Entry, Tolerance};
///
/// let e = Entry::new(0, 2.0, 2.5);
/// assert_eq!(e.abs_err, 0.5);
/// assert_eq!(e.rel_err, 0.2); // relative to the numerical value
/// assert!(!e.passes(&Tolerance::default()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    /// The input's index in the point given to [`gradcheck`].
    pub input: usize,
    /// The gradient the tape computed.
    pub tape: f64,
    /// The central-difference estimate.
    pub numeric: f64,
    /// `|tape - numeric|`.
    pub abs_err: f64,
    /// `abs_err / |numeric|` (0 where both are 0, infinite where only `numeric` is).
    pub rel_err: f64,
}

impl Entry {
    /// The comparison of `tape` with `numeric` for input `input`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = tapegrad::check::Entry::new(3, 0.0, 0.0);
    /// assert_eq!((e.abs_err, e.rel_err), (0.0, 0.0));
    /// ```
    pub fn new(input: usize, tape: f64, numeric: f64) -> Self {
        let abs_err = (tape - numeric).abs();
        let rel_err = if abs_err == 0.0 {
            0.0
        } else {
            abs_err / numeric.abs()
        };
        Entry {
            input,
            tape,
            numeric,
            abs_err,
            rel_err,
        }
    }

    /// Whether `abs_err <= tol.abs + tol.rel * |numeric|`. A NaN anywhere fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::{Entry, Tolerance};
    /// assert!(Entry::new(0, 1.0, 1.0 + 1e-9).passes(&Tolerance::default()));
    /// assert!(!Entry::new(0, f64::NAN, 1.0).passes(&Tolerance::default()));
    /// ```
    pub fn passes(&self, tol: &Tolerance) -> bool {
        self.abs_err <= tol.allowed(self.numeric)
    }

    /// How far the error goes into the allowance: `abs_err / (abs + rel |numeric|)`; above
    /// 1 fails. NaN is reported as infinite, so it sorts as the worst.
    fn excess(&self, tol: &Tolerance) -> f64 {
        let ratio = self.abs_err / tol.allowed(self.numeric);
        if ratio.is_nan() {
            // 0 / 0 (zero tolerance, exact agreement) is a pass, anything else NaN is not.
            if self.abs_err == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            ratio
        }
    }
}

/// What [`gradcheck`] found: one [`Entry`] per input, and the tolerance they were judged by.
///
/// # Examples
///
/// ```
/// use tapegrad::check::{gradcheck, Tolerance};
///
/// let report = gradcheck(|_, x| x[0].sin() * x[1], &[0.3, 2.0], Tolerance::default());
/// assert!(report.passed());
/// assert_eq!(report.entries.len(), 2);
/// // d/dx1 sin(x0) x1 = sin(x0)
/// assert_eq!(report.entries[1].tape, 0.3f64.sin());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// One entry per input, in input order.
    pub entries: Vec<Entry>,
    /// The tolerance the entries were judged by.
    pub tolerance: Tolerance,
    /// The function's value at the point.
    pub value: f64,
}

impl Report {
    /// Whether every entry passes the tolerance.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::{gradcheck, Tolerance};
    /// assert!(gradcheck(|_, x| x[0].exp(), &[1.0], Tolerance::default()).passed());
    /// ```
    pub fn passed(&self) -> bool {
        self.entries.iter().all(|e| e.passes(&self.tolerance))
    }

    /// The entry with the largest absolute error (NaN counts as the largest; the first of
    /// equals).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::{gradcheck, Tolerance};
    /// let r = gradcheck(|_, x| x[0] * x[1], &[1.0, 2.0], Tolerance::default());
    /// assert!(r.worst_abs().abs_err < 1e-9);
    /// ```
    ///
    /// # Panics
    ///
    /// If `entries` is empty (a report from [`gradcheck`] never is).
    pub fn worst_abs(&self) -> &Entry {
        self.worst_by(|e| e.abs_err)
    }

    /// The entry with the largest relative error (NaN counts as the largest; the first of
    /// equals). Where a true gradient is 0 the relative error of any rounding is large, so
    /// read this beside [`Report::worst_abs`]; [`Report::passed`] weighs both.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::{gradcheck, Tolerance};
    /// let r = gradcheck(|_, x| x[0].powi(3), &[2.0], Tolerance::default());
    /// assert_eq!(r.worst_rel().input, 0);
    /// assert!(r.worst_rel().rel_err < 1e-9);
    /// ```
    ///
    /// # Panics
    ///
    /// If `entries` is empty.
    pub fn worst_rel(&self) -> &Entry {
        self.worst_by(|e| e.rel_err)
    }

    /// The entries that fail, worst (furthest beyond the tolerance) first.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::{gradcheck, Tolerance};
    /// // relu has a kink at 0: tape 0, central difference 1/2.
    /// let r = gradcheck(|_, x| x[0].relu() + x[1], &[0.0, 1.0], Tolerance::default());
    /// assert_eq!(r.failures().iter().map(|e| e.input).collect::<Vec<_>>(), vec![0]);
    /// ```
    pub fn failures(&self) -> Vec<&Entry> {
        let tol = &self.tolerance;
        let mut failing: Vec<&Entry> = self.entries.iter().filter(|e| !e.passes(tol)).collect();
        failing.sort_by(|a, b| b.excess(tol).total_cmp(&a.excess(tol)));
        failing
    }

    /// Panics with this report's `Display` unless every entry passed.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::check::{gradcheck, Tolerance};
    /// gradcheck(|_, x| x[0].tanh(), &[0.5], Tolerance::default()).assert_passed();
    /// ```
    ///
    /// # Panics
    ///
    /// If any entry failed; the message is the whole report.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }

    #[track_caller]
    fn worst_by(&self, key: impl Fn(&Entry) -> f64) -> &Entry {
        let nan_last = |e: &Entry| {
            let k = key(e);
            if k.is_nan() { f64::INFINITY } else { k }
        };
        self.entries
            .iter()
            .reduce(|worst, e| {
                if nan_last(e) > nan_last(worst) {
                    e
                } else {
                    worst
                }
            })
            .expect("gradcheck report has no entries")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tol = &self.tolerance;
        let failures = self.failures();
        let verdict = if failures.is_empty() {
            "PASSED"
        } else {
            "FAILED"
        };
        writeln!(
            f,
            "gradcheck {verdict}: {} input(s), f = {}",
            self.entries.len(),
            self.value
        )?;
        if self.entries.is_empty() {
            return Ok(());
        }
        let describe = |e: &Entry| {
            format!(
                "input {} (tape {}, numeric {})",
                e.input,
                sci(e.tape, 12),
                sci(e.numeric, 12)
            )
        };
        let (wa, wr) = (self.worst_abs(), self.worst_rel());
        writeln!(
            f,
            "  worst absolute error {} at {}",
            sci(wa.abs_err, 3),
            describe(wa)
        )?;
        writeln!(
            f,
            "  worst relative error {} at {}",
            sci(wr.rel_err, 3),
            describe(wr)
        )?;
        write!(f, "  tolerance: {tol}")?;
        if !failures.is_empty() {
            write!(
                f,
                "\n  {} of {} input(s) fail; furthest beyond the tolerance:",
                failures.len(),
                self.entries.len()
            )?;
            for e in failures.iter().take(5) {
                write!(
                    f,
                    "\n    {}: |error| {} > allowed {}",
                    describe(e),
                    sci(e.abs_err, 3),
                    sci(tol.allowed(e.numeric), 3)
                )?;
            }
            if failures.len() > 5 {
                write!(f, "\n    ... and {} more", failures.len() - 5)?;
            }
        }
        Ok(())
    }
}

/// `x` in scientific notation with a signed two-digit exponent (`2.000e+00`), the form
/// most readers know from C, Python and numpy.
fn sci(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let s = format!("{x:.digits$e}");
    let (mantissa, exponent) = s.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// Checks `f`'s tape gradient at `at` against central differences, input by input.
///
/// `f` receives a graph and one `Var` per entry of `at`, and returns the scalar to
/// differentiate. It is recorded once and differentiated by backward; then, for each input
/// `i`, it is evaluated at `x ± h e_i` with `h = tol.step * max(1, |x_i|)` by a [`Replay`]
/// of that recording, which gives bit for bit the value a new recording would (at about
/// a third of the cost on the series' transformer). `f` is recorded again instead, on one
/// graph released to a mark after every evaluation (so memory stays that of one evaluation
/// however many inputs there are), at a point where a comparison guard ([`Var::lt`] and
/// its siblings) comes out otherwise, and at every point if `f` reads a raw
/// [`Var::value`] before returning (a branch on it would be invisible to a replay). The
/// numerical derivative divides by the distance actually stepped, `(x_i + h) - (x_i - h)`
/// as rounded, not by `2h`.
///
/// `f` must be a pure function of its inputs: it may be called once, or once per
/// evaluation.
///
/// # Examples
///
/// ```
/// use tapegrad::check::{gradcheck, Tolerance};
///
/// // f(x, y) = x e^y / (1 + y^2)
/// let report = gradcheck(
///     |_, v| v[0] * v[1].exp() / (v[1].powi(2) + 1.0),
///     &[0.7, -1.3],
///     Tolerance::default(),
/// );
/// report.assert_passed();
/// assert!(report.to_string().starts_with("gradcheck PASSED: 2 input(s)"));
/// ```
///
/// # Panics
///
/// If `at` is empty (there would be nothing to check), if an entry of `at` is not finite,
/// if `tol` has a step that is not positive and finite or a negative (or NaN) tolerance,
/// or if `f` returns a `Var` of another graph (or panics itself).
#[track_caller]
pub fn gradcheck<F>(f: F, at: &[f64], tol: Tolerance) -> Report
where
    F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
{
    validate("gradcheck", at, &tol);

    let mut at_point = Evaluator::new(&f, at);
    let (value, tape) = (at_point.value, at_point.gradient.clone());
    let mut eval = |point: &[f64]| at_point.value_at(&f, point);
    let mut point = at.to_vec();
    let entries = (0..at.len())
        .map(|i| {
            let x = at[i];
            let h = tol.step * x.abs().max(1.0);
            let (hi, lo) = (x + h, x - h);
            point[i] = hi;
            let f_hi = eval(&point);
            point[i] = lo;
            let f_lo = eval(&point);
            point[i] = x;
            Entry::new(i, tape[i], (f_hi - f_lo) / (hi - lo))
        })
        .collect();

    Report {
        entries,
        tolerance: tol,
        value,
    }
}

/// `f` recorded once at a point, then evaluated at other points (the checkers' central
/// differences) by [`Replay`]: bit for bit what recording `f` again at each point gives,
/// at the cost of a replay. Where a replay cannot stand in for a recording, it records
/// again: at a point where a guard flips, and everywhere if `f` read a raw value that a
/// branch could depend on (the recording runs with replay checks on to find out).
pub(crate) struct Evaluator {
    graph: Graph,
    replay: Option<Replay>,
    workspace: ReplayWorkspace,
    /// `f`'s value and gradient at the recorded point.
    pub(crate) value: f64,
    pub(crate) gradient: Vec<f64>,
}

impl Evaluator {
    pub(crate) fn new<F>(f: &F, at: &[f64]) -> Self
    where
        F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
    {
        let graph = Graph::new();
        let start = graph.mark();
        graph.set_replay_checks(true);
        let (value, gradient, replay) = {
            let xs = graph.vars(at);
            let y = f(&graph, &xs);
            let replay = Replay::try_new(y, &xs).ok();
            (y.value(), y.backward().wrt_all(&xs), replay)
        };
        graph.set_replay_checks(false);
        graph.release(start);
        Evaluator {
            graph,
            replay,
            workspace: ReplayWorkspace::new(),
            value,
            gradient,
        }
    }

    /// `f(point)`.
    pub(crate) fn value_at<F>(&mut self, f: &F, point: &[f64]) -> f64
    where
        F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
    {
        if let Some(replay) = &self.replay
            && let Ok(y) = replay.eval(point, &mut self.workspace)
        {
            return y;
        }
        let start = self.graph.mark();
        let xs = self.graph.vars(point);
        let y = f(&self.graph, &xs).value();
        self.graph.release(start);
        y
    }

    /// The gradient of `f` at `point` (by the plain backward).
    pub(crate) fn gradient_at<F>(&mut self, f: &F, point: &[f64]) -> Vec<f64>
    where
        F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
    {
        let mut gradient = vec![0.0; point.len()];
        if let Some(replay) = &self.replay
            && replay
                .gradient(point, &mut self.workspace, &mut gradient)
                .is_ok()
        {
            return gradient;
        }
        let start = self.graph.mark();
        let xs = self.graph.vars(point);
        let gradient = f(&self.graph, &xs).backward().wrt_all(&xs);
        self.graph.release(start);
        gradient
    }
}

/// Panics, naming the checker `who`, unless the tolerance makes sense (positive finite
/// step, tolerances >= 0) and the point is non-empty and finite. Shared by every checker
/// (this module's and the second-order ones in [`crate::higher`]).
#[track_caller]
pub(crate) fn validate(who: &str, at: &[f64], tol: &Tolerance) {
    assert!(
        tol.step.is_finite() && tol.step > 0.0,
        "{who}: the step must be positive and finite, got {}",
        tol.step
    );
    assert!(
        tol.abs >= 0.0 && tol.rel >= 0.0,
        "{who}: the tolerances must be >= 0 (and not NaN), got abs {} and rel {}",
        tol.abs,
        tol.rel
    );
    assert!(
        !at.is_empty(),
        "{who}: no inputs to check (the point `at` is empty)"
    );
    if let Some((i, x)) = at.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        panic!("{who}: input {i} is {x}; the check needs a finite point");
    }
}
