//! Jacobi SVD and symmetric eigenvalues for the small dense matrices of the metrics, the
//! figures and the certificate.
//!
//! nalgebra 0.34's `svd` sometimes returns a wrong decomposition without any error: for the
//! 5 x 3 matrix of single-label feature means in `tests/beyond.rs` (K = 5, d = 5) it returned
//! singular values whose product `U S V^T` was 0.09 away from the matrix, which made one
//! tag-wise synthesis weight 0.799 instead of 0.805 (dimforge/nalgebra#1172 reports the same
//! family of failures, still open). Jacobi methods are slower, but every rotation is
//! orthogonal by construction, so the result is a decomposition of the input to rounding,
//! and the singular values are accurate to high relative precision. The matrices here are at
//! most a few hundred wide, so the cost does not matter.
//!
//! - [`svd`]: for a matrix with at most [`NARROW`] columns or rows, [`svd_jacobi`] directly
//!   (a sweep over its few pairs of columns is cheaper than nalgebra's bidiagonalisation and
//!   the checks below: the tag-wise syntheses of preset C, 1,330 matrices of 32 x 2 and
//!   32 x 3, took 4.5 to 6.1 ms through the checked nalgebra SVD and 1.9 ms this way. Single
//!   matrices, `cargo bench --bench ufm -- svd`: 32 x 3, 1.0 against 2.6 us; 32 x 6, 4.9
//!   against 5.7 us; 32 x 8, 9.2 against 8.4 us; 32 x 20, 86 against 43 us).
//!   Otherwise nalgebra's SVD, *checked*: it is accepted only if `U` and `V` have orthonormal
//!   columns and `U S V^T` reproduces `A` to 1e-10 relative (a correct decomposition is
//!   accurate to about `n eps`; the failures seen are off by 1e-1). Otherwise, or if it
//!   does not converge, [`svd_jacobi`] runs: one-sided Jacobi (Hestenes 1958; Demmel and
//!   Veselic 1992), which rotates pairs of columns of `A` until all are orthogonal; then
//!   `A V = U S` column by column. On a 2048 x 1000 matrix (a real network's classifier,
//!   for `measure`) Jacobi takes 28 s and the checked nalgebra SVD 5 s; the checks are
//!   three products through matrixmultiply.
//! - [`sym_eigenvalues`]: cyclic two-sided Jacobi: rotate to annihilate each off-diagonal
//!   entry in turn until the off-diagonal mass is at rounding level.
//!
//! Both are total: a matrix with a NaN or infinite entry gives `None` (never a hang or a
//! panic), every iteration is bounded, and the matrix is first divided by its largest entry
//! (an exact power of two), so that no square of an entry over- or underflows; the results
//! are scaled back.

use nalgebra::{DMatrix, DVector};

use super::{gemm, pow2_scaled, Mat};

/// Sweeps before giving up (convergence is quadratic; a few sweeps suffice in practice).
const MAX_SWEEPS: usize = 60;

/// A thin SVD `A = U diag(s) V^T`, singular values in descending order.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Left singular vectors, `m x r` with `r = min(m, n)` (columns for zero singular values
    /// are zero).
    pub u: DMatrix<f64>,
    /// Singular values, descending, length `r`.
    pub singular_values: DVector<f64>,
    /// Right singular vectors, `n x r`.
    pub v: DMatrix<f64>,
}

impl Svd {
    /// Least-squares solution of minimum norm, `V S^+ U^T y`, dropping singular values at or
    /// below `eps`.
    pub fn solve(&self, y: &DVector<f64>, eps: f64) -> DVector<f64> {
        let mut c = DVector::zeros(self.v.nrows());
        for (r, &s) in self.singular_values.iter().enumerate() {
            if s > eps {
                c += self.v.column(r) * (self.u.column(r).dot(y) / s);
            }
        }
        c
    }

    /// The largest singular value (0 for an empty matrix).
    pub fn max(&self) -> f64 {
        self.singular_values.iter().copied().fold(0.0, f64::max)
    }
}

/// Matrices with at most this many columns (or rows) go to one-sided Jacobi directly.
pub const NARROW: usize = 6;

/// Iterations nalgebra's SVD may take before it gives up (its own default is unbounded).
const NALGEBRA_MAX_ITERS: usize = 1000;

/// Thin SVD: [`svd_jacobi`] for a matrix with at most [`NARROW`] columns or rows; else
/// nalgebra's if it passes the checks in the module docs, else [`svd_jacobi`]. `None` if an
/// entry of `a` is not finite.
pub fn svd(a: &DMatrix<f64>) -> Option<Svd> {
    let (b, scale) = pow2_scaled(a)?;
    let mut d = if a.nrows().min(a.ncols()) <= NARROW { svd_jacobi(&b) } else { checked_nalgebra_svd(&b).unwrap_or_else(|| svd_jacobi(&b)) };
    d.singular_values *= scale;
    d.singular_values.iter().all(|x| x.is_finite()).then_some(d)
}

/// nalgebra's thin SVD, sorted, or `None` if it did not converge or fails the checks (of a
/// matrix already scaled by [`svd`]; public for the benchmark that sets [`NARROW`]).
pub fn checked_nalgebra_svd(a: &DMatrix<f64>) -> Option<Svd> {
    let (m, n) = a.shape();
    let r = m.min(n);
    if r == 0 {
        return None;
    }
    let d = a.clone().try_svd(true, true, 5.0 * f64::EPSILON, NALGEBRA_MAX_ITERS)?;
    let (u, vt) = (d.u?, d.v_t?);
    let mut order: Vec<usize> = (0..r).collect();
    order.sort_by(|&x, &y| d.singular_values[y].total_cmp(&d.singular_values[x]));
    let u = DMatrix::from_fn(m, r, |i, k| u[(i, order[k])]);
    let v = DMatrix::from_fn(n, r, |i, k| vt[(order[k], i)]);
    let s = DVector::from_fn(r, |k, _| d.singular_values[order[k]]);
    let tol = 1e-10;
    let scale = a.norm();
    if !s.iter().all(|&x| x >= 0.0 && x.is_finite()) {
        return None;
    }
    // Orthonormality is required of the columns that carry a non-negligible singular value
    // (for the others nalgebra may return any vector; they multiply zero). The products go
    // through matrixmultiply (nalgebra's own product of transposed views is a slow loop).
    let live = s.iter().take_while(|&&x| x > 1e-12 * s[0]).count();
    let gram_off = |q: &DMatrix<f64>| {
        let rows = q.nrows();
        let qm = Mat::new(&q.as_slice()[..rows * live], rows, live);
        let mut g = vec![0.0; live * live];
        gemm(1.0, qm, true, qm, false, 0.0, &mut g);
        (0..live).for_each(|i| g[i + live * i] -= 1.0);
        g.iter().map(|x| x * x).sum::<f64>().sqrt()
    };
    let mut us = u.clone();
    for (k, &sk) in s.iter().enumerate() {
        us.column_mut(k).scale_mut(sk);
    }
    let mut rec = a.as_slice().to_vec();
    gemm(1.0, Mat::new(us.as_slice(), m, r), false, Mat::new(v.as_slice(), n, r), true, -1.0, &mut rec);
    let rec_err = rec.iter().map(|x| x * x).sum::<f64>().sqrt();
    let ok = gram_off(&u) <= tol * (live as f64).sqrt() && gram_off(&v) <= tol * (live as f64).sqrt() && rec_err <= tol * scale.max(f64::MIN_POSITIVE);
    ok.then_some(Svd { u, singular_values: s, v })
}

/// Thin SVD by one-sided Jacobi (at most `MAX_SWEEPS` sweeps), of a finite matrix.
pub fn svd_jacobi(a: &DMatrix<f64>) -> Svd {
    if a.nrows() < a.ncols() {
        let t = svd_jacobi(&a.transpose());
        return Svd { u: t.v, singular_values: t.singular_values, v: t.u };
    }
    let n = a.ncols();
    let mut u = a.clone();
    let mut v = DMatrix::<f64>::identity(n, n);
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (alpha, beta, gamma) = {
                    let (up, uq) = (u.column(p), u.column(q));
                    (up.norm_squared(), uq.norm_squared(), up.dot(&uq))
                };
                if gamma == 0.0 || gamma.abs() <= f64::EPSILON * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let (c, s) = rotation(alpha, beta, gamma);
                rotate_columns(&mut u, p, q, c, s);
                rotate_columns(&mut v, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<(f64, usize)> = (0..n).map(|j| (u.column(j).norm(), j)).collect();
    order.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut uo = DMatrix::zeros(u.nrows(), n);
    let mut vo = DMatrix::zeros(n, n);
    let mut s = DVector::zeros(n);
    for (r, &(sigma, j)) in order.iter().enumerate() {
        s[r] = sigma;
        if sigma > 0.0 {
            uo.set_column(r, &(u.column(j) / sigma));
        }
        vo.set_column(r, &v.column(j));
    }
    Svd { u: uo, singular_values: s, v: vo }
}

/// `(c, s)` of the rotation that makes columns with Gram entries `alpha = |p|^2`,
/// `beta = |q|^2`, `gamma = p.q` orthogonal: `p' = c p - s q`, `q' = s p + c q`
/// (the smaller of the two angles, for stability).
fn rotation(alpha: f64, beta: f64, gamma: f64) -> (f64, f64) {
    let zeta = (beta - alpha) / (2.0 * gamma);
    let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
    let c = 1.0 / (1.0 + t * t).sqrt();
    (c, c * t)
}

fn rotate_columns(m: &mut DMatrix<f64>, p: usize, q: usize, c: f64, s: f64) {
    let rows = m.nrows();
    let (lo, hi) = m.as_mut_slice().split_at_mut(q * rows);
    let (cp, cq) = (&mut lo[p * rows..(p + 1) * rows], &mut hi[..rows]);
    for (x, y) in cp.iter_mut().zip(cq.iter_mut()) {
        let (a, b) = (*x, *y);
        *x = c * a - s * b;
        *y = s * a + c * b;
    }
}

/// Eigenvalues of the symmetric part of a square matrix, by cyclic Jacobi, in descending
/// order; `None` if an entry is not finite.
pub fn sym_eigenvalues(m: &DMatrix<f64>) -> Option<Vec<f64>> {
    assert!(m.is_square(), "sym_eigenvalues: matrix is not square");
    let n = m.nrows();
    let (m, scale) = pow2_scaled(m)?;
    let mut a = (&m + m.transpose()) * 0.5;
    // An entry is negligible once it is below rounding relative to its diagonal pair
    // (|a_pq| <= eps sqrt|a_pp a_qq|, the criterion of Demmel and Veselic), or below
    // eps ||A||_F / n (what is left then moves no eigenvalue by more than rounding of the
    // largest); a sweep without a rotation ends the iteration.
    let tiny = f64::EPSILON * a.norm() / n.max(1) as f64;
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[(p, q)];
                if apq.abs() <= f64::EPSILON * (a[(p, p)] * a[(q, q)]).abs().sqrt() || apq.abs() <= tiny {
                    continue;
                }
                rotated = true;
                // With J = [[c, s], [-s, c]] in the (p, q) plane, the (p, q) entry of J^T A J
                // is (c^2 - s^2) a_pq + c s (a_pp - a_qq); t = s / c is its smaller root.
                let theta = (a[(q, q)] - a[(p, p)]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (1.0 + theta * theta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                rotate_columns(&mut a, p, q, c, s);
                let data = a.as_mut_slice();
                for j in 0..n {
                    let (x, y) = (data[p + n * j], data[q + n * j]);
                    data[p + n * j] = c * x - s * y;
                    data[q + n * j] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| a[(i, i)] * scale).collect();
    ev.sort_by(|x, y| y.total_cmp(x));
    Some(ev)
}

/// A rigorous upper bound on the largest eigenvalue of a symmetric positive semidefinite
/// matrix (the square of the spectral norm of `G` for `A = G G^T`), cheap enough to take
/// every few solver iterations; `None` if an entry is not finite.
///
/// nalgebra's symmetric eigenvalues give an estimate `l` (0.5 ms at K = 100, against 5 ms for
/// [`sym_eigenvalues`]); the bound is the first `t = l (1 + delta)` (delta = 1e-13, 1e-11, ...)
/// for which `t I - A` has a Cholesky factorisation with pivots above `4 n eps t`, which
/// proves `t I - A` positive definite, i.e. every eigenvalue below `t`, whatever the estimate's
/// error. (Cholesky is backward stable: success proves definiteness of a matrix within
/// `c n eps ||A||` of `t I - A`, which the pivot floor covers.) If no such `t` is found,
/// Jacobi's largest eigenvalue with a relative margin of 1e-11 is returned.
pub fn eigenvalue_upper_bound(a: &DMatrix<f64>) -> Option<f64> {
    assert!(a.is_square(), "eigenvalue_upper_bound: matrix is not square");
    let n = a.nrows();
    if n == 0 {
        return Some(0.0);
    }
    let (b, scale) = pow2_scaled(a)?;
    let b = (&b + b.transpose()) * 0.5;
    let est = b.clone().try_symmetric_eigen(f64::EPSILON, NALGEBRA_MAX_ITERS).map(|e| e.eigenvalues.max()).filter(|l| l.is_finite()).unwrap_or(0.0);
    let floor = 4.0 * n as f64 * f64::EPSILON;
    let base = est.max(floor * b.norm());
    for delta in [1e-13, 1e-11, 1e-9, 1e-7, 1e-5] {
        let t = base * (1.0 + delta);
        if t > 0.0 && positive_definite(&b, t, floor * t) {
            return Some(t * scale);
        }
    }
    let top = sym_eigenvalues(&b)?.first().copied().unwrap_or(0.0).max(0.0);
    Some(top * (1.0 + 1e-11) * scale)
}

/// Whether `t I - b` has a Cholesky factorisation with every pivot above `floor`.
fn positive_definite(b: &DMatrix<f64>, t: f64, floor: f64) -> bool {
    let n = b.nrows();
    let mut l = DMatrix::<f64>::zeros(n, n);
    for j in 0..n {
        let mut d = t - b[(j, j)];
        for k in 0..j {
            d -= l[(j, k)] * l[(j, k)];
        }
        if !(d > floor) {
            return false;
        }
        let dj = d.sqrt();
        l[(j, j)] = dj;
        for i in j + 1..n {
            let mut v = -b[(i, j)];
            for k in 0..j {
                v -= l[(i, k)] * l[(j, k)];
            }
            l[(i, j)] = v / dj;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `U S V^T = A`, orthonormal columns where `s > 0`, and `sum s^2 = ||A||_F^2`, for
    /// both the checked SVD and Jacobi alone.
    fn check_decomposition(a: &DMatrix<f64>) -> Svd {
        check_one(a, svd_jacobi(a));
        check_one(a, svd(a).unwrap())
    }

    fn check_one(a: &DMatrix<f64>, svd: Svd) -> Svd {
        let r = a.nrows().min(a.ncols());
        assert_eq!(svd.singular_values.len(), r);
        let rec = &svd.u * DMatrix::from_diagonal(&svd.singular_values) * svd.v.transpose();
        let scale = a.norm().max(1.0);
        assert!((&rec - a).norm() <= 1e-13 * scale, "reconstruction off by {}", (&rec - a).norm());
        let live: Vec<usize> = (0..r).filter(|&j| svd.singular_values[j] > 1e-12 * scale).collect();
        for &i in &live {
            for &j in &live {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((svd.u.column(i).dot(&svd.u.column(j)) - want).abs() < 1e-13);
                assert!((svd.v.column(i).dot(&svd.v.column(j)) - want).abs() < 1e-13);
            }
        }
        let ss: f64 = svd.singular_values.iter().map(|s| s * s).sum();
        assert!((ss - a.norm_squared()).abs() <= 1e-13 * a.norm_squared().max(1.0));
        assert!(svd.singular_values.as_slice().windows(2).all(|w| w[0] >= w[1]));
        svd
    }

    /// The 5 x 3 matrix on which nalgebra 0.34's SVD returned a decomposition 0.09 off (the
    /// multiplicity-1 means of classes 2, 3, 4 of a K = 5, d = 5 solve), and the least-squares
    /// weights of their scaled sum, which are exact by construction.
    #[test]
    fn svd_of_the_matrix_nalgebra_got_wrong() {
        let cols = [
            [0.1449769242026039, 0.4869255220777853, -1.0571744492097148, 0.09412964176126382, 0.12389450644062258],
            [-0.7343236536129354, 0.32796806991747507, 0.4379197009236575, -0.28007041354978246, 0.6949355553168317],
            [-0.34165761158346475, -0.11438510863485604, 0.2448643347392827, 0.927814856368131, -0.5910414271921351],
        ];
        let a = DMatrix::from_fn(5, 3, |i, j| cols[j][i]);
        // nalgebra's own answer fails the check, so the checked SVD falls back to Jacobi.
        assert!(checked_nalgebra_svd(&a).is_none());
        let svd = check_decomposition(&a);
        let y = &a * DVector::from_element(3, 0.8051390719019268);
        let c = svd.solve(&y, 1e-12 * svd.max());
        assert!(c.iter().all(|&w| (w - 0.8051390719019268).abs() < 1e-13), "{c:?}");
    }

    /// All-ones L x K is the outer product of two all-ones vectors: one singular value
    /// sqrt(L K), the rest 0 (the closed-form family reported in nalgebra#1172).
    #[test]
    fn svd_of_all_ones_is_rank_one() {
        for l in 1..=9 {
            for k in 1..=9 {
                let svd = check_decomposition(&DMatrix::from_element(l, k, 1.0));
                assert!((svd.singular_values[0] - ((l * k) as f64).sqrt()).abs() < 1e-13);
                assert!(svd.singular_values.iter().skip(1).all(|&s| s < 1e-13));
            }
        }
    }

    #[test]
    fn svd_of_random_and_rank_deficient_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &(m, n) in &[(1, 1), (3, 3), (5, 3), (3, 5), (20, 7), (7, 20), (50, 49)] {
            let a = DMatrix::from_fn(m, n, |_, _| rng.random_range(-1.0..1.0));
            check_decomposition(&a);
            // Rank 2 by construction: exactly two non-zero singular values.
            if m >= 2 && n >= 2 {
                let x = DMatrix::from_fn(m, 2, |_, _| rng.random_range(-1.0..1.0));
                let y = DMatrix::from_fn(2, n, |_, _| rng.random_range(-1.0..1.0));
                let svd = check_decomposition(&(x * y));
                assert!(svd.singular_values.iter().skip(2).all(|&s| s < 1e-13 * svd.max()));
            }
        }
        // The full-rank integer matrix of nalgebra#1172: sum of squares 21.
        let a = DMatrix::from_row_slice(3, 3, &[1.0, 2.0, 2.0, 2.0, -1.0, -1.0, 2.0, 1.0, -1.0]);
        check_decomposition(&a);
    }

    /// Centering matrix I - 11^T/K: eigenvalue 1 (K - 1 times) and 0; and, for random
    /// symmetric matrices, the trace and Frobenius identities sum(l) = tr A and
    /// Non-finite entries give `None`; huge and tiny entries are scaled, so nothing
    /// overflows: the singular values of `c A` are `|c|` times those of A.
    #[test]
    fn non_finite_and_extreme_matrices() {
        let mut a = DMatrix::from_fn(4, 3, |i, j| (i as f64 + 1.0) * (j as f64 - 0.7));
        let base = svd(&a).unwrap().singular_values;
        for c in [1e300, 1e-300, -3e-300] {
            let sv = svd(&(&a * c)).unwrap().singular_values;
            for (x, y) in sv.iter().zip(base.iter()) {
                assert!((x - c.abs() * y).abs() <= 1e-12 * c.abs() * base[0], "c = {c}: {x} vs {}", c.abs() * y);
            }
            let ev = sym_eigenvalues(&(a.transpose() * &a * c)).unwrap();
            assert!(ev.iter().all(|x| x.is_finite()));
        }
        // Subnormal entries: finite results (their few bits of precision are all there is).
        assert!(svd(&(&a * 3e-320)).unwrap().singular_values.iter().all(|x| x.is_finite()));
        a[(1, 2)] = f64::NAN;
        assert!(svd(&a).is_none());
        a[(1, 2)] = f64::INFINITY;
        assert!(svd(&a).is_none());
        assert!(sym_eigenvalues(&DMatrix::from_element(2, 2, f64::NAN)).is_none());
    }

    /// The bound is above the largest eigenvalue (Jacobi's, independent) and within 1e-9 of it,
    /// on random PSD matrices and on the simplex-ETF Gram matrix (K-1 equal eigenvalues).
    #[test]
    fn eigenvalue_upper_bound_is_tight_and_above() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut mats: Vec<DMatrix<f64>> = [1, 2, 5, 30, 100]
            .iter()
            .map(|&n| {
                let b = DMatrix::from_fn(n, 2 * n, |_, _| rng.random_range(-1.0..1.0));
                &b * b.transpose()
            })
            .collect();
        mats.push((DMatrix::<f64>::identity(10, 10) - DMatrix::from_element(10, 10, 0.1)) * 3.7e-5);
        for a in &mats {
            let top = sym_eigenvalues(a).unwrap()[0];
            let ub = eigenvalue_upper_bound(a).unwrap();
            assert!(ub >= top && ub <= top * (1.0 + 1e-9), "{ub} against {top}");
        }
        assert!(eigenvalue_upper_bound(&DMatrix::from_element(3, 3, f64::NAN)).is_none());
        assert_eq!(eigenvalue_upper_bound(&DMatrix::zeros(4, 4)), Some(0.0));
    }

    /// sum(l^2) = ||A||_F^2, with every l a root of det(A - l I) (checked by the smallest
    /// singular value of A - l I).
    #[test]
    fn symmetric_eigenvalues() {
        for k in [2, 5, 17] {
            let c = DMatrix::<f64>::identity(k, k) - DMatrix::from_element(k, k, 1.0 / k as f64);
            let ev = sym_eigenvalues(&c).unwrap();
            assert!(ev[..k - 1].iter().all(|&l| (l - 1.0).abs() < 1e-14) && ev[k - 1].abs() < 1e-14, "{ev:?}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for n in [1, 2, 3, 10, 40] {
            let b = DMatrix::from_fn(n, n, |_, _| rng.random_range(-1.0..1.0));
            let a = &b + b.transpose();
            let ev = sym_eigenvalues(&a).unwrap();
            assert!((ev.iter().sum::<f64>() - a.trace()).abs() < 1e-12);
            let s2 = ev.iter().map(|l| l * l).sum::<f64>();
            assert!((s2 - a.norm_squared()).abs() < 1e-11 * a.norm_squared(), "n={n}: {s2} vs {}", a.norm_squared());
            for &l in &ev {
                let shifted = &a - DMatrix::<f64>::identity(n, n) * l;
                let smin = svd(&shifted).unwrap().singular_values.iter().copied().fold(f64::INFINITY, f64::min);
                assert!(smin < 1e-12 * a.norm(), "{l} is not an eigenvalue (smallest singular value {smin})");
            }
        }
    }
}
