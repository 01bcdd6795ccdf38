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

/// Runs `f(chunk_index, range)` over all chunks of `0..n`, in parallel when long, and returns
/// the per-chunk results summed in chunk order. `parts` is scratch of length >= `chunks(n)`.
pub fn reduce<F>(n: usize, parts: &mut [[f64; 2]], f: F) -> [f64; 2]
where
    F: Fn(std::ops::Range<usize>) -> [f64; 2] + Sync,
{
    let nc = chunks(n);
    let parts = &mut parts[..nc];
    let range = |c: usize| c * CHUNK..((c + 1) * CHUNK).min(n);
    if n >= PARALLEL_MIN {
        parts.par_iter_mut().enumerate().for_each(|(c, p)| *p = f(range(c)));
    } else {
        parts.iter_mut().enumerate().for_each(|(c, p)| *p = f(range(c)));
    }
    parts.iter().fold([0.0, 0.0], |acc, p| [acc[0] + p[0], acc[1] + p[1]])
}

/// A raw view that lets disjoint chunks of one slice be written from several threads.
#[derive(Clone, Copy)]
pub struct SharedMut {
    ptr: *mut f64,
    len: usize,
}

// SAFETY: `SharedMut` is only used through `slice`, whose callers write disjoint ranges
// (the chunks of `reduce`), so no element is accessed by two threads.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Wraps a mutable slice.
    pub fn new(s: &mut [f64]) -> Self {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len() }
    }

    /// The sub-slice `r`.
    ///
    /// # Safety
    /// Ranges used concurrently must be disjoint and inside the original slice.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, r: std::ops::Range<usize>) -> &mut [f64] {
        assert!(r.end <= self.len);
        // SAFETY: in bounds by the assert; disjointness is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }
}

/// `a . b`.
pub fn dot(a: &[f64], b: &[f64], parts: &mut [[f64; 2]]) -> f64 {
    reduce(a.len(), parts, |r| [a[r.clone()].iter().zip(&b[r]).map(|(x, y)| x * y).sum(), 0.0])[0]
}

/// `(a . b, a . a)` in one pass.
pub fn dot2(a: &[f64], b: &[f64], parts: &mut [[f64; 2]]) -> (f64, f64) {
    let [ab, aa] = reduce(a.len(), parts, |r| {
        let (mut ab, mut aa) = (0.0, 0.0);
        for (x, y) in a[r.clone()].iter().zip(&b[r]) {
            ab += x * y;
            aa += x * x;
        }
        [ab, aa]
    });
    (ab, aa)
}

/// `y <- y + alpha x`, then returns `z . y` (fused: one pass).
pub fn axpy_dot(alpha: f64, x: &[f64], y: &mut [f64], z: Option<&[f64]>, parts: &mut [[f64; 2]]) -> f64 {
    let ys = SharedMut::new(y);
    reduce(x.len(), parts, |r| {
        // SAFETY: `reduce` hands out disjoint chunk ranges.
        let yc = unsafe { ys.slice(r.clone()) };
        let mut acc = 0.0;
        match z {
            Some(z) => {
                for ((yv, xv), zv) in yc.iter_mut().zip(&x[r.clone()]).zip(&z[r]) {
                    *yv += alpha * xv;
                    acc += zv * *yv;
                }
            }
            None => yc.iter_mut().zip(&x[r]).for_each(|(yv, xv)| *yv += alpha * xv),
        }
        [acc, 0.0]
    })[0]
}

/// `out <- alpha x`, then returns `z . out`.
pub fn scale_into_dot(alpha: f64, x: &[f64], out: &mut [f64], z: Option<&[f64]>, parts: &mut [[f64; 2]]) -> f64 {
    let os = SharedMut::new(out);
    reduce(x.len(), parts, |r| {
        // SAFETY: disjoint chunk ranges.
        let oc = unsafe { os.slice(r.clone()) };
        let mut acc = 0.0;
        for (i, (o, xv)) in oc.iter_mut().zip(&x[r.clone()]).enumerate() {
            *o = alpha * xv;
            if let Some(z) = z {
                acc += z[r.start + i] * *o;
            }
        }
        [acc, 0.0]
    })[0]
}

/// `v <- alpha v`, then returns `z . v`.
pub fn scale_in_place_dot(alpha: f64, v: &mut [f64], z: Option<&[f64]>, parts: &mut [[f64; 2]]) -> f64 {
    let vs = SharedMut::new(v);
    reduce(vs.len, parts, |r| {
        // SAFETY: disjoint chunk ranges.
        let vc = unsafe { vs.slice(r.clone()) };
        let mut acc = 0.0;
        for (i, x) in vc.iter_mut().enumerate() {
            *x *= alpha;
            if let Some(z) = z {
                acc += z[r.start + i] * *x;
            }
        }
        [acc, 0.0]
    })[0]
}

/// `out <- x + step d`.
pub fn step_into(x: &[f64], step: f64, d: &[f64], out: &mut [f64], parts: &mut [[f64; 2]]) {
    let os = SharedMut::new(out);
    reduce(x.len(), parts, |r| {
        // SAFETY: disjoint chunk ranges.
        let oc = unsafe { os.slice(r.clone()) };
        for ((o, xv), dv) in oc.iter_mut().zip(&x[r.clone()]).zip(&d[r]) {
            *o = xv + step * dv;
        }
        [0.0, 0.0]
    });
}

/// `s <- step d`, `y <- g_new - g`; returns `(s . y, y . y)`.
pub fn pair_update(step: f64, d: &[f64], g_new: &[f64], g: &[f64], s: &mut [f64], y: &mut [f64], parts: &mut [[f64; 2]]) -> (f64, f64) {
    let (ss, ys) = (SharedMut::new(s), SharedMut::new(y));
    let [sy, yy] = reduce(d.len(), parts, |r| {
        // SAFETY: disjoint chunk ranges of two distinct slices.
        let (sc, yc) = unsafe { (ss.slice(r.clone()), ys.slice(r.clone())) };
        let (mut sy, mut yy) = (0.0, 0.0);
        for i in 0..sc.len() {
            let j = r.start + i;
            sc[i] = step * d[j];
            yc[i] = g_new[j] - g[j];
            sy += sc[i] * yc[i];
            yy += yc[i] * yc[i];
        }
        [sy, yy]
    });
    (sy, yy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_ops_match_plain_loops_and_do_not_depend_on_threads() {
        let n = 9 * CHUNK + 17;
        let a: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 * 1e-3 - 0.5).collect();
        let b: Vec<f64> = (0..n).map(|i| ((i * 104729) % 997) as f64 * 1e-3).collect();
        let mut parts = vec![[0.0; 2]; chunks(n)];
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let d = dot(&a, &b, &mut parts);
        assert!((d - plain).abs() < 1e-9 * plain.abs());
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let d1 = one.install(|| dot(&a, &b, &mut vec![[0.0; 2]; chunks(n)]));
        assert_eq!(d.to_bits(), d1.to_bits());
        let mut y = b.clone();
        let zy = axpy_dot(0.5, &a, &mut y, Some(&a), &mut parts);
        let expect: f64 = a.iter().zip(&b).map(|(x, y)| x * (y + 0.5 * x)).sum();
        assert!((zy - expect).abs() < 1e-9 * expect.abs());
    }
}
