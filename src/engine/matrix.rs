//! [`Matrix`], a borrowed row-major view, and [`Pairing`]: the shapes the fused matrix
//! products take. Plain data, no arithmetic: it may not use any other module.

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

/// Which part of the second factor each output of a [`Scalar::dots`](crate::Scalar::dots) product pairs with a
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
