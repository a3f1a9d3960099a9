//! saddle: the saddle point of `f(x, y) = |x|^2 - |y|^2` (`x`, `y` in the plane) as
//! `argmin_x max_y f(x, y)`, then `argmax_y f(x*, y)`, every optimisation by gradient
//! descent ([`gd`]) from the same start (Pearlmutter and Siskind's benchmark).
//! The outer descent's gradient is the derivative of an inner maximisation that itself
//! takes derivatives: nested AD, differentiated through the inner descent's steps.
//!
//! The eval asks for four variants by the modes of the outer and inner derivatives (`ff`,
//! `fr`, `rf`, `rr`). tapegrad has reverse mode only for now, so all four take both by
//! reverse mode: the inner gradient by a reverse sweep (on a scratch graph for plain
//! numbers, by `Var::grad` inside the outer recording), the outer by a reverse sweep of the
//! recorded inner descent. [`Mode`] is where forward mode goes: [`inner_gradient`] and
//! [`outer_gradient`].

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Graph, Scalar, Var};

use crate::runs::{Evaluation, Runs, repeat};

use super::{expect_len, gd, parse, unknown_function};

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

/// `grad_y f(x, y)` at plain numbers: recorded on `scratch`, swept backward (forward
/// mode: a dual `y` seeded along each axis).
pub fn inner_gradient(_mode: Mode, scratch: &Graph, x: &[f64], y: &[f64]) -> Vec<f64> {
    let mark = scratch.mark();
    let yv = scratch.vars(y);
    let xv: Vec<Var<'_>> = x.iter().map(|&xi| scratch.constant(xi)).collect();
    let grads = f(&xv, &yv).backward();
    let out = grads.wrt_all(&yv);
    scratch.release(mark);
    out
}

/// `max_y f(x, y)` from `start`, by gradient ascent.
fn inner_max(inner: Mode, scratch: &Graph, x: &[f64], start: &[f64]) -> f64 {
    let y = gd::argmax(start, |y| f(x, y), |y| inner_gradient(inner, scratch, x, y));
    f(x, &y)
}

/// The gradient in `x` of `max_y f(x, y)`: the inner ascent recorded from `x` (its
/// gradients by `Var::grad`, differentiable again) and swept backward (forward mode: a
/// dual `x` seeded along each axis, through the inner ascent).
pub fn outer_gradient(
    _outer: Mode,
    _inner: Mode,
    graph: &Graph,
    x: &[f64],
    start: &[f64],
) -> Vec<f64> {
    let mark = graph.mark();
    let xv = graph.vars(x);
    let y0: Vec<Var<'_>> = start.iter().map(|&s| graph.constant(s)).collect();
    let y = gd::argmax(&y0, |y| f(&xv, y), |y| f(&xv, y).grad(y));
    let out = f(&xv, &y).backward().wrt_all(&xv);
    graph.release(mark);
    out
}

/// The saddle point from `start`: `x*` then `y*`.
pub fn saddle(outer: Mode, inner: Mode, start: &[f64]) -> Vec<f64> {
    let scratch = Graph::new();
    let graph = Graph::new();
    let x = gd::argmin(
        start,
        |x| inner_max(inner, &scratch, x, start),
        |x| outer_gradient(outer, inner, &graph, x, start),
    );
    // The outer mode again for the last ascent (the eval asks for the same mode as step 1's).
    let y = gd::argmax(
        start,
        |y| f(&x, y),
        |y| inner_gradient(outer, &scratch, &x, y),
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
    let (outer, inner) = match function {
        "ff" => (Mode::Forward, Mode::Forward),
        "fr" => (Mode::Forward, Mode::Reverse),
        "rf" => (Mode::Reverse, Mode::Forward),
        "rr" => (Mode::Reverse, Mode::Reverse),
        _ => {
            return Err(unknown_function(
                "saddle",
                function,
                &["ff", "fr", "rf", "rr"],
            ));
        }
    };
    let (point, timings) = repeat(runs, || saddle(outer, inner, &start));
    Ok(Evaluation {
        output: json!(point),
        timings,
    })
}
