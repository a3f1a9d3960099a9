//! The one rule at singular points, which every sweep applies (the plain sweep, the
//! differentiable one, the replay's, forward mode's tangents in `dual.rs`): a zero factor wins, and a
//! partial that overflowed is applied as the quotient it came from. Written over
//! [`Scalar`], so the sweeps on `f64` and on graph terms cannot disagree. Also the one test
//! the fast sweeps make per node. Uses the op table's rules; no storage.

use super::op::Op;
use super::scalar::Scalar;

/// The one rule at singular points, shared by every sweep (the plain one here, the
/// differentiable one, and any other that propagates adjoints): the contribution of an
/// edge is `adjoint * partial`, except that **a zero factor wins**: when either is exactly 0
/// and the other is infinite or NaN, nothing passes (`None`). So a zero adjoint passes
/// nothing back (a node that does not reach the output cannot poison one that does), and
/// a zero partial passes nothing either, whatever reaches it: that is how a kink acts as
/// a select (`relu` below 0, `x^0`, `|x|` at 0), so `sqrt(relu(x))` at 0 has gradient 0.
///
/// Written over [`Scalar`], it runs with `f64` in the plain sweep and with graph terms in
/// the differentiable one, so the two cannot disagree on which products are taken. Where
/// both factors are finite the product is taken even if one is 0: on `f64` it is a ±0 that
/// leaves the sum unchanged, and on graph terms a node whose own derivative (the other
/// factor times the derivative of the zero one) a second-order sweep needs.
#[inline]
pub(in crate::engine) fn chain<T: Scalar>(adjoint: T, partial: T) -> Option<T> {
    let (a, p) = (adjoint.value(), partial.value());
    if (a == 0.0 || p == 0.0) && !(a.is_finite() && p.is_finite()) {
        return None;
    }
    Some(adjoint * partial)
}

/// For an edge whose partial overflowed when it was evaluated (an infinity from a finite
/// quotient, as `1/x` at a subnormal `x`), the partial as `(num, den)`, so that the
/// contribution can be formed as `(adjoint * num) / den`, the finite number that dividing
/// gives (`exp(ln x)` at `5e-324` has gradient 1). `None` for every other edge: an op
/// without a quotient form, a partial that is finite, or a derivative that is really
/// infinite (its value, an operand or the denominator is not finite and nonzero).
///
/// `operands` are the node's operand values (or terms) in order, `y` its value, `k` the
/// edge, `partial` that edge's partial as evaluated.
pub(in crate::engine) fn rescue<T: Scalar>(
    op: Op,
    operands: &[T],
    y: T,
    k: usize,
    partial: f64,
) -> Option<(T, T)> {
    if !partial.is_infinite()
        || !y.value().is_finite()
        || operands.iter().any(|x| !x.value().is_finite())
    {
        return None;
    }
    let (num, den) = match op {
        Op::Unary(u) => u.quotient(operands[0], y)?,
        Op::Binary(b) => b.quotient(operands[0], operands[1], y, k)?,
        _ => return None,
    };
    (den.value() != 0.0 && num.value().is_finite()).then_some((num, den))
}

/// [`chain`] for an edge that [`rescue`] gave a quotient for.
#[inline]
pub(in crate::engine) fn chain_quotient<T: Scalar>(adjoint: T, (num, den): (T, T)) -> Option<T> {
    // The partial is infinite, so only a zero adjoint can win.
    (adjoint.value() != 0.0).then(|| (adjoint * num) / den)
}

/// Finite and nonzero, in one unsigned comparison: with the sign shifted out, 0 wraps to
/// the top and the infinities and NaNs are the largest patterns.
#[inline(always)]
pub(in crate::engine) fn ordinary(adjoint: f64) -> bool {
    (adjoint.to_bits() << 1).wrapping_sub(1) < NON_FINITE - 1
}

/// The bits of `+inf` shifted past the sign: every non-finite `f64`, so shifted, is at
/// least this. The plain sweep and the replay's sweep test adjoints against it.
pub(in crate::engine) const NON_FINITE: u64 = f64::INFINITY.to_bits() << 1;
