//! One module per GradBench eval. Each parses the eval's input, runs the function it names
//! as often as [`Runs`] asks, and answers in the shape of GradBench's
//! `manual` tool (`cpp/gradbench/evals/*.hpp`, `to_json`), which its checker compares with.
//!
//! The functions are written over [`tapegrad::Scalar`] where they can be: the primal
//! (`objective`, `primal`, `cost`) runs them on `f64`, the derivative records them on a
//! [`tapegrad::Graph`] and uses the crate's public API (`backward`, `Var::grad`,
//! `higher::hvp`, [`tapegrad::Replay`]), or compile the recording with
//! [`tapegrad_jit::Compiled`] ([`Strategy::Compiled`]).

use serde::de::DeserializeOwned;
use serde_json::Value;
use tapegrad::{Dual, Gradients, Graph, Replay, ReplayWorkspace, Scalar, Var};
use tapegrad_jit::Compiled;

use crate::runs::{Evaluation, Runs, Timing, prepare, repeat};

pub mod ba;
pub mod det;
pub mod gd;
pub mod gmm;
pub mod hello;
pub mod ht;
pub mod kmeans;
pub mod llsq;
pub mod lse;
pub mod lstm;
pub mod ode;
pub mod particle;
pub mod saddle;

/// The modules (evals) this tool implements.
pub const MODULES: [&str; 12] = [
    "hello", "llsq", "lse", "det", "ode", "gmm", "ba", "ht", "lstm", "kmeans", "particle", "saddle",
];

/// How the derivative functions use their tape across the runs of one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Where the function has no control flow on its inputs' values (llsq, lse, det, ode,
    /// gmm, lstm) or only through guards that a replay checks (ba's blocks), record it
    /// once, timed as `prepare` (as ADOL-C's tool tapes its function before the runs), and
    /// evaluate each run's gradient by a [`Replay`] of that recording; record every run
    /// elsewhere.
    #[default]
    Replay,
    /// Record every run and sweep it backward (what a loop calling `backward` does).
    Record,
    /// As [`Strategy::Replay`], with each recording's [`Replay`] also compiled to native
    /// code by [`tapegrad_jit::Compiled`] during `prepare` (the compile time is counted
    /// there, with the recording), and each run evaluated by the compiled code: the same
    /// numbers as the replay's, bit for bit. A recording of more than
    /// [`COMPILE_AT_MOST_NODES`] nodes is replayed by the interpreter instead.
    Compiled,
}

impl Strategy {
    /// Whether the functions that allow it record once and evaluate that recording
    /// every run ([`Strategy::Replay`] and [`Strategy::Compiled`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_gradbench::evals::Strategy;
    ///
    /// assert!(Strategy::Replay.records_once() && Strategy::Compiled.records_once());
    /// assert!(!Strategy::Record.records_once());
    /// ```
    pub fn records_once(self) -> bool {
        matches!(self, Strategy::Replay | Strategy::Compiled)
    }
}

/// The longest recording [`Strategy::Compiled`] compiles, in nodes (gmm's chunks
/// counted together): compiling took 10-120 µs
/// per node on GradBench's workloads (lse's sums the least, det's minors and gmm's dots
/// the most, on a shared 2-core AMD EPYC VM), so this many nodes compile in about 3-40
/// seconds; a longer recording (det at `ell` 10 and more, lstm's longer texts, gmm's
/// larger mixtures) would take minutes to hours, and is replayed by the interpreter.
pub const COMPILE_AT_MOST_NODES: usize = 300_000;

/// A recording made once, to be evaluated every run: by the interpreter ([`Replay`]), or
/// by native code compiled from it ([`Compiled`]); each with its own workspace.
pub(crate) enum Prepared {
    /// Replayed by the interpreter.
    Replay(Replay, ReplayWorkspace),
    /// Compiled to native code.
    Compiled(Box<Compiled>, tapegrad_jit::Workspace),
}

impl Prepared {
    /// `replay` as `strategy` evaluates it: compiled for [`Strategy::Compiled`] (unless
    /// it has more than [`COMPILE_AT_MOST_NODES`] nodes), else interpreted.
    ///
    /// # Errors
    ///
    /// The compiler's error, if Cranelift refuses the program.
    pub(crate) fn new(replay: Replay, strategy: Strategy) -> Result<Prepared, String> {
        if strategy == Strategy::Compiled && replay.len() <= COMPILE_AT_MOST_NODES {
            let compiled = Compiled::new(&replay).map_err(|e| e.to_string())?;
            Ok(Prepared::Compiled(
                Box::new(compiled),
                tapegrad_jit::Workspace::new(),
            ))
        } else {
            Ok(Prepared::Replay(replay, ReplayWorkspace::new()))
        }
    }

    /// The value at `x` and the gradient, written to `grad`.
    ///
    /// # Errors
    ///
    /// As [`Replay::gradient`] (the compiled code's errors are the replay's).
    pub(crate) fn gradient(&mut self, x: &[f64], grad: &mut [f64]) -> Result<f64, tapegrad::Error> {
        match self {
            Prepared::Replay(replay, ws) => replay.gradient(x, ws, grad),
            Prepared::Compiled(compiled, ws) => compiled.gradient(x, ws, grad),
        }
    }
}

/// Evaluates `function` of `module` at `input`, with the default [`Strategy`].
///
/// # Errors
///
/// An unknown module or function, or an input that is not what the eval sends (a
/// missing field, inconsistent sizes), named in the message.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tapegrad_gradbench::evals::evaluate;
///
/// let e = evaluate("lse", "gradient", &json!({"x": [0.0, 0.0], "min_runs": 1, "min_seconds": 0}))
///     .unwrap();
/// assert_eq!(e.output, json!([0.5, 0.5]));
/// assert!(evaluate("lse", "hessian", &json!({"x": [0.0]})).is_err());
/// ```
pub fn evaluate(module: &str, function: &str, input: &Value) -> Result<Evaluation, String> {
    evaluate_with(module, function, input, Strategy::default())
}

/// [`evaluate`] with the given [`Strategy`].
///
/// # Errors
///
/// As [`evaluate`].
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tapegrad_gradbench::evals::{evaluate_with, Strategy};
///
/// let input = json!({"x": [0.0, 0.0], "min_runs": 2, "min_seconds": 0});
/// let replayed = evaluate_with("lse", "gradient", &input, Strategy::Replay).unwrap();
/// let recorded = evaluate_with("lse", "gradient", &input, Strategy::Record).unwrap();
/// assert_eq!(replayed.output, recorded.output);
/// // Compiled to native code, the replay's numbers bit for bit.
/// let compiled = evaluate_with("lse", "gradient", &input, Strategy::Compiled).unwrap();
/// assert_eq!(compiled.output, replayed.output);
/// // The replay's recording is timed once, as `prepare`, before the two runs.
/// let names = |e: &tapegrad_gradbench::runs::Evaluation| e.timings.iter().map(|t| t.name).collect::<Vec<_>>();
/// assert_eq!(names(&replayed), ["prepare", "evaluate", "evaluate"]);
/// assert_eq!(names(&recorded), ["evaluate", "evaluate"]);
/// ```
pub fn evaluate_with(
    module: &str,
    function: &str,
    input: &Value,
    strategy: Strategy,
) -> Result<Evaluation, String> {
    match module {
        "hello" => hello::evaluate(function, input),
        "llsq" => llsq::evaluate(function, input, strategy),
        "lse" => lse::evaluate(function, input, strategy),
        "det" => det::evaluate(function, input, strategy),
        "ode" => ode::evaluate(function, input, strategy),
        "gmm" => gmm::evaluate(function, input, strategy),
        "ba" => ba::evaluate(function, input, strategy),
        "ht" => ht::evaluate(function, input),
        "lstm" => lstm::evaluate(function, input, strategy),
        "kmeans" => kmeans::evaluate(function, input),
        "particle" => particle::evaluate(function, input),
        "saddle" => saddle::evaluate(function, input),
        _ => Err(format!(
            "tapegrad has no implementation of the module {module:?}"
        )),
    }
}

/// `c - x`: [`Scalar`] has `x - c` for a constant `c`, and `Var`, like
/// `f64`, also takes the constant on the left (one node, where `-x + c` records two).
pub trait SubFrom: Sized {
    /// `c - self`.
    fn sub_from(self, c: f64) -> Self;
}

impl SubFrom for f64 {
    fn sub_from(self, c: f64) -> f64 {
        c - self
    }
}

impl SubFrom for Var<'_> {
    fn sub_from(self, c: f64) -> Self {
        c - self
    }
}

/// A dual number's `c - x` is its `Binary::Sub` rule with a constant first operand.
impl<const K: usize, T: Scalar> SubFrom for Dual<K, T> {
    fn sub_from(self, c: f64) -> Self {
        c - self
    }
}

/// The eval's input as `T`, or an error naming the module and what is wrong.
pub(crate) fn parse<T: DeserializeOwned>(module: &str, input: &Value) -> Result<T, String> {
    T::deserialize(input)
        .map_err(|e| format!("{module}: the input is not what the eval sends: {e}"))
}

/// The error for a function the module does not have.
pub(crate) fn unknown_function(module: &str, function: &str, known: &[&str]) -> String {
    format!(
        "{module} has no function {function:?} (it has {})",
        known.join(", ")
    )
}

/// `Ok(())` if `len` is `want`, else an error naming the field.
pub(crate) fn expect_len(module: &str, field: &str, len: usize, want: usize) -> Result<(), String> {
    if len == want {
        Ok(())
    } else {
        Err(format!(
            "{module}: {field} has {len} numbers, expected {want}"
        ))
    }
}

/// The gradient of `f` at `x`, by one recording and one reverse sweep on `graph`, written
/// to `out`; returns the value. Everything recorded is released before it returns, so a
/// loop of calls reuses the graph's memory (and `grads`'s).
pub(crate) fn gradient_by_recording<'g>(
    graph: &'g Graph,
    grads: &mut Gradients,
    x: &[f64],
    f: impl FnOnce(&[Var<'g>]) -> Var<'g>,
    out: &mut Vec<f64>,
) -> f64 {
    let mark = graph.mark();
    let value = {
        let inputs = graph.inputs(x);
        let y = f(&inputs);
        y.backward_into(grads);
        out.clear();
        out.extend(inputs.iter().map(|&xi| grads[xi]));
        y.value()
    };
    graph.release(mark);
    value
}

/// The gradient of `f` at `x` for every run `runs` asks, by `strategy`: returns the
/// gradient and the timings.
pub(crate) fn gradient(
    strategy: Strategy,
    runs: Runs,
    x: &[f64],
    f: impl for<'g> Fn(&[Var<'g>]) -> Var<'g>,
) -> Result<(Vec<f64>, Vec<Timing>), String> {
    match strategy {
        Strategy::Replay | Strategy::Compiled => gradient_by_replay(strategy, runs, x, f),
        Strategy::Record => {
            let graph = Graph::new();
            let mut grads = Gradients::new();
            let mut gradient = Vec::new();
            let ((), timings) = repeat(runs, || {
                gradient_by_recording(&graph, &mut grads, x, &f, &mut gradient);
            });
            Ok((gradient, timings))
        }
    }
}

/// The gradient of `f` at `x` by a recording made once and replayed: `f` is recorded at
/// `x` and its [`Replay`] built (and compiled, for [`Strategy::Compiled`]), timed as
/// `prepare`, then each run evaluates it. Only for functions with no control flow on their
/// inputs' values outside guards (a replay evaluates the recorded branch, and checks only
/// the guards).
pub(crate) fn gradient_by_replay(
    strategy: Strategy,
    runs: Runs,
    x: &[f64],
    f: impl for<'g> FnOnce(&[Var<'g>]) -> Var<'g>,
) -> Result<(Vec<f64>, Vec<Timing>), String> {
    let (prepared_function, prepared) = prepare(|| {
        let graph = Graph::new();
        let inputs = graph.vars(x);
        Prepared::new(Replay::new(f(&inputs), &inputs), strategy)
    });
    let mut function = prepared_function?;
    let mut gradient = vec![0.0; x.len()];
    let (result, mut timings) = repeat(runs, || function.gradient(x, &mut gradient));
    result.map_err(|e| format!("the replay failed: {e}"))?;
    timings.insert(0, prepared);
    Ok((gradient, timings))
}

/// The gradient of a function recorded once and replayed ([`Replay`]): at plain numbers
/// (`Replay::gradient`, reverse mode) and at dual numbers (forward over reverse: the
/// gradient at their values, and each tangent of it, the gradient's derivative along the
/// inputs' tangents, by `Replay::hvp`, the Hessian times that direction). particle's and
/// saddle's inner derivatives in reverse mode, under an outer derivative in either mode.
pub(crate) struct ReplayedGradient {
    replay: Replay,
    workspace: std::cell::RefCell<ReplayWorkspace>,
}

impl ReplayedGradient {
    /// The replay of `f` recorded at `at`: `f` must take the same branches at every point
    /// it is evaluated at (particle's potential and saddle's `f` have none).
    pub(crate) fn new(at: &[f64], f: impl for<'g> FnOnce(&[Var<'g>]) -> Var<'g>) -> Self {
        let graph = Graph::new();
        let x = graph.vars(at);
        ReplayedGradient {
            replay: Replay::new(f(&x), &x),
            workspace: std::cell::RefCell::new(ReplayWorkspace::new()),
        }
    }

    /// The gradient at `x`.
    pub(crate) fn at(&self, x: &[f64]) -> Vec<f64> {
        let mut grad = vec![0.0; x.len()];
        self.replay
            .gradient(x, &mut self.workspace.borrow_mut(), &mut grad)
            .expect("a branch-free function's replay holds at every point");
        grad
    }

    /// The gradient at dual numbers `x`: its value at the values of `x`, and its tangent
    /// along each of the `K` directions `x` carries (`H` times that direction).
    pub(crate) fn at_dual<const K: usize>(&self, x: &[Dual<K>]) -> Vec<Dual<K>> {
        let values: Vec<f64> = x.iter().map(|d| d.value).collect();
        let mut gradient: Vec<Dual<K>> = self.at(&values).into_iter().map(Dual::constant).collect();
        let mut direction = vec![0.0; x.len()];
        let mut hv = vec![0.0; x.len()];
        for k in 0..K {
            for (v, d) in direction.iter_mut().zip(x) {
                *v = d.tangents[k];
            }
            self.replay
                .hvp(
                    &values,
                    &direction,
                    &mut self.workspace.borrow_mut(),
                    &mut hv,
                )
                .expect("a branch-free function's replay holds at every point");
            for (g, &h) in gradient.iter_mut().zip(&hv) {
                g.tangents[k] = h;
            }
        }
        gradient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x0 * exp(x1)` recorded at `x`, as a replay.
    fn product_exp(x: &[f64]) -> Replay {
        let graph = Graph::new();
        let v = graph.vars(x);
        Replay::new(v[0] * v[1].exp(), &v)
    }

    #[test]
    fn compiled_strategy_compiles_and_matches_the_closed_form() {
        let mut compiled = Prepared::new(product_exp(&[1.0, 0.0]), Strategy::Compiled).unwrap();
        assert!(matches!(compiled, Prepared::Compiled(..)));
        let mut interpreted = Prepared::new(product_exp(&[1.0, 0.0]), Strategy::Replay).unwrap();
        assert!(matches!(interpreted, Prepared::Replay(..)));
        let x = [3.0, 0.5];
        let (mut g_compiled, mut g_interpreted) = ([0.0; 2], [0.0; 2]);
        let y = compiled.gradient(&x, &mut g_compiled).unwrap();
        // d/dx0 = exp(x1), d/dx1 = x0 exp(x1).
        assert_eq!(y, 3.0 * 0.5f64.exp());
        assert_eq!(g_compiled, [0.5f64.exp(), 3.0 * 0.5f64.exp()]);
        assert_eq!(interpreted.gradient(&x, &mut g_interpreted), Ok(y));
        assert_eq!(g_compiled, g_interpreted);
    }

    #[test]
    fn a_recording_over_the_limit_is_interpreted() {
        let graph = Graph::new();
        let x = graph.var(0.5);
        // A chain of sums: `(n + 1) x` in `n + 1` nodes with `x`, over the limit.
        let n = COMPILE_AT_MOST_NODES;
        let mut y = x;
        for _ in 0..n {
            y += x;
        }
        let replay = Replay::new(y, &[x]);
        assert_eq!(replay.len(), COMPILE_AT_MOST_NODES + 1);
        let mut prepared = Prepared::new(replay, Strategy::Compiled).unwrap();
        assert!(matches!(prepared, Prepared::Replay(..)));
        let mut grad = [0.0];
        let count = (n + 1) as f64;
        assert_eq!(prepared.gradient(&[2.0], &mut grad), Ok(2.0 * count));
        assert_eq!(grad, [count]);
    }
}
