//! Dense kernels on column-major slices: GEMM through `matrixmultiply` (which takes any
//! strides, so transposes cost nothing); the packing-free products of the objective
//! (`kernels::products`); and Jacobi SVD and symmetric eigenvalues for small matrices ([`jacobi`]).

use nalgebra::DMatrix;
use rayon::prelude::*;

pub mod jacobi;

pub use jacobi::{eigenvalue_upper_bound, svd, sym_eigenvalues, Svd};

/// A column-major matrix view: `rows x cols`, element (i, j) at `data[i + j * rows]`.
#[derive(Debug, Clone, Copy)]
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
    assert!(a.data.len() >= a.rows * a.cols && b.data.len() >= b.rows * b.cols, "gemm: a view is larger than its storage");
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
    // A spans rows(A)*cols(A) <= a.data.len(), B likewise, and C is m x n with unit row stride.
    unsafe {
        matrixmultiply::dgemm(m, k, n, alpha, a.data.as_ptr(), rsa, csa, b.data.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), 1, m as isize);
    }
}

/// Column block of [`syrk_upper`]'s output per task.
const SYRK_BLOCK: usize = 64;

/// `C += alpha A^T A` on the upper triangle and the diagonal of the d x d column-major `C`
/// (below the diagonal, C is left unspecified: the diagonal blocks are updated whole), for the n x d matrix A stored row-major
/// (`row_major`: element (i, j) at `a[i d + j]`) or column-major (at `a[i + j n]`). Blocks of
/// 64 columns of C run in parallel, each one product in a fixed order, so the result does not
/// depend on the thread count.
pub fn syrk_upper(alpha: f64, a: &[f64], n: usize, d: usize, row_major: bool, c: &mut [f64]) {
    assert_eq!(a.len(), n * d, "syrk: A has the wrong size");
    assert_eq!(c.len(), d * d, "syrk: C has the wrong size");
    if n == 0 || d == 0 {
        return;
    }
    let (rs, cs) = if row_major { (d, 1) } else { (1, n) };
    c.par_chunks_mut(SYRK_BLOCK * d).enumerate().for_each(|(b, block)| {
        let (j0, w) = (b * SYRK_BLOCK, block.len() / d);
        let rows = j0 + w;
        // SAFETY: A^T restricted to rows 0..rows reads a[i rs + r cs] for i < n, r < rows <= d,
        // at most (n-1) rs + (d-1) cs = n d - 1 < a.len(); B, A's columns j0..j0+w, reads
        // a[i rs + (j0 + j) cs] with j0 + j < d, inside the same bound; C is rows x w with
        // column stride d inside `block`, whose length is w d, and rows <= d.
        unsafe {
            matrixmultiply::dgemm(
                rows,
                n,
                w,
                alpha,
                a.as_ptr(),
                cs as isize,
                rs as isize,
                a.as_ptr().add(j0 * cs),
                rs as isize,
                cs as isize,
                1.0,
                block.as_mut_ptr(),
                1,
                d as isize,
            );
        }
    });
}

/// Frobenius norm of a slice.
pub fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `a / 2^e` with `2^e` the power of two nearest above the largest |entry| (1 for a zero
/// matrix), and `2^e`; `None` if an entry is not finite. Dividing by a power of two is exact.
pub fn pow2_scaled(a: &DMatrix<f64>) -> Option<(DMatrix<f64>, f64)> {
    pow2_scale(a).map(|scale| (a / scale, scale))
}

/// The `2^e` of [`pow2_scaled`], without the scaled copy.
pub fn pow2_scale(a: &DMatrix<f64>) -> Option<f64> {
    let mut big = 0.0f64;
    for &x in a.iter() {
        if !x.is_finite() {
            return None;
        }
        big = big.max(x.abs());
    }
    if big == 0.0 {
        return Some(1.0);
    }
    // An exponent in the normal range, so that 2^e is exact (entries below 2^-1020 are
    // subnormal and far from overflowing anyway).
    Some(2f64.powi((big.log2().ceil() as i32).clamp(-1020, 1020)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syrk_upper_is_the_upper_triangle_of_a_transpose_a() {
        for (n, d) in [(7usize, 3usize), (50, 70), (3, 130)] {
            let a: Vec<f64> = (0..n * d).map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0).collect();
            for row_major in [true, false] {
                // A as an nalgebra matrix, and A^T A by nalgebra's own product.
                let am = if row_major { DMatrix::from_row_slice(n, d, &a) } else { DMatrix::from_column_slice(n, d, &a) };
                let full = am.transpose() * &am;
                let mut c = vec![1.0; d * d];
                syrk_upper(-2.0, &a, n, d, row_major, &mut c);
                for j in 0..d {
                    for i in 0..d {
                        if i <= j {
                            let want = 1.0 - 2.0 * full[(i, j)];
                            assert!((c[i + j * d] - want).abs() <= 1e-12 * (1.0 + want.abs()), "n {n} d {d} ({i}, {j}): {} vs {want}", c[i + j * d]);
                        }
                    }
                }
            }
        }
    }

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
