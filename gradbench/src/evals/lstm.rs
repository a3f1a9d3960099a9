//! lstm: ADBench's diagonal LSTM language model over a text (GradBench's `lstm.hpp`):
//! `l` layers of `b` cells (one per bit of a character), each gate a sigmoid (or tanh) of
//! one input times a weight plus a bias; the loss is the mean cross-entropy of each
//! character's prediction of the next. `jacobian` is its gradient with respect to the
//! layers' weights and biases and the input/output weights and output bias (the state is
//! data).
//!
//! Every gate is written as `Scalar` arithmetic (product, sum, `sigmoid` or `tanh`: one
//! node each), each cell update is one fused dot node, and each prediction's normaliser
//! `ln(sum e^y + 2)` a fused sum.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::Scalar;

use crate::runs::{Evaluation, Runs, repeat};

use super::{Strategy, expect_len, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    main_params: Vec<Vec<f64>>,
    extra_params: Vec<Vec<f64>>,
    state: Vec<Vec<f64>>,
    sequence: Vec<Vec<f64>>,
}

/// The data of one problem: sizes, initial state, text.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Layers.
    pub l: usize,
    /// Cells per layer (bits per character).
    pub b: usize,
    /// The initial state: per layer, hidden then cell, `2 l b` numbers.
    pub state: Vec<f64>,
    /// The characters' bits, `c x b` row-major.
    pub sequence: Vec<f64>,
}

/// The loss at `params` (the `8 l b` layer parameters, then the `3 b` extra ones).
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::lstm::{objective, Problem};
/// let p = Problem { l: 1, b: 1, state: vec![0.0, 0.0], sequence: vec![1.0, 0.0] };
/// // Zero parameters: every prediction is 0, so the loss is -(0 - ln 3) * 0 / 1 = 0 here
/// // (the second character's bit is 0).
/// assert_eq!(objective(&p, &[0.0; 11]), 0.0);
/// ```
pub fn objective<T: Scalar>(problem: &Problem, params: &[T]) -> T {
    let Problem { l, b, .. } = *problem;
    let (main, extra) = params.split_at(8 * l * b);
    let (in_weight, rest) = extra.split_at(b);
    let (out_weight, out_bias) = rest.split_at(b);
    let mut state: Vec<T> = problem.state.iter().map(|&s| params[0].lift(s)).collect();
    let chars: Vec<&[f64]> = problem.sequence.chunks(b).collect();
    let mut input = Vec::with_capacity(b);
    let mut prediction = Vec::with_capacity(b);
    let mut exps = Vec::with_capacity(b);
    let mut terms = Vec::with_capacity(chars.len());
    for (t, next) in chars.iter().zip(&chars[1..]) {
        input.clear();
        input.extend(in_weight.iter().zip(t.iter()).map(|(&w, &x)| w * x));
        for (layer, layer_state) in main.chunks(8 * b).zip(state.chunks_mut(2 * b)) {
            let (weight, bias) = layer.split_at(4 * b);
            let (hidden, cell) = layer_state.split_at_mut(b);
            for i in 0..b {
                let gate = |g: usize, x: T| x * weight[g * b + i] + bias[g * b + i];
                let forget = gate(0, input[i]).sigmoid();
                let ingate = gate(1, hidden[i]).sigmoid();
                let outgate = gate(2, input[i]).sigmoid();
                let change = gate(3, hidden[i]).tanh();
                cell[i] = T::dot(&[cell[i], ingate], &[forget, change]);
                hidden[i] = outgate * cell[i].tanh();
            }
            input.clear();
            input.extend_from_slice(hidden);
        }
        prediction.clear();
        prediction.extend((0..b).map(|i| input[i] * out_weight[i] + out_bias[i]));
        exps.clear();
        exps.extend(prediction.iter().map(|&y| y.exp()));
        let normaliser = (T::sum(&exps) + 2.0).ln();
        for y in prediction.iter_mut() {
            *y = *y - normaliser;
        }
        terms.push(T::dot_f64(&prediction, next));
    }
    T::sum(&terms) * (-1.0 / (terms.len() * b) as f64)
}

/// Evaluates `objective` or `jacobian` (the gradient).
///
/// # Errors
///
/// An unknown function, or an input whose shapes disagree (rows of `2 l` by `4 b`, `3`
/// by `b`, `2 l` by `b`, and at least 2 characters of `b` bits).
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input {
        main_params,
        extra_params,
        state,
        sequence,
    } = parse("lstm", input)?;
    let l = main_params.len() / 2;
    let b = main_params.first().map_or(0, |row| row.len() / 4);
    if l == 0 || b == 0 || sequence.len() < 2 {
        return Err(format!(
            "lstm: needs a layer, a cell and two characters (l = {l}, b = {b}, c = {})",
            sequence.len()
        ));
    }
    expect_len("lstm", "main_params (rows)", main_params.len(), 2 * l)?;
    expect_len("lstm", "extra_params (rows)", extra_params.len(), 3)?;
    expect_len("lstm", "state (rows)", state.len(), 2 * l)?;
    for (field, rows, len) in [
        ("main_params", &main_params, 4 * b),
        ("extra_params", &extra_params, b),
        ("state", &state, b),
        ("sequence", &sequence, b),
    ] {
        for row in rows.iter() {
            expect_len("lstm", &format!("a row of {field}"), row.len(), len)?;
        }
    }
    let problem = Problem {
        l,
        b,
        state: state.concat(),
        sequence: sequence.concat(),
    };
    let params = [main_params.concat(), extra_params.concat()].concat();
    match function {
        "objective" => {
            let (y, timings) = repeat(runs, || objective(&problem, &params));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "jacobian" => {
            let (gradient, timings) =
                super::gradient(strategy, runs, &params, |p| objective(&problem, p))?;
            Ok(Evaluation {
                output: json!(gradient),
                timings,
            })
        }
        _ => Err(unknown_function(
            "lstm",
            function,
            &["objective", "jacobian"],
        )),
    }
}
