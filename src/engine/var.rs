//! What a [`Var`] can do: the operators (`+ - * /`, unary `-`, with `f64` on either side),
//! the unary methods (one line each of the op table), and [`Scalar`] for `Var`. Hot path:
//! every operator is inlined into the user's code and records one node, allocating nothing.
//! Holds no rule: values and partials come from the op table (`op.rs`).

use std::borrow::Borrow;
use std::fmt;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};
use std::panic::Location;

use super::error::{Error, or_panic};
use super::graph::{Graph, Var};
use super::guard::comparisons;
use super::matrix::{Matrix, Pairing};
use super::op::{Binary, Nary, Op, Unary, binary_ops, unary_ops};
use super::scalar::{Operand, Scalar, Statement, dots_one_by_one};
use super::tape::{Resolved, Tape};

impl<'g> Var<'g> {
    /// The node's value.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!((g.var(1.5) * 2.0).value(), 3.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released (see [`Var::try_value`]).
    ///
    /// A raw read: Rust code that branches on it is invisible to the tape, so with replay
    /// checks on (the default, see [`Graph::set_replay_checks`]) the read is remembered, and
    /// [`Replay::new`](crate::Replay::new) refuses to replay a function of inputs this node
    /// depends on. Branch with the guard methods ([`Var::lt`], ...) instead; read with
    /// [`Var::untracked_value`] to print or log.
    #[track_caller]
    pub fn value(&self) -> f64 {
        or_panic(self.read(Some(Location::caller())))
    }

    /// The node's value, or [`Error::Released`] if it was released. A raw read, remembered
    /// for replay checks as [`Var::value`] is.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if [`Graph::release`] freed the node.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!(g.var(1.5).try_value(), Ok(1.5));
    /// ```
    #[track_caller]
    pub fn try_value(&self) -> Result<f64, Error> {
        self.read(Some(Location::caller()))
    }

    /// The node's value, read without telling the replay checks: for printing, logging,
    /// and constants that leave the function unchanged (the max shift of a stable softmax,
    /// see [`functional`](crate::functional)).
    ///
    /// **Unsafe for correctness** if control flow depends on it: a [`Replay`](crate::Replay)
    /// built afterwards evaluates the branch that was recorded, whatever its new inputs,
    /// without an error. Branch with the guard methods ([`Var::lt`], ...) instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(2.0);
    /// let y = x * x;
    /// println!("y = {}", y.untracked_value()); // a log line decides nothing
    /// assert!(Replay::try_new(y, &[x]).is_ok());
    /// let _ = y.value(); // a raw read might decide a branch
    /// assert!(Replay::try_new(y, &[x]).is_err());
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released.
    #[track_caller]
    pub fn untracked_value(&self) -> f64 {
        or_panic(self.read(None))
    }

    /// The node's value; a read at `location` is remembered for replay checks (if they are
    /// on and the node was not read before), `None` reads untracked.
    #[track_caller]
    #[inline]
    pub(in crate::engine) fn read(
        &self,
        location: Option<&'static Location<'static>>,
    ) -> Result<f64, Error> {
        let tape = self.graph.tape.borrow();
        let x = self.graph.resolve(&tape, *self)?;
        if let Some(location) = location
            && tape.reads.as_ref().is_some_and(|reads| !reads.has(x.arg))
        {
            drop(tape);
            self.graph.note_read(x.arg, location);
        }
        Ok(x.value)
    }

    /// The operation that made this node.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Graph, Op};
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// assert_eq!((x * x).op(), Op::Binary(Binary::Mul));
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released.
    #[track_caller]
    pub fn op(&self) -> Op {
        let tape = self.graph.tape.borrow();
        let pos = or_panic(self.graph.resolve(&tape, *self)).arg;
        tape.op(pos as usize)
    }

    /// The node's position on the tape (its recording order).
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if the node was released.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let (a, b) = (g.var(1.0), g.var(2.0));
    /// assert!(a.try_position().unwrap() < b.try_position().unwrap());
    /// ```
    pub fn try_position(&self) -> Result<usize, Error> {
        let tape = self.graph.tape.borrow();
        Ok(self.graph.resolve(&tape, *self)?.arg as usize)
    }

    /// Records `op(self)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Unary};
    /// let g = Graph::new();
    /// let x = g.var(0.0);
    /// assert_eq!(x.apply(Unary::Cos).value(), 1.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released (see [`Var::try_apply`]).
    #[track_caller]
    pub fn apply(self, op: Unary) -> Var<'g> {
        or_panic(self.try_apply(op))
    }

    /// Records `op(self)`, or returns the error that prevented it.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if the node was released; [`Error::GraphFull`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Unary};
    /// let g = Graph::new();
    /// let mark = g.mark();
    /// let x = g.var(0.0);
    /// g.release(mark);
    /// assert!(x.try_apply(Unary::Exp).is_err());
    /// ```
    #[track_caller]
    #[inline(always)] // as `binary`: each unary method gets a copy specialised to its op
    pub fn try_apply(self, op: Unary) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        let graph = self.graph;
        let mut tape = graph.tape.borrow_mut();
        let x = graph.resolve_var(&tape, self)?;
        let pos = tape.unary(op, x, location)?;
        Ok(Var::recorded(graph, pos))
    }

    /// Records `op(self, rhs)`, or returns the error that prevented it.
    ///
    /// # Errors
    ///
    /// [`Error::Released`], [`Error::ForeignHandle`] or [`Error::GraphFull`];
    /// [`Error::BadOperands`] for [`Binary::Powi`] with an exponent that is not an integer
    /// `f64` (its rule holds the exponent fixed: use [`Binary::Powf`] for any other).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Graph};
    /// let (g, h) = (Graph::new(), Graph::new());
    /// let x = g.var(1.0);
    /// assert_eq!(x.try_binary(Binary::Add, 2.0).unwrap().value(), 3.0);
    /// assert!(x.try_binary(Binary::Add, h.var(1.0)).is_err());
    /// ```
    #[track_caller]
    pub fn try_binary(
        self,
        op: Binary,
        rhs: impl Into<Operand<Var<'g>>>,
    ) -> Result<Var<'g>, Error> {
        let rhs = rhs.into();
        if op == Binary::Powi {
            // powi's rule takes the exponent as a fixed integer: with 2.5 it would record
            // x^2 with derivative 2.5 x, and with a Var exponent a zero gradient for it.
            let exponent = match rhs {
                Operand::Const(n) if n.fract() == 0.0 && n.abs() <= f64::from(i32::MAX) => None,
                Operand::Const(n) => Some(n.to_string()),
                Operand::Scalar(_) => Some("a Var".to_string()),
            };
            if let Some(exponent) = exponent {
                return Err(Error::BadOperands {
                    op: "powi",
                    why: format!(
                        "the exponent must be an integer f64 constant, got {exponent}; \
                         use powf for a real or variable exponent"
                    ),
                });
            }
        }
        binary(op, self, rhs, Location::caller())
    }

    /// `self + rhs`, or the error that prevented it.
    ///
    /// # Errors
    ///
    /// See [`Var::try_binary`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!(g.var(1.0).try_add(2.0).unwrap().value(), 3.0);
    /// ```
    #[track_caller]
    pub fn try_add(self, rhs: impl Into<Operand<Var<'g>>>) -> Result<Var<'g>, Error> {
        self.try_binary(Binary::Add, rhs)
    }

    /// `self - rhs`, or the error that prevented it.
    ///
    /// # Errors
    ///
    /// See [`Var::try_binary`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!(g.var(1.0).try_sub(2.0).unwrap().value(), -1.0);
    /// ```
    #[track_caller]
    pub fn try_sub(self, rhs: impl Into<Operand<Var<'g>>>) -> Result<Var<'g>, Error> {
        self.try_binary(Binary::Sub, rhs)
    }

    /// `self * rhs`, or the error that prevented it.
    ///
    /// # Errors
    ///
    /// See [`Var::try_binary`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!(g.var(3.0).try_mul(2.0).unwrap().value(), 6.0);
    /// ```
    #[track_caller]
    pub fn try_mul(self, rhs: impl Into<Operand<Var<'g>>>) -> Result<Var<'g>, Error> {
        self.try_binary(Binary::Mul, rhs)
    }

    /// `self / rhs`, or the error that prevented it.
    ///
    /// # Errors
    ///
    /// See [`Var::try_binary`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!(g.var(3.0).try_div(2.0).unwrap().value(), 1.5);
    /// ```
    #[track_caller]
    pub fn try_div(self, rhs: impl Into<Operand<Var<'g>>>) -> Result<Var<'g>, Error> {
        self.try_binary(Binary::Div, rhs)
    }

    /// `self^n` for an integer `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(-2.0);
    /// let y = x.powi(3);
    /// assert_eq!(y.value(), -8.0);
    /// assert_eq!(y.backward()[x], 12.0); // 3 x^2
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released.
    #[track_caller]
    #[inline(always)]
    pub fn powi(self, n: i32) -> Var<'g> {
        or_panic(binary(Binary::Powi, self, f64::from(n), Location::caller()))
    }
}

/// One side of a binary op, of a kind known at compile time: a `Var`, an `f64` constant,
/// or an [`Operand`] (either, decided at run time). The operators are generic over it, so
/// that `x * y`, `x * 2.0` and `2.0 * x` each get straight-line code with no test of which
/// operand is a constant.
pub(in crate::engine) trait Side<'g>: Copy {
    /// The operand's `Var`, if it is one.
    fn var(self) -> Option<Var<'g>>;
    /// Whether the operand is an untracked constant.
    fn is_const(self) -> bool;
    /// The operand's tape position and value, as `graph` sees it.
    fn resolve(self, graph: &Graph, tape: &Tape) -> Result<Resolved, Error>;
}

impl<'g> Side<'g> for Var<'g> {
    #[inline(always)]
    fn var(self) -> Option<Var<'g>> {
        Some(self)
    }
    #[inline(always)]
    fn is_const(self) -> bool {
        false
    }
    #[inline(always)]
    fn resolve(self, graph: &Graph, tape: &Tape) -> Result<Resolved, Error> {
        graph.resolve_var(tape, self)
    }
}

impl<'g> Side<'g> for f64 {
    #[inline(always)]
    fn var(self) -> Option<Var<'g>> {
        None
    }
    #[inline(always)]
    fn is_const(self) -> bool {
        true
    }
    #[inline(always)]
    fn resolve(self, _: &Graph, _: &Tape) -> Result<Resolved, Error> {
        Ok(Resolved::constant(self))
    }
}

impl<'g> Side<'g> for Operand<Var<'g>> {
    #[inline(always)]
    fn var(self) -> Option<Var<'g>> {
        match self {
            Operand::Scalar(x) => Some(x),
            Operand::Const(_) => None,
        }
    }
    #[inline(always)]
    fn is_const(self) -> bool {
        matches!(self, Operand::Const(_))
    }
    #[inline(always)]
    fn resolve(self, graph: &Graph, tape: &Tape) -> Result<Resolved, Error> {
        match self {
            Operand::Scalar(x) => x.resolve(graph, tape),
            Operand::Const(c) => c.resolve(graph, tape),
        }
    }
}

/// Records a binary op; at least one operand is a `Var`, whose graph records it.
///
/// Always inlined, so that each operator gets its own copy in which the op (and the kinds
/// of its operands) is known at compile time: no dispatch on the op when recording.
#[inline(always)]
fn binary<'g>(
    op: Binary,
    a: impl Side<'g>,
    b: impl Side<'g>,
    location: &'static Location<'static>,
) -> Result<Var<'g>, Error> {
    let Some(graph) = a.var().or(b.var()).map(|v| v.graph) else {
        unreachable!("no binary op is recorded between two f64s")
    };
    let mut tape = graph.tape.borrow_mut();
    let (a_const, b_const) = (a.is_const(), b.is_const());
    let a = a.resolve(graph, &tape)?;
    let b = b.resolve(graph, &tape)?;
    let node = tape.binary_of_kinds(op, (a, a_const), (b, b_const), location)?;
    Ok(Var::recorded(graph, node))
}

/// `Var`'s unary methods, one per row of the op table with a method name.
macro_rules! var_unary_methods {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal $(fn $method:ident($ex_x:expr => $ex_y:expr))? {
            value: |$x:ident| $value:expr,
            partial: |$px:ident, $py:ident| $partial:expr,
            $(quotient: |$qx:ident, $qy:ident| $quotient:expr,)?
        }
    )*) => {
        impl<'g> Var<'g> {
            $( var_unary_methods!(@row [$(#[$doc])*] $variant $(fn $method($ex_x => $ex_y))?); )*
        }
    };
    (@row [$($doc:tt)*] $variant:ident fn $method:ident($ex_x:expr => $ex_y:expr)) => {
        $($doc)*
        ///
        /// # Examples
        ///
        /// ```
        /// let g = tapegrad::Graph::new();
        #[doc = concat!("let x = g.var(", stringify!($ex_x), ");")]
        #[doc = concat!("approx::assert_relative_eq!(x.", stringify!($method), "().value(), ", stringify!($ex_y), ");")]
        /// ```
        ///
        /// # Panics
        ///
        /// If the node was released (see [`Var::try_apply`]).
        #[track_caller]
        #[inline(always)]
        pub fn $method(self) -> Var<'g> {
            or_panic(self.try_apply(Unary::$variant))
        }
    };
    (@row [$($doc:tt)*] $variant:ident) => {};
}
unary_ops!(var_unary_methods);

/// `Var`'s binary methods with a name (the operators are below), one per row of the op
/// table with a method name, the other operand a `Var` or an `f64`; and the same ops with
/// a constant first operand, as functions (`tapegrad::atan2(1.0, x)`).
macro_rules! var_binary_methods {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal $(fn $method:ident($ex_a:expr, $ex_b:expr => $ex_y:expr))? {
            value: |$a:ident, $b:ident| $value:expr,
            d_lhs: |$la:ident, $lb:ident, $ly:ident| $d_lhs:expr,
            d_rhs: |$ra:ident, $rb:ident, $ry:ident| $d_rhs:expr,
            $(quotient_lhs: |$qla:ident, $qlb:ident, $qly:ident| $quotient_lhs:expr,)?
            $(quotient_rhs: |$qra:ident, $qrb:ident, $qry:ident| $quotient_rhs:expr,)?
        }
    )*) => {
        impl<'g> Var<'g> {
            $( var_binary_methods!(@method [$(#[$doc])*] $variant $(fn $method($ex_a, $ex_b => $ex_y))?); )*
        }
        $( var_binary_methods!(@function $variant $(fn $method($ex_a, $ex_b => $ex_y))?); )*
    };
    (@method [$($doc:tt)*] $variant:ident fn $method:ident($ex_a:expr, $ex_b:expr => $ex_y:expr)) => {
        $($doc)*
        ///
        /// # Examples
        ///
        /// ```
        /// let g = tapegrad::Graph::new();
        #[doc = concat!("let (a, b) = (g.var(", stringify!($ex_a), "), g.var(", stringify!($ex_b), "));")]
        #[doc = concat!("approx::assert_relative_eq!(a.", stringify!($method), "(b).value(), ", stringify!($ex_y), ");")]
        #[doc = concat!("approx::assert_relative_eq!(a.", stringify!($method), "(", stringify!($ex_b), ").value(), ", stringify!($ex_y), ");")]
        /// ```
        ///
        /// # Panics
        ///
        /// On a released or foreign handle (see [`Var::try_binary`]).
        #[track_caller]
        #[inline(always)]
        pub fn $method(self, other: impl Into<Operand<Var<'g>>>) -> Var<'g> {
            or_panic(binary(Binary::$variant, self, other.into(), Location::caller()))
        }
    };
    (@method [$($doc:tt)*] $variant:ident) => {};
    (@function $variant:ident fn $method:ident($ex_a:expr, $ex_b:expr => $ex_y:expr)) => {
        #[doc = concat!("`", stringify!($method), "(a, b)` for a constant `a`: the same rule as [`Var::", stringify!($method), "`], with an untracked first operand.")]
        ///
        /// # Examples
        ///
        /// ```
        /// let g = tapegrad::Graph::new();
        #[doc = concat!("let b = g.var(", stringify!($ex_b), ");")]
        #[doc = concat!("approx::assert_relative_eq!(tapegrad::", stringify!($method), "(", stringify!($ex_a), ", b).value(), ", stringify!($ex_y), ");")]
        /// ```
        ///
        /// # Panics
        ///
        /// If `b` was released.
        #[track_caller]
        pub fn $method(a: f64, b: Var<'_>) -> Var<'_> {
            or_panic(binary(Binary::$variant, a, b, Location::caller()))
        }
    };
    (@function $variant:ident) => {};
}
binary_ops!(var_binary_methods);

impl<'g> Var<'g> {
    /// `self` limited to `[lo, hi]` (constants). The derivative is 1 strictly inside the
    /// interval and 0 at its ends and outside, as PyTorch 2.15's `clamp` (and `relu` at 0:
    /// `x.clamp(0.0, f64::INFINITY)` is `x.relu()`); NaN stays NaN, with derivative 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let y = x.clamp(-1.0, 1.0);
    /// assert_eq!(y.value(), 1.0);
    /// assert_eq!(y.backward()[x], 0.0); // at an end: a kink, slope 0
    /// assert_eq!(x.clamp(-2.0, 2.0).backward()[x], 1.0);
    /// assert_eq!((x * 3.0).clamp(-1.0, 1.0).backward()[x], 0.0);
    /// ```
    ///
    /// # Panics
    ///
    /// Unless `lo <= hi`, or on a released handle (see [`Var::try_clamp`]).
    #[doc(alias = "clip")]
    #[track_caller]
    pub fn clamp(self, lo: f64, hi: f64) -> Var<'g> {
        or_panic(self.try_clamp(lo, hi))
    }

    /// [`Var::clamp`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::BadOperands`] unless `lo <= hi` (a NaN bound included);
    /// [`Error::Released`] if `self` was released.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert!(g.var(0.0).try_clamp(1.0, -1.0).is_err());
    /// ```
    #[track_caller]
    pub fn try_clamp(self, lo: f64, hi: f64) -> Result<Var<'g>, Error> {
        // `!(lo <= hi)` is also true for a NaN bound.
        #[allow(clippy::neg_cmp_op_on_partial_ord, reason = "NaN bounds must fail too")]
        if !(lo <= hi) {
            return Err(Error::BadOperands {
                op: "clamp",
                why: format!("needs lo <= hi (and neither NaN), got lo = {lo}, hi = {hi}"),
            });
        }
        let operands = [
            Operand::Scalar(self),
            Operand::Const(lo),
            Operand::Const(hi),
        ];
        self.graph.try_nary(Nary::Clamp, operands)
    }
}

impl<'g> Neg for Var<'g> {
    type Output = Var<'g>;
    #[track_caller]
    #[inline(always)]
    fn neg(self) -> Var<'g> {
        or_panic(self.try_apply(Unary::Neg))
    }
}

/// `Var op Var`, `Var op f64` and `f64 op Var` for one operator, all through one rule.
macro_rules! binary_operator {
    ($trait:ident, $method:ident, $assign_trait:ident, $assign:ident, $op:ident) => {
        impl<'g> $trait<Var<'g>> for Var<'g> {
            type Output = Var<'g>;
            #[track_caller]
            #[inline(always)]
            fn $method(self, rhs: Var<'g>) -> Var<'g> {
                or_panic(binary(Binary::$op, self, rhs, Location::caller()))
            }
        }
        impl<'g> $trait<f64> for Var<'g> {
            type Output = Var<'g>;
            #[track_caller]
            #[inline(always)]
            fn $method(self, rhs: f64) -> Var<'g> {
                or_panic(binary(Binary::$op, self, rhs, Location::caller()))
            }
        }
        impl<'g> $trait<Var<'g>> for f64 {
            type Output = Var<'g>;
            #[track_caller]
            #[inline(always)]
            fn $method(self, rhs: Var<'g>) -> Var<'g> {
                or_panic(binary(Binary::$op, self, rhs, Location::caller()))
            }
        }
        impl<'g> $assign_trait<Var<'g>> for Var<'g> {
            #[track_caller]
            #[inline(always)]
            fn $assign(&mut self, rhs: Var<'g>) {
                *self = or_panic(binary(Binary::$op, *self, rhs, Location::caller()));
            }
        }
        impl $assign_trait<f64> for Var<'_> {
            #[track_caller]
            #[inline(always)]
            fn $assign(&mut self, rhs: f64) {
                *self = or_panic(binary(Binary::$op, *self, rhs, Location::caller()));
            }
        }
    };
}

binary_operator!(Add, add, AddAssign, add_assign, Add);
binary_operator!(Sub, sub, SubAssign, sub_assign, Sub);
binary_operator!(Mul, mul, MulAssign, mul_assign, Mul);
binary_operator!(Div, div, DivAssign, div_assign, Div);

impl fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Var");
        s.field("graph", &self.graph.id());
        // Printing decides nothing: an untracked read.
        match self.read(None) {
            Ok(v) => s.field("value", &v),
            Err(_) => s.field("value", &"<released>"),
        };
        s.finish()
    }
}

impl fmt::Display for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.read(None) {
            Ok(v) => fmt::Display::fmt(&v, f),
            Err(_) => f.write_str("<released>"),
        }
    }
}

/// `Var`'s comparisons in [`Scalar`]: each forwards to the guard-recording method.
macro_rules! var_scalar_comparisons {
    ($($(#[$doc:meta])* $method:ident => $cmp:ident, ($x:expr, $y:expr, $want:expr);)*) => {
        $(
            #[track_caller]
            fn $method(self, other: impl Into<Operand<Self>>) -> bool {
                Var::$method(self, other)
            }
        )*
    };
}

impl<'g> Scalar for Var<'g> {
    #[track_caller]
    #[inline(always)]
    fn value(&self) -> f64 {
        Var::value(self)
    }
    #[track_caller]
    fn untracked_value(&self) -> f64 {
        Var::untracked_value(self)
    }
    #[track_caller]
    #[inline(always)]
    fn lift(&self, c: f64) -> Self {
        self.graph.constant(c)
    }
    #[track_caller]
    #[inline(always)]
    fn unary(self, op: Unary) -> Self {
        or_panic(self.try_apply(op))
    }
    #[track_caller]
    #[inline(always)]
    fn binary(self, op: Binary, other: Self) -> Self {
        or_panic(binary(op, self, other, Location::caller()))
    }
    #[track_caller]
    #[inline(always)]
    fn binary_f64(self, op: Binary, c: f64) -> Self {
        or_panic(binary(op, self, c, Location::caller()))
    }
    comparisons!(var_scalar_comparisons);
    #[track_caller]
    fn clamp(self, lo: f64, hi: f64) -> Self {
        Var::clamp(self, lo, hi)
    }
    #[track_caller]
    fn amax(terms: &[Self]) -> Self {
        let graph = first_graph(terms, "amax");
        or_panic(graph.try_nary_vars(Nary::Max, &[terms]))
    }
    #[track_caller]
    fn sum<I>(terms: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<Self>,
    {
        // The iterator may record nodes itself (`xs.iter().map(|x| x.exp())`), so each term
        // is resolved on its own, with no borrow of the tape held while it runs.
        let mut terms = terms.into_iter().map(|x| *x.borrow());
        let Some(first) = terms.next() else {
            first_graph(&[], "sum");
            unreachable!("first_graph panics on no terms");
        };
        or_panic(first.graph.try_sum(std::iter::once(first).chain(terms)))
    }
    #[track_caller]
    fn dot(a: &[Self], b: &[Self]) -> Self {
        let graph = first_graph(a, "dot");
        if a.len() != b.len() {
            // `Graph::dot` reports the mismatch.
            return graph.dot(a, b);
        }
        or_panic(graph.try_nary_vars(Nary::Dot, &[a, b]))
    }
    #[track_caller]
    fn dot_f64(a: &[Self], b: &[f64]) -> Self {
        // `Graph::dot` takes `f64` operands as constants and reports a length mismatch.
        first_graph(a, "dot").dot(a, b)
    }
    #[track_caller]
    fn logsumexp(terms: &[Self]) -> Self {
        // As `sum`; `first_graph` has already refused an empty slice.
        let graph = first_graph(terms, "logsumexp");
        or_panic(graph.try_nary_vars(Nary::LogSumExp, &[terms]))
    }
    #[track_caller]
    fn fused<S: Statement>(statement: &S, inputs: &[Self]) -> Self {
        first_graph(inputs, "fuse").fuse(inputs, |_, xs| statement.eval(xs))
    }
    #[track_caller]
    fn dots(a: Matrix<'_, Self>, b: Matrix<'_, Self>, pairing: Pairing) -> Vec<Self> {
        let paired = match pairing {
            Pairing::Columns => b.rows(),
            Pairing::Rows => b.cols(),
        };
        if a.cols() == 0 || a.cols() != paired || a.rows() == 0 || b.as_slice().is_empty() {
            // The dots one by one report these (or, with no outputs, return none).
            return dots_one_by_one(a, b, pairing);
        }
        let graph = first_graph(a.as_slice(), "dot");
        let operands = (a.as_slice(), b.as_slice());
        or_panic(graph.try_matrix_dots(operands, a.cols(), pairing))
    }
}

/// `xs.into_iter().sum()`: one n-ary sum node over the `Var`s.
///
/// # Examples
///
/// ```
/// let g = tapegrad::Graph::new();
/// let xs = g.vars(&[1.0, 2.0, 3.0]);
/// let s: tapegrad::Var = xs.iter().map(|x| x.powi(2)).sum();
/// assert_eq!(s.value(), 14.0);
/// let t: tapegrad::Var = xs.iter().sum();
/// assert_eq!((t.value(), g.len()), (6.0, 8)); // 3 inputs, 3 squares, 2 sums
/// ```
///
/// # Panics
///
/// If the iterator is empty (an empty sum of `Var`s has no graph to live on: use
/// [`Graph::sum`], which gives a constant 0 there), or on a released or foreign handle.
impl<'g> std::iter::Sum for Var<'g> {
    #[track_caller]
    fn sum<I: Iterator<Item = Var<'g>>>(iter: I) -> Var<'g> {
        Scalar::sum(iter)
    }
}

/// `xs.iter().sum()`: as summing the `Var`s themselves.
impl<'a, 'g> std::iter::Sum<&'a Var<'g>> for Var<'g> {
    #[track_caller]
    fn sum<I: Iterator<Item = &'a Var<'g>>>(iter: I) -> Var<'g> {
        Scalar::sum(iter)
    }
}

#[track_caller]
fn first_graph<'g>(terms: &[Var<'g>], op: &str) -> &'g Graph {
    match terms.first() {
        Some(x) => x.graph,
        None => {
            panic!("tapegrad: {op} of no Vars has no graph to record on; use Graph::{op} instead")
        }
    }
}
