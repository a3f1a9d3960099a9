//! ode: `s` steps of the classic Runge-Kutta method (RK4) from `t = 0` to `t = 2` on the
//! chain `y_0' = x_0`, `y_i' = x_i y_{i-1}`, from `y = 0`; `primal` is the final `y`, and
//! `gradient` the gradient of its last entry with respect to `x` (GradBench's `ode.hpp`,
//! after cmpad's `runge_kutta`).
//!
//! Plain `Scalar` arithmetic: the slopes `x_i y_{i-1}` are products, each intermediate
//! state `y + c k` a product and a sum, each step's update `y + h (k1 + 2 k2 + 2 k3 + k4) /
//! 6` five nodes. (A fused `Scalar::dot_f64` per state records as many edges plus one per
//! constant, and costs more per edge than two binary nodes.)

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::Scalar;

use crate::runs::{Evaluation, Runs, repeat};

use super::{Strategy, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    x: Vec<f64>,
    s: usize,
}

/// The slopes at state `y`: `z_0 = x_0`, `z_i = x_i y_{i-1}`.
fn slopes<T: Scalar>(x: &[T], y: &[T], z: &mut Vec<T>) {
    z.clear();
    z.push(x[0]);
    z.extend(x[1..].iter().zip(y).map(|(&xi, &yi)| xi * yi));
}

/// The state after `s` RK4 steps (from `y = 0` at `t = 0` to `t = 2`).
///
/// # Examples
///
/// ```
/// // y_0' = x_0 is integrated exactly: y_0(2) = 2 x_0.
/// let y = tapegrad_gradbench::evals::ode::primal(&[1.5, 1.0], 4);
/// assert_eq!(y[0], 3.0);
/// assert!((y[1] - 1.5 * 2.0 * 2.0 / 2.0).abs() < 1e-12); // y_1 = x_1 x_0 t^2 / 2
/// ```
pub fn primal<T: Scalar>(x: &[T], s: usize) -> Vec<T> {
    let n = x.len();
    let h = 2.0 / s as f64;
    let zero = x[0].lift(0.0);
    let mut y = vec![zero; n];
    let (mut k1, mut k2, mut k3, mut k4) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut tmp = Vec::with_capacity(n);
    let along = |y: &[T], k: &[T], c: f64, tmp: &mut Vec<T>| {
        tmp.clear();
        tmp.extend(y.iter().zip(k).map(|(&yi, &ki)| yi + ki * c));
    };
    for _ in 0..s {
        slopes(x, &y, &mut k1);
        along(&y, &k1, h / 2.0, &mut tmp);
        slopes(x, &tmp, &mut k2);
        along(&y, &k2, h / 2.0, &mut tmp);
        slopes(x, &tmp, &mut k3);
        along(&y, &k3, h, &mut tmp);
        slopes(x, &tmp, &mut k4);
        for i in 0..n {
            y[i] = y[i] + (k1[i] + k4[i] + (k2[i] + k3[i]) * 2.0) * (h / 6.0);
        }
    }
    y
}

/// Evaluates `primal` or `gradient`.
///
/// # Errors
///
/// An unknown function, an empty `x`, or no steps.
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { x, s } = parse("ode", input)?;
    if x.is_empty() || s == 0 {
        return Err(format!(
            "ode: needs a nonempty x and at least one step (n = {}, s = {s})",
            x.len()
        ));
    }
    match function {
        "primal" => {
            let (y, timings) = repeat(runs, || primal(&x, s));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "gradient" => {
            let (gradient, timings) = super::gradient(strategy, runs, &x, |x| {
                *primal(x, s).last().expect("x is not empty")
            })?;
            Ok(Evaluation {
                output: json!(gradient),
                timings,
            })
        }
        _ => Err(unknown_function("ode", function, &["primal", "gradient"])),
    }
}
