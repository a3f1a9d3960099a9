//! Comparisons recorded as guards: which comparison, of which operands, with which outcome,
//! and where. A [`Replay`](crate::Replay) re-evaluates each at its new inputs and refuses
//! to answer when one flips. Storage only: no graph, no handles.

use std::panic::Location;

/// The value comparisons, one row each, handed to `$callback`: the method's name, the
/// comparison, and an example `(x, y, x cmp y)`. `Scalar` and `Var` each make their six
/// methods from these rows.
macro_rules! comparisons {
    ($callback:ident) => {
        $callback! {
            /// `self < other`, by value.
            lt => Lt, (1.0, 2.0, true);
            /// `self <= other`, by value.
            le => Le, (2.0, 2.0, true);
            /// `self > other`, by value.
            gt => Gt, (1.0, 2.0, false);
            /// `self >= other`, by value.
            ge => Ge, (1.0, 2.0, false);
            /// `self == other`, by value (`Var` has no `==`: see
            /// [`Var::same_node`](crate::Var::same_node)).
            eq_value => Eq, (2.0, 2.0, true);
            /// `self != other`, by value.
            ne_value => Ne, (2.0, 2.0, false);
        }
    };
}
pub(in crate::engine) use comparisons;

/// A value comparison between two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::engine) enum Comparison {
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
    pub(in crate::engine) fn holds(self, a: f64, b: f64) -> bool {
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
    pub(in crate::engine) fn symbol(self) -> &'static str {
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
pub(in crate::engine) struct Guard {
    /// The tape's length when the comparison was made: a release below it forgets it.
    pub(in crate::engine) at: u32,
    pub(in crate::engine) comparison: Comparison,
    pub(in crate::engine) operands: [u32; 2],
    pub(in crate::engine) constants: [f64; 2],
    pub(in crate::engine) outcome: bool,
    pub(in crate::engine) location: &'static Location<'static>,
}
