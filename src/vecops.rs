//! Vector kernels for the solver on long f64 slices, parallel over fixed-size chunks.
//!
//! Reductions are computed per chunk and summed in chunk order. The chunking depends only on
//! the length, never on the thread count, so results are bit-identical for any number of
//! threads. Short vectors run serially with the same chunking (same arithmetic).

use rayon::prelude::*;

/// Elements per chunk.
pub const CHUNK: usize = 1 << 14;
/// Vectors shorter than this run on one thread.
const PARALLEL_MIN: usize = 8 * CHUNK;

/// Number of chunks of a vector of length n.
pub fn chunks(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

/// A raw view that lets disjoint chunks of one slice be written from several threads.
pub struct SharedMut<T = f64> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}

// SAFETY: `SharedMut` is only used through `slice`, whose callers write disjoint ranges
// (the chunks of `reduce`), so no element is accessed by two threads; `T: Send` lets the
// elements be written from another thread.
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Wraps a mutable slice.
    pub fn new(s: &mut [T]) -> Self {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len() }
    }

    /// The sub-slice `r`.
    ///
    /// # Safety
    /// Ranges used concurrently must be disjoint and inside the original slice.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, r: std::ops::Range<usize>) -> &mut [T] {
        assert!(r.end <= self.len);
        // SAFETY: in bounds by the assert; disjointness is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }
}

/// A zero-initialised buffer of `n` elements whose start is shifted by a chosen number of
/// cache lines from its allocation's.
///
/// The solver's vectors are large allocations, which the allocator maps page by page: they
/// all begin at the same offset within a page. The direction pass reads or writes ten of them
/// at once (m = 3), and ten streams at equal page offsets fall into the same set of the
/// 8-way L1 cache, evicting each other. Shifting buffer k by 5k lines gives every stream its
/// own set. Measured with `lbfgs_bookkeeping` on D: see the README.
#[derive(Debug, Clone, Default)]
pub struct Staggered<T> {
    data: Vec<T>,
    off: usize,
    n: usize,
}

impl<T: Copy + Default> Staggered<T> {
    /// `n` zeros, starting `5 k` cache lines into the allocation.
    pub fn zeros(n: usize, k: usize) -> Self {
        let off = 5 * k * 64 / std::mem::size_of::<T>().max(1);
        Staggered { data: vec![T::default(); n + off], off, n }
    }

    /// A copy of `v`, staggered like [`zeros`](Self::zeros).
    pub fn from_slice(v: &[T], k: usize) -> Self {
        let mut s = Self::zeros(v.len(), k);
        s.copy_from_slice(v);
        s
    }
}

impl<T> std::ops::Deref for Staggered<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data[self.off..self.off + self.n]
    }
}

impl<T> std::ops::DerefMut for Staggered<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data[self.off..self.off + self.n]
    }
}

/// `a . b`.
pub fn dot(a: &[f64], b: &[f64], parts: &mut Vec<f64>) -> f64 {
    let mut out = [0.0];
    reduce_many(a.len(), 1, parts, &mut out, |r, acc| acc[0] += a[r.clone()].iter().zip(&b[r]).map(|(x, y)| x * y).sum::<f64>());
    out[0]
}

/// `(a . b, a . a)` in one pass.
pub fn dot2(a: &[f64], b: &[f64], parts: &mut Vec<f64>) -> (f64, f64) {
    let mut out = [0.0; 2];
    reduce_many(a.len(), 2, parts, &mut out, |r, acc| {
        for (x, y) in a[r.clone()].iter().zip(&b[r]) {
            acc[0] += x * y;
            acc[1] += x * x;
        }
    });
    (out[0], out[1])
}

/// Runs `f(range, acc)` over all chunks of `0..n` (in parallel when long): `f` adds into its
/// chunk's `width` accumulators (zeroed first), and the chunks' accumulators are summed in
/// chunk order into `out`, so the result does not depend on the thread count.
/// `parts` is resized as needed (no allocation once it is large enough).
pub fn reduce_many<F>(n: usize, width: usize, parts: &mut Vec<f64>, out: &mut [f64], f: F)
where
    F: Fn(std::ops::Range<usize>, &mut [f64]) + Sync,
{
    let nc = chunks(n);
    if parts.len() < nc * width {
        parts.resize(nc * width, 0.0);
    }
    let parts = &mut parts[..nc * width];
    parts.iter_mut().for_each(|v| *v = 0.0);
    let range = |c: usize| c * CHUNK..((c + 1) * CHUNK).min(n);
    assert!(width > 0, "reduce_many needs at least one accumulator");
    if n >= PARALLEL_MIN {
        parts.par_chunks_mut(width).enumerate().for_each(|(c, acc)| f(range(c), acc));
    } else {
        parts.chunks_mut(width).enumerate().for_each(|(c, acc)| f(range(c), acc));
    }
    out[..width].iter_mut().for_each(|v| *v = 0.0);
    for acc in parts.chunks(width) {
        out[..width].iter_mut().zip(acc).for_each(|(o, a)| *o += a);
    }
}

/// Whether the CPU has AVX2 (checked once). The multi-stream kernels below have a portable
/// lane loop and an AVX2 version doing the same operations per lane in the same order
/// (multiply, then add; no FMA), so results are bit-identical with or without AVX2.
pub(crate) fn has_avx2() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Tests set this to run the portable lane loops on an AVX2 machine.
#[cfg(test)]
static FORCE_PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lanes of the register-blocked kernels (two AVX2 registers of f64).
pub const LANES: usize = 8;

/// Sums eight lanes in a fixed order.
#[inline(always)]
fn hsum(l: &[f64; LANES]) -> f64 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// Elements per sub-block of the curvature pass (the new vectors are re-read from L1 for
/// each pair of stored vectors). Measured side by side with `lbfgs_bookkeeping` on D:
/// 1024 and 512 overflow L1 with m = 3 (40% slower than 128); 64 is no better than 128.
const BLOCK: usize = 128;

/// The solver's direction pass, one read of every stream. The stored vectors are f32; the
/// arithmetic is f64. Writes
/// `out <- round_f32(c_out out + cg g + sum_j c_j v_j)` (the old content of `out` takes
/// part, so `out` may be the buffer of a basis vector being retired), then
/// `x_new <- x + step out` with the rounded `out`, and returns `out . g`.
#[allow(clippy::too_many_arguments)]
pub fn combine_and_step(
    out: &mut [f32],
    c_out: f64,
    terms: &[(&[f32], f64)],
    g: &[f64],
    cg: f64,
    x: &[f64],
    step: f64,
    x_new: &mut [f64],
    parts: &mut Vec<f64>,
) -> f64 {
    let n = out.len();
    assert!(g.len() == n && x.len() == n && x_new.len() == n && terms.iter().all(|t| t.0.len() == n));
    assert!(terms.len() <= MAX_STREAMS, "at most {MAX_STREAMS} stored vectors");
    let (os, xs) = (SharedMut::new(out), SharedMut::new(x_new));
    let mut dg = [0.0];
    reduce_many(n, 1, parts, &mut dg, |r, acc| {
        // SAFETY: `reduce_many` hands out disjoint chunk ranges.
        let (oc, xc) = unsafe { (os.slice(r.clone()), xs.slice(r.clone())) };
        let mut local: [(&[f32], f64); MAX_STREAMS] = [(&[], 0.0); MAX_STREAMS];
        for (l, &(v, c)) in local.iter_mut().zip(terms) {
            *l = (&v[r.clone()], c);
        }
        acc[0] += combine_range(oc, c_out, &local[..terms.len()], &g[r.clone()], cg, &x[r], step, xc);
    });
    dg[0]
}

/// Most stored vectors one pass combines or reads.
pub const MAX_STREAMS: usize = 128;

/// One range of [`combine_and_step`]: every slice is that range of its vector (`oc` of `out`,
/// `g_r` of `g`, ...). Returns the range's share of `out . g`.
#[allow(clippy::too_many_arguments)]
pub fn combine_range(
    oc: &mut [f32],
    c_out: f64,
    terms: &[(&[f32], f64)],
    g: &[f64],
    cg: f64,
    x: &[f64],
    step: f64,
    xc: &mut [f64],
) -> f64 {
    let (s, len) = (0, oc.len());
    assert!(xc.len() == len && g.len() == len && x.len() == len && terms.iter().all(|t| t.0.len() == len));
    let full = len / LANES * LANES;
    let mut lanes = [0.0f64; LANES];
    #[cfg(target_arch = "x86_64")]
    let done = if has_avx2() {
        // SAFETY: AVX2 is present; every slice has at least `full` elements from `s`.
        unsafe { simd::combine(&mut oc[..full], c_out, terms, s, &g[s..s + full], cg, &x[s..s + full], step, &mut xc[..full], &mut lanes) };
        full
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let mut i = done;
    while i < full {
        let mut a = [0.0f64; LANES];
        for l in 0..LANES {
            a[l] = if c_out != 0.0 { c_out * f64::from(oc[i + l]) } else { 0.0 };
            a[l] += cg * g[s + i + l];
        }
        for &(v, c) in terms {
            for l in 0..LANES {
                a[l] += c * f64::from(v[s + i + l]);
            }
        }
        for l in 0..LANES {
            let r = a[l] as f32;
            oc[i + l] = r;
            let rf = f64::from(r);
            xc[i + l] = x[s + i + l] + step * rf;
            lanes[l] += rf * g[s + i + l];
        }
        i += LANES;
    }
    let mut tail = 0.0;
    for i in full..len {
        let mut a = if c_out != 0.0 { c_out * f64::from(oc[i]) } else { 0.0 };
        a += cg * g[s + i];
        for &(v, c) in terms {
            a += c * f64::from(v[s + i]);
        }
        let r = a as f32;
        oc[i] = r;
        let rf = f64::from(r);
        xc[i] = x[s + i] + step * rf;
        tail += rf * g[s + i];
    }
    hsum(&lanes) + tail
}

/// `out <- x + step d` with an f32 direction.
pub fn step_into_f32(x: &[f64], step: f64, d: &[f32], out: &mut [f64], parts: &mut Vec<f64>) {
    let os = SharedMut::new(out);
    let mut none = [0.0];
    reduce_many(x.len(), 1, parts, &mut none, |r, _| {
        // SAFETY: disjoint chunk ranges.
        let oc = unsafe { os.slice(r.clone()) };
        step_range(&x[r.clone()], step, &d[r], oc);
    });
}

/// One range of [`step_into_f32`] (every slice is that range of its vector).
pub fn step_range(x: &[f64], step: f64, d: &[f32], oc: &mut [f64]) {
    assert!(x.len() == oc.len() && d.len() == oc.len());
    for ((o, xv), dv) in oc.iter_mut().zip(x).zip(d) {
        *o = xv + step * f64::from(*dv);
    }
}

/// The solver's curvature pass after an evaluation at `x + a d`, one read of every stream:
/// `y <- round_f32(g_new - g)`, and the dot products (in f64, of the stored f32 values) of the
/// three new vectors `(d, y, g_new)` with every kept basis vector `olds[j]` and with each
/// other, written to `out` as
/// `[olds[0].(d, y, g_new), olds[1].(d, y, g_new), ..., d.d, d.y, d.g_new, y.y, y.g_new, g_new.g_new]`
/// (length `3 olds.len() + 6`).
pub fn curvature_pass(g_new: &[f64], g: &[f64], d: &[f32], y: &mut [f32], olds: &[&[f32]], parts: &mut Vec<f64>, out: &mut [f64]) {
    let n = g.len();
    assert!(g_new.len() == n && d.len() == n && y.len() == n && olds.iter().all(|v| v.len() == n));
    let ys = SharedMut::new(y);
    let k = olds.len();
    assert!(k <= MAX_STREAMS, "at most {MAX_STREAMS} stored vectors");
    reduce_many(n, 3 * k + 6, parts, out, |r, acc| {
        // SAFETY: disjoint chunk ranges.
        let yc = unsafe { ys.slice(r.clone()) };
        let mut local: [&[f32]; MAX_STREAMS] = [&[]; MAX_STREAMS];
        for (l, v) in local.iter_mut().zip(olds) {
            *l = &v[r.clone()];
        }
        curvature_range(&g_new[r.clone()], &g[r.clone()], &d[r], yc, &local[..k], acc);
    });
}

/// One range of [`curvature_pass`], adding its share of the dot products into `acc` (length
/// `3 olds.len() + 6`). Every slice is that range of its vector.
pub fn curvature_range(gn_r: &[f64], g: &[f64], d: &[f32], yc: &mut [f32], olds: &[&[f32]], acc: &mut [f64]) {
    let (k, len) = (olds.len(), yc.len());
    assert!(gn_r.len() == len && g.len() == len && d.len() == len && olds.iter().all(|v| v.len() == len) && acc.len() == 3 * k + 6);
    // The new d and y, widened once per block for the products with the stored vectors.
    let (mut dw_buf, mut yw_buf) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
    let mut s = 0;
    while s < len {
        let e = (s + BLOCK).min(len);
        let yb = &mut yc[s..e];
        let (gn, go, db) = (&gn_r[s..e], &g[s..e], &d[s..e]);
        let (dw, yw) = (&mut dw_buf[..e - s], &mut yw_buf[..e - s]);
        let t6 = diff_and_dots6(gn, go, db, yb, dw, yw);
        acc[3 * k..3 * k + 6].iter_mut().zip(t6).for_each(|(a, v)| *a += v);
        // Two stored vectors per sweep: two streams in flight, and half the re-reads.
        for (j, pair) in olds.chunks(2).enumerate() {
            let t = if pair.len() == 2 {
                dots_pair(&pair[0][s..e], &pair[1][s..e], dw, yw, gn)
            } else {
                let t3 = dots3(&pair[0][s..e], dw, yw, gn);
                [t3[0], t3[1], t3[2], 0.0, 0.0, 0.0]
            };
            let w = 3 * pair.len();
            acc[6 * j..6 * j + w].iter_mut().zip(t).for_each(|(a, v)| *a += v);
        }
        s = e;
    }
}

/// Views a slice of length [`LANES`] as an array.
#[inline(always)]
fn lanes<T>(v: &[T]) -> &[T; LANES] {
    v.try_into().expect("LANES elements")
}

/// Lanes of the pairwise product kernels (one AVX2 register each: six accumulators).
const LANES4: usize = 4;

/// Dot products of a stored vector `v` with `a`, `b`, `c`, over one read of each.
#[inline(always)]
fn dots3(v: &[f32], a: &[f64], b: &[f64], c: &[f64]) -> [f64; 3] {
    let (mut la, mut lb, mut lc) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    let n = v.len() / LANES * LANES;
    #[cfg(target_arch = "x86_64")]
    let done = if has_avx2() {
        // SAFETY: AVX2 is present; all slices have at least n elements.
        unsafe { simd::dots3(&v[..n], &a[..n], &b[..n], &c[..n], [&mut la, &mut lb, &mut lc]) };
        n
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let it = v[done..n].chunks_exact(LANES).zip(a[done..n].chunks_exact(LANES)).zip(b[done..n].chunks_exact(LANES)).zip(c[done..n].chunks_exact(LANES));
    for (((vv, av), bv), cv) in it {
        let (vv, av, bv, cv) = (lanes(vv), lanes(av), lanes(bv), lanes(cv));
        for l in 0..LANES {
            let x = f64::from(vv[l]);
            la[l] += x * av[l];
            lb[l] += x * bv[l];
            lc[l] += x * cv[l];
        }
    }
    let (mut ta, mut tb, mut tc) = (0.0, 0.0, 0.0);
    for i in n..v.len() {
        let x = f64::from(v[i]);
        ta += x * a[i];
        tb += x * b[i];
        tc += x * c[i];
    }
    [hsum(&la) + ta, hsum(&lb) + tb, hsum(&lc) + tc]
}

/// Dot products of two stored vectors `v0`, `v1` with `a`, `b`, `c`:
/// `[v0.a, v0.b, v0.c, v1.a, v1.b, v1.c]`, over one read of each.
#[inline(always)]
fn dots_pair(v0: &[f32], v1: &[f32], a: &[f64], b: &[f64], c: &[f64]) -> [f64; 6] {
    let mut l = [[0.0f64; LANES4]; 6];
    let n = v0.len() / LANES4 * LANES4;
    #[cfg(target_arch = "x86_64")]
    let done = if has_avx2() {
        // SAFETY: AVX2 is present; all slices have at least n elements.
        unsafe { simd::dots_pair(&v0[..n], &v1[..n], &a[..n], &b[..n], &c[..n], &mut l) };
        n
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let mut i = done;
    while i < n {
        for k in 0..LANES4 {
            let (x0, x1) = (f64::from(v0[i + k]), f64::from(v1[i + k]));
            let (av, bv, cv) = (a[i + k], b[i + k], c[i + k]);
            l[0][k] += x0 * av;
            l[1][k] += x0 * bv;
            l[2][k] += x0 * cv;
            l[3][k] += x1 * av;
            l[4][k] += x1 * bv;
            l[5][k] += x1 * cv;
        }
        i += LANES4;
    }
    let mut out = [0.0; 6];
    for (o, lk) in out.iter_mut().zip(&l) {
        *o = (lk[0] + lk[2]) + (lk[1] + lk[3]);
    }
    for i in n..v0.len() {
        let (x0, x1) = (f64::from(v0[i]), f64::from(v1[i]));
        let v = [x0 * a[i], x0 * b[i], x0 * c[i], x1 * a[i], x1 * b[i], x1 * c[i]];
        out.iter_mut().zip(v).for_each(|(o, t)| *o += t);
    }
    out
}

/// `y <- round_f32(g_new - g)`, the widened `d` and `y` into `dw`, `yw`, and the six dot
/// products among `(d, y, g_new)`: `[dd, dy, dg, yy, yg, gg]`.
#[inline(always)]
fn diff_and_dots6(gn: &[f64], go: &[f64], d: &[f32], y: &mut [f32], dw: &mut [f64], yw: &mut [f64]) -> [f64; 6] {
    let mut l = [[0.0f64; LANES]; 6];
    let len = y.len();
    let n = len / LANES * LANES;
    #[cfg(target_arch = "x86_64")]
    let done = if has_avx2() {
        // SAFETY: AVX2 is present; all slices have at least n elements.
        unsafe { simd::diff_dots6(&gn[..n], &go[..n], &d[..n], &mut y[..n], &mut dw[..n], &mut yw[..n], &mut l) };
        n
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let it = y[done..n].chunks_exact_mut(LANES).zip(gn[done..n].chunks_exact(LANES)).zip(go[done..n].chunks_exact(LANES)).zip(d[done..n].chunks_exact(LANES));
    let mut i = done;
    for (((yv, gv), ov), dv) in it {
        let yv: &mut [f32; LANES] = yv.try_into().expect("LANES elements");
        let (gv, ov, dv) = (lanes(gv), lanes(ov), lanes(dv));
        for k in 0..LANES {
            let yr = (gv[k] - ov[k]) as f32;
            yv[k] = yr;
            let (yk, dk) = (f64::from(yr), f64::from(dv[k]));
            (dw[i + k], yw[i + k]) = (dk, yk);
            l[0][k] += dk * dk;
            l[1][k] += dk * yk;
            l[2][k] += dk * gv[k];
            l[3][k] += yk * yk;
            l[4][k] += yk * gv[k];
            l[5][k] += gv[k] * gv[k];
        }
        i += LANES;
    }
    let mut t = [0.0f64; 6];
    for i in n..len {
        let yr = (gn[i] - go[i]) as f32;
        y[i] = yr;
        let (yv, dv, gv) = (f64::from(yr), f64::from(d[i]), gn[i]);
        (dw[i], yw[i]) = (dv, yv);
        let v = [dv * dv, dv * yv, dv * gv, yv * yv, yv * gv, gv * gv];
        t.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    let mut out = [0.0; 6];
    for k in 0..6 {
        out[k] = hsum(&l[k]) + t[k];
    }
    out
}

/// AVX2 versions of the lane loops: per lane exactly the portable arithmetic.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Loads 4 f32 and widens them to f64.
    #[inline(always)]
    unsafe fn ld32(p: *const f32) -> __m256d {
        _mm256_cvtps_pd(_mm_loadu_ps(p))
    }

    /// # Safety
    /// AVX2 must be available; `o`, `g`, `x`, `xn` have one length, a multiple of LANES, and
    /// every term has at least `s + o.len()` elements.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn combine(o: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], s: usize, g: &[f64], cg: f64, x: &[f64], step: f64, xn: &mut [f64], lanes: &mut [f64; LANES]) {
        let n = o.len();
        let (po, pg, px, pxn) = (o.as_mut_ptr(), g.as_ptr(), x.as_ptr(), xn.as_mut_ptr());
        let (vco, vcg, vst) = (_mm256_set1_pd(c_out), _mm256_set1_pd(cg), _mm256_set1_pd(step));
        let (mut d0, mut d1) = (_mm256_loadu_pd(lanes.as_ptr()), _mm256_loadu_pd(lanes.as_ptr().add(4)));
        let mut i = 0;
        while i < n {
            let (mut a0, mut a1) = if c_out != 0.0 {
                (_mm256_mul_pd(vco, ld32(po.add(i))), _mm256_mul_pd(vco, ld32(po.add(i + 4))))
            } else {
                (_mm256_setzero_pd(), _mm256_setzero_pd())
            };
            let (g0, g1) = (_mm256_loadu_pd(pg.add(i)), _mm256_loadu_pd(pg.add(i + 4)));
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(vcg, g0));
            a1 = _mm256_add_pd(a1, _mm256_mul_pd(vcg, g1));
            for &(v, c) in terms {
                let (pv, vc) = (v.as_ptr().add(s + i), _mm256_set1_pd(c));
                a0 = _mm256_add_pd(a0, _mm256_mul_pd(vc, ld32(pv)));
                a1 = _mm256_add_pd(a1, _mm256_mul_pd(vc, ld32(pv.add(4))));
            }
            let (r0, r1) = (_mm256_cvtpd_ps(a0), _mm256_cvtpd_ps(a1));
            _mm_storeu_ps(po.add(i), r0);
            _mm_storeu_ps(po.add(i + 4), r1);
            let (f0, f1) = (_mm256_cvtps_pd(r0), _mm256_cvtps_pd(r1));
            _mm256_storeu_pd(pxn.add(i), _mm256_add_pd(_mm256_loadu_pd(px.add(i)), _mm256_mul_pd(vst, f0)));
            _mm256_storeu_pd(pxn.add(i + 4), _mm256_add_pd(_mm256_loadu_pd(px.add(i + 4)), _mm256_mul_pd(vst, f1)));
            d0 = _mm256_add_pd(d0, _mm256_mul_pd(f0, g0));
            d1 = _mm256_add_pd(d1, _mm256_mul_pd(f1, g1));
            i += LANES;
        }
        _mm256_storeu_pd(lanes.as_mut_ptr(), d0);
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4), d1);
    }

    /// # Safety
    /// AVX2 must be available; every slice has the length of `v`, a multiple of LANES.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn dots3(v: &[f32], a: &[f64], b: &[f64], c: &[f64], out: [&mut [f64; LANES]; 3]) {
        let n = v.len();
        let (pv, pa, pb, pc) = (v.as_ptr(), a.as_ptr(), b.as_ptr(), c.as_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; 3];
        for (k, o) in out.iter().enumerate() {
            acc[k] = [_mm256_loadu_pd(o.as_ptr()), _mm256_loadu_pd(o.as_ptr().add(4))];
        }
        let mut i = 0;
        while i < n {
            for h in 0..2 {
                let j = i + 4 * h;
                let x = ld32(pv.add(j));
                acc[0][h] = _mm256_add_pd(acc[0][h], _mm256_mul_pd(x, _mm256_loadu_pd(pa.add(j))));
                acc[1][h] = _mm256_add_pd(acc[1][h], _mm256_mul_pd(x, _mm256_loadu_pd(pb.add(j))));
                acc[2][h] = _mm256_add_pd(acc[2][h], _mm256_mul_pd(x, _mm256_loadu_pd(pc.add(j))));
            }
            i += LANES;
        }
        for (k, o) in out.into_iter().enumerate() {
            _mm256_storeu_pd(o.as_mut_ptr(), acc[k][0]);
            _mm256_storeu_pd(o.as_mut_ptr().add(4), acc[k][1]);
        }
    }

    /// # Safety
    /// AVX2 must be available; every slice has the length of `v0`, a multiple of 4.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dots_pair(v0: &[f32], v1: &[f32], a: &[f64], b: &[f64], c: &[f64], l: &mut [[f64; 4]; 6]) {
        let n = v0.len();
        let (p0, p1, pa, pb, pc) = (v0.as_ptr(), v1.as_ptr(), a.as_ptr(), b.as_ptr(), c.as_ptr());
        let mut acc = [_mm256_setzero_pd(); 6];
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_pd(l[k].as_ptr());
        }
        let mut i = 0;
        while i < n {
            let (x0, x1) = (ld32(p0.add(i)), ld32(p1.add(i)));
            let (av, bv, cv) = (_mm256_loadu_pd(pa.add(i)), _mm256_loadu_pd(pb.add(i)), _mm256_loadu_pd(pc.add(i)));
            acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(x0, av));
            acc[1] = _mm256_add_pd(acc[1], _mm256_mul_pd(x0, bv));
            acc[2] = _mm256_add_pd(acc[2], _mm256_mul_pd(x0, cv));
            acc[3] = _mm256_add_pd(acc[3], _mm256_mul_pd(x1, av));
            acc[4] = _mm256_add_pd(acc[4], _mm256_mul_pd(x1, bv));
            acc[5] = _mm256_add_pd(acc[5], _mm256_mul_pd(x1, cv));
            i += 4;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_pd(l[k].as_mut_ptr(), *a);
        }
    }

    /// # Safety
    /// AVX2 must be available; every slice has the length of `y`, a multiple of LANES.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
    pub unsafe fn diff_dots6(gn: &[f64], go: &[f64], d: &[f32], y: &mut [f32], dw: &mut [f64], yw: &mut [f64], l: &mut [[f64; LANES]; 6]) {
        let n = y.len();
        let (pg, po, pd, py) = (gn.as_ptr(), go.as_ptr(), d.as_ptr(), y.as_mut_ptr());
        let (pdw, pyw) = (dw.as_mut_ptr(), yw.as_mut_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; 6];
        for (k, a) in acc.iter_mut().enumerate() {
            *a = [_mm256_loadu_pd(l[k].as_ptr()), _mm256_loadu_pd(l[k].as_ptr().add(4))];
        }
        let mut i = 0;
        while i < n {
            for h in 0..2 {
                let j = i + 4 * h;
                let gv = _mm256_loadu_pd(pg.add(j));
                let yr = _mm256_cvtpd_ps(_mm256_sub_pd(gv, _mm256_loadu_pd(po.add(j))));
                _mm_storeu_ps(py.add(j), yr);
                let (yv, dv) = (_mm256_cvtps_pd(yr), ld32(pd.add(j)));
                _mm256_storeu_pd(pdw.add(j), dv);
                _mm256_storeu_pd(pyw.add(j), yv);
                acc[0][h] = _mm256_add_pd(acc[0][h], _mm256_mul_pd(dv, dv));
                acc[1][h] = _mm256_add_pd(acc[1][h], _mm256_mul_pd(dv, yv));
                acc[2][h] = _mm256_add_pd(acc[2][h], _mm256_mul_pd(dv, gv));
                acc[3][h] = _mm256_add_pd(acc[3][h], _mm256_mul_pd(yv, yv));
                acc[4][h] = _mm256_add_pd(acc[4][h], _mm256_mul_pd(yv, gv));
                acc[5][h] = _mm256_add_pd(acc[5][h], _mm256_mul_pd(gv, gv));
            }
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_pd(l[k].as_mut_ptr(), a[0]);
            _mm256_storeu_pd(l[k].as_mut_ptr().add(4), a[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|i| (((i + seed) * 7919 + seed * 31) % 1000) as f64 * 1e-3 * scale - 0.5 * scale).collect()
    }

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    #[test]
    fn dot_matches_a_plain_loop_and_does_not_depend_on_threads() {
        let n = 9 * CHUNK + 17;
        let (a, b) = (data(n, 1, 1.0), data(n, 2, 2.0));
        let mut parts = Vec::new();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let d = dot(&a, &b, &mut parts);
        assert!((d - plain).abs() < 1e-9 * plain.abs());
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let d1 = one.install(|| dot(&a, &b, &mut Vec::new()));
        assert_eq!(d.to_bits(), d1.to_bits());
    }

    /// Runs the direction and curvature passes (with `olds` stored vectors in the latter);
    /// returns everything they produce, as bits.
    fn passes(n: usize) -> (Vec<u32>, Vec<u64>, f64, Vec<u32>, Vec<f64>) {
        passes_with(n, 4)
    }

    fn passes_with(n: usize, n_olds: usize) -> (Vec<u32>, Vec<u64>, f64, Vec<u32>, Vec<f64>) {
        let (g, x, gn) = (data(n, 3, 1.0), data(n, 4, 3.0), data(n, 5, 1.5));
        let basis: Vec<Vec<f32>> = (0..4).map(|k| to32(&data(n, 10 + k, 0.7))).collect();
        let terms: Vec<(&[f32], f64)> = basis.iter().zip([0.3, -1.25, 0.5, 2.0]).map(|(v, c)| (v.as_slice(), c)).collect();
        let mut out = to32(&data(n, 20, 1.0));
        let mut x_new = vec![0.0; n];
        let mut parts = Vec::new();
        let dg = combine_and_step(&mut out, 0.75, &terms, &g, -0.6, &x, 0.9, &mut x_new, &mut parts);
        let mut y = vec![0.0f32; n];
        let olds: Vec<&[f32]> = basis.iter().take(n_olds).map(|v| v.as_slice()).collect();
        let mut dots = vec![0.0; 3 * olds.len() + 6];
        curvature_pass(&gn, &g, &out, &mut y, &olds, &mut parts, &mut dots);
        (out.iter().map(|v| v.to_bits()).collect(), x_new.iter().map(|v| v.to_bits()).collect(), dg, y.iter().map(|v| v.to_bits()).collect(), dots)
    }

    /// The solver's two passes against plain scalar loops written from their definitions,
    /// with an even and an odd number of stored vectors.
    #[test]
    fn solver_passes_match_plain_loops() {
        for n_olds in [4, 3] {
            check_passes(n_olds);
        }
    }

    fn check_passes(n_olds: usize) {
        let n = 9 * CHUNK + 13;
        let (out, x_new, dg, y, dots) = passes_with(n, n_olds);
        let (g, x, gn) = (data(n, 3, 1.0), data(n, 4, 3.0), data(n, 5, 1.5));
        let basis: Vec<Vec<f32>> = (0..4).map(|k| to32(&data(n, 10 + k, 0.7))).collect();
        let old_out = to32(&data(n, 20, 1.0));
        let coef = [0.3, -1.25, 0.5, 2.0];
        let mut dg_plain = 0.0;
        let mut d = vec![0.0f64; n];
        for i in 0..n {
            let mut v = 0.75 * f64::from(old_out[i]) - 0.6 * g[i];
            for (b, c) in basis.iter().zip(coef) {
                v += c * f64::from(b[i]);
            }
            let r = v as f32;
            assert_eq!(out[i], r.to_bits(), "direction entry {i}");
            d[i] = f64::from(r);
            assert!((f64::from_bits(x_new[i]) - (x[i] + 0.9 * d[i])).abs() <= 1e-15 * (1.0 + x[i].abs()));
            dg_plain += d[i] * g[i];
        }
        assert!((dg - dg_plain).abs() <= 1e-11 * dg_plain.abs().max(1.0));
        let yv: Vec<f64> = (0..n).map(|i| f64::from((gn[i] - g[i]) as f32)).collect();
        for i in 0..n {
            assert_eq!(y[i], (yv[i] as f32).to_bits());
        }
        let dotp = |a: &dyn Fn(usize) -> f64, b: &dyn Fn(usize) -> f64| (0..n).map(|i| a(i) * b(i)).sum::<f64>();
        let (fd, fy, fg) = (|i: usize| d[i], |i: usize| yv[i], |i: usize| gn[i]);
        let mut expect = Vec::new();
        for b in basis.iter().take(n_olds) {
            let fb = |i: usize| f64::from(b[i]);
            expect.extend([dotp(&fb, &fd), dotp(&fb, &fy), dotp(&fb, &fg)]);
        }
        expect.extend([dotp(&fd, &fd), dotp(&fd, &fy), dotp(&fd, &fg), dotp(&fy, &fy), dotp(&fy, &fg), dotp(&fg, &fg)]);
        for (k, (got, want)) in dots.iter().zip(&expect).enumerate() {
            assert!((got - want).abs() <= 1e-11 * want.abs().max(1.0), "dot {k}: {got} vs {want}");
        }
    }

    /// Same bits on one thread or many, and with or without the AVX2 path.
    #[test]
    fn solver_passes_do_not_depend_on_threads_or_simd() {
        let n = 9 * CHUNK + 13;
        let base = passes(n);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let single = one.install(|| passes(n));
        assert!(base.0 == single.0 && base.1 == single.1 && base.3 == single.3);
        assert_eq!(base.2.to_bits(), single.2.to_bits());
        assert!(base.4.iter().zip(&single.4).all(|(a, b)| a.to_bits() == b.to_bits()));
        let odd = passes_with(n, 3);
        FORCE_PORTABLE.store(true, std::sync::atomic::Ordering::Relaxed);
        let portable = passes(n);
        let odd_portable = passes_with(n, 3);
        FORCE_PORTABLE.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(odd.4.iter().zip(&odd_portable.4).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(base.0 == portable.0 && base.1 == portable.1 && base.3 == portable.3);
        assert_eq!(base.2.to_bits(), portable.2.to_bits());
        assert!(base.4.iter().zip(&portable.4).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
