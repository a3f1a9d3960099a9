//! Matrix-vector products over [`Scalar`], one fused dot node per output.
//!
//! A scalar tape has no tensors, but layers are still matrix-vector products. Recording
//! each output as one n-ary [`Scalar::dot`] node, rather than a chain of multiplies and
//! adds, keeps the tape small (one node with `2n` edges instead of `2n - 1` nodes) and the
//! backward sweep short. Written over [`Scalar`], the same code evaluates plainly with
//! `f64` and records on a tape with [`Var`](crate::Var).

use crate::scalar::Scalar;

/// A borrowed, row-major matrix: `rows x cols` entries of a slice, row by row.
///
/// # Examples
///
/// ```
/// use tapegrad::linalg::Matrix;
///
/// let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let m = Matrix::new(&data, 2, 3);
/// assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
/// assert_eq!(m.get(0, 2), 3.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
}

impl<'a, T: Copy> Matrix<'a, T> {
    /// Views `data` as a `rows x cols` matrix stored row by row.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = tapegrad::linalg::Matrix::new(&[1.0, 2.0], 1, 2);
    /// assert_eq!((m.rows(), m.cols()), (1, 2));
    /// ```
    ///
    /// # Panics
    ///
    /// If `data.len()` is not `rows * cols`.
    #[track_caller]
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(
            Some(data.len()),
            rows.checked_mul(cols),
            "Matrix::new: a {rows} x {cols} matrix needs {rows} * {cols} entries, got {}",
            data.len()
        );
        Matrix { data, rows, cols }
    }

    /// The number of rows.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::linalg::Matrix::new(&[0.0; 6], 3, 2).rows(), 3);
    /// ```
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::linalg::Matrix::new(&[0.0; 6], 3, 2).cols(), 2);
    /// ```
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = tapegrad::linalg::Matrix::new(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    /// assert_eq!(m.row(0), &[1.0, 2.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `i >= rows`.
    #[track_caller]
    pub fn row(&self, i: usize) -> &'a [T] {
        assert!(
            i < self.rows,
            "Matrix::row: row {i} of a matrix with {} rows",
            self.rows
        );
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The entry in row `i`, column `j`.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = tapegrad::linalg::Matrix::new(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    /// assert_eq!(m.get(1, 0), 3.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If `i >= rows` or `j >= cols`.
    #[track_caller]
    pub fn get(&self, i: usize, j: usize) -> T {
        assert!(
            i < self.rows && j < self.cols,
            "Matrix::get: entry ({i}, {j}) of a {} x {} matrix",
            self.rows,
            self.cols
        );
        self.data[i * self.cols + j]
    }

    /// The entries, row by row.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = tapegrad::linalg::Matrix::new(&[1.0, 2.0], 2, 1);
    /// assert_eq!(m.as_slice(), &[1.0, 2.0]);
    /// ```
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }
}

/// Which part of the second factor each output of a [`Scalar::dots`] product pairs with a
/// row of the first.
///
/// # Examples
///
/// ```
/// use tapegrad::linalg::{Matrix, Pairing};
/// use tapegrad::Scalar;
///
/// let (a, b) = ([1.0, 2.0], [3.0, 4.0, 5.0, 6.0]);
/// let (a, b) = (Matrix::new(&a, 1, 2), Matrix::new(&b, 2, 2));
/// assert_eq!(f64::dots(a, b, Pairing::Columns), vec![13.0, 16.0]); // A B
/// assert_eq!(f64::dots(a, b, Pairing::Rows), vec![11.0, 17.0]); // A B^T
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// `A B`: output `(i, j)` is `dot(row i of A, column j of B)`.
    Columns,
    /// `A B^T`: output `(i, j)` is `dot(row i of A, row j of B)`.
    Rows,
}

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
                    column.extend((0..b.rows()).map(|k| b.data[k * b.cols + j]));
                    T::dot(a.row(i), &column)
                }
                Pairing::Rows => T::dot(a.row(i), b.row(j)),
            });
        }
    }
    out
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
