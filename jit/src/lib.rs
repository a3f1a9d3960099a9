//! A recorded [`tapegrad::Replay`] compiled to native code with Cranelift: the same value,
//! gradient and errors as the replay, bit for bit, without its interpreter.
//!
//! Record the function once, build its [`Replay`], compile it with [`Compiled::new`], and
//! evaluate it with the replay's methods ([`Compiled::eval`], [`Compiled::gradient`],
//! [`Compiled::hvp`]), each taking a [`Workspace`] instead of a `ReplayWorkspace`:
//!
//! ```
//! use tapegrad::Graph;
//! use tapegrad::Replay;
//! use tapegrad_jit::{Compiled, Workspace};
//!
//! let g = Graph::new();
//! let x = g.vars(&[1.0, 2.0]);
//! let f = (x[0] * x[1]).sin() + x[1].exp();
//! let replay = Replay::new(f, &x);
//! let compiled = Compiled::new(&replay).unwrap();
//!
//! let mut ws = Workspace::new();
//! let mut grad = [0.0; 2];
//! let value = compiled.gradient(&[0.5, -3.0], &mut ws, &mut grad).unwrap();
//! // the replay's numbers, bit for bit
//! let mut replay_ws = tapegrad::ReplayWorkspace::new();
//! let mut replay_grad = [0.0; 2];
//! assert_eq!(Ok(value), replay.gradient(&[0.5, -3.0], &mut replay_ws, &mut replay_grad));
//! assert_eq!(grad, replay_grad);
//! ```
//!
//! **How the numbers stay the same.** The compiled code performs the replay's operations in
//! its order: the value and partials of each node, then the guards, then the reverse sweep,
//! edge by edge from the output down. IEEE arithmetic whose result is fixed by the standard
//! (`+ - * /`, negation, `sqrt`, `abs`, comparisons) is compiled inline where the op table's
//! rule is exactly that arithmetic; everything else (`exp`, `ln`, `tanh`, the partials of
//! `tanh` or `gelu`, `powf`, amax, clamp, ...) calls the op table's own Rust functions, the
//! ones the interpreter calls. Cranelift never fuses a multiply and an add into an FMA nor
//! reassociates a sum. The sweep is the interpreter's fast loop; where it meets an infinite
//! or NaN adjoint, the interpreter's careful loop (which applies the "a zero factor wins"
//! rule edge by edge) decides, so such an evaluation is handed to the replay itself.
//!
//! **What is not compiled.** The Hessian-vector product ([`Compiled::hvp`]) is the replay's
//! own: its rules evaluate the op table on dual numbers, which live inside tapegrad.
//!
//! **Cost.** Compiling takes roughly a microsecond per node (see the crate's README), so it
//! pays off for a function evaluated many times.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod calls;
mod codegen;
#[expect(
    unsafe_code,
    reason = "calling generated machine code; the only module allowed unsafe code"
)]
mod native;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tapegrad::{Error, Replay, ReplayWorkspace};

pub use codegen::Stats;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// A unique id per compilation, so that a workspace knows which one it was prepared for.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A [`Replay`] compiled to native code: the same evaluations, with the same numbers and
/// errors, faster.
///
/// It keeps a copy of the replay (for [`Compiled::hvp`], and for the rare gradient whose
/// sweep meets an infinity or a NaN, which the replay's careful sweep evaluates). It is
/// immutable, `Send` and `Sync`: threads can evaluate one at once, each with its own
/// [`Workspace`].
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Replay};
/// use tapegrad_jit::{Compiled, Workspace};
///
/// let g = Graph::new();
/// let x = g.var(1.0);
/// let y = if x.gt(0.0) { x * x } else { -x };
/// let compiled = Compiled::new(&Replay::new(y, &[x])).unwrap();
/// let mut ws = Workspace::new();
/// assert_eq!(compiled.eval(&[3.0], &mut ws), Ok(9.0));
/// assert!(compiled.eval(&[-3.0], &mut ws).is_err()); // the branch x > 0 flipped
/// ```
pub struct Compiled {
    replay: Replay,
    code: native::Code,
    id: u64,
    /// The output's index among the inputs, if it is one.
    output_input: Option<usize>,
    stats: Stats,
    compile_time: Duration,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("stats", &self.stats)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
}

/// The buffers one evaluation of a [`Compiled`] works in (values, partials, adjoints), and a
/// [`ReplayWorkspace`] for what the replay evaluates. Keep one per thread and pass it to
/// every call: after the first call with a given compilation, evaluating allocates nothing.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Replay};
/// use tapegrad_jit::{Compiled, Workspace};
///
/// let g = Graph::new();
/// let x = g.var(1.0);
/// let compiled = Compiled::new(&Replay::new(x.exp(), &[x])).unwrap();
/// let mut ws = Workspace::new();
/// for t in [0.0, 1.0, 2.0] {
///     assert_eq!(compiled.eval(&[t], &mut ws), Ok(t.exp()));
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    compiled: u64,
    memory: native::Memory,
    replay: ReplayWorkspace,
}

impl Workspace {
    /// An empty workspace; the first evaluation sizes it.
    ///
    /// # Examples
    ///
    /// ```
    /// let ws = tapegrad_jit::Workspace::new();
    /// # drop(ws);
    /// ```
    pub fn new() -> Self {
        Workspace::default()
    }
}

/// Why a replay could not be compiled: Cranelift refused it (this machine is not one it
/// supports), or the program is too large (over 268 million slots or edges).
///
/// # Examples
///
/// ```
/// let error = tapegrad_jit::CompileError::new("no such machine");
/// assert_eq!(error.to_string(), "tapegrad-jit: no such machine");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    message: String,
}

impl CompileError {
    /// An error with this message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad_jit::CompileError::new("x").to_string().ends_with("x"));
    /// ```
    pub fn new(message: impl Into<String>) -> CompileError {
        CompileError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tapegrad-jit: {}", self.message)
    }
}

impl std::error::Error for CompileError {}

impl Compiled {
    /// Compiles `replay` to native code.
    ///
    /// # Errors
    ///
    /// [`CompileError`] if Cranelift does not support this machine or refuses the code, or
    /// if the program is too large.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let compiled = tapegrad_jit::Compiled::new(&Replay::new(x.ln(), &[x])).unwrap();
    /// assert_eq!(compiled.stats().nodes, 2);
    /// ```
    pub fn new(replay: &Replay) -> Result<Compiled, CompileError> {
        let start = Instant::now();
        let (code, stats) =
            codegen::compile(replay.program(), replay.guards()).map_err(CompileError::new)?;
        let program = replay.program();
        let output = program.output() as u32;
        Ok(Compiled {
            replay: replay.clone(),
            code,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            output_input: program.inputs().iter().position(|&i| i == output),
            stats,
            compile_time: start.elapsed(),
        })
    }

    /// The replay this was compiled from.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let compiled = tapegrad_jit::Compiled::new(&Replay::new(x.sin(), &[x])).unwrap();
    /// assert_eq!(compiled.replay().len(), 2);
    /// ```
    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// What the compilation produced: nodes, edges, functions, bytes of machine code.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let compiled = tapegrad_jit::Compiled::new(&Replay::new(x * x, &[x])).unwrap();
    /// let stats = compiled.stats();
    /// assert_eq!((stats.nodes, stats.edges, stats.functions), (2, 2, 2));
    /// assert!(stats.code_bytes > 0);
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How long [`Compiled::new`] took.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let compiled = tapegrad_jit::Compiled::new(&Replay::new(x.exp(), &[x])).unwrap();
    /// assert!(compiled.compile_time().as_secs() < 60);
    /// ```
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The number of inputs (as [`Replay::inputs`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 2.0]);
    /// let compiled = tapegrad_jit::Compiled::new(&Replay::new(x[0] * x[1], &x)).unwrap();
    /// assert_eq!(compiled.inputs(), 2);
    /// ```
    pub fn inputs(&self) -> usize {
        self.replay.inputs()
    }

    /// The function's value at `x`, as [`Replay::eval`] gives it.
    ///
    /// # Errors
    ///
    /// As [`Replay::eval`]: [`Error::BadOperands`] if `x` has the wrong length;
    /// [`Error::BranchChanged`] for the first guard (in recording order) that comes out
    /// otherwise at `x`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    /// use tapegrad_jit::{Compiled, Workspace};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let compiled = Compiled::new(&Replay::new(x * x + 1.0, &[x])).unwrap();
    /// assert_eq!(compiled.eval(&[3.0], &mut Workspace::new()), Ok(10.0));
    /// ```
    pub fn eval(&self, x: &[f64], ws: &mut Workspace) -> Result<f64, Error> {
        if x.len() != self.replay.inputs() {
            // The replay's own error.
            return self.replay.eval(x, &mut ws.replay);
        }
        self.forward(x, ws)?;
        Ok(self.output(x, ws))
    }

    /// The value and the gradient with respect to the inputs, written to `grad`: bit for
    /// bit what [`Replay::gradient`] gives (and so what recording the function at `x` and
    /// calling [`Var::backward`](tapegrad::Var::backward) gives).
    ///
    /// # Errors
    ///
    /// As [`Replay::gradient`]: as [`Compiled::eval`], and [`Error::BadOperands`] if `grad`
    /// has the wrong length.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    /// use tapegrad_jit::{Compiled, Workspace};
    ///
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 1.0]);
    /// let compiled = Compiled::new(&Replay::new(x[0] * x[1].exp(), &x)).unwrap();
    /// let mut grad = [0.0; 2];
    /// let y = compiled.gradient(&[2.0, 0.0], &mut Workspace::new(), &mut grad);
    /// assert_eq!(y, Ok(2.0));
    /// assert_eq!(grad, [1.0, 2.0]);
    /// ```
    pub fn gradient(&self, x: &[f64], ws: &mut Workspace, grad: &mut [f64]) -> Result<f64, Error> {
        let n = self.replay.inputs();
        if x.len() != n || grad.len() != n {
            return self.replay.gradient(x, &mut ws.replay, grad);
        }
        self.forward(x, ws)?;
        self.code
            .reverse(self.replay.program(), &mut ws.memory, x, grad);
        if !all_finite(grad) {
            // The sweep met an infinite or NaN adjoint: the interpreter's careful sweep
            // (zero factors win, overflowed partials rescued) decides what each gradient is.
            return self.replay.gradient(x, &mut ws.replay, grad);
        }
        Ok(self.output(x, ws))
    }

    /// The output's value after [`Compiled::forward`] at `x`: an input's is in `x` (the
    /// code reads the inputs there), every other in `values`.
    fn output(&self, x: &[f64], ws: &Workspace) -> f64 {
        match self.output_input {
            Some(k) => x[k],
            None => ws.memory.values[self.replay.program().output()],
        }
    }

    /// The Hessian-vector product `H v` at `x`, written to `out`: [`Replay::hvp`] itself
    /// (forward-over-reverse on dual numbers, which this crate does not compile).
    ///
    /// # Errors
    ///
    /// As [`Replay::hvp`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    /// use tapegrad_jit::{Compiled, Workspace};
    ///
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 1.0]);
    /// let compiled = Compiled::new(&Replay::new(x[0] * x[0] * x[1], &x)).unwrap();
    /// let mut hv = [0.0; 2];
    /// compiled.hvp(&[3.0, 5.0], &[1.0, 0.0], &mut Workspace::new(), &mut hv).unwrap();
    /// assert_eq!(hv, [10.0, 6.0]);
    /// ```
    pub fn hvp(
        &self,
        x: &[f64],
        v: &[f64],
        ws: &mut Workspace,
        out: &mut [f64],
    ) -> Result<(), Error> {
        self.replay.hvp(x, v, &mut ws.replay, out)
    }

    /// Sizes `ws` for this compilation (once), runs the forward functions at `x`, and turns
    /// a flipped guard into the replay's error.
    fn forward(&self, x: &[f64], ws: &mut Workspace) -> Result<(), Error> {
        let program = self.replay.program();
        let memory = &mut ws.memory;
        if ws.compiled != self.id {
            ws.compiled = self.id;
            memory.values.clear();
            memory.values.extend_from_slice(program.slots());
            memory.partials.clear();
            memory.partials.resize(self.stats.edges, 0.0);
            memory.adjoints.clear();
            memory.adjoints.resize(self.stats.nodes, 0.0);
        }
        let status = self.code.forward(program, memory, x);
        // A node the code left to the replay's own evaluation failed: as the interpreter,
        // which stops there, before it checks any guard.
        if let Some(error) = memory.scratch.error.take() {
            return Err(error);
        }
        match status {
            0 => Ok(()),
            status => {
                let k = status as usize - 1;
                let (_, [a, b], _) = program.guard(k);
                // The operands' values: the inputs' are in `x` (the code reads them there).
                for (&slot, &v) in program.inputs().iter().zip(x) {
                    memory.values[slot as usize] = v;
                }
                let operands = [a, b].map(|s| memory.values[s as usize]);
                Err(program.branch_changed(k, operands))
            }
        }
    }
}

/// Whether every entry is finite, in one branch-free pass: `g - g` is 0 for a finite `g`
/// and NaN for an infinite or NaN one, summed in four lanes the compiler can vectorise.
#[expect(
    clippy::eq_op,
    reason = "x - x is the test: 0 when x is finite, NaN otherwise"
)]
fn all_finite(xs: &[f64]) -> bool {
    let mut lanes = [0.0f64; 4];
    let chunks = xs.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x - x;
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane += x - x;
    }
    lanes.iter().all(|&lane| lane == 0.0)
}

// Shared between threads by reference, as a replay is.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Compiled>();
    send_sync::<Workspace>();
};
