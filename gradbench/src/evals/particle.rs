//! particle: a charged particle (starting at `(0, 8)` with velocity `(0.75, 0)`) is pulled
//! by two charges at `(10, 0)` and `(10, 10 - w)`; Euler steps of 0.1 follow it until it
//! crosses the x axis, and the objective is the square of where it crosses (linearly
//! interpolated). The force is minus the gradient of the potential, so the objective
//! contains a derivative; the output is the `w` that minimises it, by gradient descent
//! ([`gd`]), which takes the objective's derivative: nested AD (Pearlmutter and
//! Siskind's benchmark).
//!
//! The eval asks for four variants, by the mode of the outer derivative (the descent's,
//! in `w`) and the inner one (the force's, in `(x1, x2)`): `ff`, `fr`, `rf`, `rr`. Each is
//! taken in its mode ([`Derivatives`]):
//!
//! - inner, forward: the potential on [`Dual`] numbers with two tangents, `x1` and `x2`
//!   seeded with the identity, whatever the values are (plain numbers, the outer mode's
//!   dual numbers or recorded `Var`s);
//! - inner, reverse: a reverse sweep of the potential, recorded once and replayed
//!   ([`Replay::gradient`](tapegrad::Replay::gradient)) at plain numbers; under an outer
//!   forward derivative, forward over reverse (the gradient's tangent by
//!   [`Replay::hvp`](tapegrad::Replay::hvp)); under an outer reverse derivative, by
//!   `Var::grad` inside the outer recording;
//! - outer, forward: the trajectory on dual numbers, `w` seeded with 1;
//! - outer, reverse: the trajectory recorded and swept backward.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Dual, Graph, Scalar, Var};

use crate::runs::{Evaluation, Runs, repeat};

use super::{ReplayedGradient, SubFrom, gd, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    w: f64,
}

/// The mode of one of the two derivatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward mode.
    Forward,
    /// Reverse mode.
    Reverse,
}

impl Mode {
    /// The outer and inner modes a function of `eval` names (`ff`, `fr`, `rf`, `rr`).
    pub(crate) fn pair(eval: &str, function: &str) -> Result<(Mode, Mode), String> {
        match function {
            "ff" => Ok((Mode::Forward, Mode::Forward)),
            "fr" => Ok((Mode::Forward, Mode::Reverse)),
            "rf" => Ok((Mode::Reverse, Mode::Forward)),
            "rr" => Ok((Mode::Reverse, Mode::Reverse)),
            _ => Err(unknown_function(eval, function, &["ff", "fr", "rf", "rr"])),
        }
    }
}

const DT: f64 = 0.1;

/// The potential at `(x1, x2)` of unit charges at `(10, 0)` and `(10, 10 - w)`.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::particle::potential;
/// assert_eq!(potential(10.0, 5.0, 0.0), 1.0 / 5.0 + 1.0 / 5.0);
/// ```
pub fn potential<T: Scalar + SubFrom>(x1: T, x2: T, w: T) -> T {
    let dx = x1.sub_from(10.0);
    let to_low = -x2;
    let to_high = w.sub_from(10.0) - x2;
    let low = T::dot(&[dx, to_low], &[dx, to_low]).sqrt();
    let high = T::dot(&[dx, to_high], &[dx, to_high]).sqrt();
    low.recip() + high.recip()
}

/// The square of the x-axis crossing of the particle's trajectory for charge position
/// `w`, with `grad_potential` giving the potential's gradient in `(x1, x2)`.
pub fn crossing_squared<T: Scalar>(w: T, mut grad_potential: impl FnMut(T, T, T) -> [T; 2]) -> T {
    let (mut x1, mut x2, mut v1, mut v2) = (w.lift(0.0), w.lift(8.0), w.lift(0.75), w.lift(0.0));
    for _ in 0..1_000_000 {
        let [dp1, dp2] = grad_potential(x1, x2, w);
        let next = (x1 + v1 * DT, x2 + v2 * DT, v1 - dp1 * DT, v2 - dp2 * DT);
        if next.1.value() < 0.0 {
            break;
        }
        (x1, x2, v1, v2) = next;
    }
    let dt_final = -x2 / v2;
    let x1_final = x1 + dt_final * v1;
    x1_final * x1_final
}

/// The potential's gradient in `(x1, x2)` by forward mode, at values of any [`Scalar`]
/// type: the potential on dual numbers over `T`, `x1` and `x2` seeded with the identity.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::particle::{forward_force, potential};
/// // At (10, 5) with w = 0 the two charges are 5 below and 5 above: no pull in x2.
/// let [d1, d2] = forward_force(10.0, 5.0, 0.0);
/// assert_eq!(d1, 0.0);
/// assert!(d2.abs() < 1e-17);
/// ```
pub fn forward_force<T: Scalar + SubFrom>(x1: T, x2: T, w: T) -> [T; 2] {
    potential(Dual::unit(x1, 0), Dual::unit(x2, 1), Dual::constant(w)).tangents
}

/// The two derivatives in their modes: the potential's replay for the inner derivative in
/// reverse mode, and the graph the outer reverse derivative records on.
///
/// # Examples
///
/// Every variant's derivative of the objective against a central difference of it:
///
/// ```
/// use tapegrad_gradbench::evals::particle::{Derivatives, Mode, crossing_squared, forward_force};
///
/// let objective = |w: f64| crossing_squared(w, forward_force);
/// let h = 1e-6;
/// let numeric = (objective(0.1 + h) - objective(0.1 - h)) / (2.0 * h);
/// for outer in [Mode::Forward, Mode::Reverse] {
///     for inner in [Mode::Forward, Mode::Reverse] {
///         let d = Derivatives::new(outer, inner).descent_gradient(0.1);
///         assert!((d - numeric).abs() < 1e-6 * numeric.abs().max(1.0), "{outer:?} {inner:?}: {d} {numeric}");
///         let force = Derivatives::new(outer, inner).force(3.0, 4.0, 0.1);
///         for (f, g) in force.iter().zip(forward_force(3.0, 4.0, 0.1)) {
///             // The two charges pull against each other: a little cancellation.
///             assert!((f - g).abs() <= 1e-12 * g.abs(), "{f} {g}");
///         }
///     }
/// }
/// ```
pub struct Derivatives {
    outer: Mode,
    inner: Mode,
    potential: ReplayedGradient,
    graph: Graph,
}

impl Derivatives {
    /// The derivatives of the `outer` and `inner` modes.
    pub fn new(outer: Mode, inner: Mode) -> Self {
        Derivatives {
            outer,
            inner,
            potential: ReplayedGradient::new(&[0.0, 8.0, 0.0], |x| potential(x[0], x[1], x[2])),
            graph: Graph::new(),
        }
    }

    /// The force's derivative (the potential's gradient in `(x1, x2)`) at plain numbers.
    pub fn force(&self, x1: f64, x2: f64, w: f64) -> [f64; 2] {
        match self.inner {
            Mode::Forward => forward_force(x1, x2, w),
            Mode::Reverse => {
                let g = self.potential.at(&[x1, x2, w]);
                [g[0], g[1]]
            }
        }
    }

    /// The objective's derivative at `w`.
    pub fn descent_gradient(&self, w: f64) -> f64 {
        match (self.outer, self.inner) {
            (Mode::Forward, Mode::Forward) => {
                crossing_squared(Dual::variable(w), forward_force).tangent()
            }
            (Mode::Forward, Mode::Reverse) => {
                let y = crossing_squared(Dual::variable(w), |x1, x2, w| {
                    let g = self.potential.at_dual(&[x1, x2, w]);
                    [g[0], g[1]]
                });
                y.tangent()
            }
            (Mode::Reverse, inner) => {
                let mark = self.graph.mark();
                let wv = self.graph.var(w);
                let y = crossing_squared(wv, |x1: Var<'_>, x2, w| match inner {
                    Mode::Forward => forward_force(x1, x2, w),
                    Mode::Reverse => {
                        let g = potential(x1, x2, w).grad(&[x1, x2]);
                        [g[0], g[1]]
                    }
                });
                let d = y.backward()[wv];
                self.graph.release(mark);
                d
            }
        }
    }
}

/// The `w` that minimises the crossing's square, from `w0`.
pub fn optimal_w(outer: Mode, inner: Mode, w0: f64) -> f64 {
    let derivatives = Derivatives::new(outer, inner);
    let objective = |w: &[f64]| crossing_squared(w[0], |x1, x2, w| derivatives.force(x1, x2, w));
    let gradient = |w: &[f64]| vec![derivatives.descent_gradient(w[0])];
    gd::argmin(&[w0], objective, gradient)[0]
}

/// Evaluates `ff`, `fr`, `rf` or `rr`.
///
/// # Errors
///
/// An unknown function, or an input without `w`.
pub fn evaluate(function: &str, input: &Value) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { w } = parse("particle", input)?;
    let (outer, inner) = Mode::pair("particle", function)?;
    let (w_star, timings) = repeat(runs, || optimal_w(outer, inner, w));
    Ok(Evaluation {
        output: json!(w_star),
        timings,
    })
}
