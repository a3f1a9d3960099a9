//! [`Error`]: everything tapegrad reports instead of returning a wrong number, and the
//! panics that report it at the user's line. Uses nothing else in the crate.

use std::fmt;
use std::panic::Location;

/// What went wrong. Each message names the problem and what to do about it.
///
/// Operators (`+`, `*`, ...) cannot return a `Result`, so on bad input they panic with this
/// error's message; the `try_` methods return it instead.
///
/// # Examples
///
/// ```
/// use tapegrad::{Error, Graph};
///
/// let g = Graph::new();
/// let mark = g.mark();
/// let tmp = g.var(1.0);
/// g.release(mark);
/// assert!(matches!(tmp.try_value(), Err(Error::Released)));
/// assert!(tmp.try_value().unwrap_err().to_string().contains("released"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A handle (a `Var`, a `Mark` or a `Gradients`) made by one graph was used with another.
    ForeignHandle {
        /// What kind of handle it was.
        what: &'static str,
        /// The graph it belongs to.
        owner: u64,
        /// The graph it was used with.
        used_with: u64,
    },
    /// A `Var` whose node was freed by [`Graph::release`](crate::Graph::release).
    Released,
    /// The graph holds `u32::MAX - 1` nodes already.
    GraphFull,
    /// An n-ary op got operand lists that do not fit.
    BadOperands {
        /// The op.
        op: &'static str,
        /// What was wrong with them.
        why: String,
    },
    /// In anomaly mode: an op produced a NaN or infinite value or gradient.
    Anomaly(Box<Anomaly>),
    /// A [`Replay`](crate::Replay) evaluated at new inputs where a comparison recorded as a
    /// guard (e.g. [`Var::lt`](crate::Var::lt)) comes out the other way: the recorded
    /// function would have taken another branch, so the replay refuses to answer. Record
    /// the function again at these inputs.
    BranchChanged(Box<BranchChanged>),
    /// With replay checks on (the default, see
    /// [`Graph::set_replay_checks`](crate::Graph::set_replay_checks)), the value of a node
    /// that depends on a replay's inputs was read with [`Var::value`](crate::Var::value)
    /// (or [`Var::try_value`](crate::Var::try_value)) before the replay was built: if code
    /// branched on it, a replay could not tell. Compare through the guard methods instead,
    /// or read with [`Var::untracked_value`](crate::Var::untracked_value) where the read
    /// decides nothing.
    UncheckedRead {
        /// Where the value was read.
        location: &'static Location<'static>,
    },
    /// A user-defined function's rule is malformed: a partial left unwritten, the wrong
    /// number of second-order partials, a partial that is not a node of the graph, or a
    /// non-finite partial where the function promises finite ones
    /// ([`CustomFn::finite_partials`](crate::CustomFn::finite_partials)).
    BadPartials {
        /// The function's name.
        op: &'static str,
        /// The operand whose partial is wrong (for a count, the first missing or extra).
        operand: usize,
        /// What is wrong with it.
        why: String,
    },
    /// [`Var::grad`](crate::Var::grad) (second and higher order) met a node that carries
    /// only first partials: a user-defined function without a second-order rule, or a
    /// fused sub-computation.
    NoSecondOrder {
        /// The function's name (`"fused"` for [`Graph::fuse`](crate::Graph::fuse)).
        op: &'static str,
    },
}

/// Which recorded comparison came out differently at a replay's new inputs (see
/// [`Error::BranchChanged`]).
///
/// # Examples
///
/// ```
/// use tapegrad::{Error, Graph, Replay, ReplayWorkspace};
///
/// let g = Graph::new();
/// let x = g.var(2.0);
/// let y = if x.gt(0.0) { x * x } else { -x }; // the guard: x > 0 was true
/// let replay = Replay::new(y, &[x]);
/// let mut ws = ReplayWorkspace::new();
/// assert_eq!(replay.eval(&[3.0], &mut ws), Ok(9.0));
/// let Err(Error::BranchChanged(b)) = replay.eval(&[-1.0], &mut ws) else { panic!() };
/// assert_eq!((b.comparison, b.recorded, b.operands), (">", true, [-1.0, 0.0]));
/// assert_eq!(b.location.line(), line!() - 6);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BranchChanged {
    /// The comparison (`"<"`, `"<="`, `">"`, `">="`, `"=="`, `"!="`).
    pub comparison: &'static str,
    /// Its outcome when the function was recorded (it is the opposite now).
    pub recorded: bool,
    /// Its two operands' values at the new inputs.
    pub operands: [f64; 2],
    /// Where the comparison was made in the user's code.
    pub location: &'static Location<'static>,
}

/// Where and how a NaN or infinity first appeared (see
/// [`Graph::set_anomaly_mode`](crate::Graph::set_anomaly_mode)).
///
/// # Examples
///
/// ```
/// use tapegrad::{Error, Graph};
///
/// let g = Graph::new();
/// g.set_anomaly_mode(true);
/// let x = g.var(0.0);
/// let y = x.ln(); // this line is reported
/// let Err(Error::Anomaly(a)) = y.try_backward() else { panic!() };
/// assert_eq!(a.op, "ln");
/// assert_eq!(a.inputs, vec![0.0]);
/// assert_eq!(a.location.unwrap().line(), line!() - 4);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// The op's name.
    pub op: &'static str,
    /// Its operands' values (constants included), in operand order.
    pub inputs: Vec<f64>,
    /// Its output value.
    pub output: f64,
    /// `Some(gradient)` if the anomaly is a non-finite gradient flowing from this op to one
    /// of its operands during backward (the operand's adjoint once this op's contribution
    /// is added); `None` if it is the op's forward value.
    pub gradient: Option<f64>,
    /// Where the op was recorded in the user's code (if it was recorded in anomaly mode).
    pub location: Option<&'static Location<'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ForeignHandle {
                what,
                owner,
                used_with,
            } => write!(
                f,
                "tapegrad: a {what} of graph #{owner} was used with graph #{used_with}; \
                 handles only work with the graph that made them"
            ),
            Error::Released => f.write_str(
                "tapegrad: this Var's node was released by Graph::release; \
                 record it again after the mark, or create it before the mark to keep it",
            ),
            Error::GraphFull => f.write_str(
                "tapegrad: the graph holds u32::MAX - 1 nodes, the most it can address; \
                 release nodes you no longer need (Graph::mark / Graph::release)",
            ),
            Error::BadOperands { op, why } => write!(f, "tapegrad: {op}: {why}"),
            Error::Anomaly(a) => a.fmt(f),
            Error::BranchChanged(b) => write!(
                f,
                "tapegrad: replay: the comparison {} {} {} made at {} was {} when recorded and \
                 is {} at these inputs; the function would branch differently, so record it \
                 again at these inputs",
                b.operands[0], b.comparison, b.operands[1], b.location, b.recorded, !b.recorded
            ),
            Error::UncheckedRead { location } => write!(
                f,
                "tapegrad: replay checks: the value of a node that depends on the replay's \
                 inputs was read at {location} before the replay was built; a branch on it \
                 would not be checked at replay. Compare through Var::lt / le / gt / ge / \
                 eq_value / ne_value (which record guards), or read it with \
                 Var::untracked_value if the read decides no control flow (printing)"
            ),
            Error::BadPartials { op, operand, why } => write!(
                f,
                "tapegrad: {op}'s rule is malformed: the partial for operand {operand} {why}"
            ),
            Error::NoSecondOrder { op } => write!(
                f,
                "tapegrad: {op} carries only first derivatives, so Var::grad cannot \
                 differentiate through it (second order); give it a second-order rule \
                 (CustomFn::graph_partials, or write it as a ScalarFn), or use Var::backward \
                 for first order"
            ),
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gradient {
            None => write!(
                f,
                "tapegrad anomaly: {} of {:?} gave {}",
                self.op, self.inputs, self.output
            )?,
            Some(g) => write!(
                f,
                "tapegrad anomaly: the backward of {} (inputs {:?}, output {}) gave gradient {}",
                self.op, self.inputs, self.output, g
            )?,
        }
        match self.location {
            Some(loc) => write!(f, ", recorded at {loc}"),
            None => f.write_str(", recorded before anomaly mode was turned on"),
        }
    }
}

impl std::error::Error for Error {}

/// Unwraps `result`, or panics with the error's message at the user's call site. A closure
/// (`unwrap_or_else(|e| panic!(..))`) would report a line inside tapegrad instead:
/// `#[track_caller]` does not reach through closures.
#[track_caller]
#[inline]
pub(crate) fn or_panic<T>(result: Result<T, Error>) -> T {
    match result {
        Ok(x) => x,
        Err(e) => fail(e),
    }
}

/// Panics with the error's message at the user's call site; out of line, so that the
/// fast paths that call it stay small.
#[cold]
#[track_caller]
pub(crate) fn fail(e: Error) -> ! {
    panic!("{e}")
}
