//! Forward mode for functions of several outputs, and a Jacobian that picks forward or
//! reverse mode by the function's shape. Built on the engine's public API ([`Dual`], [`Var`],
//! [`Scalar`]); the items are public as [`higher::Function`](crate::higher::Function),
//! [`higher::jvp`](crate::higher::jvp) and [`higher::jacobian_of`](crate::higher::jacobian_of).

use crate::engine::{Dual, Graph, Scalar, Var, or_panic};
use crate::higher::try_jacobian;

/// A function of several inputs with several outputs, written once over [`Scalar`] so that
/// it can be evaluated plainly (`f64`), in forward mode ([`Dual`]) and on a tape ([`Var`]):
/// what [`jvp`] and [`jacobian_of`] differentiate. (A closure cannot be generic over the
/// scalar type, hence a trait, as [`Statement`](crate::Statement) is for one output.)
///
/// The method has no `where f64: LeftOperand<T>` bound (see
/// [`LeftOperand`](crate::LeftOperand)): under that bound Rust resolves every `f64 * f64`
/// in the body to `f64 * T` and rejects it, so plain arithmetic on data would not compile.
/// With a constant on the left, write `-(x - c)` for `c - x` (the same number), `x.recip()`
/// for `1.0 / x`, or lift the constant: `x.lift(c) / x`.
///
/// # Examples
///
/// ```
/// use tapegrad::Scalar;
/// use tapegrad::higher::{Function, jacobian_of};
///
/// /// Polar to cartesian: (r, t) -> (r cos t, r sin t, 1 - r).
/// struct Polar;
/// impl Function for Polar {
///     fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
///         vec![x[0] * x[1].cos(), x[0] * x[1].sin(), -(x[0] - 1.0)]
///     }
/// }
///
/// assert_eq!(Polar.eval(&[2.0, 0.0]), vec![2.0, 0.0, -1.0]);
/// let j = jacobian_of(&Polar, &[2.0, 0.0]);
/// assert_eq!(j, vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![-1.0, 0.0]]);
/// ```
pub trait Function {
    /// The outputs at `xs`.
    fn eval<T: Scalar>(&self, xs: &[T]) -> Vec<T>;
}

/// The outputs of `f` at `x` and their derivatives along the direction `v`, `J v` (a
/// Jacobian-vector product, JAX's `jvp`), in one forward pass with dual numbers
/// ([`Dual`]): no graph, no tape, and the cost of a few evaluations of `f` whatever the
/// number of inputs and outputs.
///
/// A zero derivative is returned as `+0`, as reverse mode gives it (forward mode itself may
/// carry a `-0`: `d cos x` at 0 is `-sin 0`).
///
/// # Examples
///
/// ```
/// use tapegrad::Scalar;
/// use tapegrad::higher::{Function, jvp};
///
/// struct Rotate(f64);
/// impl Function for Rotate {
///     fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
///         let (c, s) = (self.0.cos(), self.0.sin());
///         vec![x[0] * c - x[1] * s, x[0] * s + x[1] * c]
///     }
/// }
///
/// // A linear map: J v is the map applied to v.
/// let (y, jv) = jvp(&Rotate(0.5), &[1.0, 2.0], &[1.0, 0.0]);
/// assert_eq!(y, Rotate(0.5).eval(&[1.0, 2.0]));
/// assert_eq!(jv, vec![0.5f64.cos(), 0.5f64.sin()]);
/// ```
///
/// # Panics
///
/// If `v` and `x` differ in length; if `f` panics.
#[track_caller]
pub fn jvp<F: Function>(f: &F, x: &[f64], v: &[f64]) -> (Vec<f64>, Vec<f64>) {
    assert!(
        v.len() == x.len(),
        "tapegrad: jvp's direction has {} entries for {} inputs; it needs one per input",
        v.len(),
        x.len()
    );
    let duals: Vec<Dual> = x.iter().zip(v).map(|(&x, &v)| Dual::new(x, [v])).collect();
    f.eval(&duals)
        .iter()
        .map(|y| (y.value, y.tangent() + 0.0))
        .unzip()
}

/// How many directions forward mode carries at once in [`jacobian_of`]: a block of columns.
const LANES: usize = 8;

/// The Jacobian `J[i][j] = d y_i / d x_j` of `f` at `x`, row by row, by forward mode where
/// `f` has at least as many outputs as inputs (a tall Jacobian) and by reverse mode
/// otherwise, so that the number of passes is the smaller of the two dimensions.
///
/// - Forward: `f` evaluated with [`Dual`] numbers carrying 8 directions at a time, so `n`
///   inputs take `n / 8` passes (the last block of columns carries 1, 2, 4 or 8, the
///   fewest that cover it). Nothing is recorded and nothing allocated per op.
/// - Reverse: `f` recorded once on a fresh [`Graph`] of [`Var`]s, then one plain sweep per
///   output ([`higher::jacobian`](crate::higher::jacobian)).
///
/// To learn the number of outputs, `f` is first evaluated once with `f64` (the cost of a
/// plain evaluation). Both modes apply the reverse sweeps' rule at singular points (see
/// [`Dual`]); where each input reaches an output by one op (or a product of two partials),
/// they give the same numbers bit for bit, and otherwise agree to rounding. A zero entry
/// is `+0`.
///
/// For one direction only, [`jvp`]; for a recorded graph, [`higher::jacobian`](crate::higher::jacobian).
///
/// # Examples
///
/// ```
/// use tapegrad::Scalar;
/// use tapegrad::higher::{Function, jacobian_of};
///
/// /// Softmax of three logits: J = diag(p) - p p^T.
/// struct Softmax;
/// impl Function for Softmax {
///     fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
///         let lse = T::logsumexp(x);
///         x.iter().map(|&xi| (xi - lse).exp()).collect()
///     }
/// }
///
/// let x = [0.5, -1.0, 2.0];
/// let p = Softmax.eval(&x);
/// let j = jacobian_of(&Softmax, &x); // 3 x 3: forward mode
/// for i in 0..3 {
///     for k in 0..3 {
///         let want = if i == k { p[i] - p[i] * p[k] } else { -p[i] * p[k] };
///         approx::assert_relative_eq!(j[i][k], want, max_relative = 1e-14, epsilon = 1e-16);
///     }
/// }
/// ```
///
/// # Panics
///
/// If `f` returns a different number of outputs from one evaluation to the next; if `f`
/// panics.
#[track_caller]
pub fn jacobian_of<F: Function>(f: &F, x: &[f64]) -> Vec<Vec<f64>> {
    let outputs = f.eval(x).len();
    if outputs >= x.len() {
        forward_jacobian(f, x, outputs)
    } else {
        let g = Graph::new();
        let xs = g.vars(x);
        let ys: Vec<Var<'_>> = f.eval(&xs);
        check_outputs(ys.len(), outputs);
        or_panic(try_jacobian(&ys, &xs))
    }
}

/// [`jacobian_of`]'s forward mode: blocks of columns, each one evaluation of `f`.
#[track_caller]
fn forward_jacobian<F: Function>(f: &F, x: &[f64], outputs: usize) -> Vec<Vec<f64>> {
    let mut jacobian = vec![vec![0.0; x.len()]; outputs];
    let mut start = 0;
    while start < x.len() {
        start += match x.len() - start {
            1 => columns::<F, 1>(f, x, start, &mut jacobian),
            2 => columns::<F, 2>(f, x, start, &mut jacobian),
            3 | 4 => columns::<F, 4>(f, x, start, &mut jacobian),
            _ => columns::<F, LANES>(f, x, start, &mut jacobian),
        };
    }
    jacobian
}

/// Fills the columns `start..` of `jacobian` (at most `K` of them) from one evaluation of
/// `f` with `K` directions; returns how many it filled.
#[track_caller]
fn columns<F: Function, const K: usize>(
    f: &F,
    x: &[f64],
    start: usize,
    jacobian: &mut [Vec<f64>],
) -> usize {
    let width = K.min(x.len() - start);
    let block = start..start + width;
    let duals: Vec<Dual<K>> = x
        .iter()
        .enumerate()
        .map(|(j, &xj)| {
            if block.contains(&j) {
                Dual::unit(xj, j - start)
            } else {
                Dual::constant(xj)
            }
        })
        .collect();
    let ys = f.eval(&duals);
    check_outputs(ys.len(), jacobian.len());
    for (row, y) in jacobian.iter_mut().zip(&ys) {
        for (entry, &t) in row[block.clone()].iter_mut().zip(&y.tangents) {
            // `+ 0.0` turns a `-0` into `+0`, as reverse mode sums from `+0`.
            *entry = t + 0.0;
        }
    }
    width
}

/// Panics unless an evaluation gave as many outputs as the first.
#[track_caller]
fn check_outputs(got: usize, first: usize) {
    assert!(
        got == first,
        "tapegrad: jacobian_of's function gave {first} outputs in one evaluation and {got} in another"
    );
}
