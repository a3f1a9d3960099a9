//! What a [`Var`] can do: the operators (`+ - * /`, unary `-`, with `f64` on either side),
//! the unary methods (one line each of the op table), and [`Scalar`] for `Var`. Hot path:
//! every operator is inlined into the user's code and records one node, allocating nothing.
//! Holds no rule: values and partials come from the op table (`op.rs`).

use std::fmt;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};
use std::panic::Location;

use super::error::{Error, or_panic};
use super::graph::{Graph, Operand, Var};
use super::matrix::{Matrix, Pairing};
use super::op::{Binary, Nary, Op, Unary};
use super::scalar::{Scalar, Statement, dots_one_by_one};
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
    #[track_caller]
    pub fn value(&self) -> f64 {
        let tape = self.graph.tape.borrow();
        let x = or_panic(self.graph.resolve(&tape, *self));
        if tape.reads.is_some() {
            drop(tape);
            self.graph.note_read(x.arg, Location::caller());
        }
        x.value
    }

    /// The node's value, or [`Error::Released`] if it was released.
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
    pub fn try_value(&self) -> Result<f64, Error> {
        let tape = self.graph.tape.borrow();
        Ok(self.graph.resolve(&tape, *self)?.value)
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
        tape.ops[pos as usize]
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
        Ok(graph.handle(&mut tape, pos))
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
    pub fn try_binary(self, op: Binary, rhs: impl Into<Operand<'g>>) -> Result<Var<'g>, Error> {
        let rhs = rhs.into();
        if op == Binary::Powi {
            // powi's rule takes the exponent as a fixed integer: with 2.5 it would record
            // x^2 with derivative 2.5 x, and with a Var exponent a zero gradient for it.
            let exponent = match rhs {
                Operand::Const(n) if n.fract() == 0.0 && n.abs() <= f64::from(i32::MAX) => None,
                Operand::Const(n) => Some(n.to_string()),
                Operand::Var(_) => Some("a Var".to_string()),
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
    pub fn try_add(self, rhs: impl Into<Operand<'g>>) -> Result<Var<'g>, Error> {
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
    pub fn try_sub(self, rhs: impl Into<Operand<'g>>) -> Result<Var<'g>, Error> {
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
    pub fn try_mul(self, rhs: impl Into<Operand<'g>>) -> Result<Var<'g>, Error> {
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
    pub fn try_div(self, rhs: impl Into<Operand<'g>>) -> Result<Var<'g>, Error> {
        self.try_binary(Binary::Div, rhs)
    }

    /// `self^exponent`, differentiable in the base and, if it is a `Var`, the exponent.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let (x, p) = (g.var(2.0), g.var(3.0));
    /// let y = x.powf(p);
    /// let grads = y.backward();
    /// assert_eq!(grads[x], 3.0 * 4.0); // p x^(p-1)
    /// approx::assert_relative_eq!(grads[p], 2f64.ln() * 8.0); // ln(x) x^p
    /// ```
    ///
    /// # Panics
    ///
    /// On a released or foreign handle (see [`Var::try_binary`] with [`Binary::Powf`]).
    #[track_caller]
    #[inline(always)]
    pub fn powf(self, exponent: impl Into<Operand<'g>>) -> Var<'g> {
        or_panic(binary(
            Binary::Powf,
            self,
            exponent.into(),
            Location::caller(),
        ))
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

/// `base^exponent` for a constant base: the `Var`-with-`Var` rule with an untracked base,
/// so `d/dx 2^x = ln(2) 2^x`.
///
/// # Examples
///
/// ```
/// let g = tapegrad::Graph::new();
/// let x = g.var(3.0);
/// let y = tapegrad::powf(2.0, x);
/// assert_eq!(y.value(), 8.0);
/// approx::assert_relative_eq!(y.backward()[x], 2f64.ln() * 8.0);
/// ```
///
/// # Panics
///
/// If `exponent` was released.
#[track_caller]
pub fn powf(base: f64, exponent: Var<'_>) -> Var<'_> {
    or_panic(binary(Binary::Powf, base, exponent, Location::caller()))
}

/// One side of a binary op, of a kind known at compile time: a `Var`, an `f64` constant,
/// or an [`Operand`] (either, decided at run time). The operators are generic over it, so
/// that `x * y`, `x * 2.0` and `2.0 * x` each get straight-line code with no test of which
/// operand is a constant.
pub(crate) trait Side<'g>: Copy {
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

impl<'g> Side<'g> for Operand<'g> {
    #[inline(always)]
    fn var(self) -> Option<Var<'g>> {
        match self {
            Operand::Var(x) => Some(x),
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
            Operand::Var(x) => x.resolve(graph, tape),
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
    let pos = tape.binary_of_kinds(op, (a, a_const), (b, b_const), location)?;
    Ok(graph.handle(&mut tape, pos))
}

/// The unary methods, each one line of the op table in `op.rs`.
macro_rules! unary_methods {
    ($($(#[$doc:meta])* $method:ident => $op:ident, ($x:expr, $y:expr);)*) => {
        impl<'g> Var<'g> {
            $(
                $(#[$doc])*
                ///
                /// # Examples
                ///
                /// ```
                /// let g = tapegrad::Graph::new();
                #[doc = concat!("let x = g.var(", stringify!($x), ");")]
                #[doc = concat!("approx::assert_relative_eq!(x.", stringify!($method), "().value(), ", stringify!($y), ");")]
                /// ```
                ///
                /// # Panics
                ///
                /// If the node was released (see [`Var::try_apply`]).
                #[track_caller]
                #[inline(always)]
                pub fn $method(self) -> Var<'g> {
                    or_panic(self.try_apply(Unary::$op))
                }
            )*
        }
    };
}

unary_methods! {
    /// `e^self`.
    exp => Exp, (1.0, std::f64::consts::E);
    /// The natural logarithm (named `ln` as in `f64`).
    #[doc(alias = "log")]
    ln => Ln, (std::f64::consts::E, 1.0);
    /// The square root.
    sqrt => Sqrt, (4.0, 2.0);
    /// `1 / self`.
    #[doc(alias = "reciprocal")]
    #[doc(alias = "inv")]
    recip => Recip, (4.0, 0.25);
    /// The sine.
    sin => Sin, (0.0, 0.0);
    /// The cosine.
    cos => Cos, (0.0, 1.0);
    /// The hyperbolic tangent.
    tanh => Tanh, (0.0, 0.0);
    /// The hyperbolic sine.
    sinh => Sinh, (0.0, 0.0);
    /// The hyperbolic cosine.
    cosh => Cosh, (0.0, 1.0);
    /// The absolute value (derivative 0 at 0).
    abs => Abs, (-3.0, 3.0);
    /// `max(self, 0)` (derivative 0 at 0).
    relu => Relu, (-3.0, 0.0);
    /// The logistic function `1 / (1 + e^-self)`.
    sigmoid => Sigmoid, (0.0, 0.5);
    /// GELU, tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    gelu => Gelu, (0.0, 0.0);
    /// The arctangent.
    #[doc(alias = "arctan")]
    atan => Atan, (1.0, std::f64::consts::FRAC_PI_4);
    /// The arcsine, on `[-1, 1]` (infinite derivative at the ends).
    #[doc(alias = "arcsin")]
    asin => Asin, (0.5, std::f64::consts::FRAC_PI_6);
    /// The arccosine, on `[-1, 1]` (infinite derivative at the ends).
    #[doc(alias = "arccos")]
    acos => Acos, (0.5, std::f64::consts::FRAC_PI_3);
    /// The tangent.
    tan => Tan, (std::f64::consts::FRAC_PI_4, 1.0);
    /// `ln(1 + self)`, accurate for tiny `self` (named as in `f64`).
    #[doc(alias = "log1p")]
    ln_1p => Ln1p, (1e-20, 1e-20);
    /// `e^self - 1`, accurate for tiny `self` (named as in `f64`).
    #[doc(alias = "expm1")]
    exp_m1 => ExpM1, (1e-20, 1e-20);
    /// The base-2 logarithm.
    log2 => Log2, (8.0, 3.0);
    /// The base-10 logarithm.
    log10 => Log10, (1000.0, 3.0);
    /// `2^self`.
    exp2 => Exp2, (3.0, 8.0);
    /// The real cube root (negative for negative `self`).
    cbrt => Cbrt, (-8.0, -2.0);
    /// `ln(1 + e^self)`, without the overflow of that form past 709; its derivative is the
    /// sigmoid.
    softplus => Softplus, (1000.0, 1000.0);
    /// The error function (`libm`'s).
    erf => Erf, (0.0, 0.0);
    /// The complementary error function `1 - erf(self)`, accurate where `erf` rounds to 1.
    erfc => Erfc, (0.0, 1.0);
}

/// The binary methods with a named function (the operators are below), each one line of
/// the op table; the other operand may be a `Var` or an `f64`.
macro_rules! binary_methods {
    ($($(#[$doc:meta])* $method:ident => $op:ident, ($a:expr, $b:expr, $y:expr);)*) => {
        impl<'g> Var<'g> {
            $(
                $(#[$doc])*
                ///
                /// # Examples
                ///
                /// ```
                /// let g = tapegrad::Graph::new();
                #[doc = concat!("let (a, b) = (g.var(", stringify!($a), "), g.var(", stringify!($b), "));")]
                #[doc = concat!("approx::assert_relative_eq!(a.", stringify!($method), "(b).value(), ", stringify!($y), ");")]
                #[doc = concat!("approx::assert_relative_eq!(a.", stringify!($method), "(", stringify!($b), ").value(), ", stringify!($y), ");")]
                /// ```
                ///
                /// # Panics
                ///
                /// On a released or foreign handle (see [`Var::try_binary`]).
                #[track_caller]
                #[inline(always)]
                pub fn $method(self, other: impl Into<Operand<'g>>) -> Var<'g> {
                    or_panic(binary(Binary::$op, self, other.into(), Location::caller()))
                }
            )*
        }
    };
}

binary_methods! {
    /// `atan2(self, other)`: the angle of the point `(other, self)`, in `(-pi, pi]`.
    #[doc(alias = "arctan2")]
    atan2 => Atan2, (1.0, -1.0, 3.0 * std::f64::consts::FRAC_PI_4);
    /// `sqrt(self^2 + other^2)`, without overflow.
    hypot => Hypot, (3.0, 4.0, 5.0);
    /// The larger of the two (NaN if either is NaN); at a tie each gets half the
    /// derivative, as in PyTorch ([`op::kink`](crate::op::kink)).
    #[doc(alias = "maximum")]
    max => Max, (1.0, 2.0, 2.0);
    /// The smaller of the two (NaN if either is NaN); at a tie each gets half the
    /// derivative, as in PyTorch ([`op::kink`](crate::op::kink)).
    #[doc(alias = "minimum")]
    min => Min, (1.0, 2.0, 1.0);
}

impl<'g> Var<'g> {
    /// `self` limited to `[lo, hi]` (constants). The derivative is 1 inside the interval,
    /// its ends included (as PyTorch's `clamp`), and 0 outside; NaN stays NaN.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let y = x.clamp(-1.0, 1.0);
    /// assert_eq!(y.value(), 1.0);
    /// assert_eq!(y.backward()[x], 1.0); // at the end: the gradient passes
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
        let operands = [Operand::Var(self), Operand::Const(lo), Operand::Const(hi)];
        self.graph.try_nary(Nary::Clamp, operands)
    }
}

macro_rules! const_first {
    ($($(#[$doc:meta])* $name:ident => $op:ident, ($a:expr, $b:expr, $y:expr);)*) => {
        $(
            $(#[$doc])*
            ///
            /// # Examples
            ///
            /// ```
            /// let g = tapegrad::Graph::new();
            #[doc = concat!("let b = g.var(", stringify!($b), ");")]
            #[doc = concat!("approx::assert_relative_eq!(tapegrad::", stringify!($name), "(", stringify!($a), ", b).value(), ", stringify!($y), ");")]
            /// ```
            ///
            /// # Panics
            ///
            /// If `b` was released.
            #[track_caller]
            pub fn $name(a: f64, b: Var<'_>) -> Var<'_> {
                or_panic(binary(Binary::$op, a, b, Location::caller()))
            }
        )*
    };
}

const_first! {
    /// `atan2(a, b)` for a constant `a`: the same rule as [`Var::atan2`], with an
    /// untracked first operand.
    atan2 => Atan2, (1.0, -1.0, 3.0 * std::f64::consts::FRAC_PI_4);
    /// `hypot(a, b)` for a constant `a` (see [`Var::hypot`]).
    hypot => Hypot, (3.0, 4.0, 5.0);
    /// `max(a, b)` for a constant `a` (see [`Var::max`]).
    max => Max, (1.0, 2.0, 2.0);
    /// `min(a, b)` for a constant `a` (see [`Var::min`]).
    min => Min, (1.0, 2.0, 1.0);
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
        match self.try_value() {
            Ok(v) => s.field("value", &v),
            Err(_) => s.field("value", &"<released>"),
        };
        s.finish()
    }
}

impl fmt::Display for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_value() {
            Ok(v) => fmt::Display::fmt(&v, f),
            Err(_) => f.write_str("<released>"),
        }
    }
}

impl<'g> Scalar for Var<'g> {
    #[track_caller]
    #[inline(always)]
    fn value(&self) -> f64 {
        Var::value(self)
    }
    #[track_caller]
    #[inline(always)]
    fn lift(&self, c: f64) -> Self {
        self.graph.constant(c)
    }
    #[track_caller]
    #[inline(always)]
    fn exp(self) -> Self {
        Var::exp(self)
    }
    #[track_caller]
    #[inline(always)]
    fn ln(self) -> Self {
        Var::ln(self)
    }
    #[track_caller]
    #[inline(always)]
    fn sqrt(self) -> Self {
        Var::sqrt(self)
    }
    #[track_caller]
    #[inline(always)]
    fn recip(self) -> Self {
        Var::recip(self)
    }
    #[track_caller]
    #[inline(always)]
    fn powi(self, n: i32) -> Self {
        Var::powi(self, n)
    }
    #[track_caller]
    #[inline(always)]
    fn powf(self, p: Self) -> Self {
        Var::powf(self, p)
    }
    #[track_caller]
    #[inline(always)]
    fn powf_f64(self, p: f64) -> Self {
        Var::powf(self, p)
    }
    #[track_caller]
    #[inline(always)]
    fn sin(self) -> Self {
        Var::sin(self)
    }
    #[track_caller]
    #[inline(always)]
    fn cos(self) -> Self {
        Var::cos(self)
    }
    #[track_caller]
    #[inline(always)]
    fn tanh(self) -> Self {
        Var::tanh(self)
    }
    #[track_caller]
    #[inline(always)]
    fn sinh(self) -> Self {
        Var::sinh(self)
    }
    #[track_caller]
    #[inline(always)]
    fn cosh(self) -> Self {
        Var::cosh(self)
    }
    #[track_caller]
    #[inline(always)]
    fn abs(self) -> Self {
        Var::abs(self)
    }
    #[track_caller]
    #[inline(always)]
    fn relu(self) -> Self {
        Var::relu(self)
    }
    #[track_caller]
    #[inline(always)]
    fn sigmoid(self) -> Self {
        Var::sigmoid(self)
    }
    #[track_caller]
    #[inline(always)]
    fn gelu(self) -> Self {
        Var::gelu(self)
    }
    #[track_caller]
    #[inline(always)]
    fn atan(self) -> Self {
        Var::atan(self)
    }
    #[track_caller]
    #[inline(always)]
    fn asin(self) -> Self {
        Var::asin(self)
    }
    #[track_caller]
    #[inline(always)]
    fn acos(self) -> Self {
        Var::acos(self)
    }
    #[track_caller]
    #[inline(always)]
    fn tan(self) -> Self {
        Var::tan(self)
    }
    #[track_caller]
    #[inline(always)]
    fn ln_1p(self) -> Self {
        Var::ln_1p(self)
    }
    #[track_caller]
    #[inline(always)]
    fn exp_m1(self) -> Self {
        Var::exp_m1(self)
    }
    #[track_caller]
    #[inline(always)]
    fn log2(self) -> Self {
        Var::log2(self)
    }
    #[track_caller]
    #[inline(always)]
    fn log10(self) -> Self {
        Var::log10(self)
    }
    #[track_caller]
    #[inline(always)]
    fn exp2(self) -> Self {
        Var::exp2(self)
    }
    #[track_caller]
    #[inline(always)]
    fn cbrt(self) -> Self {
        Var::cbrt(self)
    }
    #[track_caller]
    #[inline(always)]
    fn softplus(self) -> Self {
        Var::softplus(self)
    }
    #[track_caller]
    #[inline(always)]
    fn erf(self) -> Self {
        Var::erf(self)
    }
    #[track_caller]
    #[inline(always)]
    fn erfc(self) -> Self {
        Var::erfc(self)
    }
    #[track_caller]
    #[inline(always)]
    fn atan2(self, other: Self) -> Self {
        Var::atan2(self, other)
    }
    #[track_caller]
    #[inline(always)]
    fn hypot(self, other: Self) -> Self {
        Var::hypot(self, other)
    }
    #[track_caller]
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        Var::max(self, other)
    }
    #[track_caller]
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        Var::min(self, other)
    }
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
    fn sum(terms: &[Self]) -> Self {
        // A slice cannot record nodes while it is read, so the terms are resolved under one
        // borrow of the tape (`Graph::sum` takes any iterator and must not hold it).
        or_panic(first_graph(terms, "sum").try_nary_vars(Nary::Sum, &[terms]))
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

#[track_caller]
fn first_graph<'g>(terms: &[Var<'g>], op: &str) -> &'g Graph {
    match terms.first() {
        Some(x) => x.graph,
        None => {
            panic!("tapegrad: {op} of no Vars has no graph to record on; use Graph::{op} instead")
        }
    }
}
