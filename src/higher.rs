//! Second and higher derivatives: Hessians, Hessian-vector products, Jacobians, and a
//! second-order gradient checker.
//!
//! Everything here is built on [`Var::grad`], the differentiable backward: it records the
//! reverse sweep's own arithmetic on the graph, so a gradient is a `Var` that can be
//! differentiated again, by the same derivative rules (`op.rs`) as the first gradient.
//!
//! | entry point | what it returns | cost |
//! |---|---|---|
//! | [`Var::grad`] | `dy/dx_i` as `Var`s (differentiable again) | one recorded reverse sweep |
//! | [`hvp`] | `H v` for a direction `v` | one recorded sweep + one plain sweep |
//! | [`hessian`] | the `n x n` matrix `d2y / dx_i dx_j` | one recorded sweep + `n` plain sweeps |
//! | [`jacobian`] | the `m x n` matrix `dy_i / dx_j` | `m` plain sweeps |
//! | [`gradgradcheck`] | the tape's Hessian beside central differences of the gradient | a Hessian + `2n` gradients |
//!
//! # Memory: what these helpers leave on the graph
//!
//! [`hessian`] and [`hvp`] take a [`Mark`](crate::Mark) when they start, record the
//! gradient graph after it, read the numbers they return, and then
//! [release](crate::Graph::release) the graph to that mark: the tape is exactly as long
//! afterwards as before, so calling them in a loop (Newton's method) runs in constant
//! memory. This is safe because every node after the mark was recorded by the helper
//! itself; the caller's `Var`s, all recorded before the mark, stay valid. [`jacobian`]
//! records nothing. [`Var::grad`] alone does not release: its results are `Var`s the caller
//! goes on using; release them with a mark of your own when done.
//!
//! # Examples
//!
//! ```
//! use tapegrad::{Graph, higher};
//!
//! let g = Graph::new();
//! let (x, y) = (g.var(1.0), g.var(2.0));
//! let f = x * x * y + y.exp();
//! // f_xx = 2y, f_xy = 2x, f_yy = e^y
//! let h = higher::hessian(f, &[x, y]);
//! assert_eq!(h, vec![vec![4.0, 2.0], vec![2.0, 2f64.exp()]]);
//! // H (1, -1) without forming H
//! assert_eq!(higher::hvp(f, &[x, y], &[1.0, -1.0]), vec![2.0, 2.0 - 2f64.exp()]);
//! ```

use crate::backward::Gradients;
use crate::error::Error;
use crate::var::Var;

/// The Hessian `H[i][j] = d2 y / dx_i dx_j` of the scalar `y` with respect to `xs`, row by
/// row.
///
/// Records `y`'s gradient with respect to `xs` once ([`Var::grad`]), then runs one plain
/// reverse sweep from each gradient entry: row `i` is the gradient of `dy/dx_i`. The
/// recorded nodes are released before it returns (see the module docs). The result is
/// symmetric up to rounding (the two orders of differentiation round differently).
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::hessian};
///
/// let g = Graph::new();
/// let (x, y) = (g.var(0.5), g.var(-1.5));
/// let f = x.sin() * y.powi(2);
/// let before = g.len();
/// let h = hessian(f, &[x, y]);
/// // f_xx = -sin(x) y^2, f_xy = 2 y cos(x), f_yy = 2 sin(x)
/// approx::assert_relative_eq!(h[0][0], -0.5f64.sin() * 2.25, max_relative = 1e-15);
/// approx::assert_relative_eq!(h[0][1], -3.0 * 0.5f64.cos(), max_relative = 1e-15);
/// approx::assert_relative_eq!(h[1][1], 2.0 * 0.5f64.sin(), max_relative = 1e-15);
/// assert_eq!(g.len(), before); // nothing left behind
/// ```
///
/// # Panics
///
/// If `y` or an input is released or from another graph (see [`try_hessian`]).
#[track_caller]
pub fn hessian<'g>(y: Var<'g>, xs: &[Var<'g>]) -> Vec<Vec<f64>> {
    try_hessian(y, xs).unwrap_or_else(|e| panic!("{e}"))
}

/// [`hessian`], returning an error instead of panicking.
///
/// # Errors
///
/// [`Error::Released`] or [`Error::ForeignHandle`] for `y` or an input; nothing is left
/// recorded.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::try_hessian};
/// let (g, h) = (Graph::new(), Graph::new());
/// let x = g.var(1.0);
/// assert!(try_hessian(x.exp(), &[h.var(1.0)]).is_err());
/// assert_eq!(try_hessian(x.exp(), &[x]), Ok(vec![vec![1f64.exp()]]));
/// ```
pub fn try_hessian<'g>(y: Var<'g>, xs: &[Var<'g>]) -> Result<Vec<Vec<f64>>, Error> {
    let graph = y.graph();
    let mark = graph.mark();
    let result = y.try_grad(xs).and_then(|dy| try_jacobian(&dy, xs));
    graph.release(mark);
    result
}

/// The Hessian-vector product `H v = sum_j (d2 y / dx_i dx_j) v_j`, without forming `H`.
///
/// Reverse over reverse: the gradient `g = dy/dxs` is recorded once ([`Var::grad`]), then
/// one plain reverse sweep from `g . v` gives `d(g . v)/dxs = H v`. The cost is a small
/// multiple of one gradient, whatever the number of inputs; the recorded nodes are released
/// before it returns (see the module docs).
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::hvp};
///
/// let g = Graph::new();
/// let xs = g.vars(&[1.0, 2.0, 3.0]);
/// // f = x0 x1 x2: H = [[0, x2, x1], [x2, 0, x0], [x1, x0, 0]]
/// let f = xs[0] * xs[1] * xs[2];
/// assert_eq!(hvp(f, &xs, &[1.0, 0.0, -1.0]), vec![-2.0, 2.0, 2.0]);
/// ```
///
/// # Panics
///
/// If `v` and `xs` differ in length, or `y` or an input is released or from another graph
/// (see [`try_hvp`]).
#[track_caller]
pub fn hvp<'g>(y: Var<'g>, xs: &[Var<'g>], v: &[f64]) -> Vec<f64> {
    try_hvp(y, xs, v).unwrap_or_else(|e| panic!("{e}"))
}

/// [`hvp`], returning an error instead of panicking.
///
/// # Errors
///
/// [`Error::BadOperands`] if `v` and `xs` differ in length; [`Error::Released`] or
/// [`Error::ForeignHandle`] for `y` or an input. Nothing is left recorded.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::try_hvp};
/// let g = Graph::new();
/// let x = g.var(2.0);
/// assert!(try_hvp(x.powi(3), &[x], &[1.0, 2.0]).is_err());
/// assert_eq!(try_hvp(x.powi(3), &[x], &[0.5]), Ok(vec![6.0])); // 6x * 0.5
/// ```
pub fn try_hvp<'g>(y: Var<'g>, xs: &[Var<'g>], v: &[f64]) -> Result<Vec<f64>, Error> {
    if v.len() != xs.len() {
        return Err(Error::BadOperands {
            op: "hvp",
            why: format!(
                "the direction has {} entries for {} inputs; it needs one per input",
                v.len(),
                xs.len()
            ),
        });
    }
    let graph = y.graph();
    let mark = graph.mark();
    let result = (|| {
        let dy = y.try_grad(xs)?;
        let gv = graph.try_dot(&dy, v)?;
        let grads = gv.try_backward()?;
        xs.iter().map(|&x| grads.try_wrt(x)).collect()
    })();
    graph.release(mark);
    result
}

/// The Jacobian `J[i][j] = d ys[i] / d xs[j]` of several outputs, row by row: one plain
/// reverse sweep per output over the already recorded graph (reusing one gradient store).
/// It records nothing.
///
/// With the outputs of [`Var::grad`] as `ys`, it is a Hessian; with a softmax's outputs,
/// the softmax Jacobian `diag(p) - p p^T`.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::jacobian};
///
/// let g = Graph::new();
/// let (r, t) = (g.var(2.0), g.var(0.5));
/// // polar to cartesian: d(x, y)/d(r, t) = [[cos t, -r sin t], [sin t, r cos t]]
/// let j = jacobian(&[r * t.cos(), r * t.sin()], &[r, t]);
/// assert_eq!(j[0], vec![0.5f64.cos(), -2.0 * 0.5f64.sin()]);
/// assert_eq!(j[1], vec![0.5f64.sin(), 2.0 * 0.5f64.cos()]);
/// ```
///
/// # Panics
///
/// If an output or input is released or from another graph (see [`try_jacobian`]).
#[track_caller]
pub fn jacobian<'g>(ys: &[Var<'g>], xs: &[Var<'g>]) -> Vec<Vec<f64>> {
    try_jacobian(ys, xs).unwrap_or_else(|e| panic!("{e}"))
}

/// [`jacobian`], returning an error instead of panicking.
///
/// # Errors
///
/// [`Error::Released`] or [`Error::ForeignHandle`] for an output or an input.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, higher::try_jacobian};
/// let g = Graph::new();
/// let mark = g.mark();
/// let x = g.var(1.0);
/// let y = x.exp();
/// assert_eq!(try_jacobian(&[y, x], &[x]), Ok(vec![vec![1f64.exp()], vec![1.0]]));
/// g.release(mark);
/// assert!(try_jacobian(&[y], &[x]).is_err());
/// ```
pub fn try_jacobian<'g>(ys: &[Var<'g>], xs: &[Var<'g>]) -> Result<Vec<Vec<f64>>, Error> {
    let mut grads = Gradients::new();
    ys.iter()
        .map(|&y| {
            y.try_backward_into(&mut grads)?;
            xs.iter().map(|&x| grads.try_wrt(x)).collect()
        })
        .collect()
}
