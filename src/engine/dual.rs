//! [`Dual`]: forward mode. A value carried with its derivatives along `K` directions at once,
//! by the op table's own rules (`Scalar::unary` and `Scalar::binary` are the whole
//! implementation: every op of the table comes with them), through the reverse sweeps'
//! rule at singular points (`chain::chain` and `chain::rescue`, called here, not
//! copied). Generic over the value type, so that it nests: over `f64` (plain forward mode),
//! over [`Var`](crate::Var) (forward mode recorded on a tape: reverse over forward), over
//! another `Dual` (forward over forward). No graph, no tape of its own.

use std::borrow::Borrow;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::chain::{chain, chain_quotient, rescue};
use super::guard::comparisons;
use super::op::{Binary, Op, Unary, kink, softmax_at_infinity};
use super::scalar::{Operand, Scalar};

/// A dual number: a value and its derivatives (tangents) along `K` directions at once
/// (forward mode; `K = 1` by default). Each op of the table maps `(x, dx)` to
/// `(f(x), f'(x) dx)` by the same partials the tape records, so a function written over
/// [`Scalar`] gives its directional derivatives without a graph, in one pass.
///
/// Forward mode costs one pass per `K` directions, reverse mode one pass per output: use it
/// for functions with few inputs and many outputs (a tall Jacobian), or to push a direction
/// through a function (a Jacobian-vector product). [`higher::jvp`](crate::higher::jvp) and
/// [`higher::jacobian_of`](crate::higher::jacobian_of) do that for a
/// [`Function`](crate::higher::Function); `Dual` is what they evaluate it with. It is
/// `Copy` and never allocates for a unary or binary op (nor for `sum`, `dot` and
/// `dot_f64`; `amax` and `logsumexp` over more than 16 terms gather them on the heap).
///
/// # The value type
///
/// `T` is the type of the value and of each tangent: `f64` by default; a [`Var`] to
/// record the forward pass on a tape, whose tangents can then be differentiated in reverse
/// mode (the gradient of a directional derivative is a Hessian-vector product, `H v`); or
/// another `Dual`, for derivatives of derivatives in forward mode. The reverse sweeps
/// cannot run on dual numbers (the tape stores `f64`), so forward over reverse is
/// [`Replay::hvp`](crate::Replay::hvp)'s: it evaluates each recorded partial on dual
/// numbers and sweeps their tangents back with the adjoints.
///
/// # Singular points
///
/// Each edge applies the reverse sweeps' one rule (the crate docs' table), to the tangent
/// where reverse mode applies it to the adjoint: a zero factor wins (a zero tangent
/// passes nothing through an infinite or NaN partial, and a zero partial passes nothing of
/// an infinite or NaN tangent, so `relu(sqrt(x))` at 0 has derivative 0, not NaN), and a
/// partial that overflowed (`1/x` at a subnormal `x`) is applied as the quotient it is,
/// `(t num) / den`. Where a value has one path to the output, forward and reverse mode then
/// give the same first derivatives (bit for bit where they multiply the same factors in the
/// same order: an op and one use of its output). They can differ where contributions
/// cancel: `sqrt(x - x)` at 0 has tangent `sqrt'(0) * (1 - 1) = inf * 0`, which the rule
/// makes 0, while reverse mode sends `+inf` and `-inf` back to `x`, NaN. And a derivative
/// that overflows on the way is infinite in forward mode (`exp(ln x)` at `5e-324`: the
/// tangent of `ln x` is `2e323`, past the largest `f64`), where reverse mode, which meets
/// the small factor first, finds 1.
///
/// # Examples
///
/// ```
/// use tapegrad::{Dual, Scalar};
///
/// fn f<T: Scalar>(x: T, y: T) -> T {
///     x * y.exp() + x.sin()
/// }
///
/// // d/dx at (1, 0), then both partials at once with K = 2.
/// let dx = f(Dual::variable(1.0), Dual::constant(0.0));
/// assert_eq!(dx.value, 1.0 + 1f64.sin());
/// assert_eq!(dx.tangents, [1.0 + 1f64.cos()]);
/// let both = f(Dual::<2>::new(1.0, [1.0, 0.0]), Dual::new(0.0, [0.0, 1.0]));
/// assert_eq!(both.tangents, [1.0 + 1f64.cos(), 1.0]);
/// ```
///
/// Over `Var`, the directional derivative is a node, and its gradient is `H v`:
///
/// ```
/// use tapegrad::{Dual, Graph, Scalar};
///
/// fn f<T: Scalar>(x: &[T]) -> T {
///     x[0] * x[0] * x[1]
/// }
///
/// let g = Graph::new();
/// let x = g.vars(&[3.0, 5.0]);
/// let v = [1.0, 0.0];
/// let duals: Vec<Dual<1, _>> = x.iter().zip(v).map(|(&x, v)| Dual::new(x, [g.constant(v)])).collect();
/// let y = f(&duals);
/// // grad f . v = 2 x y = 30; H = [[2 y, 2 x], [2 x, 0]], so H v = (10, 6).
/// assert_eq!(y.tangent().value(), 30.0);
/// let hv = y.tangent().backward();
/// assert_eq!((hv[x[0]], hv[x[1]]), (10.0, 6.0));
/// ```
///
/// Over `Dual`, the tangent of a tangent is a second derivative:
///
/// ```
/// use tapegrad::{Dual, Scalar};
///
/// // d2/dx2 sin x = -sin x
/// let x = Dual::variable(Dual::variable(0.5));
/// assert_eq!(x.sin().tangent().tangent(), -0.5f64.sin());
/// ```
///
/// [`Var`]: crate::Var
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual<const K: usize = 1, T = f64> {
    /// The value.
    pub value: T,
    /// The derivative of the value along each direction.
    pub tangents: [T; K],
}

impl<const K: usize, T: Scalar> Dual<K, T> {
    /// A dual number with the given value and tangents.
    ///
    /// # Examples
    ///
    /// ```
    /// let d = tapegrad::Dual::new(2.0, [1.0, 0.5]);
    /// assert_eq!((d.value, d.tangents), (2.0, [1.0, 0.5]));
    /// ```
    #[inline(always)]
    pub fn new(value: T, tangents: [T; K]) -> Self {
        Dual { value, tangents }
    }

    /// A constant: every tangent 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Dual, Scalar};
    /// let c = Dual::<3>::constant(2.0);
    /// assert_eq!((c * c).tangents, [0.0; 3]);
    /// ```
    #[inline(always)]
    pub fn constant(value: T) -> Self {
        let zero = value.lift(0.0);
        Dual {
            value,
            tangents: [zero; K],
        }
    }

    /// The tangents along a unit direction: all 0 but 1 at `direction` (the `direction`-th
    /// input of a Jacobian's block of `K` columns).
    ///
    /// # Examples
    ///
    /// ```
    /// let d = tapegrad::Dual::<3>::unit(5.0, 1);
    /// assert_eq!(d.tangents, [0.0, 1.0, 0.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `direction >= K`.
    #[track_caller]
    pub fn unit(value: T, direction: usize) -> Self {
        assert!(
            direction < K,
            "tapegrad: Dual::unit direction {direction} of a dual number with {K} tangents"
        );
        let mut d = Dual::constant(value);
        d.tangents[direction] = value.lift(1.0);
        d
    }
}

impl<T: Scalar> Dual<1, T> {
    /// An input to differentiate by: its one tangent is 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Dual, Scalar};
    /// let x = Dual::variable(3.0);
    /// assert_eq!(x.powi(2).tangents, [6.0]);
    /// ```
    #[inline(always)]
    pub fn variable(value: T) -> Self {
        Dual::unit(value, 0)
    }

    /// The one tangent.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Dual, Scalar};
    /// assert_eq!(Dual::variable(0.0).exp().tangent(), 1.0);
    /// ```
    #[inline(always)]
    pub fn tangent(&self) -> T {
        self.tangents[0]
    }
}

/// Whether a partial takes the fast path: finite and nonzero, where `chain::chain` is
/// the plain product for every tangent and no quotient needs rescuing.
#[inline(always)]
fn ordinary(d: f64) -> bool {
    d.is_finite() && d != 0.0
}

/// `t` through an edge with partial `d` (`quotient`: the partial as `num / den` where it
/// overflowed, see `chain::rescue`), by the reverse sweeps' rule: `None` where a zero
/// factor wins.
#[inline(always)]
fn through<T: Scalar>(t: T, d: T, quotient: Option<(T, T)>) -> Option<T> {
    match quotient {
        Some(q) => chain_quotient(t, q),
        None => chain(t, d),
    }
}

/// The sum of two contributions to one tangent, either of which may be nothing.
#[inline(always)]
fn add_terms<T: Scalar>(a: Option<T>, b: Option<T>, zero: impl FnOnce() -> T) -> T {
    match (a, b) {
        (Some(a), Some(b)) => a + b,
        (Some(c), None) | (None, Some(c)) => c,
        (None, None) => zero(),
    }
}

impl<const K: usize, T: Scalar> Dual<K, T> {
    /// The tangents of `self` through the edge of `op` with partial `d` (operand `k` of
    /// `operands`, the op's value `y`), by the sweeps' rule; a product per tangent where
    /// the partial is ordinary.
    #[inline(always)]
    fn through(self, d: T, op: Op, operands: &[T], y: T, k: usize) -> [T; K] {
        if ordinary(d.value()) {
            return std::array::from_fn(|k| self.tangents[k] * d);
        }
        self.through_singular(d, op, operands, y, k)
    }

    /// [`Dual::through`] for a zero, infinite or NaN partial.
    #[cold]
    fn through_singular(self, d: T, op: Op, operands: &[T], y: T, k: usize) -> [T; K] {
        let q = rescue(op, operands, y, k, d.value());
        self.tangents
            .map(|t| through(t, d, q).unwrap_or_else(|| y.lift(0.0)))
    }

    /// The tangents of `self` times a plain `c` (an edge whose partial is the constant
    /// `c`), by the sweeps' rule.
    #[inline(always)]
    fn scaled(self, c: f64) -> [T; K] {
        if ordinary(c) {
            return std::array::from_fn(|k| self.tangents[k] * c);
        }
        let d = self.value.lift(c);
        self.tangents
            .map(|t| chain(t, d).unwrap_or_else(|| d.lift(0.0)))
    }
}

impl<const K: usize, T: Scalar> Add for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // Both partials are 1: each tangent passes unchanged.
        Dual::new(
            self.value + o.value,
            std::array::from_fn(|k| self.tangents[k] + o.tangents[k]),
        )
    }
}

impl<const K: usize, T: Scalar> Sub for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // Partials 1 and -1: `t_a + (-t_b)`, which is `t_a - t_b` exactly.
        Dual::new(
            self.value - o.value,
            std::array::from_fn(|k| self.tangents[k] - o.tangents[k]),
        )
    }
}

impl<const K: usize, T: Scalar> Mul for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.binary(Binary::Mul, o)
    }
}

impl<const K: usize, T: Scalar> Div for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self.binary(Binary::Div, o)
    }
}

impl<const K: usize, T: Scalar> Neg for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Dual::new(-self.value, std::array::from_fn(|k| -self.tangents[k]))
    }
}

impl<const K: usize, T: Scalar> Add<f64> for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, c: f64) -> Self {
        Dual::new(self.value + c, self.tangents)
    }
}

impl<const K: usize, T: Scalar> Sub<f64> for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, c: f64) -> Self {
        Dual::new(self.value - c, self.tangents)
    }
}

impl<const K: usize, T: Scalar> Mul<f64> for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, c: f64) -> Self {
        Dual::new(self.value * c, self.scaled(c))
    }
}

impl<const K: usize, T: Scalar> Div<f64> for Dual<K, T> {
    type Output = Self;
    #[inline(always)]
    fn div(self, c: f64) -> Self {
        // `Binary::Div`'s rule with a constant divisor: the partial `1/c`, rescued as
        // `t / c` where it overflows (`c` subnormal).
        self.binary_f64(Binary::Div, c)
    }
}

/// `f64` on the left, as a constant: `2.0 - x` is `Binary::Sub`'s rule with a constant
/// first operand.
macro_rules! constant_first {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl<const K: usize, T: Scalar> $trait<Dual<K, T>> for f64 {
            type Output = Dual<K, T>;
            #[inline(always)]
            fn $method(self, x: Dual<K, T>) -> Dual<K, T> {
                let c = x.value.lift(self);
                let value = c.binary(Binary::$op, x.value);
                let d = Binary::$op.partial(c, x.value, value, 1);
                let operands = [c, x.value];
                Dual::new(value, x.through(d, Op::Binary(Binary::$op), &operands, value, 1))
            }
        }
    )*};
}
constant_first!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl<const K: usize, T: Scalar> From<Dual<K, T>> for Operand<Dual<K, T>> {
    fn from(x: Dual<K, T>) -> Self {
        Operand::Scalar(x)
    }
}

impl<const K: usize, T: Scalar> std::iter::Sum for Dual<K, T> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        Scalar::sum(iter)
    }
}

impl<'a, const K: usize, T: Scalar> std::iter::Sum<&'a Dual<K, T>> for Dual<K, T> {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        Scalar::sum(iter)
    }
}

/// How many operands of an n-ary op [`Gathered`] holds on the stack.
const STACK: usize = 16;

/// Up to [`STACK`] items on the stack, more on the heap: the n-ary ops' operands gathered
/// into a slice without an allocation for the common short ones.
struct Gathered<T> {
    stack: [T; STACK],
    len: usize,
    heap: Vec<T>,
}

impl<T: Copy> Gathered<T> {
    /// The `n` items of `items`; `fill` pads the unused stack slots.
    fn new(n: usize, fill: T, items: impl Iterator<Item = T>) -> Self {
        let mut stack = [fill; STACK];
        if n <= stack.len() {
            let mut len = 0;
            for (slot, item) in stack.iter_mut().zip(items) {
                *slot = item;
                len += 1;
            }
            Gathered {
                stack,
                len,
                heap: Vec::new(),
            }
        } else {
            Gathered {
                stack,
                len: 0,
                heap: items.collect(),
            }
        }
    }

    fn as_slice(&self) -> &[T] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// `Dual`'s comparisons compare the values as `T` does (on a `Var`, recorded as guards).
macro_rules! dual_comparisons {
    ($($(#[$doc:meta])* $method:ident => $cmp:ident, ($x:expr, $y:expr, $want:expr);)*) => {
        $(
            #[track_caller]
            fn $method(self, other: impl Into<Operand<Self>>) -> bool {
                match other.into() {
                    Operand::Scalar(o) => self.value.$method(o.value),
                    Operand::Const(c) => self.value.$method(c),
                }
            }
        )*
    };
}

impl<const K: usize, T: Scalar> Scalar for Dual<K, T> {
    #[inline(always)]
    fn value(&self) -> f64 {
        self.value.value()
    }
    #[inline(always)]
    fn lift(&self, c: f64) -> Self {
        Dual::constant(self.value.lift(c))
    }
    #[inline(always)]
    fn unary(self, op: Unary) -> Self {
        let value = self.value.unary(op);
        let d = op.partial(self.value, value);
        Dual::new(
            value,
            self.through(d, Op::Unary(op), &[self.value], value, 0),
        )
    }
    #[inline(always)]
    fn binary(self, op: Binary, other: Self) -> Self {
        let (a, b) = (self.value, other.value);
        let value = a.binary(op, b);
        let (da, db) = (op.partial(a, b, value, 0), op.partial(a, b, value, 1));
        if ordinary(da.value()) && ordinary(db.value()) {
            let tangents = std::array::from_fn(|k| self.tangents[k] * da + other.tangents[k] * db);
            return Dual::new(value, tangents);
        }
        binary_singular(op, self, other, value, da, db)
    }
    #[inline(always)]
    fn binary_f64(self, op: Binary, c: f64) -> Self {
        let a = self.value;
        let value = a.binary_f64(op, c);
        let b = a.lift(c);
        let d = op.partial(a, b, value, 0);
        Dual::new(value, self.through(d, Op::Binary(op), &[a, b], value, 0))
    }
    comparisons!(dual_comparisons);
    #[track_caller]
    fn clamp(self, lo: f64, hi: f64) -> Self {
        let value = self.value.clamp(lo, hi);
        // The share is 1 (the tangent passes, as `chain(t, 1)` does) or 0 (nothing passes).
        let [share, _, _] = kink::clamp_share(self.value.value(), lo, hi);
        let tangents = if share == 1.0 {
            self.tangents
        } else {
            [value.lift(0.0); K]
        };
        Dual::new(value, tangents)
    }
    #[track_caller]
    fn amax(terms: &[Self]) -> Self {
        let Some(first) = terms.first() else {
            // `T`'s own message for no terms.
            return Dual::constant(T::amax(&[]));
        };
        let values = Gathered::new(terms.len(), first.value, terms.iter().map(|d| d.value));
        let value = T::amax(values.as_slice());
        let plain = Gathered::new(terms.len(), 0.0, terms.iter().map(|d| d.value.value()));
        let (plain, y) = (plain.as_slice(), value.value());
        // Every share at once, as the tape stores them (one count of the ties).
        let count = plain.iter().filter(|&&x| x == y).count() as f64;
        let share = |x: f64| {
            if y.is_nan() {
                f64::NAN
            } else if x == y {
                1.0 / count
            } else {
                0.0
            }
        };
        let tangents = std::array::from_fn(|k| {
            let zero = || value.lift(0.0);
            terms.iter().zip(plain).fold(None, |sum, (d, &x)| {
                let term = chain(d.tangents[k], value.lift(share(x)));
                Some(add_terms(sum, term, zero))
            })
        });
        Dual::new(
            value,
            tangents.map(|t| t.unwrap_or_else(|| value.lift(0.0))),
        )
    }
    #[track_caller]
    fn sum<I>(terms: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<Self>,
    {
        let mut terms = terms.into_iter();
        let Some(first) = terms.next() else {
            // `T`'s empty sum (`-0.0` for `f64`; a clear panic for `Var`).
            return Dual::constant(T::sum(std::iter::empty::<T>()));
        };
        // Summed in order, as `f64`'s `sum` and the tape's sum node sum (`-0.0 + x_0` is
        // `x_0`); every partial is 1.
        terms.fold(*first.borrow(), |sum, d| sum + *d.borrow())
    }
    #[track_caller]
    fn dot(a: &[Self], b: &[Self]) -> Self {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        let (Some(x), Some(y)) = (a.first(), b.first()) else {
            return Dual::constant(T::dot(&[], &[]));
        };
        // The products summed in order, as the tape's dot sums them; `d/da_i = b_i`,
        // `d/db_i = a_i`.
        let term = |x: &Self, y: &Self| -> [T; K] {
            if ordinary(x.value()) && ordinary(y.value()) {
                std::array::from_fn(|k| x.tangents[k] * y.value + y.tangents[k] * x.value)
            } else {
                std::array::from_fn(|k| {
                    add_terms(
                        chain(x.tangents[k], y.value),
                        chain(y.tangents[k], x.value),
                        || x.value.lift(0.0),
                    )
                })
            }
        };
        let mut value = x.value * y.value;
        let mut tangents = term(x, y);
        for (x, y) in a[1..].iter().zip(&b[1..]) {
            value = value + x.value * y.value;
            for (sum, t) in tangents.iter_mut().zip(term(x, y)) {
                *sum = *sum + t;
            }
        }
        Dual::new(value, tangents)
    }
    #[track_caller]
    fn dot_f64(a: &[Self], b: &[f64]) -> Self {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        let Some(x) = a.first() else {
            return Dual::constant(T::dot_f64(&[], &[]));
        };
        // The products summed in order, as the tape's dot sums them; `d/da_i = b_i`.
        let mut value = x.value * b[0];
        let mut tangents = x.scaled(b[0]);
        for (x, &c) in a[1..].iter().zip(&b[1..]) {
            value = value + x.value * c;
            if ordinary(c) {
                for (sum, &t) in tangents.iter_mut().zip(&x.tangents) {
                    *sum = *sum + t * c;
                }
            } else if c != 0.0 {
                // A zero partial adds nothing (a zero, or nothing of a non-finite tangent).
                let t = x.scaled(c);
                for (sum, t) in tangents.iter_mut().zip(t) {
                    *sum = *sum + t;
                }
            }
        }
        Dual::new(value, tangents)
    }
    #[track_caller]
    fn logsumexp(terms: &[Self]) -> Self {
        let Some(first) = terms.first() else {
            return Dual::constant(T::logsumexp(&[]));
        };
        let values = Gathered::new(terms.len(), first.value, terms.iter().map(|d| d.value));
        let value = T::logsumexp(values.as_slice());
        let plain = Gathered::new(terms.len(), 0.0, terms.iter().map(|d| d.value.value()));
        let plain = plain.as_slice();
        let zero = || value.lift(0.0);
        let combine = |partials: &[T]| -> [T; K] {
            std::array::from_fn(|k| {
                terms
                    .iter()
                    .zip(partials)
                    .fold(None, |sum, (d, &p)| {
                        Some(add_terms(sum, chain(d.tangents[k], p), zero))
                    })
                    .unwrap_or_else(zero)
            })
        };
        // The softmax as the tape forms it (`Nary::partials`): its limits at an infinite or
        // NaN operand, else `e^(x_k - m) / sum` with `m` the largest operand, held constant.
        if let Some(special) = softmax_at_infinity(plain) {
            let partials = Gathered::new(terms.len(), zero(), special.map(|p| value.lift(p)));
            return Dual::new(value, combine(partials.as_slice()));
        }
        let m = plain.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps = Gathered::new(
            terms.len(),
            zero(),
            terms.iter().map(|d| (d.value - m).exp()),
        );
        let sum = T::sum(exps.as_slice());
        let softmax = Gathered::new(
            terms.len(),
            zero(),
            exps.as_slice().iter().map(|&e| e / sum),
        );
        Dual::new(value, combine(softmax.as_slice()))
    }
}

/// [`Scalar::binary`] for `Dual` where a partial is zero, infinite or NaN.
#[cold]
fn binary_singular<const K: usize, T: Scalar>(
    op: Binary,
    a: Dual<K, T>,
    b: Dual<K, T>,
    value: T,
    da: T,
    db: T,
) -> Dual<K, T> {
    let operands = [a.value, b.value];
    let qa = rescue(Op::Binary(op), &operands, value, 0, da.value());
    let qb = rescue(Op::Binary(op), &operands, value, 1, db.value());
    let tangents = std::array::from_fn(|k| {
        add_terms(
            through(a.tangents[k], da, qa),
            through(b.tangents[k], db, qb),
            || value.lift(0.0),
        )
    });
    Dual::new(value, tangents)
}
