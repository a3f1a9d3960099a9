//! [`Scalar`]: the small numeric trait that both `f64` and [`Var`](crate::Var) implement.
//! The trait and its `f64` form only; `Var`'s form is in `var.rs`.
//!
//! Every derivative rule in [`op`](crate::op) is written once over this trait: the plain
//! backward evaluates the rules with `f64` at record time, and the differentiable backward
//! evaluates the very same rules with graph nodes, which is what makes gradients of
//! gradients possible. Users can write their own functions over `Scalar` too, and run them
//! with `f64` (plain evaluation) or with `Var` (recorded on a tape).

use std::ops::{Add, Div, Mul, Neg, Sub};

use super::matrix::{Matrix, Pairing};

/// `sqrt(2 / pi)`, the constant in the tanh form of GELU, at full `f64` precision.
pub(crate) const SQRT_2_OVER_PI: f64 =
    std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
/// The cubic coefficient in the tanh form of GELU.
pub(crate) const GELU_CUBIC: f64 = 0.044715;

/// A real number that tapegrad can differentiate through: `f64` or [`Var`](crate::Var).
///
/// Method names follow `f64` (`ln`, not `log`; `powi`, `powf`, `recip`). The n-ary
/// functions ([`Scalar::sum`], [`Scalar::dot`], [`Scalar::logsumexp`]) record one fused
/// node on a tape instead of a chain of binary ones.
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
{
    /// The plain value.
    fn value(&self) -> f64;
    /// A constant in the same context as `self` (for a `Var`, a constant node of its graph).
    fn lift(&self, c: f64) -> Self;
    /// `e^self`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// `1 / self`.
    fn recip(self) -> Self;
    /// `self^n` for an integer `n`.
    fn powi(self, n: i32) -> Self;
    /// `self^p`, differentiable in both the base and the exponent.
    fn powf(self, p: Self) -> Self;
    /// `self^p` for a plain exponent: the same value and base partial as
    /// [`Scalar::powf`], without an exponent to differentiate (on a tape, one node whose
    /// exponent is an `f64` constant operand, with no partial taken for it, where
    /// `powf(x.lift(p))` records a constant node too, and the exponent's partial, a
    /// logarithm).
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
    fn powf_f64(self, p: f64) -> Self {
        let p = self.lift(p);
        self.powf(p)
    }
    /// The sine.
    fn sin(self) -> Self;
    /// The cosine.
    fn cos(self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The hyperbolic sine.
    fn sinh(self) -> Self;
    /// The hyperbolic cosine.
    fn cosh(self) -> Self;
    /// The absolute value (derivative 0 at 0).
    fn abs(self) -> Self;
    /// `max(self, 0)` (derivative 0 at 0).
    fn relu(self) -> Self;
    /// The logistic function `1 / (1 + e^-self)`.
    fn sigmoid(self) -> Self;
    /// GELU in its tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    fn gelu(self) -> Self;
    /// The arctangent.
    #[doc(alias = "arctan")]
    fn atan(self) -> Self;
    /// The arcsine, on `[-1, 1]`.
    #[doc(alias = "arcsin")]
    fn asin(self) -> Self;
    /// The arccosine, on `[-1, 1]`.
    #[doc(alias = "arccos")]
    fn acos(self) -> Self;
    /// The tangent.
    fn tan(self) -> Self;
    /// `ln(1 + self)`, accurate for tiny `self`.
    #[doc(alias = "log1p")]
    fn ln_1p(self) -> Self;
    /// `e^self - 1`, accurate for tiny `self`.
    #[doc(alias = "expm1")]
    fn exp_m1(self) -> Self;
    /// The base-2 logarithm.
    fn log2(self) -> Self;
    /// The base-10 logarithm.
    fn log10(self) -> Self;
    /// `2^self`.
    fn exp2(self) -> Self;
    /// The real cube root.
    fn cbrt(self) -> Self;
    /// `ln(1 + e^self)`, computed without overflow for large `self`.
    fn softplus(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// The complementary error function `1 - erf(self)`.
    fn erfc(self) -> Self;
    /// The angle of the point `(other, self)`: `atan(self / other)` in the right quadrant.
    #[doc(alias = "arctan2")]
    fn atan2(self, other: Self) -> Self;
    /// `sqrt(self^2 + other^2)`, without overflow.
    fn hypot(self, other: Self) -> Self;
    /// The larger of the two (NaN if either is NaN; `f64`'s inherent `max` instead drops
    /// a NaN). At a tie each gets half the derivative ([`op::kink`](crate::op::kink)).
    #[doc(alias = "maximum")]
    fn max(self, other: Self) -> Self;
    /// The smaller of the two (NaN if either is NaN). At a tie each gets half the
    /// derivative.
    #[doc(alias = "minimum")]
    fn min(self, other: Self) -> Self;
    /// `self` limited to `[lo, hi]`; the derivative passes at the ends.
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
    /// The sum of `terms`, one n-ary node on a tape.
    ///
    /// # Panics
    ///
    /// For `Var`, if `terms` is empty (an empty sum has no graph to live on) or mixes graphs.
    fn sum(terms: &[Self]) -> Self;
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
pub(crate) fn dots_one_by_one<T: Scalar>(
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

/// The [`Scalar`] methods that are one unary op of the table each, written as
/// `self.unary(Unary::Op)`: for the scalar types inside the engine that evaluate the table
/// themselves (the differentiable sweep's terms, the replay's dual numbers), which have an
/// inherent `fn unary(self, Unary) -> Self`. Invoked inside their `impl Scalar` blocks.
macro_rules! unary_methods_by_table {
    () => {
        super::scalar::unary_methods_by_table!(@methods
            exp => Exp, ln => Ln, sqrt => Sqrt, recip => Recip, sin => Sin, cos => Cos,
            tanh => Tanh, sinh => Sinh, cosh => Cosh, abs => Abs, relu => Relu,
            sigmoid => Sigmoid, gelu => Gelu, atan => Atan, asin => Asin, acos => Acos,
            tan => Tan, ln_1p => Ln1p, exp_m1 => ExpM1, log2 => Log2, log10 => Log10,
            exp2 => Exp2, cbrt => Cbrt, softplus => Softplus, erf => Erf, erfc => Erfc
        );
    };
    (@methods $($method:ident => $op:ident),*) => {
        $(
            fn $method(self) -> Self {
                self.unary(Unary::$op)
            }
        )*
    };
}
pub(crate) use unary_methods_by_table;

/// The stable logistic function on `f64` (no overflow of `e^-x` for very negative `x`).
pub(crate) fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` on `f64` as `max(x, 0) + ln(1 + e^-|x|)`: no overflow past 709, full
/// precision for very negative `x` (where it is about `e^x`). NaN stays NaN.
pub(crate) fn softplus_f64(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `max(a, b)` on `f64`, NaN if either is NaN (`f64::max` would drop the NaN), and
/// `+0` for `max(-0, +0)` either way round (IEEE 754-2019 `maximum`; PyTorch's
/// `maximum` gives the same).
pub(crate) fn max_f64(a: f64, b: f64) -> f64 {
    if a > b || (a == b && b.is_sign_negative()) {
        a
    } else if a <= b {
        b
    } else {
        a + b // a NaN
    }
}

/// `min(a, b)` on `f64`, NaN if either is NaN, and `-0` for `min(-0, +0)` either way
/// round (IEEE 754-2019 `minimum`).
pub(crate) fn min_f64(a: f64, b: f64) -> f64 {
    if a < b || (a == b && a.is_sign_negative()) {
        a
    } else if a >= b {
        b
    } else {
        a + b // a NaN
    }
}

/// The largest of `xs`, NaN if any is NaN (`-inf` for none).
pub(crate) fn amax_f64(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, max_f64)
}

/// `x` limited to `[lo, hi]` (for `lo <= hi`); NaN stays NaN (`f64::clamp` panics on
/// NaN bounds, so the bounds are checked where a clamp is recorded).
pub(crate) fn clamp_f64(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// Panics unless `lo <= hi`, the bounds of a clamp.
#[track_caller]
pub(crate) fn check_clamp_bounds(lo: f64, hi: f64) {
    assert!(
        lo <= hi,
        "tapegrad: clamp needs lo <= hi (and neither NaN), got lo = {lo}, hi = {hi}"
    );
}

/// GELU (tanh form) on `f64`.
pub(crate) fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh())
}

/// `ln(sum e^x)` on `f64`, shifted by the maximum so that no term overflows.
pub(crate) fn logsumexp_f64(xs: &[f64]) -> f64 {
    assert!(
        !xs.is_empty(),
        "logsumexp of no terms is -infinity and has no gradient"
    );
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        // `f64::max` skips NaN, so `[NaN]` (or `[NaN, inf]`) lands here: a NaN must come
        // out as NaN, not as an infinity that a later `exp` turns into a plausible 0.
        return if xs.iter().any(|x| x.is_nan()) {
            f64::NAN
        } else {
            max
        };
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

impl Scalar for f64 {
    fn value(&self) -> f64 {
        *self
    }
    fn lift(&self, c: f64) -> Self {
        c
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn recip(self) -> Self {
        f64::recip(self)
    }
    fn powi(self, n: i32) -> Self {
        f64::powi(self, n)
    }
    fn powf(self, p: Self) -> Self {
        f64::powf(self, p)
    }
    fn powf_f64(self, p: f64) -> Self {
        f64::powf(self, p)
    }
    fn sin(self) -> Self {
        f64::sin(self)
    }
    fn cos(self) -> Self {
        f64::cos(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn sinh(self) -> Self {
        f64::sinh(self)
    }
    fn cosh(self) -> Self {
        f64::cosh(self)
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn relu(self) -> Self {
        // Written so that NaN passes through (NaN <= 0 is false), as in PyTorch and JAX:
        // `if self > 0.0 { self } else { 0.0 }` would silently turn a NaN into 0.
        if self <= 0.0 { 0.0 } else { self }
    }
    fn sigmoid(self) -> Self {
        sigmoid_f64(self)
    }
    fn gelu(self) -> Self {
        gelu_f64(self)
    }
    fn atan(self) -> Self {
        f64::atan(self)
    }
    fn asin(self) -> Self {
        f64::asin(self)
    }
    fn acos(self) -> Self {
        f64::acos(self)
    }
    fn tan(self) -> Self {
        f64::tan(self)
    }
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }
    fn exp_m1(self) -> Self {
        f64::exp_m1(self)
    }
    fn log2(self) -> Self {
        f64::log2(self)
    }
    fn log10(self) -> Self {
        f64::log10(self)
    }
    fn exp2(self) -> Self {
        f64::exp2(self)
    }
    fn cbrt(self) -> Self {
        f64::cbrt(self)
    }
    fn softplus(self) -> Self {
        softplus_f64(self)
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn erfc(self) -> Self {
        libm::erfc(self)
    }
    fn atan2(self, other: Self) -> Self {
        f64::atan2(self, other)
    }
    fn hypot(self, other: Self) -> Self {
        f64::hypot(self, other)
    }
    fn max(self, other: Self) -> Self {
        max_f64(self, other)
    }
    fn min(self, other: Self) -> Self {
        min_f64(self, other)
    }
    #[track_caller]
    fn clamp(self, lo: f64, hi: f64) -> Self {
        check_clamp_bounds(lo, hi);
        clamp_f64(self, lo, hi)
    }
    fn amax(terms: &[Self]) -> Self {
        assert!(!terms.is_empty(), "amax of no terms has no value");
        amax_f64(terms)
    }
    fn sum(terms: &[Self]) -> Self {
        terms.iter().sum()
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
