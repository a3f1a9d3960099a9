//! [`Scalar`]: the small numeric trait that `f64`, [`Var`](crate::Var) and
//! [`Dual`](crate::Dual) implement, with [`Operand`], the other side of its binary methods.
//! The trait and its `f64` form only; `Var`'s form is in `var.rs`.
//!
//! Every derivative rule of the op table is written once over this trait (`rules.rs`): the
//! plain backward evaluates the rules with `f64` at record time, and the differentiable
//! backward evaluates the very same rules with graph nodes, which is what makes gradients of
//! gradients possible. Users can write their own functions over `Scalar` too, and run them
//! with `f64` (plain evaluation), with `Var` (recorded on a tape) or with `Dual` (forward
//! mode).
//!
//! The trait's methods for the ops of the table are generated from the table's rows and
//! provided: an implementation gives `value`, `lift`, `unary` and `binary` (and the n-ary
//! ops), and gets `exp`, `ln`, `atan2`, ... from them.

use std::borrow::Borrow;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::guard::{Comparison, comparisons};
use super::matrix::{Matrix, Pairing};
use super::op::{Binary, Nary, Unary, binary_ops, check_clamp_bounds, logsumexp_f64, unary_ops};

/// The other operand of a binary op or a comparison: a scalar of the same kind, or a plain
/// `f64`, an untracked constant that goes through the same rule (`x.max(0.0)`,
/// `x.powf(y)`, `x.gt(0.5)` all work in code generic over [`Scalar`]).
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Operand};
///
/// let g = Graph::new();
/// let x = g.var(2.0);
/// assert!(matches!(Operand::from(x), Operand::Scalar(_)));
/// assert!(matches!(Operand::<f64>::from(2.0), Operand::Const(c) if c == 2.0));
/// assert_eq!(x.powf(3.0).value(), 8.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub enum Operand<T> {
    /// A scalar of the same kind: for a `Var`, a node of a graph.
    Scalar(T),
    /// An untracked constant.
    Const(f64),
}

impl<T> From<f64> for Operand<T> {
    fn from(c: f64) -> Self {
        Operand::Const(c)
    }
}

impl<T: Scalar> Operand<T> {
    /// The operand's value.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Operand;
    /// assert_eq!(Operand::<f64>::Const(2.5).value(), 2.5);
    /// ```
    pub fn value(&self) -> f64 {
        match self {
            Operand::Scalar(x) => x.value(),
            Operand::Const(c) => *c,
        }
    }
}

/// `f64` on the left of `+ - * /` with `T` on the right: a bound to add to code generic over
/// [`Scalar`] that wants to write `1.0 - y * s` as it reads. Rust does not carry such a bound
/// through `T: Scalar` (it constrains `f64`, not `T`), so it is spelt once in the
/// `where` clause; every `Scalar` of the crate meets it.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, LeftOperand, Scalar};
///
/// /// The logistic loss `ln(1 + e^(-y s))`, and `1 - y s` for a hinge.
/// fn hinge<T: Scalar>(y: T, s: T) -> T
/// where
///     f64: LeftOperand<T>,
/// {
///     (1.0 - y * s).relu()
/// }
///
/// assert_eq!(hinge(1.0, 0.25), 0.75);
/// let g = Graph::new();
/// let s = g.var(0.25);
/// let loss = hinge(g.constant(1.0), s);
/// assert_eq!((loss.value(), loss.backward()[s]), (0.75, -1.0));
/// ```
pub trait LeftOperand<T>:
    Add<T, Output = T> + Sub<T, Output = T> + Mul<T, Output = T> + Div<T, Output = T>
{
}

impl<T, U> LeftOperand<T> for U where
    U: Add<T, Output = T> + Sub<T, Output = T> + Mul<T, Output = T> + Div<T, Output = T>
{
}

/// The provided unary methods of [`Scalar`], one per row of the table with a method name.
macro_rules! scalar_unary_methods {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal $(fn $method:ident($ex_x:expr => $ex_y:expr))? {
            value: |$x:ident| $value:expr,
            partial: |$px:ident, $py:ident| $partial:expr,
            $(quotient: |$qx:ident, $qy:ident| $quotient:expr,)?
        }
    )*) => {
        $( scalar_unary_methods!(@row [$(#[$doc])*] $variant $(fn $method)?); )*
    };
    (@row [$($doc:tt)*] $variant:ident fn $method:ident) => {
        $($doc)*
        #[track_caller]
        #[inline(always)]
        fn $method(self) -> Self {
            self.unary(Unary::$variant)
        }
    };
    (@row [$($doc:tt)*] $variant:ident) => {};
}

/// The provided binary methods of [`Scalar`], one per row of the table with a method name:
/// the other operand is a scalar of the same kind or an `f64`.
macro_rules! scalar_binary_methods {
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
        $( scalar_binary_methods!(@row [$(#[$doc])*] $variant $(fn $method)?); )*
    };
    (@row [$($doc:tt)*] $variant:ident fn $method:ident) => {
        $($doc)*
        #[track_caller]
        #[inline(always)]
        fn $method(self, other: impl Into<Operand<Self>>) -> Self {
            self.binary_with(Binary::$variant, other)
        }
    };
    (@row [$($doc:tt)*] $variant:ident) => {};
}

/// The provided comparisons of [`Scalar`]: of the values, as `f64` compares (a `Var`
/// records each as a guard instead).
macro_rules! scalar_comparisons {
    ($($(#[$doc:meta])* $method:ident => $cmp:ident, ($x:expr, $y:expr, $want:expr);)*) => {
        $(
            $(#[$doc])*
            ///
            /// # Examples
            ///
            /// ```
            /// use tapegrad::Scalar;
            #[doc = concat!("assert_eq!(Scalar::", stringify!($method), "(", stringify!($x), ", ", stringify!($y), "), ", stringify!($want), ");")]
            /// ```
            #[track_caller]
            fn $method(self, other: impl Into<Operand<Self>>) -> bool {
                Comparison::$cmp.holds(self.value(), other.into().value())
            }
        )*
    };
}

/// A real number that tapegrad can differentiate through: `f64` (plain evaluation),
/// [`Var`](crate::Var) (recorded on a tape), [`Dual`](crate::Dual) (forward mode).
///
/// Method names follow `f64` (`ln`, not `log`; `powi`, `powf`, `recip`). The other operand
/// of a binary method may be a scalar of the same kind or a plain `f64` ([`Operand`]); for
/// `f64` on the left of an operator, see [`LeftOperand`]. The n-ary functions
/// ([`Scalar::sum`], [`Scalar::dot`], [`Scalar::logsumexp`]) record one fused node on a tape
/// instead of a chain of binary ones; [`Scalar::sum`] takes a slice or any iterator.
///
/// Comparisons ([`Scalar::lt`] and its siblings) compare values; on a `Var` they are
/// recorded as guards that a [`Replay`](crate::Replay) re-checks.
///
/// # Implementing it
///
/// A type gives its value ([`Scalar::value`]), constants ([`Scalar::lift`]), the op
/// table's unary and binary ops ([`Scalar::unary`], [`Scalar::binary`]) and the n-ary ones;
/// every method named after an op of the table (`exp`, `ln`, `atan2`, ...) is provided from
/// those.
///
/// # Examples
///
/// One function, evaluated plainly and on a tape:
///
/// ```
/// use tapegrad::{Graph, Scalar};
///
/// fn softplus<T: Scalar>(x: T) -> T {
///     (x.exp() + 1.0).ln()
/// }
///
/// let plain = softplus(0.5_f64);
/// let g = Graph::new();
/// let x = g.var(0.5);
/// let y = softplus(x);
/// assert_eq!(y.value(), plain);
/// // d/dx ln(1 + e^x) = sigmoid(x)
/// let sigmoid = 1.0 / (1.0 + (-0.5_f64).exp());
/// approx::assert_relative_eq!(y.backward()[x], sigmoid, epsilon = 1e-15);
/// ```
///
/// # Panics
///
/// For `Var`, each method panics where the corresponding operator or method of [`Var`]
/// does: on a released handle, or on handles of two graphs.
///
/// [`Var`]: crate::Var
pub trait Scalar:
    Copy
    + std::fmt::Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Add<f64, Output = Self>
    + Sub<f64, Output = Self>
    + Mul<f64, Output = Self>
    + Div<f64, Output = Self>
    + Into<Operand<Self>>
{
    /// The plain value. For a `Var`, a raw read that replay checks remember (see
    /// [`Var::value`](crate::Var::value)).
    fn value(&self) -> f64;
    /// The plain value, read without telling replay checks: for a constant that leaves
    /// the function unchanged (a softmax's shift by its maximum), never for a branch (see
    /// [`Var::untracked_value`](crate::Var::untracked_value)). The default is
    /// [`Scalar::value`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Scalar;
    /// assert_eq!(Scalar::untracked_value(&2.5), 2.5);
    /// ```
    fn untracked_value(&self) -> f64 {
        self.value()
    }
    /// A constant in the same context as `self` (for a `Var`, a constant node of its graph).
    fn lift(&self, c: f64) -> Self;
    /// `op(self)`, an op of the table: what every unary method (`exp`, `ln`, ...) calls.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Scalar, Unary};
    /// assert_eq!(4.0.unary(Unary::Sqrt), 2.0);
    /// ```
    fn unary(self, op: Unary) -> Self;
    /// `op(self, other)`, an op of the table: what every binary method calls.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Scalar};
    /// assert_eq!(2.0.binary(Binary::Powf, 3.0), 8.0);
    /// ```
    fn binary(self, op: Binary, other: Self) -> Self;
    /// `op(self, c)` with a plain `f64` on the right, an untracked constant (on a tape,
    /// an operand without a node). The default lifts `c`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Graph, Scalar};
    /// let g = Graph::new();
    /// let x = g.var(3.0);
    /// let y = x.binary_f64(Binary::Mul, 2.0);
    /// assert_eq!((y.value(), g.len()), (6.0, 2)); // no node for the 2
    /// ```
    fn binary_f64(self, op: Binary, c: f64) -> Self {
        let c = self.lift(c);
        self.binary(op, c)
    }
    /// `op(self, other)` for either kind of [`Operand`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Scalar};
    /// assert_eq!(1.0.binary_with(Binary::Max, 2.0), 2.0);
    /// ```
    #[track_caller]
    #[inline(always)]
    fn binary_with(self, op: Binary, other: impl Into<Operand<Self>>) -> Self {
        match other.into() {
            Operand::Scalar(o) => self.binary(op, o),
            Operand::Const(c) => self.binary_f64(op, c),
        }
    }
    /// `self^n` for an integer `n`.
    #[track_caller]
    #[inline(always)]
    fn powi(self, n: i32) -> Self {
        self.binary_f64(Binary::Powi, f64::from(n))
    }
    /// `self^p` for a plain exponent: the same value and base partial as
    /// [`Scalar::powf`] with a `Var` exponent, without an exponent to differentiate (on a
    /// tape, one node whose exponent is an `f64` constant operand).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Scalar};
    /// let g = Graph::new();
    /// let x = g.var(4.0);
    /// let y = x.powf_f64(-0.5);
    /// assert_eq!((g.len(), g.edge_count()), (2, 2)); // x, y; y's base and its constant
    /// assert_eq!(y.value(), 0.5);
    /// assert_eq!(y.backward()[x], -0.5 * 4f64.powf(-1.5));
    /// assert_eq!(Scalar::powf_f64(4.0, -0.5), 0.5);
    /// ```
    #[track_caller]
    #[inline(always)]
    fn powf_f64(self, p: f64) -> Self {
        self.binary_f64(Binary::Powf, p)
    }
    // The methods of the table's ops: `exp`, `ln`, ..., `atan2`, `max`, ...
    unary_ops!(scalar_unary_methods);
    binary_ops!(scalar_binary_methods);
    comparisons!(scalar_comparisons);
    /// `self` limited to `[lo, hi]`; the derivative is 1 strictly inside, 0 at the ends
    /// and outside (PyTorch 2.15's `clamp`).
    ///
    /// # Panics
    ///
    /// Unless `lo <= hi` (NaN bounds included).
    #[doc(alias = "clip")]
    fn clamp(self, lo: f64, hi: f64) -> Self;
    /// The largest of `terms` (NaN if any is NaN), one n-ary node on a tape; the
    /// derivative is shared evenly among the terms equal to it.
    ///
    /// # Panics
    ///
    /// If `terms` is empty, or for `Var` if they mix graphs.
    #[doc(alias = "max")]
    fn amax(terms: &[Self]) -> Self;
    /// The sum of `terms` (a slice, or any iterator of scalars), one n-ary node on a tape,
    /// summed in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Scalar};
    ///
    /// fn sum_of_squares<T: Scalar>(xs: &[T]) -> T {
    ///     T::sum(xs.iter().map(|&x| x * x))
    /// }
    ///
    /// assert_eq!(sum_of_squares(&[1.0, 2.0]), 5.0);
    /// assert_eq!(f64::sum(&[1.0, 2.0]), 3.0);
    /// let g = Graph::new();
    /// let xs = g.vars(&[1.0, 2.0]);
    /// assert_eq!(sum_of_squares(&xs).backward()[xs[1]], 4.0);
    /// ```
    ///
    /// # Panics
    ///
    /// For `Var`, if `terms` is empty (an empty sum of `Var`s has no graph to live on: use
    /// [`Graph::sum`](crate::Graph::sum), which gives a constant 0 there) or mixes graphs.
    fn sum<I>(terms: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<Self>;
    /// `sum_i a[i] * b[i]`, one n-ary node on a tape.
    ///
    /// # Panics
    ///
    /// If the lengths differ; for `Var`, if they are empty or mix graphs.
    fn dot(a: &[Self], b: &[Self]) -> Self;
    /// `sum_i a[i] * b[i]` with plain numbers on the right (data, no gradient), one n-ary
    /// node on a tape whose `b` operands are constants: generic code can mix `Var` weights
    /// with `f64` data in one fused dot. The sum runs left to right from the first product.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Scalar, Var};
    ///
    /// assert_eq!(f64::dot_f64(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
    /// let g = Graph::new();
    /// let w = g.vars(&[1.0, 2.0]);
    /// let y = Var::dot_f64(&w, &[3.0, 4.0]);
    /// assert_eq!(y.value(), 11.0);
    /// assert_eq!(y.backward()[w[1]], 4.0);
    /// assert_eq!(g.len(), 3); // the two inputs and one dot node
    /// ```
    ///
    /// # Panics
    ///
    /// If the lengths differ; for `Var`, if `a` is empty or mixes graphs. The default (for
    /// other implementations) lifts `b` with [`Scalar::lift`] and panics if `a` is empty.
    #[track_caller]
    fn dot_f64(a: &[Self], b: &[f64]) -> Self {
        let first = a
            .first()
            .expect("dot_f64 of no terms has nothing to lift its data into");
        let b: Vec<Self> = b.iter().map(|&c| first.lift(c)).collect();
        Self::dot(a, &b)
    }
    /// `ln(sum_i e^terms[i])`, computed stably (shifted by the maximum), one n-ary node.
    ///
    /// # Panics
    ///
    /// If `terms` is empty, or for `Var` if they mix graphs.
    fn logsumexp(terms: &[Self]) -> Self;
    /// Every row of `a` dotted with every column of `b` ([`Pairing::Columns`], `A B`) or
    /// every row of `b` ([`Pairing::Rows`], `A B^T`), row-major: one [`Scalar::dot`] node
    /// per output. [`linalg`](crate::linalg)'s `mat_mul`, `mat_mul_t`, `mat_vec` and
    /// `vec_mat` are made of it. The default takes the dots one by one; `Var` looks each
    /// handle up once for the whole product, and where `b` is a run of consecutive nodes
    /// in its own order (a weight matrix bound with
    /// [`Graph::inputs`](crate::Graph::inputs) or `Graph::vars`, used as `x W^T` or as
    /// `x W`) or read in pairing order, stores the outputs as one block without edges: the
    /// same nodes and gradients, bit for bit, at none of the 12 bytes per operand.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{linalg::{Matrix, Pairing}, Graph, Scalar, Var};
    ///
    /// let w = [1.0, 2.0, 3.0, 4.0];
    /// let x = [5.0, 6.0];
    /// let by_rows = f64::dots(Matrix::new(&w, 2, 2), Matrix::new(&x, 1, 2), Pairing::Rows);
    /// assert_eq!(by_rows, vec![17.0, 39.0]); // W x
    /// let g = Graph::new();
    /// let (wv, xv) = (g.vars(&w), g.vars(&x));
    /// let y = Var::dots(Matrix::new(&xv, 1, 2), Matrix::new(&wv, 2, 2), Pairing::Columns);
    /// assert_eq!(y[0].value(), 23.0); // x W
    /// assert_eq!(y[0].backward()[wv[2]], 6.0);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Scalar::dot`] for each output: if the paired lengths differ (`a.cols()` against
    /// `b.rows()`, or `b.cols()` for rows), or for `Var` if `a` has no columns or the handles
    /// mix graphs.
    fn dots(a: Matrix<'_, Self>, b: Matrix<'_, Self>, pairing: Pairing) -> Vec<Self> {
        dots_one_by_one(a, b, pairing)
    }
    /// `statement` of `inputs`; on a tape (`Var`), preaccumulated into one node carrying
    /// its partials ([`Graph::fuse`](crate::Graph::fuse)), which has no second-order rule.
    /// The default, and `f64`, evaluate it.
    ///
    /// # Panics
    ///
    /// For `Var`, if `inputs` is empty or mixes graphs.
    #[track_caller]
    fn fused<S: Statement>(statement: &S, inputs: &[Self]) -> Self {
        statement.eval(inputs)
    }
}

/// A statement for [`Scalar::fused`]: a function of a few inputs with one output, written
/// once over [`Scalar`] so that generic code can preaccumulate it on a tape.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Scalar, Statement, Var};
///
/// /// `(x - m) * s * g + b`, a LayerNorm output.
/// struct Affine;
/// impl Statement for Affine {
///     fn eval<T: Scalar>(&self, v: &[T]) -> T {
///         (v[0] - v[1]) * v[2] * v[3] + v[4]
///     }
/// }
///
/// let inputs = [1.5, 0.5, 2.0, 3.0, 0.25];
/// assert_eq!(f64::fused(&Affine, &inputs), 6.25);
/// let g = Graph::new();
/// let v = g.vars(&inputs);
/// let y = Var::fused(&Affine, &v);
/// assert_eq!((y.value(), g.len()), (6.25, 6)); // one node
/// assert_eq!(y.backward()[v[0]], 6.0);
/// ```
pub trait Statement {
    /// The statement's value at `xs`.
    fn eval<T: Scalar>(&self, xs: &[T]) -> T;
}

/// [`Scalar::dots`]'s default: one [`Scalar::dot`] per output.
pub(in crate::engine) fn dots_one_by_one<T: Scalar>(
    a: Matrix<'_, T>,
    b: Matrix<'_, T>,
    pairing: Pairing,
) -> Vec<T> {
    let outputs = match pairing {
        Pairing::Columns => b.cols(),
        Pairing::Rows => b.rows(),
    };
    // A column is strided; it is gathered into one reused buffer for its dot.
    let mut column = Vec::with_capacity(b.rows());
    let mut out = Vec::with_capacity(a.rows() * outputs);
    for i in 0..a.rows() {
        for j in 0..outputs {
            out.push(match pairing {
                Pairing::Columns => {
                    column.clear();
                    column.extend((0..b.rows()).map(|k| b.as_slice()[k * b.cols() + j]));
                    T::dot(a.row(i), &column)
                }
                Pairing::Rows => T::dot(a.row(i), b.row(j)),
            });
        }
    }
    out
}

impl Scalar for f64 {
    fn value(&self) -> f64 {
        *self
    }
    fn lift(&self, c: f64) -> Self {
        c
    }
    #[inline(always)]
    fn unary(self, op: Unary) -> Self {
        op.value(self)
    }
    #[inline(always)]
    fn binary(self, op: Binary, other: Self) -> Self {
        op.value(self, other)
    }
    #[inline(always)]
    fn binary_f64(self, op: Binary, c: f64) -> Self {
        op.value(self, c)
    }
    #[track_caller]
    fn clamp(self, lo: f64, hi: f64) -> Self {
        check_clamp_bounds(lo, hi);
        Nary::Clamp.value(&[self, lo, hi])
    }
    fn amax(terms: &[Self]) -> Self {
        assert!(!terms.is_empty(), "amax of no terms has no value");
        Nary::Max.value(terms)
    }
    fn sum<I>(terms: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<Self>,
    {
        terms.into_iter().map(|x| *x.borrow()).sum()
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
    fn dot_f64(a: &[Self], b: &[f64]) -> Self {
        <f64 as Scalar>::dot(a, b)
    }
    fn logsumexp(terms: &[Self]) -> Self {
        logsumexp_f64(terms)
    }
}
