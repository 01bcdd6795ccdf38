//! The solver's vector passes on long slices: reductions over fixed chunks, the direction
//! pass ([`combine_range`]) and the curvature pass ([`curvature_range`]).
//!
//! Reductions are computed per chunk and summed in chunk order. The chunking depends only on
//! the length, never on the thread count, so results are bit-identical for any number of
//! threads. Short vectors run serially with the same chunking (same arithmetic).
//!
//! The lane loops are portable code compiled for the chosen instruction set
//! ([`Isa::run`]): eight lanes, fused multiply-adds through `f64::mul_add`, so every target
//! gives the same bits. They replaced hand-written AVX2 and AVX-512 versions of the same
//! loops, which bought less than the 5% a hand-written kernel must (docs/performance.md).

use rayon::prelude::*;

use super::cpu::{Isa, Lanes, LANES};
#[cfg(test)]
use super::shared::SharedMut;

/// Elements per chunk.
pub const CHUNK: usize = 1 << 14;
/// Vectors shorter than this run on one thread.
const PARALLEL_MIN: usize = 8 * CHUNK;

/// Most stored vectors one pass combines or reads.
pub const MAX_STREAMS: usize = 128;

/// Elements per sub-block of the curvature pass (the new vectors are re-read from L1 for
/// each pair of stored vectors). Measured: 1024 and 512 overflow L1 with m = 3 (40% slower
/// than 128); 64 is no better than 128.
const BLOCK: usize = 128;

/// Number of chunks of a vector of length n.
pub fn chunks(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
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
    assert!(width > 0, "reduce_many needs at least one accumulator");
    let nc = chunks(n);
    if parts.len() < nc * width {
        parts.resize(nc * width, 0.0);
    }
    let parts = &mut parts[..nc * width];
    parts.iter_mut().for_each(|v| *v = 0.0);
    let range = |c: usize| c * CHUNK..((c + 1) * CHUNK).min(n);
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

/// The solver's direction pass over one range, one read of every stream. The stored vectors
/// are f32; the arithmetic is f64. Writes
/// `out <- round_f32(c_out out + cg g + sum_j c_j v_j)` (the old content of `out` takes
/// part, so `out` may be the buffer of a basis vector being retired), then
/// `x <- x + step out` in place with the rounded `out`, and returns the range's share of
/// `out . g`. Every slice is that range of its vector.
#[allow(clippy::too_many_arguments)]
pub fn combine_range(isa: Isa, out: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], g: &[f64], cg: f64, step: f64, x: &mut [f64]) -> f64 {
    let len = out.len();
    assert!(g.len() == len && x.len() == len && terms.iter().all(|t| t.0.len() == len));
    assert!(terms.len() <= MAX_STREAMS, "at most {MAX_STREAMS} stored vectors");
    isa.run(
        #[inline(always)]
        || combine_body(out, c_out, terms, g, cg, step, x),
    )
}

#[inline(always)]
fn combine_body(out: &mut [f32], c_out: f64, terms: &[(&[f32], f64)], g: &[f64], cg: f64, step: f64, x: &mut [f64]) -> f64 {
    let len = out.len();
    let full = len / LANES * LANES;
    let (cgv, stepv) = (Lanes::splat(cg), Lanes::splat(step));
    let mut dg = Lanes::default();
    let mut i = 0;
    while i < full {
        let gv = Lanes::load(&g[i..]);
        let mut a = if c_out != 0.0 { Lanes::widen(&out[i..]).map(|o| c_out * o) } else { Lanes::default() };
        a.fma(&cgv, &gv);
        for &(v, c) in terms {
            a.fma(&Lanes::splat(c), &Lanes::widen(&v[i..]));
        }
        let rf = a.round_store_f32(&mut out[i..]);
        Lanes::load(&x[i..]).add_mul(&stepv, &rf).store(&mut x[i..]);
        dg.fma(&rf, &gv);
        i += LANES;
    }
    let mut tail = 0.0;
    for i in full..len {
        let mut a = if c_out != 0.0 { c_out * f64::from(out[i]) } else { 0.0 };
        a += cg * g[i];
        for &(v, c) in terms {
            a += c * f64::from(v[i]);
        }
        let r = a as f32;
        out[i] = r;
        let rf = f64::from(r);
        x[i] += step * rf;
        tail += rf * g[i];
    }
    Lanes::hsums([dg])[0] + tail
}

/// `x <- x + step d` in place, with an f32 direction, over whole vectors.
pub fn step_into_f32(x: &mut [f64], step: f64, d: &[f32]) {
    assert!(d.len() == x.len());
    if x.len() >= PARALLEL_MIN {
        x.par_chunks_mut(CHUNK).zip(d.par_chunks(CHUNK)).for_each(|(xc, dc)| step_range(step, dc, xc));
    } else {
        step_range(step, d, x);
    }
}

/// `x <- x + step d` over one range (every slice is that range of its vector).
pub fn step_range(step: f64, d: &[f32], x: &mut [f64]) {
    assert!(d.len() == x.len());
    for (xv, dv) in x.iter_mut().zip(d) {
        *xv += step * f64::from(*dv);
    }
}

/// The solver's curvature pass over one range, after an evaluation at `x + a d`, one read of
/// every stream: `y <- round_f32(g_new - g)`, and the dot products (in f64, of the stored f32
/// values) of the three new vectors `(d, y, g_new)` with every kept basis vector `olds[j]`
/// and with each other, added into `acc` as
/// `[olds[0].(d, y, g_new), olds[1].(d, y, g_new), ..., d.d, d.y, d.g_new, y.y, y.g_new, g_new.g_new]`
/// (length `3 olds.len() + 6`). Every slice is that range of its vector.
pub fn curvature_range(isa: Isa, gn_r: &[f64], g: &[f64], d: &[f32], yc: &mut [f32], olds: &[&[f32]], acc: &mut [f64]) {
    let (k, len) = (olds.len(), yc.len());
    assert!(gn_r.len() == len && g.len() == len && d.len() == len && olds.iter().all(|v| v.len() == len) && acc.len() == 3 * k + 6);
    isa.run(
        #[inline(always)]
        || curvature_body(gn_r, g, d, yc, olds, acc),
    )
}

#[inline(always)]
fn curvature_body(gn_r: &[f64], g: &[f64], d: &[f32], yc: &mut [f32], olds: &[&[f32]], acc: &mut [f64]) {
    let (k, len) = (olds.len(), yc.len());
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

/// Dot products of a stored vector `v` with `a`, `b`, `c`, over one read of each.
#[inline(always)]
fn dots3(v: &[f32], a: &[f64], b: &[f64], c: &[f64]) -> [f64; 3] {
    let mut l = [Lanes::default(); 3];
    let n = v.len() / LANES * LANES;
    let (vs, a8, b8, c8) = (&v[..n], &a[..n], &b[..n], &c[..n]);
    let mut i = 0;
    while i < n {
        let x = Lanes::widen(&vs[i..]);
        l[0].fma(&x, &Lanes::load(&a8[i..]));
        l[1].fma(&x, &Lanes::load(&b8[i..]));
        l[2].fma(&x, &Lanes::load(&c8[i..]));
        i += LANES;
    }
    let mut out = Lanes::hsums(l);
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
    let mut l = [Lanes::default(); 6];
    let n = v0.len() / LANES * LANES;
    let (p0, p1, a8, b8, c8) = (&v0[..n], &v1[..n], &a[..n], &b[..n], &c[..n]);
    let mut i = 0;
    while i < n {
        let (x0, x1) = (Lanes::widen(&p0[i..]), Lanes::widen(&p1[i..]));
        let (av, bv, cv) = (Lanes::load(&a8[i..]), Lanes::load(&b8[i..]), Lanes::load(&c8[i..]));
        l[0].fma(&x0, &av);
        l[1].fma(&x0, &bv);
        l[2].fma(&x0, &cv);
        l[3].fma(&x1, &av);
        l[4].fma(&x1, &bv);
        l[5].fma(&x1, &cv);
        i += LANES;
    }
    let mut out = Lanes::hsums(l);
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
    let mut l = [Lanes::default(); 6];
    let len = y.len();
    let n = len / LANES * LANES;
    let mut i = 0;
    while i < n {
        let (gv, ov, dk) = (Lanes::load(&gn[i..]), Lanes::load(&go[i..]), Lanes::widen(&d[i..]));
        let yk = gv.sub(&ov).round_store_f32(&mut y[i..]);
        dk.store(&mut dw[i..]);
        yk.store(&mut yw[i..]);
        l[0].fma(&dk, &dk);
        l[1].fma(&dk, &yk);
        l[2].fma(&dk, &gv);
        l[3].fma(&yk, &yk);
        l[4].fma(&yk, &gv);
        l[5].fma(&gv, &gv);
        i += LANES;
    }
    let mut out = Lanes::hsums(l);
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

/// The direction pass over whole vectors (chunked and parallel like the reductions): the
/// reference the fused, range-by-range pass is tested against.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn combine_and_step(
    isa: Isa,
    out: &mut [f32],
    c_out: f64,
    terms: &[(&[f32], f64)],
    g: &[f64],
    cg: f64,
    step: f64,
    x: &mut [f64],
    parts: &mut Vec<f64>,
) -> f64 {
    let n = out.len();
    let (os, xs) = (SharedMut::new(out), SharedMut::new(x));
    let mut dg = [0.0];
    reduce_many(n, 1, parts, &mut dg, |r, acc| {
        // SAFETY: `reduce_many` hands every chunk its own range.
        let (oc, xc) = unsafe { (os.slice(r.clone()), xs.slice(r.clone())) };
        let local: Vec<(&[f32], f64)> = terms.iter().map(|&(v, c)| (&v[r.clone()], c)).collect();
        acc[0] += combine_range(isa, oc, c_out, &local, &g[r], cg, step, xc);
    });
    dg[0]
}

/// The curvature pass over whole vectors (see [`combine_and_step`]).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn curvature_pass(isa: Isa, g_new: &[f64], g: &[f64], d: &[f32], y: &mut [f32], olds: &[&[f32]], parts: &mut Vec<f64>, out: &mut [f64]) {
    let n = g.len();
    let ys = SharedMut::new(y);
    let k = olds.len();
    reduce_many(n, 3 * k + 6, parts, out, |r, acc| {
        // SAFETY: `reduce_many` hands every chunk its own range.
        let yc = unsafe { ys.slice(r.clone()) };
        let local: Vec<&[f32]> = olds.iter().map(|v| &v[r.clone()]).collect();
        curvature_range(isa, &g_new[r.clone()], &g[r.clone()], &d[r], yc, &local, acc);
    });
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
    fn dot2_matches_a_plain_loop_and_does_not_depend_on_threads() {
        let n = 9 * CHUNK + 17;
        let (a, b) = (data(n, 1, 1.0), data(n, 2, 2.0));
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let (d, aa) = dot2(&a, &b, &mut Vec::new());
        assert!((d - plain).abs() < 1e-9 * plain.abs());
        assert!((aa - a.iter().map(|x| x * x).sum::<f64>()).abs() < 1e-9 * aa);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (d1, _) = one.install(|| dot2(&a, &b, &mut Vec::new()));
        assert_eq!(d.to_bits(), d1.to_bits());
    }

    /// Everything the direction and curvature passes produce (with `n_olds` stored vectors in
    /// the latter), as bits: (direction, new x, d.g, y, dot products).
    type Passes = (Vec<u32>, Vec<u64>, u64, Vec<u32>, Vec<u64>);

    fn passes_with(isa: Isa, n: usize, n_olds: usize) -> Passes {
        let (g, x, gn) = (data(n, 3, 1.0), data(n, 4, 3.0), data(n, 5, 1.5));
        let basis: Vec<Vec<f32>> = (0..4).map(|k| to32(&data(n, 10 + k, 0.7))).collect();
        let terms: Vec<(&[f32], f64)> = basis.iter().zip([0.3, -1.25, 0.5, 2.0]).map(|(v, c)| (v.as_slice(), c)).collect();
        let mut out = to32(&data(n, 20, 1.0));
        let mut x_new = x.clone();
        let mut parts = Vec::new();
        let dg = combine_and_step(isa, &mut out, 0.75, &terms, &g, -0.6, 0.9, &mut x_new, &mut parts);
        let mut y = vec![0.0f32; n];
        let olds: Vec<&[f32]> = basis.iter().take(n_olds).map(|v| v.as_slice()).collect();
        let mut dots = vec![0.0; 3 * olds.len() + 6];
        curvature_pass(isa, &gn, &g, &out, &mut y, &olds, &mut parts, &mut dots);
        (
            out.iter().map(|v| v.to_bits()).collect(),
            x_new.iter().map(|v| v.to_bits()).collect(),
            dg.to_bits(),
            y.iter().map(|v| v.to_bits()).collect(),
            dots.iter().map(|v| v.to_bits()).collect(),
        )
    }

    /// The solver's two passes against plain scalar loops written from their definitions,
    /// with an even and an odd number of stored vectors, on every instruction set.
    #[test]
    fn solver_passes_match_plain_loops() {
        let mut checked = 0;
        for isa in Isa::available() {
            for n_olds in [4, 3] {
                check_passes(isa, n_olds);
                checked += 1;
            }
        }
        assert!(checked >= 2);
    }

    fn check_passes(isa: Isa, n_olds: usize) {
        let n = 9 * CHUNK + 13;
        let (out, x_new, dg, y, dots) = passes_with(isa, n, n_olds);
        let dg = f64::from_bits(dg);
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
        for (k, (got, want)) in dots.iter().map(|b| f64::from_bits(*b)).zip(&expect).enumerate() {
            assert!((got - want).abs() <= 1e-11 * want.abs().max(1.0), "{isa:?} dot {k}: {got} vs {want}");
        }
    }

    /// Same bits on one thread or many, and on every instruction set this host runs.
    #[test]
    fn solver_passes_do_not_depend_on_threads_or_the_instruction_set() {
        let n = 9 * CHUNK + 13;
        let isas = Isa::available();
        let base = passes_with(isas[0], n, 4);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(base, one.install(|| passes_with(isas[0], n, 4)));
        let odd = passes_with(isas[0], n, 3);
        for &isa in &isas[1..] {
            assert_eq!(base, passes_with(isa, n, 4), "{isa:?}");
            assert_eq!(odd, passes_with(isa, n, 3), "{isa:?}");
        }
    }

    /// Every kernel on short ranges: the same bits on every instruction set. (A fused and an
    /// unfused multiply-add differ in the last bit of a lane only now and then, and the
    /// difference can vanish in the final sum of the lanes, so the check runs on 16 draws;
    /// replacing an FMA whose product is inexact by a multiply and an add makes it fail.)
    #[test]
    fn every_kernel_gives_the_same_bits_on_every_instruction_set() {
        use rand::{Rng, SeedableRng};
        let n = 125 * LANES + 5;
        let isas = Isa::available();
        let mut compared = 0;
        for seed in 0..16 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut draw = |scale: f64| (0..n).map(|_| scale * (rng.random::<f64>() - 0.5)).collect::<Vec<f64>>();
            let (a, b, c) = (draw(1.3), draw(2.7), draw(1.5));
            let (v0, v1) = (to32(&draw(1.1)), to32(&draw(0.7)));
            let run = |isa: Isa| {
                let mut bits: Vec<u64> = Vec::new();
                bits.extend(isa.run(|| dots3(&v0, &a, &b, &c)).map(f64::to_bits));
                bits.extend(isa.run(|| dots_pair(&v0, &v1, &a, &b, &c)).map(f64::to_bits));
                let (mut y, mut dw, mut yw) = (vec![0.0f32; n], vec![0.0; n], vec![0.0; n]);
                bits.extend(isa.run(|| diff_and_dots6(&a, &b, &v0, &mut y, &mut dw, &mut yw)).map(f64::to_bits));
                bits.extend(y.iter().map(|v| u64::from(v.to_bits())));
                let (mut out, mut xn) = (v1.clone(), b.clone());
                let terms = [(&v0[..], 0.37), (&v1[..], -1.3)];
                bits.push(combine_range(isa, &mut out, 0.8, &terms, &a, -0.45, 0.7, &mut xn).to_bits());
                bits.extend(out.iter().map(|v| u64::from(v.to_bits())));
                bits.extend(xn.iter().map(|v| v.to_bits()));
                bits
            };
            let best = run(isas[0]);
            for &isa in &isas[1..] {
                assert_eq!(best, run(isa), "seed {seed}, {isa:?}");
                compared += 1;
            }
        }
        // On a host with a vector unit the comparison is not vacuous.
        if isas.len() > 1 {
            assert_eq!(compared, 16 * (isas.len() - 1));
        }
    }
}
