//! The stiff-direction preconditioner of the UFM features, for the solver's initial inverse
//! Hessian (docs/theory.md §6).
//!
//! # What it is
//! At the optimum, the Hessian of the UFM objective has a bulk of eigenvalues between
//! lambda and about 14 lambda, and exactly `sum_i (|S_i| - 1)` eigenvalues 100 to 2,000 times
//! larger: for each sample with several labels, the directions that move the logits of its
//! own labels apart (its labels share the probability, so the softmax curvature `p_a p_b` is
//! large there; `examples/hessian_spectrum.rs`; docs/performance.md). A few
//! stored L-BFGS pairs cannot resolve thousands of them. For the features `h_i` of such a
//! sample, that curvature is known in closed form: the loss's Hessian in `h_i` is
//! `(1/N) W^T A_i W`, with `A_i = c (diag p - p p^T)` the softmax Hessian (`c` the loss's
//! weight), and its large part is the block of the labels in `S_i`:
//! `(1/N) B_i^T A_S B_i`, with `B_i` the rows of W of those labels and `A_S` the block of
//! `A_i` (a principal submatrix of a positive semidefinite matrix, so PSD).
//!
//! The solver's `H0 = diag(gamma_b I)` becomes `H0 = diag(gamma_b) P` with `P = I` except on
//! those features, where
//!
//! ```text
//! P_i = (I + tau B_i^T A_S B_i)^-1 = I - B_i^T M_i B_i,   M_i = tau (I + tau A_S G_i)^-1 A_S,
//! ```
//!
//! `G_i = B_i B_i^T` (the push-through identity `(I + U^T V)^-1 = I - U^T (I + V U^T)^-1 V`
//! with `U = B_i`, `V = tau A_S B_i`), and `tau = 1 / (N c0)`, `c0 = PRE_C0 lambda_h`: `P_i`
//! scales the stiff directions down to the curvature `c0`, near the top of the bulk. `P` is
//! symmetric positive definite for any W and p, so L-BFGS keeps its guarantees; it changes
//! with the iterate (W and p), so the solver recomputes every product that involves it (see
//! `solver::lbfgs`). Only `|S_i| - 1` directions per sample are stiff, but the whole
//! `|S| x |S|` block is used, as the probabilities outside the set are small.
//!
//! Per sample, `P_i v` needs `|S|` dot products of length d, an `|S| x |S|` solve, and `|S|`
//! axpys: a few hundred flops against the `6 K d` of the sample's share of the products.

use crate::model::labels::LabelSets;
use crate::solver::problem::{RangePreconditioner, QUAD_MAX};

use crate::kernels::cpu::{Isa, LaneLoad, Lanes, LANES};
use crate::model::loss::Loss;

/// Samples with more labels than this are left unpreconditioned (`P_i = I`).
pub const MAX_RANK: usize = 4;

/// `c0 = PRE_C0 lambda_h`: the curvature the stiff directions are scaled to. Measured with
/// `examples/precond_lbfgs.rs` (whole-vector L-BFGS, seeds 0 to 5): 10 gave the fewest
/// evaluations on E (median 122 against 146.5 without, and 124.5 at 30, 116 at 3 but more on
/// D, B, C at 3).
pub const PRE_C0: f64 = 10.0;

/// Largest estimated cost of the preconditioner, as a fraction of the products' (see
/// [`PreLayout::worth_it`]).
pub const PRE_MAX_COST: f64 = 0.1;

/// Which samples are preconditioned and where their numbers live (fixed per problem).
#[derive(Debug, Clone, Default)]
pub struct PreLayout {
    /// Rank `|S_i|` of each sample's block (0: not preconditioned).
    pub rank: Vec<u8>,
    /// `off[i]`: start of sample i's `|S_i|` projections (length N + 1).
    pub off: Vec<usize>,
    /// `moff[i]`: start of sample i's `|S_i|^2` entries of M (length N + 1).
    pub moff: Vec<usize>,
}

impl PreLayout {
    /// The layout for these label sets and loss: samples with 2 to [`MAX_RANK`] labels, for
    /// the softmax losses (the one-vs-all BCE's Hessian has no such coupling).
    pub fn new(labels: &LabelSets, loss: Loss) -> Self {
        if loss == Loss::Bce {
            return PreLayout::default();
        }
        let rank: Vec<u8> = labels
            .set_of
            .iter()
            .map(|&s| {
                let r = labels.sets[s as usize].len();
                if (2..=MAX_RANK).contains(&r) {
                    r as u8
                } else {
                    0
                }
            })
            .collect();
        if rank.iter().all(|&r| r == 0) {
            return PreLayout::default();
        }
        let (mut off, mut moff) = (vec![0usize; rank.len() + 1], vec![0usize; rank.len() + 1]);
        for (i, &r) in rank.iter().enumerate() {
            off[i + 1] = off[i] + r as usize;
            moff[i + 1] = moff[i] + (r as usize) * (r as usize);
        }
        PreLayout { rank, off, moff }
    }

    /// Whether any sample is preconditioned.
    pub fn active(&self) -> bool {
        !self.rank.is_empty()
    }

    /// Whether the preconditioner should run: its estimated work per evaluation, about
    /// `8 r d + 30 r^3` flops per sample of rank r (projections of the gradient and the stored
    /// y's, the correction, and the `r x r` factors), is at most [`PRE_MAX_COST`] of the
    /// products' `6 K d` per sample. Measured: on preset E (K = 100, two labels; 3%) it saves
    /// 16% of the time; on D (K = 50, three labels; 12%) it cuts the evaluations by a fifth
    /// (medians of seeds 0 to 7: 130.5 to 103.5) but costs 40% more per evaluation (10.4 to
    /// 14.6 ms), and on C (41%) 85 to 78 evaluations at 0.51 to 0.93 ms each: slower on both.
    pub fn worth_it(&self, k: usize, d: usize) -> bool {
        if !self.active() {
            return false;
        }
        let work: f64 = self
            .rank
            .iter()
            .filter(|&&r| r > 0)
            .map(|&r| {
                let r = r as f64;
                8.0 * r * d as f64 + 30.0 * r * r * r
            })
            .sum();
        work <= PRE_MAX_COST * 6.0 * (k * d * self.rank.len()) as f64
    }

    /// Total number of projections per vector (`sum_i |S_i|` over preconditioned samples).
    pub fn total(&self) -> usize {
        self.off.last().copied().unwrap_or(0)
    }
}

/// The factors at one evaluated point: `W^T` (d x K, column a is row a of W) and every
/// `M_i` (row-major).
#[derive(Debug, Clone, Default)]
pub struct PreFactors {
    /// `W^T`, d x K.
    pub wt: Vec<f64>,
    /// The `M_i`, at `PreLayout::moff`.
    pub m: Vec<f64>,
}

/// `M = tau (I + tau A G)^-1 A` for one sample, from its logits' gradient column.
///
/// `grad` is the column of `dL/dZ / N` of the sample (what the objective leaves in Z),
/// `set` its labels, `wwt` the K x K matrix `W W^T` (column-major), `c` the loss's weight for
/// `|S|` labels, `inv_n = 1/N`, `tau = 1 / (N c0)`. For the softmax losses the gradient is
/// `(c / N) (p_k - [k in S] / |S|)`, so `p_k = N grad_k / c + [k in S] / |S|` for k in S.
#[allow(clippy::too_many_arguments)]
pub fn sample_m(grad: &[f64], set: &[usize], wwt: &[f64], k: usize, c: f64, inv_n: f64, tau: f64, out: &mut [f64]) {
    match set.len() {
        2 => sample_m_r::<2>(grad, set, wwt, k, c, inv_n, tau, out),
        3 => sample_m_r::<3>(grad, set, wwt, k, c, inv_n, tau, out),
        4 => sample_m_r::<4>(grad, set, wwt, k, c, inv_n, tau, out),
        r => panic!("sample_m: {r} labels (2 to {MAX_RANK})"),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn sample_m_r<const R: usize>(grad: &[f64], set: &[usize], wwt: &[f64], k: usize, c: f64, inv_n: f64, tau: f64, out: &mut [f64]) {
    let set: &[usize; R] = set.try_into().expect("R labels");
    let scale = 1.0 / (c * inv_n);
    let p: [f64; R] = std::array::from_fn(|i| grad[set[i]] * scale + 1.0 / R as f64);
    // A = c (diag p - p p^T); L = I + tau A G; M = L^-1 (tau A).
    let a: [[f64; R]; R] = std::array::from_fn(|i| std::array::from_fn(|j| c * (if i == j { p[i] } else { 0.0 } - p[i] * p[j])));
    let g: [[f64; R]; R] = std::array::from_fn(|q| std::array::from_fn(|j| wwt[set[q] + k * set[j]]));
    let mut l: [[f64; R]; R] = std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let mut ag = 0.0;
            for q in 0..R {
                ag += a[i][q] * g[q][j];
            }
            (if i == j { 1.0 } else { 0.0 }) + tau * ag
        })
    });
    let mut x: [[f64; R]; R] = std::array::from_fn(|i| std::array::from_fn(|j| tau * a[i][j]));
    solve_fixed(&mut l, &mut x);
    for i in 0..R {
        out[i * R..(i + 1) * R].copy_from_slice(&x[i]);
    }
}

/// Solves `L X = R` in place (`X` into `x`) by Gaussian elimination with partial pivoting.
/// `L = I + tau A G` has eigenvalues >= 1 (those of `A G` are those of `A^1/2 G A^1/2`,
/// PSD), so it is never singular.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // row and column indices walk two arrays together
fn solve_fixed<const R: usize>(l: &mut [[f64; R]; R], x: &mut [[f64; R]; R]) {
    for col in 0..R {
        let mut piv = col;
        for i in col + 1..R {
            if l[i][col].abs() > l[piv][col].abs() {
                piv = i;
            }
        }
        l.swap(piv, col);
        x.swap(piv, col);
        let d = l[col][col];
        for i in col + 1..R {
            let f = l[i][col] / d;
            for q in 0..R {
                l[i][q] -= f * l[col][q];
                x[i][q] -= f * x[col][q];
            }
        }
    }
    for col in (0..R).rev() {
        let d = l[col][col];
        for q in 0..R {
            let mut v = x[col][q];
            for j in col + 1..R {
                v -= l[col][j] * x[j][q];
            }
            x[col][q] = v / d;
        }
    }
}

/// The preconditioner's factors over one chunk of samples, as the solver's hooks see them.
pub struct SamplePre<'a> {
    /// First sample of the chunk and their number.
    pub first: usize,
    /// Number of samples.
    pub count: usize,
    /// Feature dimension and classes.
    pub d: usize,
    /// Classes.
    pub k: usize,
    /// The problem's layout.
    pub layout: &'a PreLayout,
    /// Label sets and per-sample set index.
    pub labels: &'a LabelSets,
    /// `W^T` of the point (d x K).
    pub wt: &'a [f64],
    /// The chunk's `M_i` entries (from `layout.moff[first]`).
    pub m: &'a [f64],
    /// Instruction set of the per-sample loops.
    pub isa: Isa,
}

impl SamplePre<'_> {
    /// The chunk's projections, as indices into a vector of [`PreLayout::total`].
    pub fn proj_range(&self) -> std::ops::Range<usize> {
        self.layout.off[self.first]..self.layout.off[self.first + self.count]
    }

    fn rows(&self, i: usize) -> (&[usize], usize, usize) {
        let s = i - self.first;
        let set = &self.labels.sets[self.labels.set_of[i] as usize];
        (set, s * self.d, self.layout.off[i] - self.layout.off[self.first])
    }

    /// `out = (B_i v_i)` for every preconditioned sample of the chunk; `v` is the chunk's
    /// range of a vector (d per sample), `out` has [`proj_range`](Self::proj_range)'s length.
    pub fn project<T: LaneLoad>(&self, v: &[T], out: &mut [f64]) {
        self.isa.run(
            #[inline(always)]
            || self.project_body(v, out),
        )
    }

    #[inline(always)]
    fn project_body<T: LaneLoad>(&self, v: &[T], out: &mut [f64]) {
        for i in self.first..self.first + self.count {
            // The rank as a constant, so that the accumulators live in registers.
            match self.layout.rank[i] {
                2 => self.project_sample::<2, T>(i, v, out),
                3 => self.project_sample::<3, T>(i, v, out),
                4 => self.project_sample::<4, T>(i, v, out),
                _ => {}
            }
        }
    }

    /// [`project`](Self::project) for one sample of rank `R`.
    #[inline(always)]
    fn project_sample<const R: usize, T: LaneLoad>(&self, i: usize, v: &[T], out: &mut [f64]) {
        let d = self.d;
        let n8 = d / LANES * LANES;
        let (set, at, po) = self.rows(i);
        let rows: [&[f64]; R] = std::array::from_fn(|q| &self.wt[set[q] * d..(set[q] + 1) * d]);
        let vs = &v[at..at + d];
        // Every row against v in one pass, eight lanes per row, in a fixed order.
        let mut l = [Lanes::default(); R];
        let mut j = 0;
        while j < n8 {
            let x = T::lanes(&vs[j..]);
            for q in 0..R {
                l[q] = l[q].add_mul(&Lanes::load(&rows[q][j..]), &x);
            }
            j += LANES;
        }
        let sums = Lanes::hsums(l);
        for q in 0..R {
            let tail: f64 = (n8..d).map(|j| rows[q][j] * vs[j].into()).sum();
            out[po + q] = sums[q] + tail;
        }
    }

    /// `out[idx[u] stride + idx[v]] = sum_i a_u,i^T M_i a_v,i` for every pair of the `n`
    /// projections `a` (as from [`project`](Self::project)), in one pass over the chunk's
    /// samples.
    pub fn quads(&self, a: &[&[f64]], idx: &[usize], stride: usize, out: &mut [f64]) {
        let n = a.len();
        assert!(n <= QUAD_MAX && idx.len() == n);
        for &u in idx {
            for &v in idx {
                out[u * stride + v] = 0.0;
            }
        }
        let mut mb = [[0.0f64; MAX_RANK]; QUAD_MAX];
        for i in self.first..self.first + self.count {
            let r = self.layout.rank[i] as usize;
            if r == 0 {
                continue;
            }
            let po = self.layout.off[i] - self.layout.off[self.first];
            let mo = self.layout.moff[i] - self.layout.moff[self.first];
            let m = &self.m[mo..mo + r * r];
            for (v, av) in a.iter().enumerate() {
                for p in 0..r {
                    mb[v][p] = (0..r).map(|q| m[p * r + q] * av[po + q]).sum();
                }
            }
            for (u, au) in a.iter().enumerate() {
                for v in u..n {
                    let s: f64 = (0..r).map(|p| au[po + p] * mb[v][p]).sum();
                    out[idx[u] * stride + idx[v]] += s;
                }
            }
        }
        for u in 0..n {
            for v in 0..u {
                out[idx[u] * stride + idx[v]] = out[idx[v] * stride + idx[u]];
            }
        }
    }

    /// Adds `delta = -B_i^T M_i t_i` to the features of every preconditioned sample of the
    /// chunk in the direction `dir` (stored f32: each entry is rounded again), moves `x` by
    /// `a` times each entry's change, and returns the change of `dir . g`. `t` holds the
    /// chunk's projections of the vector being preconditioned (`P v = v + delta` for
    /// `t = (B v)`). Slices are the chunk's ranges.
    pub fn correct(&self, t: &[f64], dir: &mut [f32], x: &mut [f64], g: &[f64], a: f64) -> f64 {
        self.isa.run(
            #[inline(always)]
            || self.correct_body(|j| t[j], dir, x, g, a),
        )
    }

    /// `u = M_i t_i` of sample i.
    #[inline(always)]
    fn sample_u(&self, i: usize, r: usize, po: usize, t: &impl Fn(usize) -> f64) -> [f64; MAX_RANK] {
        let mo = self.layout.moff[i] - self.layout.moff[self.first];
        let m = &self.m[mo..mo + r * r];
        let mut tv = [0.0f64; MAX_RANK];
        for (q, tq) in tv.iter_mut().enumerate().take(r) {
            *tq = t(po + q);
        }
        let mut u = [0.0f64; MAX_RANK];
        for p in 0..r {
            u[p] = (0..r).map(|q| m[p * r + q] * tv[q]).sum();
        }
        u
    }

    #[inline(always)]
    fn correct_body(&self, t: impl Fn(usize) -> f64, dir: &mut [f32], x: &mut [f64], g: &[f64], a: f64) -> f64 {
        let mut lanes = Lanes::default();
        let mut tail_dg = 0.0;
        for i in self.first..self.first + self.count {
            // The rank as a constant, so that the loop over the rows unrolls.
            match self.layout.rank[i] {
                2 => self.correct_sample::<2>(i, &t, dir, x, g, a, &mut lanes, &mut tail_dg),
                3 => self.correct_sample::<3>(i, &t, dir, x, g, a, &mut lanes, &mut tail_dg),
                4 => self.correct_sample::<4>(i, &t, dir, x, g, a, &mut lanes, &mut tail_dg),
                _ => {}
            }
        }
        Lanes::hsums([lanes])[0] + tail_dg
    }

    /// [`correct`](Self::correct) for one sample of rank `R`: adds its share of the change of
    /// `dir . g` into `lanes` (the full blocks of eight) and `tail_dg` (the rest).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn correct_sample<const R: usize>(
        &self,
        i: usize,
        t: &impl Fn(usize) -> f64,
        dir: &mut [f32],
        x: &mut [f64],
        g: &[f64],
        a: f64,
        lanes: &mut Lanes,
        tail_dg: &mut f64,
    ) {
        let d = self.d;
        let n8 = d / LANES * LANES;
        let av = Lanes::splat(a);
        let (set, at, po) = self.rows(i);
        let u = self.sample_u(i, R, po, t);
        let rows: [&[f64]; R] = std::array::from_fn(|q| &self.wt[set[q] * d..(set[q] + 1) * d]);
        let (dv, xv, gv) = (&mut dir[at..at + d], &mut x[at..at + d], &g[at..at + d]);
        let mut j = 0;
        while j < n8 {
            let mut delta = Lanes::default();
            for q in 0..R {
                delta = delta.add_mul(&Lanes::load(&rows[q][j..]), &Lanes::splat(u[q]));
            }
            let old = Lanes::widen(&dv[j..]);
            let new = old.sub(&delta).round_store_f32(&mut dv[j..]);
            let change = new.sub(&old);
            Lanes::load(&xv[j..]).add_mul(&av, &change).store(&mut xv[j..]);
            *lanes = lanes.add_mul(&change, &Lanes::load(&gv[j..]));
            j += LANES;
        }
        for j in n8..d {
            let delta: f64 = (0..R).map(|q| rows[q][j] * u[q]).sum();
            let old = f64::from(dv[j]);
            let new = (old - delta) as f32;
            dv[j] = new;
            let change = f64::from(new) - old;
            xv[j] += a * change;
            *tail_dg += change * gv[j];
        }
    }
}

impl RangePreconditioner for SamplePre<'_> {
    fn proj_range(&self) -> std::ops::Range<usize> {
        SamplePre::proj_range(self)
    }
    fn project(&self, v: &[f64], out: &mut [f64]) {
        SamplePre::project(self, v, out)
    }
    fn project_f32(&self, v: &[f32], out: &mut [f64]) {
        SamplePre::project(self, v, out)
    }
    fn quads(&self, a: &[&[f64]], idx: &[usize], stride: usize, out: &mut [f64]) {
        SamplePre::quads(self, a, idx, stride, out)
    }
    fn correct(&self, t: &[f64], dir: &mut [f32], x: &mut [f64], g: &[f64], a: f64) -> f64 {
        SamplePre::correct(self, t, dir, x, g, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::UfmConfig;
    use nalgebra::{DMatrix, DVector};
    use rand::{Rng, SeedableRng};

    /// The softmax of `z`.
    fn softmax(z: &[f64]) -> Vec<f64> {
        let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// A small problem with random W, and every sample's factors from random logits:
    /// (labels, layout, W^T, M of all samples, the dense P_i of every sample).
    struct Case {
        labels: LabelSets,
        layout: PreLayout,
        k: usize,
        d: usize,
        wt: Vec<f64>,
        m: Vec<f64>,
        p_dense: Vec<Option<DMatrix<f64>>>,
    }

    fn case(loss: Loss) -> Case {
        let (k, d) = (6, 11);
        let cfg = UfmConfig { classes: k, max_labels: 4, dim: d, per_set: vec![1], lambda_w: 1e-3, lambda_h: 2e-3, lambda_b: 1e-3, loss }.validate().unwrap();
        let labels = cfg.labels.clone();
        let n = labels.samples();
        let layout = PreLayout::new(&labels, loss);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let w = DMatrix::<f64>::from_fn(k, d, |_, _| rng.random::<f64>() - 0.5);
        let wt: Vec<f64> = (0..k).flat_map(|a| (0..d).map(|j| w[(a, j)]).collect::<Vec<_>>()).collect();
        let wwt = &w * w.transpose();
        let (inv_n, tau) = (1.0 / n as f64, 1.0 / (n as f64 * PRE_C0 * 2e-3));
        let mut m = vec![0.0; layout.moff[n]];
        let mut p_dense = Vec::new();
        for i in 0..n {
            let set = &labels.sets[labels.set_of[i] as usize];
            if layout.rank[i] == 0 {
                p_dense.push(None);
                continue;
            }
            let r = set.len();
            let z: Vec<f64> = (0..k).map(|_| 3.0 * (rng.random::<f64>() - 0.5)).collect();
            let p = softmax(&z);
            let c = loss.weight(r);
            // The loss gradient column the objective leaves in Z: (c / N)(p - [k in S] / r).
            let grad: Vec<f64> = (0..k).map(|a| c * inv_n * (p[a] - if set.contains(&a) { 1.0 / r as f64 } else { 0.0 })).collect();
            sample_m(&grad, set, wwt.as_slice(), k, c, inv_n, tau, &mut m[layout.moff[i]..layout.moff[i + 1]]);
            // Independently: P_i = (I + tau B^T A_S B)^-1 with A_S from the softmax itself.
            let a = DMatrix::from_fn(r, r, |x, y| c * (if x == y { p[set[x]] } else { 0.0 } - p[set[x]] * p[set[y]]));
            let b = DMatrix::from_fn(r, d, |q, j| w[(set[q], j)]);
            let pi = (DMatrix::identity(d, d) + b.transpose() * a * b * tau).try_inverse().unwrap();
            p_dense.push(Some(pi));
        }
        Case { labels, layout, k, d, wt, m, p_dense }
    }

    impl Case {
        fn view(&self, isa: Isa) -> SamplePre<'_> {
            SamplePre {
                first: 0,
                count: self.labels.samples(),
                d: self.d,
                k: self.k,
                layout: &self.layout,
                labels: &self.labels,
                wt: &self.wt,
                m: &self.m,
                isa,
            }
        }
        fn b(&self, i: usize) -> DMatrix<f64> {
            let set = &self.labels.sets[self.labels.set_of[i] as usize];
            DMatrix::from_fn(set.len(), self.d, |q, j| self.wt[set[q] * self.d + j])
        }
    }

    /// `I - B_i^T M_i B_i` from `sample_m` is `(I + tau B_i^T A_S B_i)^-1` (Woodbury), with
    /// `A_S` computed from the softmax rather than recovered from the gradient, for 2, 3 and
    /// 4 labels and both softmax losses.
    #[test]
    fn sample_m_gives_the_inverse_of_the_stiff_curvature() {
        for loss in [Loss::Pal, Loss::PalMean] {
            let cs = case(loss);
            let mut ranks = std::collections::BTreeSet::new();
            for (i, pd) in cs.p_dense.iter().enumerate() {
                let Some(pd) = pd else { continue };
                let r = cs.layout.rank[i] as usize;
                ranks.insert(r);
                let mi = DMatrix::from_row_slice(r, r, &cs.m[cs.layout.moff[i]..cs.layout.moff[i + 1]]);
                let b = cs.b(i);
                let got = DMatrix::identity(cs.d, cs.d) - b.transpose() * mi * b;
                assert!((&got - pd).norm() <= 1e-12 * pd.norm(), "sample {i}, rank {r}");
                // Not vacuous: P_i is far from the identity.
                assert!((pd - DMatrix::identity(cs.d, cs.d)).norm() > 1e-3, "sample {i}");
            }
            assert_eq!(ranks.into_iter().collect::<Vec<_>>(), vec![2, 3, 4]);
        }
    }

    /// `project`, `quads` and `correct` against dense products with `B_i` and `P_i`, on both
    /// instruction sets this host runs, which must give the same bits.
    #[test]
    fn chunk_operations_match_dense_products_on_every_path() {
        let cs = case(Loss::Pal);
        let (n, d) = (cs.labels.samples(), cs.d);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let v: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let v32: Vec<f32> = (0..n * d).map(|_| (rng.random::<f64>() - 0.5) as f32).collect();
        let g: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let isas = Isa::available();
        let total = cs.layout.total();
        assert_eq!(cs.view(isas[0]).proj_range(), 0..total);
        let run = |isa: Isa| {
            let pre = cs.view(isa);
            let (mut pv, mut pw) = (vec![0.0; total], vec![0.0; total]);
            pre.project(&v, &mut pv);
            pre.project(&v32, &mut pw);
            let mut q = vec![0.0; 4];
            pre.quads(&[&pv, &pw], &[0, 1], 2, &mut q);
            // correct: P applied to v32 (t = B v32), x moved by a = 0.5 times the change.
            let (mut dir, mut x) = (v32.clone(), vec![0.0; n * d]);
            let dg = pre.correct(&pw, &mut dir, &mut x, &g, 0.5);
            (pv, pw, q, dir, x, dg)
        };
        let (pv, pw, q, dir, x, dg) = run(isas[0]);
        let (mut want_q, mut want_dg) = ([0.0; 4], 0.0);
        for i in 0..n {
            let at = i * d;
            let vi = DVector::from_column_slice(&v[at..at + d]);
            let wi = DVector::from_fn(d, |j, _| f64::from(v32[at + j]));
            let Some(pd) = &cs.p_dense[i] else {
                assert!(dir[at..at + d] == v32[at..at + d] && x[at..at + d].iter().all(|&e| e == 0.0));
                continue;
            };
            let (b, po, r) = (cs.b(i), cs.layout.off[i], cs.layout.rank[i] as usize);
            let (bv, bw) = (&b * &vi, &b * &wi);
            for q in 0..r {
                assert!((pv[po + q] - bv[q]).abs() <= 1e-14 * (1.0 + bv[q].abs()));
                assert!((pw[po + q] - bw[q]).abs() <= 1e-14 * (1.0 + bw[q].abs()));
            }
            let mi = DMatrix::from_row_slice(r, r, &cs.m[cs.layout.moff[i]..cs.layout.moff[i + 1]]);
            want_q[0] += bv.dot(&(&mi * &bv));
            want_q[1] += bv.dot(&(&mi * &bw));
            want_q[3] += bw.dot(&(&mi * &bw));
            let pw_i = pd * &wi;
            for j in 0..d {
                // The new entry is the f32 rounding of P v (up to the f64 rounding of the sum).
                assert!((f64::from(dir[at + j]) - pw_i[j]).abs() <= 1e-7 * (pw_i[j].abs() + 1e-3), "entry {j} of sample {i}");
                let change = f64::from(dir[at + j]) - f64::from(v32[at + j]);
                assert_eq!(x[at + j], 0.5 * change);
                want_dg += change * g[at + j];
            }
        }
        want_q[2] = want_q[1];
        for (a, b) in q.iter().zip(want_q) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-12), "{a} vs {b}");
        }
        assert!((dg - want_dg).abs() <= 1e-12 * want_dg.abs().max(1.0));
        let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
        for &isa in &isas[1..] {
            let other = run(isa);
            assert_eq!(bits(&pv), bits(&other.0), "{isa:?}");
            assert_eq!(bits(&pw), bits(&other.1), "{isa:?}");
            assert_eq!(bits(&q), bits(&other.2), "{isa:?}");
            assert!(dir.iter().zip(&other.3).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?}");
            assert_eq!(bits(&x), bits(&other.4), "{isa:?}");
            assert_eq!(dg.to_bits(), other.5.to_bits(), "{isa:?}");
        }
    }

    /// The cost rule: on for preset E (K = 100, two labels), off for D (K = 50, three labels)
    /// and for small K; never for BCE (no within-set coupling in its Hessian).
    #[test]
    fn the_preconditioner_runs_where_it_is_cheap() {
        let layout = |name: &str| {
            let cfg = crate::commands::timing::preset(name).unwrap().validate().unwrap();
            (PreLayout::new(&cfg.labels, cfg.config.loss), cfg.config.classes, cfg.config.dim)
        };
        let (e, k, d) = layout("E");
        assert!(e.worth_it(k, d));
        for name in ["A", "B", "C", "D"] {
            let (l, k, d) = layout(name);
            assert!(l.active() && !l.worth_it(k, d), "{name}");
        }
        let cfg = crate::commands::timing::preset("E").unwrap().validate().unwrap();
        assert!(!PreLayout::new(&cfg.labels, Loss::Bce).active());
    }
}
