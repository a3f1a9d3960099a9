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

/// `W x`: output `i` is `dot(row i of W, x)`, one fused node each. This is also `x W^T`,
/// the form of a linear layer that stores its weight as `outputs x inputs`.
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
    T::mat_vec(w, x)
}

/// [`Scalar::mat_vec`]'s default: one [`Scalar::dot`] per row.
pub(crate) fn mat_vec_by_dots<T: Scalar>(w: Matrix<'_, T>, x: &[T]) -> Vec<T> {
    (0..w.rows()).map(|i| T::dot(w.row(i), x)).collect()
}

/// `x W`: output `j` is `dot(x, column j of W)`, one fused node each.
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
    T::vec_mat(x, w)
}

/// [`Scalar::vec_mat`]'s default: one [`Scalar::dot`] per column.
pub(crate) fn vec_mat_by_dots<T: Scalar>(x: &[T], w: Matrix<'_, T>) -> Vec<T> {
    // A column is strided; gather it into one reused buffer for the dot.
    let mut column = Vec::with_capacity(w.rows());
    (0..w.cols())
        .map(|j| {
            column.clear();
            column.extend((0..w.rows()).map(|i| w.data[i * w.cols + j]));
            T::dot(x, &column)
        })
        .collect()
}
