//! The ops' partial derivatives, written once over [`Scalar`], as the op table's rows
//! (`op.rs`) state them: the plain backward evaluates them with `f64` when it records a
//! node, the differentiable backward with graph terms, the replay and forward mode with
//! dual numbers. Also each quotient-shaped partial's rescue form (see `backward::rescue`).
//! Pure functions: no storage, no graph. Uses the op table and the `Scalar` trait.

use super::op::{
    Binary, GELU_CUBIC, Nary, SQRT_2_OVER_PI, Unary, binary_ops, kink, softmax_at_infinity,
    unary_ops,
};
use super::scalar::Scalar;

/// The unary partials (and quotients) from the table's rows.
macro_rules! unary_rules {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal $(fn $method:ident($ex_x:expr => $ex_y:expr))? {
            value: |$x:ident| $value:expr,
            partial: |$px:ident, $py:ident| $partial:expr,
            $(quotient: |$qx:ident, $qy:ident| $quotient:expr,)?
        }
    )*) => {
        impl Unary {
            /// `dy/dx` at `x`, where `y` is this op's value at `x`.
            ///
            /// # Examples
            ///
            /// ```
            /// use tapegrad::Unary;
            /// assert_eq!(Unary::Exp.partial(0.0, 1.0), 1.0);
            /// assert_eq!(Unary::Ln.partial(4.0, 4f64.ln()), 0.25);
            /// ```
            #[inline] // as `value`: recording a known op keeps only its own rule
            pub fn partial<T: Scalar>(self, x: T, y: T) -> T {
                match self { $( Unary::$variant => {
                    #[allow(unused_variables, reason = "not every rule needs both x and y")]
                    let ($px, $py) = (x, y);
                    $partial
                } )* }
            }

            /// The partials that can overflow while the op's value is finite (`1/x` at a
            /// subnormal `x`), as a quotient `(num, den)` of numbers that do not: the sweeps
            /// then form `(adjoint * num) / den`, as dividing would, instead of
            /// `adjoint * inf` (see `backward::rescue`). `None` for the ops whose partials
            /// cannot overflow so.
            pub(in crate::engine) fn quotient<T: Scalar>(self, x: T, y: T) -> Option<(T, T)> {
                match self {
                    $($( Unary::$variant => {
                        #[allow(unused_variables, reason = "not every rule needs both x and y")]
                        let ($qx, $qy) = (x, y);
                        Some($quotient)
                    } )?)*
                    #[allow(unreachable_patterns, reason = "the table may give every op a quotient")]
                    _ => None,
                }
            }
        }
    };
}
unary_ops!(unary_rules);

/// The binary partials (and quotients) from the table's rows.
macro_rules! binary_rules {
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
        impl Binary {
            /// The partial derivative of `y = op(a, b)` with respect to operand `k`
            /// (0 for `a`, 1 for `b`).
            ///
            /// # Examples
            ///
            /// ```
            /// use tapegrad::Binary;
            /// assert_eq!(Binary::Mul.partial(2.0, 3.0, 6.0, 0), 3.0);
            /// assert_eq!(Binary::Mul.partial(2.0, 3.0, 6.0, 1), 2.0);
            /// ```
            #[inline] // as `value`: recording a known op keeps only its own rule
            pub fn partial<T: Scalar>(self, a: T, b: T, y: T, k: usize) -> T {
                match (self, k) {
                    $(
                        (Binary::$variant, 0) => {
                            #[allow(unused_variables, reason = "not every rule needs a, b and y")]
                            let ($la, $lb, $ly) = (a, b, y);
                            $d_lhs
                        }
                        (Binary::$variant, _) => {
                            #[allow(unused_variables, reason = "not every rule needs a, b and y")]
                            let ($ra, $rb, $ry) = (a, b, y);
                            $d_rhs
                        }
                    )*
                }
            }

            /// [`Unary::quotient`] for operand `k`.
            pub(in crate::engine) fn quotient<T: Scalar>(
                self,
                a: T,
                b: T,
                y: T,
                k: usize,
            ) -> Option<(T, T)> {
                match (self, k) {
                    $($( (Binary::$variant, 0) => {
                        #[allow(unused_variables, reason = "not every rule needs a, b and y")]
                        let ($qla, $qlb, $qly) = (a, b, y);
                        Some($quotient_lhs)
                    } )?)*
                    $($( (Binary::$variant, 1) => {
                        #[allow(unused_variables, reason = "not every rule needs a, b and y")]
                        let ($qra, $qrb, $qry) = (a, b, y);
                        Some($quotient_rhs)
                    } )?)*
                    _ => None,
                }
            }
        }
    };
}
binary_ops!(binary_rules);

/// `sech^2 x = 1 / cosh^2 x`, as `4 e / (1 + e)^2` with `e = e^(-2|x|)`; the branch on the
/// sign picks one of two exact forms of the same function, so every derivative is right on
/// both sides. Why not `cosh(x).powi(-2)`: past `|x| = 710` it is `inf^-2 = 0`, fine, but its
/// derivative `-2 cosh^-3 sinh` is `0 * inf = NaN`, which made the second derivative of
/// `tanh` at 800, and of `gelu` at 30 (where `u` passes 710), NaN instead of 0.
fn sech2<T: Scalar>(x: T) -> T {
    let e = if x.value() >= 0.0 {
        (x * -2.0).exp()
    } else {
        (x * 2.0).exp()
    };
    e * 4.0 / (e + 1.0).powi(2)
}

impl Nary {
    /// The partial derivative of `y = op(xs)` with respect to operand `k`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Nary;
    /// // d/da_0 of a_0 b_0 + a_1 b_1 is b_0.
    /// assert_eq!(Nary::Dot.partial(&[1.0, 2.0, 3.0, 4.0], 11.0, 0), 3.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If `k >= xs.len()` (for `Dot` and `LogSumExp`; every sum partial is 1), or for
    /// [`Nary::Dot`] with an odd number of operands.
    pub fn partial<T: Scalar>(self, xs: &[T], y: T, k: usize) -> T {
        match self {
            Nary::Sum => y.lift(1.0),
            Nary::Dot => {
                assert!(xs.len() % 2 == 0, "{}", super::op::ODD_DOT);
                xs[(k + xs.len() / 2) % xs.len()]
            }
            Nary::LogSumExp => self.partials(xs, y)[k],
            Nary::Max => {
                let values: Vec<f64> = xs.iter().map(Scalar::value).collect();
                y.lift(kink::amax_share(&values, y.value(), k))
            }
            Nary::Clamp => {
                y.lift(kink::clamp_share(xs[0].value(), xs[1].value(), xs[2].value())[k])
            }
        }
    }

    /// Every partial at once, [`Nary::partial`] for each operand, in time linear in the
    /// number of operands: the differentiable backward's form. Logsumexp's softmax is
    /// `e^(x_k - m) / sum_j e^(x_j - m)` with `m` the largest operand, held constant (so
    /// every derivative is unchanged): the same operations, in the same order, as
    /// [`Nary::partials_f64`], so the two agree bit for bit, and no precision is lost to a
    /// large `y` (`e^(x_k - y)` loses `|y| 2^-53`).
    ///
    /// At an infinite or NaN operand the softmax is the limit where there is one: a `+inf`
    /// operand takes all the weight, so every finite (or `-inf`) operand's partial is 0 and
    /// the infinite ones' NaN (as PyTorch gives); with a NaN operand (the value is NaN)
    /// every partial is NaN; with every operand `-inf` too (`e^(-inf + inf)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Nary;
    ///
    /// let p = Nary::LogSumExp.partials(&[0.0, 2f64.ln()], 3f64.ln());
    /// assert_eq!(p, vec![1.0 / 3.0, 2.0 / 3.0]);
    /// let p = Nary::LogSumExp.partials(&[1.0, f64::INFINITY], f64::INFINITY);
    /// assert_eq!(p[0], 0.0);
    /// assert!(p[1].is_nan());
    /// ```
    pub fn partials<T: Scalar>(self, xs: &[T], y: T) -> Vec<T> {
        match self {
            Nary::LogSumExp => {
                let values: Vec<f64> = xs.iter().map(Scalar::value).collect();
                if let Some(special) = softmax_at_infinity(&values) {
                    return special.map(|p| y.lift(p)).collect();
                }
                let m = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<T> = xs.iter().map(|&x| (x - m).exp()).collect();
                let sum = T::sum(&exps);
                exps.into_iter().map(|e| e / sum).collect()
            }
            Nary::Max => {
                // The ties are counted once, not once per operand.
                let values: Vec<f64> = xs.iter().map(Scalar::value).collect();
                let mut shares = Vec::with_capacity(xs.len());
                kink::amax_shares(&values, y.value(), &mut shares);
                shares.into_iter().map(|s| y.lift(s)).collect()
            }
            // Each partial on its own costs nothing extra for the others.
            _ => (0..xs.len()).map(|k| self.partial(xs, y, k)).collect(),
        }
    }
}
