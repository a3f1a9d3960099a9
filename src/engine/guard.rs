//! Comparisons recorded as guards: which comparison, of which operands, with which outcome,
//! and where. A [`Replay`](crate::Replay) re-evaluates each at its new inputs and refuses
//! to answer when one flips. Storage only: no graph, no handles.

use std::panic::Location;

/// A value comparison between two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Comparison {
    /// The comparison of `a` and `b`, as `f64`'s operators make it (false with a NaN,
    /// except `!=`).
    #[inline]
    pub(crate) fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Lt => a < b,
            Comparison::Le => a <= b,
            Comparison::Gt => a > b,
            Comparison::Ge => a >= b,
            Comparison::Eq => a == b,
            Comparison::Ne => a != b,
        }
    }

    /// The operator's symbol, for messages.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }
}

/// One recorded comparison: `operands` are tape positions, or `CONST_ARG` with the
/// constant in `constants`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Guard {
    /// The tape's length when the comparison was made: a release below it forgets it.
    pub(crate) at: u32,
    pub(crate) comparison: Comparison,
    pub(crate) operands: [u32; 2],
    pub(crate) constants: [f64; 2],
    pub(crate) outcome: bool,
    pub(crate) location: &'static Location<'static>,
}
