//! Matrix-vector products over [`Scalar`], one fused dot node per output. Built on
//! [`Scalar`] only (the engine's `Var` implementation fuses the products).
//!
//! A scalar tape has no tensors, but layers are still matrix-vector products. Recording
//! each output as one n-ary [`Scalar::dot`] node, rather than a chain of multiplies and
//! adds, keeps the tape small (one node with `2n` edges instead of `2n - 1` nodes) and the
//! backward sweep short. Written over [`Scalar`], the same code evaluates plainly with
//! `f64` and records on a tape with [`Var`](crate::Var).

use crate::engine::Scalar;
pub use crate::engine::{Matrix, Pairing};

/// `A B`: output `(i, j)` is `dot(row i of a, column j of b)`, one fused node each, in a
/// row-major `a.rows() x b.cols()` vector. On the tape each handle of `a` and `b` is looked
/// up once for the whole product.
///
/// # Examples
///
/// ```
/// use tapegrad::{linalg::{mat_mul, Matrix}, Graph};
///
/// let g = Graph::new();
/// let a = g.vars(&[1.0, 2.0, 3.0, 4.0]);
/// let b = g.vars(&[5.0, 6.0, 7.0, 8.0]);
/// let c = mat_mul(Matrix::new(&a, 2, 2), Matrix::new(&b, 2, 2));
/// assert_eq!(c[2].value(), 3.0 * 5.0 + 4.0 * 7.0); // (1, 0)
/// assert_eq!(c[2].backward()[b[2]], 4.0); // d c10 / d b10 = a11
/// ```
///
/// # Panics
///
/// If `a.cols()` is not `b.rows()`; for `Var`, if the product has outputs but `a` has no
/// columns, or the handles mix graphs.
#[track_caller]
pub fn mat_mul<T: Scalar>(a: Matrix<'_, T>, b: Matrix<'_, T>) -> Vec<T> {
    assert_eq!(
        a.cols(),
        b.rows(),
        "mat_mul: a {} x {} matrix times a {} x {} matrix",
        a.rows(),
        a.cols(),
        b.rows(),
        b.cols()
    );
    T::dots(a, b, Pairing::Columns)
}

/// `A B^T`: output `(i, j)` is `dot(row i of a, row j of b)`, one fused node each, in a
/// row-major `a.rows() x b.rows()` vector: every row of `a` through the linear layer whose
/// weight `b` is stored `outputs x inputs`. On the tape each handle is looked up once.
///
/// # Examples
///
/// ```
/// use tapegrad::{linalg::{mat_mul_t, Matrix}, Graph};
///
/// let g = Graph::new();
/// let x = g.vars(&[1.0, 2.0, 3.0, 4.0]); // two inputs of 2
/// let w = g.vars(&[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]); // 3 outputs x 2 inputs
/// let y = mat_mul_t(Matrix::new(&x, 2, 2), Matrix::new(&w, 3, 2));
/// assert_eq!(y.len(), 6);
/// assert_eq!(y[5].value(), 3.0 * 9.0 + 4.0 * 10.0); // input 1, output 2
/// assert_eq!(y[5].backward()[x[3]], 10.0);
/// ```
///
/// # Panics
///
/// If `a.cols()` is not `b.cols()`; for `Var`, as [`mat_mul`].
#[track_caller]
pub fn mat_mul_t<T: Scalar>(a: Matrix<'_, T>, b: Matrix<'_, T>) -> Vec<T> {
    assert_eq!(
        a.cols(),
        b.cols(),
        "mat_mul_t: a {} x {} matrix times the transpose of a {} x {} matrix",
        a.rows(),
        a.cols(),
        b.rows(),
        b.cols()
    );
    T::dots(a, b, Pairing::Rows)
}

/// `W x`: output `i` is `dot(row i of W, x)`, one fused node each. This is also `x W^T`,
/// the form of a linear layer that stores its weight as `outputs x inputs` ([`mat_mul_t`]
/// with one row).
///
/// # Examples
///
/// ```
/// use tapegrad::{linalg::{mat_vec, Matrix}, Graph};
///
/// let g = Graph::new();
/// let w = g.vars(&[1.0, 2.0, 3.0, 4.0]);
/// let x = g.vars(&[5.0, 6.0]);
/// let y = mat_vec(Matrix::new(&w, 2, 2), &x);
/// assert_eq!(y[1].value(), 3.0 * 5.0 + 4.0 * 6.0);
/// // d y1 / d w[1][0] = x0
/// assert_eq!(y[1].backward()[w[2]], 5.0);
/// // The same function with f64 is a plain evaluation.
/// assert_eq!(mat_vec(Matrix::new(&[1.0, 2.0, 3.0, 4.0], 2, 2), &[5.0, 6.0]), vec![17.0, 39.0]);
/// ```
///
/// # Panics
///
/// If `x.len()` is not `w.cols()`; for `Var`, if `w` has no columns or mixes graphs.
#[track_caller]
pub fn mat_vec<T: Scalar>(w: Matrix<'_, T>, x: &[T]) -> Vec<T> {
    assert_eq!(
        x.len(),
        w.cols(),
        "mat_vec: a {} x {} matrix times a vector of length {}",
        w.rows(),
        w.cols(),
        x.len()
    );
    // Row i of W with x: the dot of `mat_mul_t(W, x as one row)`'s output (i, 0).
    T::dots(w, Matrix::new(x, 1, x.len()), Pairing::Rows)
}

/// `x W`: output `j` is `dot(x, column j of W)`, one fused node each ([`mat_mul`] with one
/// row).
///
/// # Examples
///
/// ```
/// use tapegrad::{linalg::{vec_mat, Matrix}, Graph};
///
/// let g = Graph::new();
/// let x = g.vars(&[5.0, 6.0]);
/// let w = g.vars(&[1.0, 2.0, 3.0, 4.0]);
/// let y = vec_mat(&x, Matrix::new(&w, 2, 2));
/// assert_eq!(y[0].value(), 5.0 * 1.0 + 6.0 * 3.0);
/// // d y0 / d x1 = w[1][0]
/// assert_eq!(y[0].backward()[x[1]], 3.0);
/// ```
///
/// # Panics
///
/// If `x.len()` is not `w.rows()`; for `Var`, if `w` has no rows or mixes graphs.
#[track_caller]
pub fn vec_mat<T: Scalar>(x: &[T], w: Matrix<'_, T>) -> Vec<T> {
    assert_eq!(
        x.len(),
        w.rows(),
        "vec_mat: a vector of length {} times a {} x {} matrix",
        x.len(),
        w.rows(),
        w.cols()
    );
    T::dots(Matrix::new(x, 1, x.len()), w, Pairing::Columns)
}
