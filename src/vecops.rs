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

    /// The sub-slice `r`, read-only.
    ///
    /// # Safety
    /// Nothing may write `r` while the slice is used; inside the original slice.
    pub unsafe fn view(&self, r: std::ops::Range<usize>) -> &[T] {
        assert!(r.end <= self.len);
        // SAFETY: in bounds by the assert; no concurrent writer is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.end - r.start) }
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

/// Whether the CPU has AVX2 and FMA (checked once).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The vector unit that runs the solver's lane loops. Each kernel below has a portable lane
/// loop and AVX2 and AVX-512 versions doing the same operations per lane in the same order
/// (fused multiply-adds; `f64::mul_add` in the portable loop), so results are bit-identical
/// on every path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Simd {
    Avx512,
    Avx2,
    Portable,
}

fn simd() -> Simd {
    let best = if crate::linalg::products::has_avx512() {
        Simd::Avx512
    } else if has_avx2() {
        Simd::Avx2
    } else {
        Simd::Portable
    };
    #[cfg(test)]
    {
        match (FORCE.load(std::sync::atomic::Ordering::Relaxed), best) {
            (2, _) => return Simd::Portable,
            (1, Simd::Avx512) => return Simd::Avx2,
            _ => {}
        }
    }
    best
}

/// Tests set this to cap the unit: 1 = at most AVX2, 2 = portable.
#[cfg(test)]
static FORCE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

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
/// `x <- x + step out` in place with the rounded `out`, and returns `out . g`.
/// (The solver runs [`combine_range`] inside the objective's pass; this runs it over whole
/// vectors.)
#[allow(clippy::too_many_arguments)]
pub fn combine_and_step(out: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], g: &[f64], cg: f64, step: f64, x: &mut [f64], parts: &mut Vec<f64>) -> f64 {
    let n = out.len();
    assert!(g.len() == n && x.len() == n && terms.iter().all(|t| t.0.len() == n));
    assert!(terms.len() <= MAX_STREAMS, "at most {MAX_STREAMS} stored vectors");
    let (os, xs) = (SharedMut::new(out), SharedMut::new(x));
    let mut dg = [0.0];
    reduce_many(n, 1, parts, &mut dg, |r, acc| {
        // SAFETY: `reduce_many` hands out disjoint chunk ranges.
        let (oc, xc) = unsafe { (os.slice(r.clone()), xs.slice(r.clone())) };
        let mut local: [(&[f32], f64); MAX_STREAMS] = [(&[], 0.0); MAX_STREAMS];
        for (l, &(v, c)) in local.iter_mut().zip(terms) {
            *l = (&v[r.clone()], c);
        }
        acc[0] += combine_range(oc, c_out, &local[..terms.len()], &g[r], cg, step, xc);
    });
    dg[0]
}

/// Most stored vectors one pass combines or reads.
pub const MAX_STREAMS: usize = 128;

/// One range of [`combine_and_step`]: every slice is that range of its vector (`oc` of `out`,
/// `g` of the gradient, `x` of the point, updated in place). Returns the range's share of
/// `out . g`.
pub fn combine_range(oc: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], g: &[f64], cg: f64, step: f64, x: &mut [f64]) -> f64 {
    let len = oc.len();
    assert!(g.len() == len && x.len() == len && terms.iter().all(|t| t.0.len() == len));
    let full = len / LANES * LANES;
    let mut lanes = [0.0f64; LANES];
    let done = match simd() {
        // SAFETY (both arms): the unit is present; every slice has at least `full` elements.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512::combine(&mut oc[..full], c_out, terms, &g[..full], cg, step, &mut x[..full], &mut lanes) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { avx2::combine(&mut oc[..full], c_out, terms, &g[..full], cg, step, &mut x[..full], &mut lanes) },
        _ => 0,
    };
    let mut i = done;
    while i < full {
        let mut a = [0.0f64; LANES];
        for l in 0..LANES {
            a[l] = if c_out != 0.0 { c_out * f64::from(oc[i + l]) } else { 0.0 };
            a[l] = cg.mul_add(g[i + l], a[l]);
        }
        for &(v, c) in terms {
            for l in 0..LANES {
                a[l] = c.mul_add(f64::from(v[i + l]), a[l]);
            }
        }
        for l in 0..LANES {
            let r = a[l] as f32;
            oc[i + l] = r;
            let rf = f64::from(r);
            x[i + l] += step * rf;
            lanes[l] = rf.mul_add(g[i + l], lanes[l]);
        }
        i += LANES;
    }
    let mut tail = 0.0;
    for i in full..len {
        let mut a = if c_out != 0.0 { c_out * f64::from(oc[i]) } else { 0.0 };
        a += cg * g[i];
        for &(v, c) in terms {
            a += c * f64::from(v[i]);
        }
        let r = a as f32;
        oc[i] = r;
        let rf = f64::from(r);
        x[i] += step * rf;
        tail += rf * g[i];
    }
    hsum(&lanes) + tail
}

/// `x <- x + step d` in place, with an f32 direction.
pub fn step_into_f32(x: &mut [f64], step: f64, d: &[f32], parts: &mut Vec<f64>) {
    let xs = SharedMut::new(x);
    let mut none = [0.0];
    reduce_many(d.len(), 1, parts, &mut none, |r, _| {
        // SAFETY: disjoint chunk ranges.
        let xc = unsafe { xs.slice(r.clone()) };
        step_range(step, &d[r], xc);
    });
}

/// One range of [`step_into_f32`] (every slice is that range of its vector).
pub fn step_range(step: f64, d: &[f32], x: &mut [f64]) {
    assert!(d.len() == x.len());
    for (xv, dv) in x.iter_mut().zip(d) {
        *xv += step * f64::from(*dv);
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

/// Dot products of a stored vector `v` with `a`, `b`, `c`, over one read of each.
#[inline(always)]
fn dots3(v: &[f32], a: &[f64], b: &[f64], c: &[f64]) -> [f64; 3] {
    let mut l = [[0.0f64; LANES]; 3];
    let n = v.len() / LANES * LANES;
    let done = match simd() {
        // SAFETY (both arms): the unit is present; all slices have at least n elements.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512::dots3(&v[..n], &a[..n], &b[..n], &c[..n], &mut l) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { avx2::dots3(&v[..n], &a[..n], &b[..n], &c[..n], &mut l) },
        _ => 0,
    };
    let it = v[done..n].chunks_exact(LANES).zip(a[done..n].chunks_exact(LANES)).zip(b[done..n].chunks_exact(LANES)).zip(c[done..n].chunks_exact(LANES));
    for (((vv, av), bv), cv) in it {
        let (vv, av, bv, cv) = (lanes(vv), lanes(av), lanes(bv), lanes(cv));
        for k in 0..LANES {
            let x = f64::from(vv[k]);
            l[0][k] = x.mul_add(av[k], l[0][k]);
            l[1][k] = x.mul_add(bv[k], l[1][k]);
            l[2][k] = x.mul_add(cv[k], l[2][k]);
        }
    }
    let mut out = [hsum(&l[0]), hsum(&l[1]), hsum(&l[2])];
    for i in n..v.len() {
        let x = f64::from(v[i]);
        out[0] += x * a[i];
        out[1] += x * b[i];
        out[2] += x * c[i];
    }
    out
}

/// Dot products of two stored vectors `v0`, `v1` with `a`, `b`, `c`:
/// `[v0.a, v0.b, v0.c, v1.a, v1.b, v1.c]`, over one read of each.
#[inline(always)]
fn dots_pair(v0: &[f32], v1: &[f32], a: &[f64], b: &[f64], c: &[f64]) -> [f64; 6] {
    let mut l = [[0.0f64; LANES]; 6];
    let n = v0.len() / LANES * LANES;
    let done = match simd() {
        // SAFETY (both arms): the unit is present; all slices have at least n elements.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512::dots_pair(&v0[..n], &v1[..n], &a[..n], &b[..n], &c[..n], &mut l) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { avx2::dots_pair(&v0[..n], &v1[..n], &a[..n], &b[..n], &c[..n], &mut l) },
        _ => 0,
    };
    let mut i = done;
    while i < n {
        for k in 0..LANES {
            let (x0, x1) = (f64::from(v0[i + k]), f64::from(v1[i + k]));
            let (av, bv, cv) = (a[i + k], b[i + k], c[i + k]);
            l[0][k] = x0.mul_add(av, l[0][k]);
            l[1][k] = x0.mul_add(bv, l[1][k]);
            l[2][k] = x0.mul_add(cv, l[2][k]);
            l[3][k] = x1.mul_add(av, l[3][k]);
            l[4][k] = x1.mul_add(bv, l[4][k]);
            l[5][k] = x1.mul_add(cv, l[5][k]);
        }
        i += LANES;
    }
    let mut out = [0.0; 6];
    for (o, lk) in out.iter_mut().zip(&l) {
        *o = hsum(lk);
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
    let done = match simd() {
        // SAFETY (both arms): the unit is present; all slices have at least n elements.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512::diff_dots6(&gn[..n], &go[..n], &d[..n], &mut y[..n], &mut dw[..n], &mut yw[..n], &mut l) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { avx2::diff_dots6(&gn[..n], &go[..n], &d[..n], &mut y[..n], &mut dw[..n], &mut yw[..n], &mut l) },
        _ => 0,
    };
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
            l[0][k] = dk.mul_add(dk, l[0][k]);
            l[1][k] = dk.mul_add(yk, l[1][k]);
            l[2][k] = dk.mul_add(gv[k], l[2][k]);
            l[3][k] = yk.mul_add(yk, l[3][k]);
            l[4][k] = yk.mul_add(gv[k], l[4][k]);
            l[5][k] = gv[k].mul_add(gv[k], l[5][k]);
        }
        i += LANES;
    }
    let mut out = [0.0; 6];
    for k in 0..6 {
        out[k] = hsum(&l[k]);
    }
    for i in n..len {
        let yr = (gn[i] - go[i]) as f32;
        y[i] = yr;
        let (yv, dv, gv) = (f64::from(yr), f64::from(d[i]), gn[i]);
        (dw[i], yw[i]) = (dv, yv);
        let v = [dv * dv, dv * yv, dv * gv, yv * yv, yv * gv, gv * gv];
        out.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    out
}

/// AVX2 + FMA versions of the lane loops: lane k of the two registers is lane k of the
/// portable loop, with the same fused multiply-adds in the same order.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Loads 4 f32 and widens them to f64.
    #[inline(always)]
    unsafe fn ld32(p: *const f32) -> __m256d {
        _mm256_cvtps_pd(_mm_loadu_ps(p))
    }

    /// Returns the number of elements done (`o.len()`).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; every slice has the length of `o`, a multiple of LANES.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    pub unsafe fn combine(o: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], g: &[f64], cg: f64, step: f64, x: &mut [f64], lanes: &mut [f64; LANES]) -> usize {
        let n = o.len();
        let (po, pg, px) = (o.as_mut_ptr(), g.as_ptr(), x.as_mut_ptr());
        let (vco, vcg, vst) = (_mm256_set1_pd(c_out), _mm256_set1_pd(cg), _mm256_set1_pd(step));
        let mut dgl = [_mm256_loadu_pd(lanes.as_ptr()), _mm256_loadu_pd(lanes.as_ptr().add(4))];
        let mut i = 0;
        while i < n {
            for h in 0..2 {
                let j = i + 4 * h;
                let mut a = if c_out != 0.0 { _mm256_mul_pd(vco, ld32(po.add(j))) } else { _mm256_setzero_pd() };
                let gv = _mm256_loadu_pd(pg.add(j));
                a = _mm256_fmadd_pd(vcg, gv, a);
                for &(v, c) in terms {
                    a = _mm256_fmadd_pd(_mm256_set1_pd(c), ld32(v.as_ptr().add(j)), a);
                }
                let r = _mm256_cvtpd_ps(a);
                _mm_storeu_ps(po.add(j), r);
                let rf = _mm256_cvtps_pd(r);
                _mm256_storeu_pd(px.add(j), _mm256_add_pd(_mm256_loadu_pd(px.add(j)), _mm256_mul_pd(vst, rf)));
                dgl[h] = _mm256_fmadd_pd(rf, gv, dgl[h]);
            }
            i += LANES;
        }
        _mm256_storeu_pd(lanes.as_mut_ptr(), dgl[0]);
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4), dgl[1]);
        n
    }

    /// # Safety
    /// AVX2 and FMA must be available; every slice has the length of `v`, a multiple of LANES.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn dots3(v: &[f32], a: &[f64], b: &[f64], c: &[f64], l: &mut [[f64; LANES]; 3]) -> usize {
        let n = v.len();
        let (pv, pa, pb, pc) = (v.as_ptr(), a.as_ptr(), b.as_ptr(), c.as_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; 3];
        let mut i = 0;
        while i < n {
            for h in 0..2 {
                let j = i + 4 * h;
                let x = ld32(pv.add(j));
                acc[0][h] = _mm256_fmadd_pd(x, _mm256_loadu_pd(pa.add(j)), acc[0][h]);
                acc[1][h] = _mm256_fmadd_pd(x, _mm256_loadu_pd(pb.add(j)), acc[1][h]);
                acc[2][h] = _mm256_fmadd_pd(x, _mm256_loadu_pd(pc.add(j)), acc[2][h]);
            }
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_pd(l[k].as_mut_ptr(), a[0]);
            _mm256_storeu_pd(l[k].as_mut_ptr().add(4), a[1]);
        }
        n
    }

    /// # Safety
    /// AVX2 and FMA must be available; every slice has the length of `v0`, a multiple of LANES.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn dots_pair(v0: &[f32], v1: &[f32], a: &[f64], b: &[f64], c: &[f64], l: &mut [[f64; LANES]; 6]) -> usize {
        let n = v0.len();
        let (p0, p1, pa, pb, pc) = (v0.as_ptr(), v1.as_ptr(), a.as_ptr(), b.as_ptr(), c.as_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; 6];
        let mut i = 0;
        while i < n {
            for h in 0..2 {
                let j = i + 4 * h;
                let (x0, x1) = (ld32(p0.add(j)), ld32(p1.add(j)));
                let (av, bv, cv) = (_mm256_loadu_pd(pa.add(j)), _mm256_loadu_pd(pb.add(j)), _mm256_loadu_pd(pc.add(j)));
                acc[0][h] = _mm256_fmadd_pd(x0, av, acc[0][h]);
                acc[1][h] = _mm256_fmadd_pd(x0, bv, acc[1][h]);
                acc[2][h] = _mm256_fmadd_pd(x0, cv, acc[2][h]);
                acc[3][h] = _mm256_fmadd_pd(x1, av, acc[3][h]);
                acc[4][h] = _mm256_fmadd_pd(x1, bv, acc[4][h]);
                acc[5][h] = _mm256_fmadd_pd(x1, cv, acc[5][h]);
            }
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_pd(l[k].as_mut_ptr(), a[0]);
            _mm256_storeu_pd(l[k].as_mut_ptr().add(4), a[1]);
        }
        n
    }

    /// # Safety
    /// AVX2 and FMA must be available; every slice has the length of `y`, a multiple of LANES.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    pub unsafe fn diff_dots6(gn: &[f64], go: &[f64], d: &[f32], y: &mut [f32], dw: &mut [f64], yw: &mut [f64], l: &mut [[f64; LANES]; 6]) -> usize {
        let n = y.len();
        let (pg, po, pd, py) = (gn.as_ptr(), go.as_ptr(), d.as_ptr(), y.as_mut_ptr());
        let (pdw, pyw) = (dw.as_mut_ptr(), yw.as_mut_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; 6];
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
                acc[0][h] = _mm256_fmadd_pd(dv, dv, acc[0][h]);
                acc[1][h] = _mm256_fmadd_pd(dv, yv, acc[1][h]);
                acc[2][h] = _mm256_fmadd_pd(dv, gv, acc[2][h]);
                acc[3][h] = _mm256_fmadd_pd(yv, yv, acc[3][h]);
                acc[4][h] = _mm256_fmadd_pd(yv, gv, acc[4][h]);
                acc[5][h] = _mm256_fmadd_pd(gv, gv, acc[5][h]);
            }
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm256_storeu_pd(l[k].as_mut_ptr(), a[0]);
            _mm256_storeu_pd(l[k].as_mut_ptr().add(4), a[1]);
        }
        n
    }
}

/// AVX-512 versions of the lane loops: the eight lanes of one register are the eight lanes of
/// the portable loop, with the same fused multiply-adds in the same order.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Loads 8 f32 and widens them to f64.
    #[inline(always)]
    unsafe fn ld32(p: *const f32) -> __m512d {
        _mm512_cvtps_pd(_mm256_loadu_ps(p))
    }

    /// As [`super::avx2::combine`].
    ///
    /// # Safety
    /// AVX-512F must be available; every slice has the length of `o`, a multiple of LANES.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn combine(o: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], g: &[f64], cg: f64, step: f64, x: &mut [f64], lanes: &mut [f64; LANES]) -> usize {
        let n = o.len();
        let (po, pg, px) = (o.as_mut_ptr(), g.as_ptr(), x.as_mut_ptr());
        let (vco, vcg, vst) = (_mm512_set1_pd(c_out), _mm512_set1_pd(cg), _mm512_set1_pd(step));
        let mut dgl = _mm512_loadu_pd(lanes.as_ptr());
        let mut i = 0;
        while i < n {
            let mut a = if c_out != 0.0 { _mm512_mul_pd(vco, ld32(po.add(i))) } else { _mm512_setzero_pd() };
            let gv = _mm512_loadu_pd(pg.add(i));
            a = _mm512_fmadd_pd(vcg, gv, a);
            for &(v, c) in terms {
                a = _mm512_fmadd_pd(_mm512_set1_pd(c), ld32(v.as_ptr().add(i)), a);
            }
            let r = _mm512_cvtpd_ps(a);
            _mm256_storeu_ps(po.add(i), r);
            let rf = _mm512_cvtps_pd(r);
            _mm512_storeu_pd(px.add(i), _mm512_add_pd(_mm512_loadu_pd(px.add(i)), _mm512_mul_pd(vst, rf)));
            dgl = _mm512_fmadd_pd(rf, gv, dgl);
            i += LANES;
        }
        _mm512_storeu_pd(lanes.as_mut_ptr(), dgl);
        n
    }

    /// # Safety
    /// AVX-512F must be available; every slice has the length of `v`, a multiple of LANES.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots3(v: &[f32], a: &[f64], b: &[f64], c: &[f64], l: &mut [[f64; LANES]; 3]) -> usize {
        let n = v.len();
        let (pv, pa, pb, pc) = (v.as_ptr(), a.as_ptr(), b.as_ptr(), c.as_ptr());
        let mut acc = [_mm512_setzero_pd(); 3];
        let mut i = 0;
        while i < n {
            let x = ld32(pv.add(i));
            acc[0] = _mm512_fmadd_pd(x, _mm512_loadu_pd(pa.add(i)), acc[0]);
            acc[1] = _mm512_fmadd_pd(x, _mm512_loadu_pd(pb.add(i)), acc[1]);
            acc[2] = _mm512_fmadd_pd(x, _mm512_loadu_pd(pc.add(i)), acc[2]);
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm512_storeu_pd(l[k].as_mut_ptr(), *a);
        }
        n
    }

    /// # Safety
    /// AVX-512F must be available; every slice has the length of `v0`, a multiple of LANES.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_pair(v0: &[f32], v1: &[f32], a: &[f64], b: &[f64], c: &[f64], l: &mut [[f64; LANES]; 6]) -> usize {
        let n = v0.len();
        let (p0, p1, pa, pb, pc) = (v0.as_ptr(), v1.as_ptr(), a.as_ptr(), b.as_ptr(), c.as_ptr());
        let mut acc = [_mm512_setzero_pd(); 6];
        let mut i = 0;
        while i < n {
            let (x0, x1) = (ld32(p0.add(i)), ld32(p1.add(i)));
            let (av, bv, cv) = (_mm512_loadu_pd(pa.add(i)), _mm512_loadu_pd(pb.add(i)), _mm512_loadu_pd(pc.add(i)));
            acc[0] = _mm512_fmadd_pd(x0, av, acc[0]);
            acc[1] = _mm512_fmadd_pd(x0, bv, acc[1]);
            acc[2] = _mm512_fmadd_pd(x0, cv, acc[2]);
            acc[3] = _mm512_fmadd_pd(x1, av, acc[3]);
            acc[4] = _mm512_fmadd_pd(x1, bv, acc[4]);
            acc[5] = _mm512_fmadd_pd(x1, cv, acc[5]);
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm512_storeu_pd(l[k].as_mut_ptr(), *a);
        }
        n
    }

    /// # Safety
    /// AVX-512F must be available; every slice has the length of `y`, a multiple of LANES.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn diff_dots6(gn: &[f64], go: &[f64], d: &[f32], y: &mut [f32], dw: &mut [f64], yw: &mut [f64], l: &mut [[f64; LANES]; 6]) -> usize {
        let n = y.len();
        let (pg, po, pd, py) = (gn.as_ptr(), go.as_ptr(), d.as_ptr(), y.as_mut_ptr());
        let (pdw, pyw) = (dw.as_mut_ptr(), yw.as_mut_ptr());
        let mut acc = [_mm512_setzero_pd(); 6];
        let mut i = 0;
        while i < n {
            let gv = _mm512_loadu_pd(pg.add(i));
            let yr = _mm512_cvtpd_ps(_mm512_sub_pd(gv, _mm512_loadu_pd(po.add(i))));
            _mm256_storeu_ps(py.add(i), yr);
            let (yv, dv) = (_mm512_cvtps_pd(yr), ld32(pd.add(i)));
            _mm512_storeu_pd(pdw.add(i), dv);
            _mm512_storeu_pd(pyw.add(i), yv);
            acc[0] = _mm512_fmadd_pd(dv, dv, acc[0]);
            acc[1] = _mm512_fmadd_pd(dv, yv, acc[1]);
            acc[2] = _mm512_fmadd_pd(dv, gv, acc[2]);
            acc[3] = _mm512_fmadd_pd(yv, yv, acc[3]);
            acc[4] = _mm512_fmadd_pd(yv, gv, acc[4]);
            acc[5] = _mm512_fmadd_pd(gv, gv, acc[5]);
            i += LANES;
        }
        for (k, a) in acc.iter().enumerate() {
            _mm512_storeu_pd(l[k].as_mut_ptr(), *a);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in (-scale/2, scale/2) with full 53-bit mantissas (so that a fused and an
    /// unfused multiply-add differ, and a test can tell the vector paths apart).
    fn data(n: usize, seed: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 * 0.754_877_666_246_692_7 + seed as f64 * 0.569_840_290_998_053_2).fract() - 0.5) * scale).collect()
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
        let mut x_new = x.clone();
        let mut parts = Vec::new();
        let dg = combine_and_step(&mut out, 0.75, &terms, &g, -0.6, 0.9, &mut x_new, &mut parts);
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
            // round_f32 of the f64 combination: any f64 summation order rounds to the same
            // f32 or, at a rounding boundary, to a neighbour.
            let r = v as f32;
            assert!(out[i].abs_diff(r.to_bits()) <= 1, "direction entry {i}");
            d[i] = f64::from(f32::from_bits(out[i]));
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

    /// Same bits on one thread or many, and on every vector unit (AVX-512, AVX2, portable).
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
        for level in [1, 2] {
            FORCE.store(level, std::sync::atomic::Ordering::Relaxed);
            let other = passes(n);
            let odd_other = passes_with(n, 3);
            FORCE.store(0, std::sync::atomic::Ordering::Relaxed);
            assert!(odd.4.iter().zip(&odd_other.4).all(|(a, b)| a.to_bits() == b.to_bits()), "level {level}");
            assert!(base.0 == other.0 && base.1 == other.1 && base.3 == other.3, "level {level}");
            assert_eq!(base.2.to_bits(), other.2.to_bits(), "level {level}");
            assert!(base.4.iter().zip(&other.4).all(|(a, b)| a.to_bits() == b.to_bits()), "level {level}");
        }
    }

    /// Every kernel on short ranges: the same bits on every vector unit. (A fused and an
    /// unfused multiply-add differ in the last bit of a lane only now and then, and the
    /// difference can vanish in the final sum of the lanes, so the check runs on 16 draws;
    /// replacing an FMA whose product is inexact by a multiply and an add makes it fail.)
    #[test]
    fn every_kernel_gives_the_same_bits_on_every_unit() {
        use rand::{Rng, SeedableRng};
        let n = 125 * LANES + 5;
        for seed in 0..16 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut draw = |scale: f64| (0..n).map(|_| scale * (rng.random::<f64>() - 0.5)).collect::<Vec<f64>>();
            let (a, b, c) = (draw(1.3), draw(2.7), draw(1.5));
            let (v0, v1) = (to32(&draw(1.1)), to32(&draw(0.7)));
            let run = || {
                let mut bits: Vec<u64> = Vec::new();
                bits.extend(dots3(&v0, &a, &b, &c).map(f64::to_bits));
                bits.extend(dots_pair(&v0, &v1, &a, &b, &c).map(f64::to_bits));
                let (mut y, mut dw, mut yw) = (vec![0.0f32; n], vec![0.0; n], vec![0.0; n]);
                bits.extend(diff_and_dots6(&a, &b, &v0, &mut y, &mut dw, &mut yw).map(f64::to_bits));
                bits.extend(y.iter().map(|v| u64::from(v.to_bits())));
                let (mut out, mut xn) = (v1.clone(), b.clone());
                let terms = [(&v0[..], 0.37), (&v1[..], -1.3)];
                bits.push(combine_range(&mut out, 0.8, &terms, &a, -0.45, 0.7, &mut xn).to_bits());
                bits.extend(out.iter().map(|v| u64::from(v.to_bits())));
                bits.extend(xn.iter().map(|v| v.to_bits()));
                bits
            };
            let best = run();
            for level in [1, 2] {
                FORCE.store(level, std::sync::atomic::Ordering::Relaxed);
                let other = run();
                FORCE.store(0, std::sync::atomic::Ordering::Relaxed);
                assert_eq!(best, other, "seed {seed}, level {level}");
            }
        }
    }
}
