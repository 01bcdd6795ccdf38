//! The three matrix products of one chunk of the UFM objective, without packing.
//!
//! Per chunk of `m` samples the objective needs (docs/theory.md §1; `model::objective`)
//! - `Z = W H_c` (K x m, depth d),
//! - `dW_c = G_c H_c^T` (K x d, depth m),
//! - `dH_c = W^T G_c + lh H_c` (d x m, depth K), and `||H_c||^2`.
//!
//! A general GEMM (matrixmultiply) copies both operands into packed panels on every call; on
//! these shapes that packing is about a fifth of the product's time (12% of a whole solve of
//! preset E). Here every operand is already laid out the way a register tile reads it:
//! the tile's left operand is a column of W, of `W^T` or of G, read as contiguous rows, and
//! its right operand is one scalar per column, broadcast. Only `W^T` has to be formed, once
//! per evaluation (it is K x d, tiny next to H). The products are ordinary sums of products
//! in a fixed order, so results do not depend on the thread count.
//!
//! The register tile is 16 x 12 (AVX-512: two 8-wide rows of registers, 24 accumulators);
//! rows past the matrix edge are masked off on load and store, a remainder of at most 4 rows
//! runs in 4-wide registers (half the cost of an 8-wide tile on this core), and a column
//! remainder runs with 8-, 4- and 1-wide tiles. Without AVX-512 (F and VL) the same products
//! go through [`super::gemm`].

use super::cpu::Isa;
use crate::linalg::{gemm, Mat};

/// The three products of one chunk. Holds `W^T`, formed by [`ChunkProducts::prepare`].
#[derive(Debug, Clone, Default)]
pub struct ChunkProducts {
    wt: Vec<f64>,
    /// `W^T` starts at `wt[wt_start]` (64-byte aligned) with leading dimension `wt_ld`.
    wt_start: usize,
    wt_ld: usize,
    k: usize,
    d: usize,
    portable: bool,
}

impl ChunkProducts {
    /// Products for `isa`: the AVX-512 kernels when `isa` is [`Isa::Avx512`] and the CPU has
    /// it, matrixmultiply otherwise.
    pub fn new(isa: Isa) -> Self {
        ChunkProducts { portable: !(isa == Isa::Avx512 && isa.is_available()), ..Default::default() }
    }

    /// Whether the AVX-512 kernels run.
    pub fn vectorised(&self) -> bool {
        !self.portable
    }

    /// Forms `W^T` (d x K) for [`ChunkProducts::grad_h`]; call once per evaluation, before
    /// the chunks.
    ///
    /// The columns of `W^T` are padded to a multiple of 8 plus 8 doubles: with a leading
    /// dimension of exactly 128 (d = 128), every fourth column would fall in the same L1
    /// sets, and a 16-row panel of 100 columns would not stay in the 8-way L1.
    pub fn prepare(&mut self, w: Mat) {
        let (k, d) = (w.rows, w.cols);
        self.k = k;
        self.d = d;
        self.wt_ld = d.div_ceil(8) * 8 + 8;
        self.wt.resize(self.wt_ld * k + 8, 0.0);
        self.wt_start = self.wt.as_ptr().align_offset(64).min(7);
        let wt = &mut self.wt[self.wt_start..];
        for i in 0..k {
            for l in 0..d {
                wt[l + self.wt_ld * i] = w.data[i + k * l];
            }
        }
    }

    /// `z = W h` (K x m).
    pub fn logits(&self, w: Mat, h: Mat, z: &mut [f64]) {
        assert!(w.cols == h.rows && z.len() == w.rows * h.cols, "logits: shapes differ");
        #[cfg(target_arch = "x86_64")]
        if !self.portable {
            // SAFETY: AVX-512F is present (checked in `new`); the operands span exactly the
            // index ranges the kernel reads (A: K x d column-major, B(p, j) = h[p + d j]),
            // and z is K x m.
            unsafe {
                avx512::product(
                    avx512::Operands { rows: w.rows, cols: h.cols, depth: w.cols, a: w.data, lda: w.rows, b: h.data, rsb: 1, csb: h.rows, ldc: w.rows },
                    z,
                    avx512::Epilogue::Store,
                );
            }
            return;
        }
        gemm(1.0, w, false, h, false, 0.0, z);
    }

    /// `dw = g h^T` (K x d) for `g` K x m and `h` d x m.
    pub fn grad_w(&self, g: Mat, h: Mat, dw: &mut [f64]) {
        assert!(g.cols == h.cols && dw.len() == g.rows * h.rows, "grad_w: shapes differ");
        #[cfg(target_arch = "x86_64")]
        if !self.portable {
            // SAFETY: as in `logits`; B(p, l) = h[l + d p] with l < d, p < m.
            unsafe {
                avx512::product(
                    avx512::Operands { rows: g.rows, cols: h.rows, depth: g.cols, a: g.data, lda: g.rows, b: h.data, rsb: h.rows, csb: 1, ldc: g.rows },
                    dw,
                    avx512::Epilogue::Store,
                );
            }
            return;
        }
        gemm(1.0, g, false, h, true, 0.0, dw);
    }

    /// `dh = W^T g + lh h` (d x m) and returns `||h||^2`. Needs [`ChunkProducts::prepare`]
    /// with this evaluation's W.
    pub fn grad_h(&self, w: Mat, g: Mat, h: Mat, lh: f64, dh: &mut [f64]) -> f64 {
        assert!(w.rows == g.rows && w.cols == h.rows && g.cols == h.cols && dh.len() == h.data.len(), "grad_h: shapes differ");
        #[cfg(target_arch = "x86_64")]
        if !self.portable {
            assert!(self.k == w.rows && self.d == w.cols, "grad_h: prepare() was not called for this W");
            let mut hsq = 0.0;
            // SAFETY: as in `logits`; A = W^T (d x K), B(p, j) = g[p + K j], and h has dh's shape.
            unsafe {
                avx512::product(
                    avx512::Operands {
                        rows: h.rows,
                        cols: h.cols,
                        depth: w.rows,
                        a: &self.wt[self.wt_start..],
                        lda: self.wt_ld,
                        b: g.data,
                        rsb: 1,
                        csb: g.rows,
                        ldc: h.rows,
                    },
                    dh,
                    avx512::Epilogue::AddScaled { h: h.data, lh, hsq: &mut hsq },
                );
            }
            return hsq;
        }
        let hsq = scale_into_sum_sq(lh, h.data, dh);
        gemm(1.0, w, true, g, false, 1.0, dh);
        hsq
    }
}

/// `out <- a x` and returns `||x||^2`, summed in eight lanes (a serial sum would be a
/// four-cycle dependency per element).
fn scale_into_sum_sq(a: f64, x: &[f64], out: &mut [f64]) -> f64 {
    let mut l = [0.0f64; 8];
    let (xc, oc) = (x.chunks_exact(8), out.chunks_exact_mut(8));
    let (xr, mut tail) = (xc.remainder(), 0.0);
    for (x8, o8) in xc.zip(oc) {
        for k in 0..8 {
            o8[k] = a * x8[k];
            l[k] += x8[k] * x8[k];
        }
    }
    let start = x.len() - xr.len();
    for (o, v) in out[start..].iter_mut().zip(xr) {
        *o = a * v;
        tail += v * v;
    }
    (((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))) + tail
}
/// One column panel of a blocked `C += A A^T`: columns `j0..j1` of the d x d column-major C
/// (leading dimension `ldc`; `c` starts at column j0), rows `0..j1`, from the rows `0..j1` of
/// A (`A(i, p) = a[i + lda p]`, `p < depth`). That is the panel's part of the upper triangle,
/// and the diagonal block whole. The AVX-512 tiles when `isa` has them, matrixmultiply
/// otherwise; either way each entry is one sum over p in a fixed order.
#[allow(clippy::too_many_arguments)]
pub fn syrk_panel(isa: Isa, a: &[f64], lda: usize, depth: usize, j0: usize, j1: usize, c: &mut [f64], ldc: usize) {
    assert!(j0 < j1 && j1 <= lda && j1 <= ldc, "syrk_panel: columns {j0}..{j1} outside lda {lda} / ldc {ldc}");
    if depth == 0 {
        return;
    }
    assert!(a.len() >= j1 + lda * (depth - 1), "syrk_panel: A is too short");
    assert!(c.len() >= j1 + ldc * (j1 - j0 - 1), "syrk_panel: C is too short");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.is_available() {
        // SAFETY: AVX-512F is present; A(i, p) = a[i + lda p] for i < j1, p < depth and
        // B(p, j) = a[j0 + j + lda p] for j < j1 - j0 lie in `a` (asserted above), and C's
        // entries i + ldc j (i < j1, j < j1 - j0) lie in `c` (asserted above; `product`
        // asserts all three again).
        unsafe {
            avx512::product(avx512::Operands { rows: j1, cols: j1 - j0, depth, a, lda, b: &a[j0..], rsb: lda, csb: 1, ldc }, c, avx512::Epilogue::Add);
        }
        return;
    }
    // SAFETY: the same index ranges as above, asserted: A is read at i + lda p (i < j1,
    // p < depth), B at j0 + j + lda p (j < j1 - j0), C written at i + ldc j.
    unsafe {
        matrixmultiply::dgemm(j1, depth, j1 - j0, 1.0, a.as_ptr(), 1, lda as isize, a.as_ptr().add(j0), lda as isize, 1, 1.0, c.as_mut_ptr(), 1, ldc as isize);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `C (rows x cols, column-major, leading dimension ldc >= rows) = A B`, where
    /// `A(i, p) = a[i + lda p]` and `B(p, j) = b[p rsb + j csb]`, `p < depth`.
    pub struct Operands<'a> {
        pub rows: usize,
        pub cols: usize,
        pub depth: usize,
        pub a: &'a [f64],
        pub lda: usize,
        pub b: &'a [f64],
        pub rsb: usize,
        pub csb: usize,
        pub ldc: usize,
    }

    /// What is done with a finished tile of `A B`.
    pub enum Epilogue<'a> {
        /// `C = A B`.
        Store,
        /// `C = A B + lh H` (H shaped like C, leading dimension ldc), and `hsq += ||H||^2`.
        AddScaled { h: &'a [f64], lh: f64, hsq: &'a mut f64 },
        /// `C += A B`.
        Add,
    }

    /// Widest tile: 12 columns.
    const NR: usize = 12;

    /// Runs the product tile by tile: columns in blocks of 12 (then 8, 4, 1), and within each
    /// column block, rows in blocks of 16 (the last one masked, and 4-wide if at most 4
    /// rows are left).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and every index `i + lda p` (i < rows, p < depth) must lie
    /// in `a`, every `p rsb + j csb` (p < depth, j < cols) in `b`, every `i + ldc j` in `c`
    /// (and `h`). These are asserted.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn product(op: Operands, c: &mut [f64], mut epi: Epilogue) {
        let Operands { rows, cols, depth, a, lda, b, rsb, csb, ldc } = op;
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(ldc >= rows && c.len() >= rows + ldc * (cols - 1));
        assert!(lda >= rows && a.len() >= rows + lda * depth.saturating_sub(1));
        assert!(depth == 0 || b.len() > (depth - 1) * rsb + (cols - 1) * csb);
        if let Epilogue::AddScaled { h, .. } = &epi {
            assert!(h.len() >= rows + ldc * (cols - 1));
        }
        let mut hsq = _mm512_setzero_pd();
        let mut hsq4 = _mm256_setzero_pd();
        let mut j0 = 0;
        while j0 < cols {
            let nr = match cols - j0 {
                r if r >= NR => NR,
                r if r >= 8 => 8,
                r if r >= 4 => 4,
                _ => 1,
            };
            let mut i0 = 0;
            while i0 < rows {
                let mr = (rows - i0).min(16);
                let t = Tile { i0, j0, mr, depth, a: a.as_ptr(), lda, b: b.as_ptr(), rsb, csb };
                let c = c.as_mut_ptr();
                match (nr, mr) {
                    (12, 9..) => t.run::<12, 2>(c, ldc, &mut epi, &mut hsq),
                    (12, 5..) => t.run::<12, 1>(c, ldc, &mut epi, &mut hsq),
                    (12, _) => t.run_narrow::<12>(c, ldc, &mut epi, &mut hsq4),
                    (8, 9..) => t.run::<8, 2>(c, ldc, &mut epi, &mut hsq),
                    (8, 5..) => t.run::<8, 1>(c, ldc, &mut epi, &mut hsq),
                    (8, _) => t.run_narrow::<8>(c, ldc, &mut epi, &mut hsq4),
                    (4, 9..) => t.run::<4, 2>(c, ldc, &mut epi, &mut hsq),
                    (4, 5..) => t.run::<4, 1>(c, ldc, &mut epi, &mut hsq),
                    (4, _) => t.run_narrow::<4>(c, ldc, &mut epi, &mut hsq4),
                    (_, 9..) => t.run::<1, 2>(c, ldc, &mut epi, &mut hsq),
                    (_, 5..) => t.run::<1, 1>(c, ldc, &mut epi, &mut hsq),
                    (_, _) => t.run_narrow::<1>(c, ldc, &mut epi, &mut hsq4),
                }
                i0 += 16;
            }
            j0 += nr;
        }
        if let Epilogue::AddScaled { hsq: out, .. } = epi {
            let mut l = [0.0; 4];
            _mm256_storeu_pd(l.as_mut_ptr(), hsq4);
            *out += _mm512_reduce_add_pd(hsq) + ((l[0] + l[1]) + (l[2] + l[3]));
        }
    }

    /// One register tile: rows `i0 .. i0 + mr` (mr <= 16), columns `j0 .. j0 + N`.
    struct Tile {
        i0: usize,
        j0: usize,
        mr: usize,
        depth: usize,
        a: *const f64,
        lda: usize,
        b: *const f64,
        rsb: usize,
        csb: usize,
    }

    impl Tile {
        /// Accumulates the tile over the whole depth in `R` rows of registers, then applies
        /// the epilogue. Rows past `mr` are masked off (never read, never written).
        ///
        /// # Safety
        /// AVX-512F; the tile lies inside the operands `product` checked: rows
        /// `i0..i0 + mr` of A and C (and H), columns `j0..j0 + N` of B and C, depth `depth`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::needless_range_loop)] // one index walks the accumulators and the columns together
        unsafe fn run<const N: usize, const R: usize>(&self, c: *mut f64, ldc: usize, epi: &mut Epilogue, hsq: &mut __m512d) {
            let masks = row_masks(self.mr);
            let mut acc = [[_mm512_setzero_pd(); N]; R];
            let a = self.a.add(self.i0);
            let b = self.b.add(self.j0 * self.csb);
            for p in 0..self.depth {
                let ap = a.add(p * self.lda);
                let mut av = [_mm512_setzero_pd(); R];
                for r in 0..R {
                    av[r] = _mm512_maskz_loadu_pd(masks[r], ap.add(8 * r));
                }
                let bp = b.add(p * self.rsb);
                for j in 0..N {
                    let bj = _mm512_set1_pd(*bp.add(j * self.csb));
                    for r in 0..R {
                        acc[r][j] = _mm512_fmadd_pd(av[r], bj, acc[r][j]);
                    }
                }
            }
            let c = c.add(self.i0 + self.j0 * ldc);
            match epi {
                Epilogue::Store => {
                    for j in 0..N {
                        for r in 0..R {
                            _mm512_mask_storeu_pd(c.add(j * ldc + 8 * r), masks[r], acc[r][j]);
                        }
                    }
                }
                Epilogue::AddScaled { h, lh, .. } => {
                    let h = h.as_ptr().add(self.i0 + self.j0 * ldc);
                    let lh = _mm512_set1_pd(*lh);
                    for j in 0..N {
                        for r in 0..R {
                            let hv = _mm512_maskz_loadu_pd(masks[r], h.add(j * ldc + 8 * r));
                            *hsq = _mm512_fmadd_pd(hv, hv, *hsq);
                            let out = _mm512_fmadd_pd(lh, hv, acc[r][j]);
                            _mm512_mask_storeu_pd(c.add(j * ldc + 8 * r), masks[r], out);
                        }
                    }
                }
                Epilogue::Add => {
                    for j in 0..N {
                        for r in 0..R {
                            let cv = _mm512_maskz_loadu_pd(masks[r], c.add(j * ldc + 8 * r));
                            _mm512_mask_storeu_pd(c.add(j * ldc + 8 * r), masks[r], _mm512_add_pd(cv, acc[r][j]));
                        }
                    }
                }
            }
        }
    }

    impl Tile {
        /// A tile of at most 4 rows (the row remainder) in 4-wide registers: on this core a
        /// 4-wide FMA costs half an 8-wide one, so a remainder of 2 rows (K = 50) or 4
        /// (K = 100) costs half of what an 8-row tile would.
        ///
        /// # Safety
        /// As [`Tile::run`], with `mr <= 4`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,fma")]
        #[allow(clippy::needless_range_loop)] // one index walks the accumulators and the columns together
        unsafe fn run_narrow<const N: usize>(&self, c: *mut f64, ldc: usize, epi: &mut Epilogue, hsq: &mut __m256d) {
            let m = ((1u16 << self.mr) - 1) as __mmask8;
            let mut acc = [_mm256_setzero_pd(); N];
            let a = self.a.add(self.i0);
            let b = self.b.add(self.j0 * self.csb);
            for p in 0..self.depth {
                let av = _mm256_maskz_loadu_pd(m, a.add(p * self.lda));
                let bp = b.add(p * self.rsb);
                for j in 0..N {
                    acc[j] = _mm256_fmadd_pd(av, _mm256_set1_pd(*bp.add(j * self.csb)), acc[j]);
                }
            }
            let c = c.add(self.i0 + self.j0 * ldc);
            match epi {
                Epilogue::Store => {
                    for j in 0..N {
                        _mm256_mask_storeu_pd(c.add(j * ldc), m, acc[j]);
                    }
                }
                Epilogue::AddScaled { h, lh, .. } => {
                    let h = h.as_ptr().add(self.i0 + self.j0 * ldc);
                    let lh = _mm256_set1_pd(*lh);
                    for j in 0..N {
                        let hv = _mm256_maskz_loadu_pd(m, h.add(j * ldc));
                        *hsq = _mm256_fmadd_pd(hv, hv, *hsq);
                        _mm256_mask_storeu_pd(c.add(j * ldc), m, _mm256_fmadd_pd(lh, hv, acc[j]));
                    }
                }
                Epilogue::Add => {
                    for j in 0..N {
                        let cv = _mm256_maskz_loadu_pd(m, c.add(j * ldc));
                        _mm256_mask_storeu_pd(c.add(j * ldc), m, _mm256_add_pd(cv, acc[j]));
                    }
                }
            }
        }
    }

    /// Load/store masks of the two 8-row halves of a tile with `mr` valid rows.
    #[inline]
    fn row_masks(mr: usize) -> [__mmask8; 2] {
        let lo = if mr >= 8 { 0xff } else { (1u16 << mr) as u8 - 1 };
        let hi = if mr >= 16 {
            0xff
        } else if mr > 8 {
            (1u16 << (mr - 8)) as u8 - 1
        } else {
            0
        };
        [lo, hi]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Panels of `C += A A^T` against the plain loop, on every instruction set, over panel
    /// widths and heights that exercise the masked rows and every column remainder; entries
    /// outside the panel's rows 0..j1 are left alone.
    #[test]
    fn syrk_panels_match_the_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &(d, depth) in &[(37usize, 23usize), (64, 256), (13, 1), (130, 40)] {
            let lda = d + 5;
            let a = random(lda * depth, &mut rng);
            for isa in Isa::available() {
                let mut c = random(d * d, &mut rng);
                let c0 = c.clone();
                let mut j0 = 0;
                for w in [12usize, 1, 7, 16, 4].iter().cycle() {
                    if j0 >= d {
                        break;
                    }
                    let j1 = (j0 + w).min(d);
                    syrk_panel(isa, &a, lda, depth, j0, j1, &mut c[j0 * d..j1 * d], d);
                    for j in j0..j1 {
                        for i in 0..d {
                            let want = if i < j1 { c0[i + d * j] + (0..depth).map(|p| a[i + lda * p] * a[j + lda * p]).sum::<f64>() } else { c0[i + d * j] };
                            // Sums of depth products of numbers in [-1, 1]: within depth * eps * depth of the loop's.
                            assert!(
                                (c[i + d * j] - want).abs() <= 4.0 * ((depth * depth) as f64 + want.abs()) * f64::EPSILON,
                                "{isa:?} d={d} depth={depth} ({i}, {j})"
                            );
                        }
                    }
                    j0 = j1;
                }
            }
        }
    }

    /// Each product against the plain triple loop of its definition, on shapes that exercise
    /// every row remainder (masked tiles) and every column remainder (12, 8, 4, 1 wide).
    #[test]
    fn products_match_the_definitions() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &(k, d, m) in &[(100, 128, 512), (50, 64, 37), (20, 32, 13), (3, 5, 1), (17, 9, 25), (9, 17, 8), (16, 16, 4), (5, 5, 30), (5, 5, 6)] {
            let w = random(k * d, &mut rng);
            let h = random(d * m, &mut rng);
            let g = random(k * m, &mut rng);
            let lh = 0.37;
            let (wm, hm, gm) = (Mat::new(&w, k, d), Mat::new(&h, d, m), Mat::new(&g, k, m));
            let mut z_ref = vec![0.0; k * m];
            let mut dw_ref = vec![0.0; k * d];
            let mut dh_ref = vec![0.0; d * m];
            for j in 0..m {
                for i in 0..k {
                    z_ref[i + k * j] = (0..d).map(|l| w[i + k * l] * h[l + d * j]).sum();
                }
                for l in 0..d {
                    dh_ref[l + d * j] = (0..k).map(|i| w[i + k * l] * g[i + k * j]).sum::<f64>() + lh * h[l + d * j];
                }
            }
            for l in 0..d {
                for i in 0..k {
                    dw_ref[i + k * l] = (0..m).map(|j| g[i + k * j] * h[l + d * j]).sum();
                }
            }
            let hsq_ref: f64 = h.iter().map(|v| v * v).sum();
            for mut p in Isa::available().into_iter().map(ChunkProducts::new) {
                p.prepare(wm);
                let (mut z, mut dw, mut dh) = (vec![f64::NAN; k * m], vec![f64::NAN; k * d], vec![f64::NAN; d * m]);
                p.logits(wm, hm, &mut z);
                p.grad_w(gm, hm, &mut dw);
                let hsq = p.grad_h(wm, gm, hm, lh, &mut dh);
                // Sums of up to 512 products of numbers in [-1, 1]: rounding differs from the
                // loop's by at most depth * eps * sum|terms| <= 512 * 2.2e-16 * 512.
                let close =
                    |a: &[f64], b: &[f64], depth: usize| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 4.0 * depth as f64 * depth as f64 * f64::EPSILON);
                assert!(close(&z, &z_ref, d), "logits k={k} d={d} m={m} vectorised={}", p.vectorised());
                assert!(close(&dw, &dw_ref, m), "grad_w k={k} d={d} m={m} vectorised={}", p.vectorised());
                assert!(close(&dh, &dh_ref, k + 1), "grad_h k={k} d={d} m={m} vectorised={}", p.vectorised());
                assert!((hsq - hsq_ref).abs() <= 1e-12 * hsq_ref, "hsq k={k} d={d} m={m}");
            }
        }
    }
}
