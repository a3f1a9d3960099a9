//! [`Dual`]: forward mode. A value carried with its derivatives along `K` directions, by
//! the op table's own rules (`Scalar::unary` and `Scalar::binary` are the whole
//! implementation: every op of the table comes with them). Uses the op table and the
//! `Scalar` trait; no graph, no tape.

use std::borrow::Borrow;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::chain::term;
use super::op::{Binary, Nary, Unary, check_clamp_bounds, logsumexp_f64};
use super::scalar::{Operand, Scalar};

/// A dual number: a value and its derivatives (tangents) along `K` directions at once
/// (forward mode; `K = 1` by default). Each op of the table maps
/// `(x, dx)` to `(f(x), f'(x) dx)` by the same partials the tape records, so a function
/// written over [`Scalar`] gives its directional derivatives without a graph, in one pass.
///
/// Forward mode costs one pass per `K` directions, reverse mode one pass per output: use
/// it for functions with few inputs and many outputs (a tall Jacobian), or to push a
/// direction through a function (`jvp`). At singular points it follows the sweeps' rule: a
/// zero tangent passes nothing, even through an infinite or NaN partial (so
/// `sqrt(x)` at 0 along a zero direction has derivative 0, as reverse mode gives).
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
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual<const K: usize = 1> {
    /// The value.
    pub value: f64,
    /// The derivative of the value along each direction.
    pub tangents: [f64; K],
}

impl<const K: usize> Dual<K> {
    /// A dual number with the given value and tangents.
    ///
    /// # Examples
    ///
    /// ```
    /// let d = tapegrad::Dual::new(2.0, [1.0, 0.5]);
    /// assert_eq!((d.value, d.tangents), (2.0, [1.0, 0.5]));
    /// ```
    pub fn new(value: f64, tangents: [f64; K]) -> Self {
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
    pub fn constant(value: f64) -> Self {
        Dual {
            value,
            tangents: [0.0; K],
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
    pub fn unit(value: f64, direction: usize) -> Self {
        let mut tangents = [0.0; K];
        tangents[direction] = 1.0;
        Dual { value, tangents }
    }

    /// `self`'s tangents times `d` each, by the sweeps' rule: a zero tangent passes
    /// nothing, even through an infinite or NaN derivative.
    #[inline(always)]
    fn scaled(self, d: f64) -> [f64; K] {
        self.tangents.map(|t| term(t, d))
    }
}

impl Dual<1> {
    /// An input to differentiate by: its one tangent is 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Dual, Scalar};
    /// let x = Dual::variable(3.0);
    /// assert_eq!(x.powi(2).tangents, [6.0]);
    /// ```
    pub fn variable(value: f64) -> Self {
        Dual::new(value, [1.0])
    }

    /// The one tangent.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Dual, Scalar};
    /// assert_eq!(Dual::variable(0.0).exp().tangent(), 1.0);
    /// ```
    pub fn tangent(&self) -> f64 {
        self.tangents[0]
    }
}

/// `a + b` lane by lane.
#[inline(always)]
fn plus<const K: usize>(a: [f64; K], b: [f64; K]) -> [f64; K] {
    std::array::from_fn(|k| a[k] + b[k])
}

impl<const K: usize> Add for Dual<K> {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Dual::new(self.value + o.value, plus(self.tangents, o.tangents))
    }
}

impl<const K: usize> Sub for Dual<K> {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Dual::new(
            self.value - o.value,
            plus(self.tangents, o.tangents.map(|t| -t)),
        )
    }
}

impl<const K: usize> Mul for Dual<K> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        self.binary(Binary::Mul, o)
    }
}

impl<const K: usize> Div for Dual<K> {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        self.binary(Binary::Div, o)
    }
}

impl<const K: usize> Neg for Dual<K> {
    type Output = Self;
    fn neg(self) -> Self {
        Dual::new(-self.value, self.tangents.map(|t| -t))
    }
}

impl<const K: usize> Add<f64> for Dual<K> {
    type Output = Self;
    fn add(self, c: f64) -> Self {
        Dual::new(self.value + c, self.tangents)
    }
}

impl<const K: usize> Sub<f64> for Dual<K> {
    type Output = Self;
    fn sub(self, c: f64) -> Self {
        Dual::new(self.value - c, self.tangents)
    }
}

impl<const K: usize> Mul<f64> for Dual<K> {
    type Output = Self;
    fn mul(self, c: f64) -> Self {
        Dual::new(self.value * c, self.scaled(c))
    }
}

impl<const K: usize> Div<f64> for Dual<K> {
    type Output = Self;
    fn div(self, c: f64) -> Self {
        Dual::new(self.value / c, self.scaled(c.recip()))
    }
}

/// `f64` on the left, as an untracked constant: `2.0 - x` is `Binary::Sub`'s rule with a
/// constant first operand.
macro_rules! constant_first {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl<const K: usize> $trait<Dual<K>> for f64 {
            type Output = Dual<K>;
            fn $method(self, x: Dual<K>) -> Dual<K> {
                let value = Binary::$op.value(self, x.value);
                let d = Binary::$op.partial(self, x.value, value, 1);
                Dual::new(value, x.scaled(d))
            }
        }
    )*};
}
constant_first!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl<const K: usize> From<Dual<K>> for Operand<Dual<K>> {
    fn from(x: Dual<K>) -> Self {
        Operand::Scalar(x)
    }
}

impl<const K: usize> std::iter::Sum for Dual<K> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        Scalar::sum(iter)
    }
}

impl<'a, const K: usize> std::iter::Sum<&'a Dual<K>> for Dual<K> {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        Scalar::sum(iter)
    }
}

impl<const K: usize> Scalar for Dual<K> {
    fn value(&self) -> f64 {
        self.value
    }
    fn lift(&self, c: f64) -> Self {
        Dual::constant(c)
    }
    #[inline(always)]
    fn unary(self, op: Unary) -> Self {
        let value = op.value(self.value);
        Dual::new(value, self.scaled(op.partial(self.value, value)))
    }
    #[inline(always)]
    fn binary(self, op: Binary, other: Self) -> Self {
        let (a, b) = (self.value, other.value);
        let value = op.value(a, b);
        let (da, db) = (op.partial(a, b, value, 0), op.partial(a, b, value, 1));
        Dual::new(value, plus(self.scaled(da), other.scaled(db)))
    }
    #[inline(always)]
    fn binary_f64(self, op: Binary, c: f64) -> Self {
        let value = op.value(self.value, c);
        Dual::new(value, self.scaled(op.partial(self.value, c, value, 0)))
    }
    #[track_caller]
    fn clamp(self, lo: f64, hi: f64) -> Self {
        check_clamp_bounds(lo, hi);
        let xs = [self.value, lo, hi];
        let value = Nary::Clamp.value(&xs);
        Dual::new(value, self.scaled(Nary::Clamp.partial(&xs, value, 0)))
    }
    fn amax(terms: &[Self]) -> Self {
        assert!(!terms.is_empty(), "amax of no terms has no value");
        let values: Vec<f64> = terms.iter().map(|d| d.value).collect();
        let value = Nary::Max.value(&values);
        let shares = Nary::Max.partials(&values, value);
        let tangents = terms
            .iter()
            .zip(shares)
            .fold([0.0; K], |sum, (d, s)| plus(sum, d.scaled(s)));
        Dual::new(value, tangents)
    }
    fn sum<I>(terms: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<Self>,
    {
        // Summed from -0.0 in order, as `f64`'s `sum` (and the tape's sum node) does.
        terms.into_iter().fold(Dual::constant(-0.0), |sum, d| {
            let d = d.borrow();
            Dual::new(sum.value + d.value, plus(sum.tangents, d.tangents))
        })
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        // The value summed as the tape's dot sums it: the products in order.
        let value = a.iter().zip(b).map(|(x, y)| x.value * y.value).sum();
        let tangents = a.iter().zip(b).fold([0.0; K], |sum, (x, y)| {
            plus(sum, plus(x.scaled(y.value), y.scaled(x.value)))
        });
        Dual::new(value, tangents)
    }
    fn logsumexp(terms: &[Self]) -> Self {
        let values: Vec<f64> = terms.iter().map(|d| d.value).collect();
        let value = logsumexp_f64(&values);
        let softmax = Nary::LogSumExp.partials(&values, value);
        let tangents = terms
            .iter()
            .zip(softmax)
            .fold([0.0; K], |sum, (d, p)| plus(sum, d.scaled(p)));
        Dual::new(value, tangents)
    }
}
