//! The one table of operations. Each op is one row, and the row holds everything about it:
//! its name, its method (if it has one), its forward value, its local partial derivatives
//! (written once over [`Scalar`](super::Scalar)), and, for partials that are quotients,
//! the quotient they may be rescued as (see `backward::rescue`).
//!
//! Every form of an op is generated from its row: the [`Unary`] and [`Binary`] enums and
//! their values (here), their partials over `Scalar` (`rules.rs`), the `Scalar` trait's
//! methods (`scalar.rs`, which `f64`, the differentiable sweep's terms and [`Dual`] numbers
//! get by implementing `Scalar::unary` and `Scalar::binary` once), and `Var`'s methods and
//! the constant-first functions such as [`atan2`](crate::atan2) (`var.rs`). So adding an op
//! is one row below, plus its tests.
//!
//! The tape evaluates the partials with `f64` when it records a node (the plain backward
//! then only multiplies and adds), and the differentiable backward evaluates the same rules
//! with graph nodes, so gradients of gradients use exactly the rules the first gradient
//! used. In a partial, `y` is the op's own output. Rules use it where that is cheaper or
//! more exact than recomputing (`d e^x = y`), which also means the differentiable backward
//! reuses the existing node instead of recording a new one.
//!
//! This file holds the table, the ops' names and their `f64` values: it uses nothing else of
//! the engine.
//!
//! [`Dual`]: crate::Dual

/// What a node records: how its value was made from its operands.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Op, Unary};
///
/// let g = Graph::new();
/// let x = g.var(1.0);
/// assert_eq!(x.op(), Op::Input);
/// assert_eq!(x.exp().op(), Op::Unary(Unary::Exp));
/// assert_eq!(x.exp().op().to_string(), "exp");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A differentiable input, made by [`Graph::var`](crate::Graph::var).
    Input,
    /// A constant, made by [`Graph::constant`](crate::Graph::constant).
    Constant,
    /// A function of one operand.
    Unary(Unary),
    /// A function of two operands (either may be an untracked `f64` constant).
    Binary(Binary),
    /// A function of any number of operands, recorded as one fused node.
    Nary(Nary),
    /// A user-defined function ([`CustomFn`](crate::CustomFn)), by its index among the
    /// graph's registered functions; [`Var::op_name`](crate::Var::op_name) gives its name.
    Custom(u8),
    /// A preaccumulated sub-computation ([`Graph::fuse`](crate::Graph::fuse)): one node
    /// carrying the partials of the nodes it replaced.
    Fused,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Input => "input",
            Op::Constant => "constant",
            Op::Unary(op) => op.name(),
            Op::Binary(op) => op.name(),
            Op::Nary(op) => op.name(),
            // The registered name lives on the graph: `Var::op_name` reads it.
            Op::Custom(_) => "custom",
            Op::Fused => "fused",
        })
    }
}

/// The unary ops, one row each, handed to `$callback` (a macro that turns the rows into
/// one form of the ops). A row is
///
/// ```text
/// /// docs (for the enum variant and the method)
/// Variant "name" [fn method(example input => example output)] {
///     value: |x| f64 expression,
///     partial: |x, y| expression over Scalar,
///     [quotient: |x, y| (num, den),]   // for a partial num/den that may overflow
/// }
/// ```
///
/// An op without `fn method(..)` is reached through an operator (`-x`).
macro_rules! unary_ops {
    ($callback:ident) => {
        $callback! {
            /// `-x`.
            Neg "neg" {
                value: |x| -x,
                partial: |x, y| x.lift(-1.0),
            }
            /// `1 / x`.
            #[doc(alias = "reciprocal")]
            #[doc(alias = "inv")]
            Recip "recip" fn recip(4.0 => 0.25) {
                value: |x| x.recip(),
                partial: |x, y| -(y * y),
                // -1/x^2 = -y/x
                quotient: |x, y| (-y, x),
            }
            /// `e^x`.
            Exp "exp" fn exp(1.0 => std::f64::consts::E) {
                value: |x| x.exp(),
                partial: |x, y| y,
            }
            /// The natural logarithm (named `ln` as in `f64`).
            #[doc(alias = "log")]
            Ln "ln" fn ln(std::f64::consts::E => 1.0) {
                value: |x| x.ln(),
                partial: |x, y| x.recip(),
                quotient: |x, y| (x.lift(1.0), x),
            }
            /// The square root; its derivative `1 / (2 sqrt x)` is infinite at 0.
            Sqrt "sqrt" fn sqrt(4.0 => 2.0) {
                value: |x| x.sqrt(),
                partial: |x, y| y.recip() * 0.5,
            }
            /// The sine.
            Sin "sin" fn sin(0.0 => 0.0) {
                value: |x| x.sin(),
                partial: |x, y| x.cos(),
            }
            /// The cosine.
            Cos "cos" fn cos(0.0 => 1.0) {
                value: |x| x.cos(),
                partial: |x, y| -x.sin(),
            }
            /// The hyperbolic tangent. Its derivative is written `sech^2 x` (computed stably
            /// by `sech2` in `rules.rs`), not `1 - y^2`: `1 - tanh^2` rounds to 0 by `x = 20`,
            /// where the true value is still about 1.7e-17.
            Tanh "tanh" fn tanh(0.0 => 0.0) {
                value: |x| x.tanh(),
                partial: |x, y| sech2(x),
            }
            /// The hyperbolic sine.
            Sinh "sinh" fn sinh(0.0 => 0.0) {
                value: |x| x.sinh(),
                partial: |x, y| x.cosh(),
            }
            /// The hyperbolic cosine.
            Cosh "cosh" fn cosh(0.0 => 1.0) {
                value: |x| x.cosh(),
                partial: |x, y| x.sinh(),
            }
            /// `|x|`, with derivative 0 at 0 (as PyTorch and JAX choose), NaN at NaN (see
            /// [kink conventions](crate::guide#kinks)).
            Abs "abs" fn abs(-3.0 => 3.0) {
                value: |x| x.abs(),
                partial: |x, y| x.lift(kink::abs(x.value())),
            }
            /// `max(x, 0)`, with derivative 0 at and below 0 (a select: an exact 0 partial
            /// passes nothing back, even an infinite adjoint), NaN at NaN (see
            /// [kink conventions](crate::guide#kinks)).
            Relu "relu" fn relu(-3.0 => 0.0) {
                // NaN passes through (NaN <= 0 is false), as in PyTorch and JAX.
                value: |x| if x <= 0.0 { 0.0 } else { x },
                partial: |x, y| x.lift(kink::relu(x.value())),
            }
            /// The logistic function `1 / (1 + e^-x)`. Its derivative is written
            /// `y sigmoid(-x)`, not `y (1 - y)`, which would lose all precision where `y`
            /// rounds to 1.
            Sigmoid "sigmoid" fn sigmoid(0.0 => 0.5) {
                value: |x| sigmoid_f64(x),
                partial: |x, y| y * (-x).sigmoid(),
            }
            /// GELU, tanh form: `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`.
            /// Derivative: `0.5 (1 + tanh u) + 0.5 x sech^2(u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)`.
            Gelu "gelu" fn gelu(0.0 => 0.0) {
                value: |x| gelu_f64(x),
                partial: |x, y| {
                    let u = (x + x * x * x * GELU_CUBIC) * SQRT_2_OVER_PI;
                    let du = (x * x * (3.0 * GELU_CUBIC) + 1.0) * SQRT_2_OVER_PI;
                    (u.tanh() + 1.0) * 0.5 + x * 0.5 * sech2(u) * du
                },
            }
            /// The arctangent: `d atan x = 1 / (1 + x^2)`.
            #[doc(alias = "arctan")]
            Atan "atan" fn atan(1.0 => std::f64::consts::FRAC_PI_4) {
                value: |x| x.atan(),
                partial: |x, y| (x * x + 1.0).recip(),
            }
            /// The arcsine on `[-1, 1]`: `d asin x = 1 / sqrt((1 - x)(1 + x))` (the product
            /// keeps its precision near ±1, where `1 - x^2` cancels); infinite at ±1.
            #[doc(alias = "arcsin")]
            Asin "asin" fn asin(0.5 => std::f64::consts::FRAC_PI_6) {
                value: |x| x.asin(),
                partial: |x, y| ((-x + 1.0) * (x + 1.0)).sqrt().recip(),
            }
            /// The arccosine on `[-1, 1]`: `d acos x = -1 / sqrt((1 - x)(1 + x))`.
            #[doc(alias = "arccos")]
            Acos "acos" fn acos(0.5 => std::f64::consts::FRAC_PI_3) {
                value: |x| x.acos(),
                partial: |x, y| -((-x + 1.0) * (x + 1.0)).sqrt().recip(),
            }
            /// The tangent: `d tan x = 1 + tan^2 x`.
            Tan "tan" fn tan(std::f64::consts::FRAC_PI_4 => 1.0) {
                value: |x| x.tan(),
                partial: |x, y| y * y + 1.0,
            }
            /// `ln(1 + x)`, accurate for tiny `x` (named as in `f64`): `d = 1 / (1 + x)`.
            #[doc(alias = "log1p")]
            Ln1p "ln_1p" fn ln_1p(1e-20 => 1e-20) {
                value: |x| x.ln_1p(),
                partial: |x, y| (x + 1.0).recip(),
            }
            /// `e^x - 1`, accurate for tiny `x` (named as in `f64`): `d = e^x` (recomputed,
            /// not `y + 1`, which would be the same number but one more node in the
            /// differentiable backward).
            #[doc(alias = "expm1")]
            ExpM1 "exp_m1" fn exp_m1(1e-20 => 1e-20) {
                value: |x| x.exp_m1(),
                partial: |x, y| x.exp(),
            }
            /// The base-2 logarithm: `d log2 x = 1 / (x ln 2)`.
            Log2 "log2" fn log2(8.0 => 3.0) {
                value: |x| x.log2(),
                partial: |x, y| (x * std::f64::consts::LN_2).recip(),
                quotient: |x, y| (x.lift(1.0), x * std::f64::consts::LN_2),
            }
            /// The base-10 logarithm: `d log10 x = 1 / (x ln 10)`.
            Log10 "log10" fn log10(1000.0 => 3.0) {
                value: |x| x.log10(),
                partial: |x, y| (x * std::f64::consts::LN_10).recip(),
                quotient: |x, y| (x.lift(1.0), x * std::f64::consts::LN_10),
            }
            /// `2^x`: `d = 2^x ln 2`.
            Exp2 "exp2" fn exp2(3.0 => 8.0) {
                value: |x| x.exp2(),
                partial: |x, y| y * std::f64::consts::LN_2,
            }
            /// The real cube root (negative for negative `x`): `d cbrt x = 1 / (3 cbrt(x)^2)`,
            /// written with `y` so that it is `+inf` at 0 (the true vertical slope, as
            /// PyTorch's `x.pow(1/3)` and JAX's `cbrt` give there), not `0 / 0` (see
            /// [conventions](crate::guide#kinks)).
            Cbrt "cbrt" fn cbrt(-8.0 => -2.0) {
                value: |x| x.cbrt(),
                partial: |x, y| (y * y * 3.0).recip(),
            }
            /// `ln(1 + e^x)`, computed as `max(x, 0) + ln(1 + e^-|x|)` so that it never
            /// overflows (the naive form is `inf` past `x = 709`): `d softplus x =
            /// sigmoid(x)`. No threshold: PyTorch returns `x` and slope 1 past `x = 20`,
            /// off by up to `e^-20` (2e-9); this is exact everywhere (see
            /// [conventions](crate::guide#kinks)).
            Softplus "softplus" fn softplus(1000.0 => 1000.0) {
                value: |x| softplus_f64(x),
                partial: |x, y| x.sigmoid(),
            }
            /// The error function (from the `libm` crate: `std` has none):
            /// `d erf x = 2/sqrt(pi) e^(-x^2)`.
            Erf "erf" fn erf(0.0 => 0.0) {
                value: |x| libm::erf(x),
                partial: |x, y| (-(x * x)).exp() * std::f64::consts::FRAC_2_SQRT_PI,
            }
            /// The complementary error function `1 - erf x`, accurate where `erf` rounds to
            /// 1: `d erfc x = -2/sqrt(pi) e^(-x^2)`.
            Erfc "erfc" fn erfc(0.0 => 1.0) {
                value: |x| libm::erfc(x),
                partial: |x, y| (-(x * x)).exp() * -std::f64::consts::FRAC_2_SQRT_PI,
            }
            /// The inverse hyperbolic sine (`libm`'s, as C's `asinh`):
            /// `d asinh x = 1 / sqrt(x^2 + 1)`, written `1 / hypot(x, 1)` so that it does
            /// not overflow to 0 for huge `x`.
            #[doc(alias = "arcsinh")]
            Asinh "asinh" fn asinh(1.0 => 0.881373587019543) {
                value: |x| libm::asinh(x),
                partial: |x, y| x.hypot(x.lift(1.0)).recip(),
            }
            /// The inverse hyperbolic cosine on `[1, inf)` (`libm`'s):
            /// `d acosh x = 1 / (sqrt(x - 1) sqrt(x + 1))` (two roots, not `sqrt(x^2 - 1)`,
            /// which cancels near 1 and overflows for huge `x`); infinite at 1.
            #[doc(alias = "arccosh")]
            Acosh "acosh" fn acosh(2.0 => 1.3169578969248166) {
                value: |x| libm::acosh(x),
                partial: |x, y| ((x - 1.0).sqrt() * (x + 1.0).sqrt()).recip(),
            }
            /// The inverse hyperbolic tangent on `(-1, 1)` (`libm`'s):
            /// `d atanh x = 1 / ((1 - x)(1 + x))` (the product keeps its precision near
            /// ±1); infinite at ±1.
            #[doc(alias = "arctanh")]
            Atanh "atanh" fn atanh(0.5 => 0.5493061443340549) {
                value: |x| libm::atanh(x),
                partial: |x, y| ((-x + 1.0) * (x + 1.0)).recip(),
            }
        }
    };
}
pub(in crate::engine) use unary_ops;

/// The binary ops, one row each, handed to `$callback` as [`unary_ops!`] hands the unary
/// ones. A row is
///
/// ```text
/// /// docs
/// Variant "name" [fn method(example a, example b => example output)] {
///     value: |a, b| f64 expression,
///     d_lhs: |a, b, y| d/da over Scalar,
///     d_rhs: |a, b, y| d/db over Scalar,
///     [quotient_lhs: |a, b, y| (num, den),]
///     [quotient_rhs: |a, b, y| (num, den),]
/// }
/// ```
///
/// An `f64` operand (as in `2.0 / x`) is recorded as an untracked constant and uses exactly
/// the rule written here for two variables: there are no hand-written variants per operand
/// kind to get wrong. The ops without `fn method(..)` are operators (`+ - * /`) or, for
/// `powi`, a method with an `i32` exponent.
macro_rules! binary_ops {
    ($callback:ident) => {
        $callback! {
            /// `a + b`.
            Add "+" {
                value: |a, b| a + b,
                d_lhs: |a, b, y| a.lift(1.0),
                d_rhs: |a, b, y| a.lift(1.0),
            }
            /// `a - b`.
            Sub "-" {
                value: |a, b| a - b,
                d_lhs: |a, b, y| a.lift(1.0),
                d_rhs: |a, b, y| a.lift(-1.0),
            }
            /// `a * b`.
            Mul "*" {
                value: |a, b| a * b,
                d_lhs: |a, b, y| b,
                d_rhs: |a, b, y| a,
            }
            /// `a / b`: `d/da = 1/b`, `d/db = -a/b^2 = -y/b`.
            Div "/" {
                value: |a, b| a / b,
                d_lhs: |a, b, y| b.recip(),
                d_rhs: |a, b, y| -(y / b),
                quotient_lhs: |a, b, y| (a.lift(1.0), b),
                quotient_rhs: |a, b, y| (-y, b),
            }
            /// `a^b` for real `b`, differentiable in both: `d/da = b a^(b-1)`,
            /// `d/db = ln(a) a^b`. Where `a^b` is 0 (a zero base), `d/db` is taken as 0,
            /// its limit, rather than `ln 0 * 0 = NaN`, and so it is for a zero base with
            /// `b >= 0` (`d/db 0^b` at `b = 0` is 0, as in PyTorch, not `ln 0 * 1 = -inf`);
            /// at `b = 0`, `d/da` is 0 at every `a` (`a^0` is the constant 1): written
            /// `b a^(b-1)` wherever `a^(b-1)` is finite, so that its own derivative in `b`,
            /// `a^(b-1)`, survives (the mixed second derivative, 1/2 at `(2, 0)`), and a
            /// constant 0 only where `0 * a^-1` would be NaN (`a = 0`, subnormal, or NaN).
            Powf "powf" fn powf(2.0, 3.0 => 8.0) {
                value: |a, b| a.powf(b),
                d_lhs: |a, b, y| if b.value() == 0.0 && !a.value().powf(b.value() - 1.0).is_finite() { a.lift(0.0) } else { b * a.powf(b - 1.0) },
                d_rhs: |a, b, y| if y.value() == 0.0 || (a.value() == 0.0 && b.value() >= 0.0) { a.lift(0.0) } else { a.ln() * y },
                // b a^(b-1) = b y / a
                quotient_lhs: |a, b, y| (b * y, a),
            }
            /// `a^n` for an integer `n` (always a constant): `d/da = n a^(n-1)`, and 0 for
            /// `n = 0` (`a^0` is the constant 1; `0 * a^-1` would be NaN at `a = 0`). The
            /// value is within 1 ulp of `powf` of the same exponent for every `n` (see
            /// `powi_f64`).
            Powi "powi" {
                value: |a, n| powi_f64(a, n as i32),
                d_lhs: |a, n, y| match n.value() as i32 {
                    // a^0 is the constant 1 (0 * a^-1 would be NaN at a = 0).
                    0 => a.lift(0.0),
                    // n - 1 is not an i32: take that power in f64.
                    i32::MIN => n * a.powf(n - 1.0),
                    m => n * a.powi(m - 1),
                },
                d_rhs: |a, n, y| a.lift(0.0),
                quotient_lhs: |a, n, y| (n * y, a),
            }
            /// `atan2(a, b)`, the angle of the point `(b, a)`, in `(-pi, pi]`:
            /// `d/da = b / r^2`, `d/db = -a / r^2` with `r = hypot(a, b)` (divided twice by
            /// `r`, never squared, so it neither overflows for large operands nor underflows
            /// to 0 for tiny ones). At the origin, where the angle jumps, 0 for both, as
            /// PyTorch 2.15 gives (see [conventions](crate::guide#kinks)).
            #[doc(alias = "arctan2")]
            Atan2 "atan2" fn atan2(1.0, -1.0 => 3.0 * std::f64::consts::FRAC_PI_4) {
                value: |a, b| a.atan2(b),
                d_lhs: |a, b, y| { let r = a.hypot(b); if r.value() == 0.0 { a.lift(0.0) } else { b / r / r } },
                d_rhs: |a, b, y| { let r = a.hypot(b); if r.value() == 0.0 { a.lift(0.0) } else { -a / r / r } },
            }
            /// `sqrt(a^2 + b^2)` without overflow: `d/da = a / y`, `d/db = b / y`. NaN at the
            /// origin, as in PyTorch.
            Hypot "hypot" fn hypot(3.0, 4.0 => 5.0) {
                value: |a, b| a.hypot(b),
                d_lhs: |a, b, y| a / y,
                d_rhs: |a, b, y| b / y,
            }
            /// The larger operand (NaN if either is NaN; `f64`'s own `max` drops a NaN
            /// instead): the derivative goes to the larger one, half to each at a tie (see
            /// [kink conventions](crate::guide#kinks)).
            #[doc(alias = "maximum")]
            Max "max" fn max(1.0, 2.0 => 2.0) {
                value: |a, b| max_f64(a, b),
                d_lhs: |a, b, y| a.lift(kink::max_share(a.value(), b.value())),
                d_rhs: |a, b, y| a.lift(kink::max_share(b.value(), a.value())),
            }
            /// The smaller operand (NaN if either is NaN): the derivative goes to the smaller
            /// one, half to each at a tie (see [kink conventions](crate::guide#kinks)).
            #[doc(alias = "minimum")]
            Min "min" fn min(1.0, 2.0 => 1.0) {
                value: |a, b| min_f64(a, b),
                d_lhs: |a, b, y| a.lift(kink::min_share(a.value(), b.value())),
                d_rhs: |a, b, y| a.lift(kink::min_share(b.value(), a.value())),
            }
            /// `a ln(b)`, and 0 where `a = 0` (whatever `b`, but NaN for a NaN `b`), as
            /// PyTorch's `xlogy`: the entropy term `p ln p` with no `0 * -inf` at `p = 0`.
            /// `d/da = ln(b)`, but 0 where `a = 0` and `b <= 0` (where `ln b` is `-inf` or
            /// NaN and the value is the constant 0: PyTorch's
            /// `xlogy(grad, other).masked_fill((self == 0) & (other <= 0), 0)`);
            /// `d/db = a / b`.
            Xlogy "xlogy" fn xlogy(2.0, std::f64::consts::E => 2.0) {
                value: |a, b| if b.is_nan() { b } else if a == 0.0 { 0.0 } else { a * b.ln() },
                d_lhs: |a, b, y| if a.value() == 0.0 && b.value() <= 0.0 { a.lift(0.0) } else { b.ln() },
                d_rhs: |a, b, y| a / b,
                quotient_rhs: |a, b, y| (a, b),
            }
        }
    };
}
pub(in crate::engine) use binary_ops;

/// Declares [`Unary`] from the table: the enum, its names and its values.
macro_rules! unary_enum {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal $(fn $method:ident($ex_x:expr => $ex_y:expr))? {
            value: |$x:ident| $value:expr,
            partial: |$px:ident, $py:ident| $partial:expr,
            $(quotient: |$qx:ident, $qy:ident| $quotient:expr,)?
        }
    )*) => {
        /// The functions of one operand: one row each of the op table.
        ///
        /// # Examples
        ///
        /// ```
        /// use tapegrad::{Graph, Unary};
        ///
        /// let g = Graph::new();
        /// let x = g.var(2.0);
        /// assert_eq!(x.apply(Unary::Sqrt).value(), 2.0_f64.sqrt());
        /// assert_eq!(Unary::Sqrt.name(), "sqrt");
        /// assert_eq!(Unary::Sqrt.value(4.0), 2.0);
        /// assert_eq!(Unary::Sqrt.partial(4.0, 2.0), 0.25); // 1 / (2 sqrt x)
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Unary {
            $( $(#[$doc])* $variant, )*
        }

        impl Unary {
            /// Every unary op, in table order.
            pub const ALL: &'static [Unary] = &[$(Unary::$variant),*];

            /// The op's short name, as shown in errors and graph drawings.
            pub fn name(self) -> &'static str {
                match self { $( Unary::$variant => $name, )* }
            }

            /// The forward value at `x`.
            #[inline] // a constant op folds its match away at the call site
            pub fn value(self, x: f64) -> f64 {
                match self { $( Unary::$variant => { let $x = x; $value } )* }
            }
        }
    };
}
unary_ops!(unary_enum);

/// Declares [`Binary`] from the table: the enum, its names and its values.
macro_rules! binary_enum {
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
        /// The functions of two operands: one row each of the op table.
        ///
        /// An `f64` operand (as in `2.0 / x`) is recorded as an untracked constant and uses
        /// exactly the rule written for two variables.
        ///
        /// # Examples
        ///
        /// ```
        /// use tapegrad::Binary;
        ///
        /// assert_eq!(Binary::Div.value(2.0, 4.0), 0.5);
        /// // d(a/b)/db = -a/b^2 = -y/b
        /// assert_eq!(Binary::Div.partial(2.0, 4.0, 0.5, 1), -0.125);
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Binary {
            $( $(#[$doc])* $variant, )*
        }

        impl Binary {
            /// Every binary op, in table order.
            pub const ALL: &'static [Binary] = &[$(Binary::$variant),*];

            /// The op's short name, as shown in errors and graph drawings.
            pub fn name(self) -> &'static str {
                match self { $( Binary::$variant => $name, )* }
            }

            /// The forward value at `(a, b)`.
            #[inline] // a constant op folds its match away at the call site
            pub fn value(self, a: f64, b: f64) -> f64 {
                match self { $( Binary::$variant => { let ($a, $b) = (a, b); $value } )* }
            }
        }
    };
}
binary_ops!(binary_enum);

/// `sqrt(2 / pi)`, the constant in the tanh form of GELU, at full `f64` precision.
pub(in crate::engine) const SQRT_2_OVER_PI: f64 =
    std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
/// The cubic coefficient in the tanh form of GELU.
pub(in crate::engine) const GELU_CUBIC: f64 = 0.044715;

/// The stable logistic function on `f64` (no overflow of `e^-x` for very negative `x`).
fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` on `f64` as `max(x, 0) + ln(1 + e^-|x|)`: no overflow past 709, full
/// precision for very negative `x` (where it is about `e^x`). NaN stays NaN.
fn softplus_f64(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// GELU (tanh form) on `f64`.
fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh())
}

/// `a^n` on `f64`: repeated multiplication (`f64::powi`) for `n` in `-2..=3`, within 1 ulp
/// of `powf` there; `a.powf(n)` beyond. `f64::powi` squares repeatedly, one rounding per
/// step compounding: 47 ulps from `powf` at `n = 64`, 1.7e-7 relative at `n = i32::MAX`
/// (measured over 200,000 random bases), where `powf` is within an ulp of the true power.
/// Small exponents keep `powi`'s exact products (`x * x`, bit for bit what a user writes).
pub(in crate::engine) fn powi_f64(a: f64, n: i32) -> f64 {
    if (-2..=3).contains(&n) {
        a.powi(n)
    } else {
        a.powf(f64::from(n))
    }
}

/// `max(a, b)` on `f64`, NaN if either is NaN (`f64::max` would drop the NaN), and
/// `+0` for `max(-0, +0)` either way round (IEEE 754-2019 `maximum`; PyTorch's
/// `maximum` gives the same).
fn max_f64(a: f64, b: f64) -> f64 {
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
fn min_f64(a: f64, b: f64) -> f64 {
    if a < b || (a == b && a.is_sign_negative()) {
        a
    } else if a >= b {
        b
    } else {
        a + b // a NaN
    }
}

/// The largest of `xs`, NaN if any is NaN (`-inf` for none).
fn amax_f64(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, max_f64)
}

/// `x` limited to `[lo, hi]` (for `lo <= hi`); NaN stays NaN (`f64::clamp` panics on
/// NaN bounds, so the bounds are checked where a clamp is recorded).
fn clamp_f64(x: f64, lo: f64, hi: f64) -> f64 {
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
pub(in crate::engine) fn check_clamp_bounds(lo: f64, hi: f64) {
    assert!(
        lo <= hi,
        "tapegrad: clamp needs lo <= hi (and neither NaN), got lo = {lo}, hi = {hi}"
    );
}

/// `ln(sum e^x)` on `f64`, shifted by the maximum so that no term overflows.
pub(in crate::engine) fn logsumexp_f64(xs: &[f64]) -> f64 {
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

/// Why a dot's operands must come in pairs: they are `a`'s entries then `b`'s.
pub(in crate::engine) const ODD_DOT: &str =
    "Nary::Dot needs an even number of operands: a's entries, then as many of b's";

/// Functions of any number of operands, each recorded as one fused node.
///
/// # Examples
///
/// ```
/// use tapegrad::Nary;
///
/// // dot's operands are a's entries then b's entries.
/// assert_eq!(Nary::Dot.value(&[1.0, 2.0, 3.0, 4.0]), 1.0 * 3.0 + 2.0 * 4.0);
/// assert_eq!(Nary::Dot.partial(&[1.0, 2.0, 3.0, 4.0], 11.0, 0), 3.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nary {
    /// `sum_i x_i`; every partial is 1.
    Sum,
    /// `sum_i a_i b_i` over operands `[a_0..a_n, b_0..b_n]`; `d/da_i = b_i`, `d/db_i = a_i`.
    Dot,
    /// `y = ln(sum_i e^x_i)`, computed shifted by the maximum so it never overflows;
    /// `d/dx_i = e^(x_i - y)`, the softmax.
    LogSumExp,
    /// `y = max_i x_i` (NaN if any is NaN), as used to shift a softmax: the derivative is
    /// shared evenly by the operands equal to the maximum (see [kink conventions](crate::guide#kinks)).
    Max,
    /// `clamp(x, lo, hi)` over operands `[x, lo, hi]` (`lo <= hi`): `x` limited to
    /// `[lo, hi]`; NaN stays NaN. The derivative goes to `x` strictly inside the interval
    /// (0 at a bound, as PyTorch 2.15's `clamp`), and to the bound that `x` is at or past
    /// otherwise (see [kink conventions](crate::guide#kinks)).
    Clamp,
}

impl Nary {
    /// The op's short name, as shown in errors and graph drawings.
    pub fn name(self) -> &'static str {
        match self {
            Nary::Sum => "sum",
            Nary::Dot => "dot",
            Nary::LogSumExp => "logsumexp",
            Nary::Max => "amax",
            Nary::Clamp => "clamp",
        }
    }

    /// The forward value over `xs`.
    ///
    /// # Panics
    ///
    /// For [`Nary::LogSumExp`] with no operands (the log of an empty sum is `-inf`, with
    /// no gradient); [`Graph::try_logsumexp`](crate::Graph::try_logsumexp) reports that as
    /// an error instead. For [`Nary::Dot`] with an odd number of operands (its two sides
    /// must have one length).
    pub fn value(self, xs: &[f64]) -> f64 {
        match self {
            Nary::Sum => xs.iter().sum(),
            Nary::Dot => {
                assert!(xs.len() % 2 == 0, "{}", ODD_DOT);
                let (a, b) = xs.split_at(xs.len() / 2);
                a.iter().zip(b).map(|(a, b)| a * b).sum()
            }
            Nary::LogSumExp => logsumexp_f64(xs),
            Nary::Max => amax_f64(xs),
            Nary::Clamp => clamp_f64(xs[0], xs[1], xs[2]),
        }
    }

    /// Every partial at once in `f64`, the same derivatives as [`Nary::partial`], for the
    /// tape to store when it records the node. Only logsumexp differs in how it evaluates
    /// them: `e^(x_k - y)` loses `|y| * 2^-53` of relative precision once `|y|` is large
    /// (2e-13 at `y = 1000`), so the softmax is formed as `e^(x_k - max) / sum` instead.
    pub fn partials_f64(self, xs: &[f64], y: f64, out: &mut Vec<f64>) {
        // `y` is in the signature for symmetry with `partial`; none of these forms needs it.
        let _ = y;
        match self {
            // `partial` for these, without its per-operand index arithmetic: every sum partial
            // is 1, and dot's partials are `b` then `a`.
            Nary::Sum => out.resize(out.len() + xs.len(), 1.0),
            Nary::Dot => {
                let (a, b) = xs.split_at(xs.len() / 2);
                out.extend_from_slice(b);
                out.extend_from_slice(a);
            }
            Nary::LogSumExp => {
                if let Some(special) = softmax_at_infinity(xs) {
                    out.extend(special);
                    return;
                }
                let (_, sum) = shifted_exps(xs, out);
                let start = out.len() - xs.len();
                out[start..].iter_mut().for_each(|e| *e /= sum);
            }
            Nary::Max => kink::amax_shares(xs, y, out),
            Nary::Clamp => out.extend_from_slice(&kink::clamp_share(xs[0], xs[1], xs[2])),
        }
    }

    /// [`Nary::value`] and [`Nary::partials_f64`] together (the partials appended to
    /// `out`), the same numbers bit for bit: what the tape records. Logsumexp's value
    /// `max + ln(sum_k e^(x_k - max))` and its softmax partials share the same exps, so
    /// here they are computed once, not once for each (exp is most of the node's cost).
    pub(in crate::engine) fn value_and_partials_f64(self, xs: &[f64], out: &mut Vec<f64>) -> f64 {
        match self {
            Nary::Sum | Nary::Dot | Nary::Max | Nary::Clamp => {
                let y = self.value(xs);
                self.partials_f64(xs, y, out);
                y
            }
            Nary::LogSumExp => {
                let (max, sum) = shifted_exps(xs, out);
                let start = out.len() - xs.len();
                out[start..].iter_mut().for_each(|e| *e /= sum);
                if !max.is_finite()
                    && let Some(special) = softmax_at_infinity(xs)
                {
                    out.truncate(start);
                    out.extend(special);
                }
                if max.is_finite() {
                    max + sum.ln()
                } else {
                    // No terms (a panic), an infinity or only NaNs: the value's own special
                    // cases, which compute no exps.
                    logsumexp_f64(xs)
                }
            }
        }
    }
}

/// Logsumexp's partials where the shifted form does not give them (see [`Nary::partials`]):
/// at a `+inf` operand (0 for the others, NaN for the infinite ones) or a NaN one (NaN for
/// all). `None` where every operand is finite or `-inf`.
pub(in crate::engine) fn softmax_at_infinity(xs: &[f64]) -> Option<impl Iterator<Item = f64> + '_> {
    let nan = xs.iter().any(|x| x.is_nan());
    let inf = xs.contains(&f64::INFINITY);
    (nan || inf).then(move || {
        xs.iter().map(move |&x| {
            if nan || x == f64::INFINITY {
                f64::NAN
            } else {
                0.0
            }
        })
    })
}

/// Appends `e^(x_k - max)` for every `x_k` to `out`; returns `max` (which skips NaNs, as
/// `f64::max` does) and the sum of the appended exps, summed in operand order as
/// [`logsumexp_f64`] sums them.
fn shifted_exps(xs: &[f64], out: &mut Vec<f64>) -> (f64, f64) {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let start = out.len();
    out.extend(xs.iter().map(|x| (x - max).exp()));
    (max, out[start..].iter().sum())
}

/// The one subgradient convention at kinks, where a function is continuous but has two
/// slopes (the table is in the guide: [`crate::guide#kinks`]). Every function here returns
/// a plain number: a kink's slope is piecewise constant, so its own derivative (the second
/// order) is 0 on both sides.
pub(in crate::engine) mod kink {
    /// `d|x|/dx`: the sign of `x`, 0 at 0, NaN at NaN (a NaN operand must give a NaN
    /// gradient, not a slope that hides it).
    pub(in crate::engine) fn abs(x: f64) -> f64 {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else if x == 0.0 {
            0.0
        } else {
            f64::NAN
        }
    }

    /// `d relu(x)/dx`: 1 above 0, else 0 (0 at the kink: a select, see `backward::chain`),
    /// and NaN at NaN (PyTorch gives 1 there; a NaN must not turn into a gradient).
    pub(in crate::engine) fn relu(x: f64) -> f64 {
        if x > 0.0 {
            1.0
        } else if x <= 0.0 {
            0.0
        } else {
            f64::NAN
        }
    }

    /// The share of `d max(own, other)` that goes to `own`: 1 if it is the larger, 0 if
    /// the smaller, 1/2 at a tie (and 1 if either is NaN).
    pub(in crate::engine) fn max_share(own: f64, other: f64) -> f64 {
        if own == other {
            0.5
        } else if own < other {
            0.0
        } else {
            1.0
        }
    }

    /// The share of `d min(own, other)` that goes to `own`: 1 if it is the smaller, 0 if
    /// the larger, 1/2 at a tie (and 1 if either is NaN).
    pub(in crate::engine) fn min_share(own: f64, other: f64) -> f64 {
        if own == other {
            0.5
        } else if own > other {
            0.0
        } else {
            1.0
        }
    }

    /// `d amax(xs) / d xs[k]` where `y = amax(xs)`: `1 / (number of operands equal to y)`
    /// for those, 0 for the others; NaN for all if `y` is NaN.
    pub(in crate::engine) fn amax_share(xs: &[f64], y: f64, k: usize) -> f64 {
        if y.is_nan() {
            return f64::NAN;
        }
        if xs[k] != y {
            return 0.0;
        }
        1.0 / xs.iter().filter(|&&x| x == y).count() as f64
    }

    /// Every [`amax_share`] at once, appended to `out` (one count of the ties, not one per
    /// operand).
    pub(in crate::engine) fn amax_shares(xs: &[f64], y: f64, out: &mut Vec<f64>) {
        if y.is_nan() {
            out.resize(out.len() + xs.len(), f64::NAN);
            return;
        }
        let share = 1.0 / xs.iter().filter(|&&x| x == y).count() as f64;
        out.extend(xs.iter().map(|&x| if x == y { share } else { 0.0 }));
    }

    /// The partials of `clamp(x, lo, hi)` with respect to `[x, lo, hi]`: `x`'s is 1
    /// strictly inside `(lo, hi)` and 0 at a bound (PyTorch 2.15's `clamp` with scalar
    /// bounds, and `relu`'s 0 at its kink: `clamp(x, 0, inf)` is `relu`); the bound that `x`
    /// is at or past gets 1 instead (`lo` if both), so the three sum to 1, the derivative of
    /// shifting all three together. All 0 at NaN.
    pub(in crate::engine) fn clamp_share(x: f64, lo: f64, hi: f64) -> [f64; 3] {
        if x > lo && x < hi {
            [1.0, 0.0, 0.0]
        } else if x <= lo {
            [0.0, 1.0, 0.0]
        } else if x >= hi {
            [0.0, 0.0, 1.0]
        } else {
            [0.0; 3] // NaN
        }
    }
}
