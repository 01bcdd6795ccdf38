//! Dense kernels on column-major slices: GEMM through `matrixmultiply` (which takes any
//! strides, so transposes cost nothing); the packing-free products of the objective
//! (`kernels::products`); and Jacobi SVD and symmetric eigenvalues for small matrices ([`jacobi`]).

use nalgebra::DMatrix;

pub mod jacobi;

pub use jacobi::{eigenvalue_upper_bound, svd, sym_eigenvalues, Svd};

/// A column-major matrix view: `rows x cols`, element (i, j) at `data[i + j * rows]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f64],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

impl<'a> Mat<'a> {
    /// Wraps a column-major slice.
    pub fn new(data: &'a [f64], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        Mat { data, rows, cols }
    }

    /// Column j.
    pub fn col(&self, j: usize) -> &'a [f64] {
        &self.data[j * self.rows..(j + 1) * self.rows]
    }

    /// Copies into an nalgebra matrix.
    pub fn to_dmatrix(&self) -> DMatrix<f64> {
        DMatrix::from_column_slice(self.rows, self.cols, self.data)
    }
}

/// `C = alpha * op(A) * op(B) + beta * C`, all column-major; `ta`/`tb` transpose A/B.
/// `C` is `m x n` with `m = rows(op(A))`, `n = cols(op(B))`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(alpha: f64, a: Mat, ta: bool, b: Mat, tb: bool, beta: f64, c: &mut [f64]) {
    let (m, k) = if ta { (a.cols, a.rows) } else { (a.rows, a.cols) };
    let (k2, n) = if tb { (b.cols, b.rows) } else { (b.rows, b.cols) };
    assert_eq!(k, k2, "gemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "gemm: output has the wrong size");
    let (rsa, csa) = if ta { (a.rows as isize, 1) } else { (1, a.rows as isize) };
    let (rsb, csb) = if tb { (b.rows as isize, 1) } else { (1, b.rows as isize) };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|x| *x *= beta);
        return;
    }
    // SAFETY: the asserts above guarantee every index matrixmultiply touches is in bounds:
    // A spans rows(A)*cols(A) = a.data.len(), B likewise, and C is m x n with unit row stride.
    unsafe {
        matrixmultiply::dgemm(m, k, n, alpha, a.data.as_ptr(), rsa, csa, b.data.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), 1, m as isize);
    }
}

/// Frobenius norm of a slice.
pub fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_transposes_match_nalgebra() {
        let a: Vec<f64> = (0..6).map(|i| i as f64 * 0.5 - 1.0).collect(); // 2x3
        let b: Vec<f64> = (0..12).map(|i| (i as f64).sin()).collect(); // 3x4 or 4x3
        let am = DMatrix::from_column_slice(2, 3, &a);
        let bm = DMatrix::from_column_slice(3, 4, &b);
        let mut c = vec![0.0; 8];
        gemm(1.0, Mat::new(&a, 2, 3), false, Mat::new(&b, 3, 4), false, 0.0, &mut c);
        assert!((DMatrix::from_column_slice(2, 4, &c) - &am * &bm).norm() < 1e-14);
        let bt = DMatrix::from_column_slice(4, 3, &b);
        let mut c2 = vec![0.0; 8];
        gemm(1.0, Mat::new(&a, 2, 3), false, Mat::new(&b, 4, 3), true, 0.0, &mut c2);
        assert!((DMatrix::from_column_slice(2, 4, &c2) - &am * bt.transpose()).norm() < 1e-14);
        let mut c3 = vec![0.0; 12];
        gemm(1.0, Mat::new(&a, 2, 3), true, Mat::new(&b[..8], 2, 4), false, 0.0, &mut c3);
        let b2 = DMatrix::from_column_slice(2, 4, &b[..8]);
        assert!((DMatrix::from_column_slice(3, 4, &c3) - am.transpose() * b2).norm() < 1e-14);
    }
}
