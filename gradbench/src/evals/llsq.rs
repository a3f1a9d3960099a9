//! llsq: linear least squares, `1/2 sum_i (s(t_i) - sum_j x_j t_i^j)^2` over `n` sample
//! points `t_i` evenly spaced in `[-1, 1]`, with `s` the sign function; `gradient` is its
//! gradient with respect to the `m` coefficients `x`.
//!
//! Each residual's polynomial is one fused dot node (`Scalar::dot_f64`: the coefficients
//! against the powers of `t_i`, plain numbers), and the sum of squares one more
//! (`Scalar::dot` of the residuals with themselves).

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::Scalar;

use crate::runs::{Evaluation, Runs, repeat};

use super::{Strategy, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    x: Vec<f64>,
    n: usize,
}

/// The `i`-th of `n` points evenly spaced in `[-1, 1]`.
fn t(i: usize, n: usize) -> f64 {
    -1.0 + i as f64 * 2.0 / (n as f64 - 1.0)
}

/// The sign of `t` (0 at 0).
fn sign(t: f64) -> f64 {
    f64::from(u8::from(0.0 < t)) - f64::from(u8::from(t < 0.0))
}

/// The objective at coefficients `x`, over `n` points.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::llsq::primal;
/// // x = [0, 0]: every residual is the sign of t; t = -1, 0, 1 give 1 + 0 + 1.
/// assert_eq!(primal(&[0.0, 0.0], 3), 1.0);
/// ```
pub fn primal<T: Scalar>(x: &[T], n: usize) -> T {
    let m = x.len();
    let mut powers = vec![0.0; m];
    let residuals: Vec<T> = (0..n)
        .map(|i| {
            let ti = t(i, n);
            let mut power = 1.0;
            for p in powers.iter_mut() {
                *p = power;
                power *= ti;
            }
            T::dot_f64(x, &powers) - sign(ti)
        })
        .collect();
    T::dot(&residuals, &residuals) / 2.0
}

/// Evaluates `primal` or `gradient`.
///
/// # Errors
///
/// An unknown function, or an input without coefficients or sample points.
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { x, n } = parse("llsq", input)?;
    if x.is_empty() || n < 2 {
        return Err(format!(
            "llsq: needs at least one coefficient and two points (m = {}, n = {n})",
            x.len()
        ));
    }
    match function {
        "primal" => {
            let (y, timings) = repeat(runs, || primal(&x, n));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "gradient" => {
            let (gradient, timings) = super::gradient(strategy, runs, &x, |x| primal(x, n))?;
            Ok(Evaluation {
                output: json!(gradient),
                timings,
            })
        }
        _ => Err(unknown_function("llsq", function, &["primal", "gradient"])),
    }
}
