//! particle: a charged particle (starting at `(0, 8)` with velocity `(0.75, 0)`) is pulled
//! by two charges at `(10, 0)` and `(10, 10 - w)`; Euler steps of 0.1 follow it until it
//! crosses the x axis, and the objective is the square of where it crosses (linearly
//! interpolated). The force is minus the gradient of the potential, so the objective
//! contains a derivative; the output is the `w` that minimises it, by gradient descent
//! ([`gd`]), which takes the objective's derivative: nested AD (Pearlmutter and
//! Siskind's benchmark).
//!
//! The eval asks for four variants, by the mode of the outer derivative (the descent's)
//! and the inner one (the force's): `ff`, `fr`, `rf`, `rr`. tapegrad has reverse mode
//! only for now, so all four take both derivatives by reverse mode: the inner one by a
//! reverse sweep of the potential (on a scratch graph for plain numbers, by `Var::grad`
//! inside the outer recording), the outer one by a reverse sweep of the recorded
//! trajectory. [`Mode`] is where forward mode goes: [`force`] for the inner derivative
//! (a dual number seeded along x1, then x2) and [`descent_gradient`] for the outer one (a
//! dual `w` seeded with 1).

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Graph, Scalar, Var};

use crate::runs::{Evaluation, Runs, repeat};

use super::{SubFrom, gd, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    w: f64,
}

/// The mode of one of the two derivatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward mode (for now computed by reverse mode; see the module docs).
    Forward,
    /// Reverse mode.
    Reverse,
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

/// The force's derivative at plain numbers: the potential recorded on `scratch` and swept
/// backward (forward mode: a dual number seeded along `x1`, then `x2`).
pub fn force(_mode: Mode, scratch: &Graph, x1: f64, x2: f64, w: f64) -> [f64; 2] {
    let mark = scratch.mark();
    let x = scratch.vars(&[x1, x2]);
    let grads = potential(x[0], x[1], scratch.constant(w)).backward();
    let out = [grads[x[0]], grads[x[1]]];
    scratch.release(mark);
    out
}

/// The objective's derivative at `w`: the trajectory recorded (each step's force by
/// `Var::grad`, so that it can be differentiated again) and swept backward (forward mode:
/// a dual `w` seeded with 1, the force by nested duals).
pub fn descent_gradient(_outer: Mode, _inner: Mode, graph: &Graph, w: f64) -> f64 {
    let mark = graph.mark();
    let wv = graph.var(w);
    let y = crossing_squared(wv, |x1: Var<'_>, x2, w| {
        let g = potential(x1, x2, w).grad(&[x1, x2]);
        [g[0], g[1]]
    });
    let d = y.backward()[wv];
    graph.release(mark);
    d
}

/// The `w` that minimises the crossing's square, from `w0`.
pub fn optimal_w(outer: Mode, inner: Mode, w0: f64) -> f64 {
    let scratch = Graph::new();
    let graph = Graph::new();
    let objective =
        |w: &[f64]| crossing_squared(w[0], |x1, x2, w| force(inner, &scratch, x1, x2, w));
    let gradient = |w: &[f64]| vec![descent_gradient(outer, inner, &graph, w[0])];
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
    let (outer, inner) = match function {
        "ff" => (Mode::Forward, Mode::Forward),
        "fr" => (Mode::Forward, Mode::Reverse),
        "rf" => (Mode::Reverse, Mode::Forward),
        "rr" => (Mode::Reverse, Mode::Reverse),
        _ => {
            return Err(unknown_function(
                "particle",
                function,
                &["ff", "fr", "rf", "rr"],
            ));
        }
    };
    let (w_star, timings) = repeat(runs, || optimal_w(outer, inner, w));
    Ok(Evaluation {
        output: json!(w_star),
        timings,
    })
}
