//! lse: log-sum-exp, `ln sum_i e^{x_i}`, computed stably (shifted by the maximum);
//! `gradient` is its gradient, the softmax of `x`. One fused node on the tape
//! (`Scalar::logsumexp`), whose partials are the softmax.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::Scalar;

use crate::runs::{Evaluation, Runs, repeat};

use super::{Strategy, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    x: Vec<f64>,
}

/// Log-sum-exp of `x`.
///
/// # Examples
///
/// ```
/// let y = tapegrad_gradbench::evals::lse::primal(&[0.0, 0.0]);
/// assert_eq!(y, 2f64.ln());
/// ```
pub fn primal<T: Scalar>(x: &[T]) -> T {
    T::logsumexp(x)
}

/// Evaluates `primal` or `gradient`.
///
/// # Errors
///
/// An unknown function, or an empty `x`.
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { x } = parse("lse", input)?;
    if x.is_empty() {
        return Err("lse: x is empty (log-sum-exp of nothing is -inf, with no gradient)".into());
    }
    match function {
        "primal" => {
            let (y, timings) = repeat(runs, || primal(&x));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "gradient" => {
            let (gradient, timings) = super::gradient(strategy, runs, &x, |x| primal(x))?;
            Ok(Evaluation {
                output: json!(gradient),
                timings,
            })
        }
        _ => Err(unknown_function("lse", function, &["primal", "gradient"])),
    }
}
