//! hello: `square` is `x * x`, and `double` its derivative `2 x`, by reverse mode. The
//! protocol's smoke test.

use serde_json::{Value, json};
use tapegrad::Graph;

use crate::runs::{Evaluation, Runs, repeat};

use super::unknown_function;

/// The function of the eval.
pub fn square(x: f64) -> f64 {
    x * x
}

/// `d(x^2)/dx` at `x`, recorded and swept backward.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_gradbench::evals::hello::double(1.5), 3.0);
/// ```
pub fn double(x: f64) -> f64 {
    let g = Graph::new();
    let v = g.var(x);
    (v * v).backward()[v]
}

/// Evaluates `square` or `double`.
///
/// # Errors
///
/// An unknown function, or an input that is not a number.
pub fn evaluate(function: &str, input: &Value) -> Result<Evaluation, String> {
    let x = input
        .as_f64()
        .ok_or_else(|| format!("hello: the input must be a number, not {input}"))?;
    let f: fn(f64) -> f64 = match function {
        "square" => square,
        "double" => double,
        _ => return Err(unknown_function("hello", function, &["square", "double"])),
    };
    let (y, timings) = repeat(Runs::of(input)?, || f(x));
    Ok(Evaluation {
        output: json!(y),
        timings,
    })
}
