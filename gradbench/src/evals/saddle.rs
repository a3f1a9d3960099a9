//! saddle: the saddle point of `f(x, y) = |x|^2 - |y|^2` (`x`, `y` in the plane) as
//! `argmin_x max_y f(x, y)`, then `argmax_y f(x*, y)`, every optimisation by gradient
//! descent ([`gd`]) from the same start (Pearlmutter and Siskind's benchmark).
//! The outer descent's gradient is the derivative of an inner maximisation that itself
//! takes derivatives: nested AD, differentiated through the inner descent's steps.
//!
//! The eval asks for four variants by the modes of the outer derivative (in `x`) and the
//! inner one (in `y`): `ff`, `fr`, `rf`, `rr`. Each is taken in its mode ([`Derivatives`]):
//!
//! - inner, forward: `f` on [`Dual`] numbers with two tangents, `y` seeded with the
//!   identity, whatever the values are (plain numbers, the outer mode's dual numbers or
//!   recorded `Var`s);
//! - inner, reverse: a reverse sweep of `f`, recorded once and replayed
//!   ([`Replay::gradient`](tapegrad::Replay::gradient)) at plain numbers; under an outer
//!   forward derivative, forward over reverse (the gradient's tangents by
//!   [`Replay::hvp`](tapegrad::Replay::hvp)); under an outer reverse derivative, by
//!   `Var::grad` inside the outer recording;
//! - outer, forward: the inner ascent on dual numbers, `x` seeded with the identity (two
//!   tangents);
//! - outer, reverse: the inner ascent recorded from `x` and swept backward.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Dual, Graph, Scalar, Var};

use crate::runs::{Evaluation, Runs, repeat};

use super::{ReplayedGradient, expect_len, gd, parse};

pub use super::particle::Mode;

#[derive(Deserialize)]
struct Input {
    start: Vec<f64>,
}

/// `|x|^2 - |y|^2`.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_gradbench::evals::saddle::f(&[1.0, 2.0], &[0.5, 0.0]), 4.75);
/// ```
pub fn f<T: Scalar>(x: &[T], y: &[T]) -> T {
    T::dot(x, x) - T::dot(y, y)
}

/// `grad_y f(x, y)` by forward mode, at values of any [`Scalar`] type: `f` on dual numbers
/// over `T`, `y` seeded with the identity.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::saddle::forward_inner_gradient;
/// assert_eq!(forward_inner_gradient(&[1.0, 2.0], &[0.5, -3.0]), [-1.0, 6.0]);
/// ```
pub fn forward_inner_gradient<T: Scalar>(x: &[T], y: &[T]) -> Vec<T> {
    let x: Vec<Dual<2, T>> = x.iter().map(|&xi| Dual::constant(xi)).collect();
    let y: Vec<Dual<2, T>> = y
        .iter()
        .enumerate()
        .map(|(i, &yi)| Dual::unit(yi, i))
        .collect();
    f(&x, &y).tangents.to_vec()
}

/// The two derivatives in their modes: `f`'s replay for the inner derivative in reverse
/// mode, and the graph the outer reverse derivative records on.
///
/// # Examples
///
/// The inner ascent in `y` does not depend on `x` (`grad_y f = -2 y`), so the gradient of
/// `max_y f(x, y)` is `2 x`, through the ascent or not:
///
/// ```
/// use tapegrad_gradbench::evals::saddle::{Derivatives, Mode};
///
/// for outer in [Mode::Forward, Mode::Reverse] {
///     for inner in [Mode::Forward, Mode::Reverse] {
///         let d = Derivatives::new(outer, inner);
///         assert_eq!(d.outer_gradient(&[1.0, 2.0], &[1.0, 1.0]), [2.0, 4.0]);
///         assert_eq!(d.inner_gradient(inner, &[1.0, 2.0], &[0.5, -3.0]), [-1.0, 6.0]);
///     }
/// }
/// ```
pub struct Derivatives {
    outer: Mode,
    inner: Mode,
    f: ReplayedGradient,
    graph: Graph,
}

impl Derivatives {
    /// The derivatives of the `outer` and `inner` modes.
    pub fn new(outer: Mode, inner: Mode) -> Self {
        Derivatives {
            outer,
            inner,
            f: ReplayedGradient::new(&[1.0; 4], |xy| f(&xy[..2], &xy[2..])),
            graph: Graph::new(),
        }
    }

    /// `grad_y f(x, y)` at plain numbers, in the mode `mode`.
    pub fn inner_gradient(&self, mode: Mode, x: &[f64], y: &[f64]) -> Vec<f64> {
        match mode {
            Mode::Forward => forward_inner_gradient(x, y),
            Mode::Reverse => self.f.at(&[x, y].concat())[2..].to_vec(),
        }
    }

    /// `max_y f(x, y)` from `start`, by gradient ascent.
    fn inner_max(&self, x: &[f64], start: &[f64]) -> f64 {
        let y = gd::argmax(
            start,
            |y| f(x, y),
            |y| self.inner_gradient(self.inner, x, y),
        );
        f(x, &y)
    }

    /// The gradient in `x` of `max_y f(x, y)`, differentiated through the inner ascent
    /// from `start`.
    pub fn outer_gradient(&self, x: &[f64], start: &[f64]) -> Vec<f64> {
        match (self.outer, self.inner) {
            (Mode::Forward, inner) => {
                let x: Vec<Dual<2>> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &xi)| Dual::unit(xi, i))
                    .collect();
                let y0: Vec<Dual<2>> = start.iter().map(|&s| Dual::constant(s)).collect();
                let y = gd::argmax(
                    &y0,
                    |y| f(&x, y),
                    |y| match inner {
                        Mode::Forward => forward_inner_gradient(&x, y),
                        Mode::Reverse => self.f.at_dual(&[&x[..], y].concat())[2..].to_vec(),
                    },
                );
                f(&x, &y).tangents.to_vec()
            }
            (Mode::Reverse, inner) => {
                let mark = self.graph.mark();
                let xv = self.graph.vars(x);
                let y0: Vec<Var<'_>> = start.iter().map(|&s| self.graph.constant(s)).collect();
                let y = gd::argmax(
                    &y0,
                    |y| f(&xv, y),
                    |y| match inner {
                        Mode::Forward => forward_inner_gradient(&xv, y),
                        Mode::Reverse => f(&xv, y).grad(y),
                    },
                );
                let out = f(&xv, &y).backward().wrt_all(&xv);
                self.graph.release(mark);
                out
            }
        }
    }
}

/// The saddle point from `start`: `x*` then `y*`.
pub fn saddle(outer: Mode, inner: Mode, start: &[f64]) -> Vec<f64> {
    let derivatives = Derivatives::new(outer, inner);
    let x = gd::argmin(
        start,
        |x| derivatives.inner_max(x, start),
        |x| derivatives.outer_gradient(x, start),
    );
    // The outer mode again for the last ascent (the eval asks for the same mode as step 1's).
    let y = gd::argmax(
        start,
        |y| f(&x, y),
        |y| derivatives.inner_gradient(outer, &x, y),
    );
    [x, y].concat()
}

/// Evaluates `ff`, `fr`, `rf` or `rr`.
///
/// # Errors
///
/// An unknown function, or a start that is not a point of the plane.
pub fn evaluate(function: &str, input: &Value) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { start } = parse("saddle", input)?;
    expect_len("saddle", "start", start.len(), 2)?;
    let (outer, inner) = Mode::pair("saddle", function)?;
    let (point, timings) = repeat(runs, || saddle(outer, inner, &start));
    Ok(Evaluation {
        output: json!(point),
        timings,
    })
}
