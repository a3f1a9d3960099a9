//! Repeating an evaluation as the eval asks (`min_runs`, `min_seconds`) and timing each run,
//! as GradBench's C++ tools do (`cpp/gradbench/main.hpp`): run at least `min_runs` times
//! and until the runs add up to `min_seconds`, one `evaluate` timing per run. Work done once
//! before the runs (recording a tape to replay) is reported as a `prepare` timing, which
//! GradBench does not score.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How often to run: GradBench's `Runs` fields of an eval's input.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct Runs {
    /// Run at least this many times.
    #[serde(default = "one")]
    pub min_runs: usize,
    /// And until the runs' times add up to this many seconds.
    #[serde(default)]
    pub min_seconds: f64,
}

fn one() -> usize {
    1
}

impl Default for Runs {
    fn default() -> Self {
        Runs {
            min_runs: 1,
            min_seconds: 0.0,
        }
    }
}

impl Runs {
    /// The `min_runs` and `min_seconds` of an input (an input that is not an object, as
    /// hello's plain number, asks for one run).
    ///
    /// # Errors
    ///
    /// If either field is there with the wrong type, or `min_runs` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde_json::json;
    /// use tapegrad_gradbench::runs::Runs;
    ///
    /// let runs = Runs::of(&json!({"x": [1.0], "min_runs": 3, "min_seconds": 0.5})).unwrap();
    /// assert_eq!((runs.min_runs, runs.min_seconds), (3, 0.5));
    /// assert_eq!(Runs::of(&json!(2.0)).unwrap(), Runs::default());
    /// assert!(Runs::of(&json!({"min_runs": 0})).is_err());
    /// ```
    pub fn of(input: &Value) -> Result<Runs, String> {
        if !input.is_object() {
            return Ok(Runs::default());
        }
        let runs = Runs::deserialize(input).map_err(|e| format!("min_runs / min_seconds: {e}"))?;
        if runs.min_runs == 0 {
            return Err("min_runs is 0: GradBench asks for at least one run".into());
        }
        Ok(runs)
    }
}

/// One timing of a response: a name (`evaluate` for each scored run, `prepare` for work
/// done once before them) and a duration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// `evaluate` or `prepare`.
    pub name: &'static str,
    /// The duration.
    pub nanoseconds: u64,
}

/// What an evaluation answers: its output (JSON, in the shape GradBench's `manual` tool
/// gives) and its timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The function's output.
    pub output: Value,
    /// One `evaluate` timing per run, after any `prepare` timing.
    pub timings: Vec<Timing>,
}

/// Runs `f` as `runs` asks, timing each call, and returns the last call's result with
/// one `evaluate` timing per call.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::runs::{repeat, Runs};
///
/// let mut calls = 0;
/// let (last, timings) = repeat(Runs { min_runs: 4, min_seconds: 0.0 }, || { calls += 1; calls });
/// assert_eq!((last, timings.len()), (4, 4));
/// assert!(timings.iter().all(|t| t.name == "evaluate"));
/// ```
pub fn repeat<O>(runs: Runs, mut f: impl FnMut() -> O) -> (O, Vec<Timing>) {
    let mut timings = Vec::new();
    let mut elapsed = 0.0;
    loop {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        timings.push(Timing {
            name: "evaluate",
            nanoseconds: took.as_nanos() as u64,
        });
        elapsed += took.as_secs_f64();
        if timings.len() >= runs.min_runs && elapsed >= runs.min_seconds {
            return (out, timings);
        }
    }
}

/// Runs `f` once, timed as `prepare` (the work a tool does before the scored runs, as
/// ADOL-C's tool records its tape).
///
/// # Examples
///
/// ```
/// let (value, timing) = tapegrad_gradbench::runs::prepare(|| 2 + 2);
/// assert_eq!((value, timing.name), (4, "prepare"));
/// ```
pub fn prepare<O>(f: impl FnOnce() -> O) -> (O, Timing) {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    (
        out,
        Timing {
            name: "prepare",
            nanoseconds: took.as_nanos() as u64,
        },
    )
}
