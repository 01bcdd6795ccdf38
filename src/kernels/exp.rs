//! A vectorisable `exp` for the softmax: arguments `x <= 0` (logits minus their maximum).
//!
//! The objective spends 10 to 20% of its time in `exp` (one per logit, 10^6 per evaluation
//! on the benchmark presets), and glibc's `exp` is scalar. This one runs eight lanes at a
//! time with AVX-512 (four with AVX2) and has a portable version doing the same arithmetic
//! in the same order, so every path gives the same bits.
//!
//! # Derivation
//! - Range reduction with a 16-entry table (Tang 1989): `k = round(16 x log2 e)`,
//!   `k = 16 n + j` with `0 <= j < 16`, and `r = (x - k c_hi) - k c_lo` with
//!   `c_hi + c_lo = ln2 / 16` (fdlibm's split of ln2 divided by 16; `c_hi` has 32
//!   significant bits, so `k c_hi` is exact for `|k| < 2^21`). Then `|r| <= ln2/32 + tiny`
//!   and `exp(x) = 2^n 2^(j/16) exp(r)`.
//! - `2^(j/16) = T_hi[j] + T_lo[j]` to 2^-106 (computed to 60 digits; a test checks the
//!   table against `exp2`).
//! - `exp(r) - 1 = q(r)`, the degree-7 Taylor polynomial `r + r^2/2 + ... + r^7/7!`, in
//!   Horner form. The truncation error is at most `(ln2/32)^8 / 8! < 1.3e-18` (below 0.01
//!   ulp of a number near 1).
//! - `exp(x) = 2^n (T_hi + (T_lo + T_hi q))`: the correction `T_lo + T_hi q` is below 0.03
//!   in size, so its rounding errors are at most 0.03 ulp of the result, and the final
//!   addition rounds once. Measured against glibc over 2 x 10^6 arguments: at most 1 ulp
//!   (test below).
//! - `k` is rounded with the `1.5 2^52` trick, offset by 16384 so that the integer in the
//!   low mantissa bits is positive (`k >= -16340` here): `j` is its low four bits and
//!   `n + 1024` the rest, with no arithmetic shift (AVX2 has none for 64-bit lanes).
//! - Arguments below `MIN_X = -708` return 0 (the true value is below 3.1e-308, the bottom
//!   of the normal range; next to the softmax's largest term, 1, it is invisible in f64).
//!   NaN propagates.
//! - No fused multiply-add anywhere, so the portable version (Rust never contracts `a * b + c`)
//!   matches the vector ones bit for bit.

use super::cpu::{Lanes, LANES};

/// Smallest argument computed; below it the result is 0.
pub const MIN_X: f64 = -708.0;
/// 16 log2(e).
const INV_STEP: f64 = 23.083_120_654_223_414;
/// `ln2/16 = STEP_HI + STEP_LO`: fdlibm's `ln2_hi` and `ln2_lo`, divided by 16 (exactly).
const STEP_HI: f64 = 6.931_471_803_691_238e-1 / 16.0;
const STEP_LO: f64 = 1.908_214_929_270_587_7e-10 / 16.0;
/// 1.5 * 2^52 + 16384: adding it rounds to an integer held in the low mantissa bits, offset
/// by 16384 = 16 * 1024.
const MAGIC: f64 = 6_755_399_441_072_128.0;
/// The bits of 1.5 * 2^52: `bits(t) - MAGIC_BITS = k + 16384`.
const MAGIC_BITS: u64 = 0x4338_0000_0000_0000;
/// 1/k! for k = 7 down to 1 (Horner order).
const C: [f64; 7] =
    [1.984_126_984_126_984e-4, 1.388_888_888_888_889e-3, 8.333_333_333_333_333e-3, 4.166_666_666_666_666_4e-2, 1.666_666_666_666_666_6e-1, 0.5, 1.0];
/// `2^(j/16) = T_HI[j] + T_LO[j]`.
const T_HI: [f64; 16] = [
    1.0,
    1.044_273_782_427_413_8,
    1.090_507_732_665_257_7,
    1.138_788_634_756_691_6,
    1.189_207_115_002_721,
    1.241_857_812_073_484,
    1.296_839_554_651_009_6,
    1.354_255_546_936_892_7,
    std::f64::consts::SQRT_2,
    1.476_826_145_939_499_3,
    1.542_210_825_407_940_7,
    1.610_490_331_949_254_3,
    1.681_792_830_507_429,
    1.756_252_160_373_299_5,
    1.834_008_086_409_342_4,
    1.915_206_561_397_147_4,
];
const T_LO: [f64; 16] = [
    0.0,
    8.551_889_705_537_965e-17,
    -3.046_782_079_812_471e-17,
    8.912_812_676_025_408e-17,
    3.982_015_231_465_646e-17,
    4.658_027_591_836_937e-17,
    2.538_250_279_488_831_5e-17,
    7.700_948_379_802_99e-17,
    -9.667_293_313_452_913e-17,
    -3.483_994_556_892_796e-17,
    7.949_834_809_697_621e-17,
    2.470_719_256_979_788_8e-17,
    8.199_010_020_581_497e-17,
    2.960_140_695_448_873e-17,
    3.283_107_224_245_627e-17,
    -1.061_994_605_619_596_3e-16,
];

/// `exp(x)` for `x <= 0` (any `x` below [`MIN_X`] gives 0).
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    let xc = if x < MIN_X { MIN_X } else { x };
    let t = xc * INV_STEP + MAGIC;
    let kf = t - MAGIC;
    let r = (xc - kf * STEP_HI) - kf * STEP_LO;
    let mut p = C[0];
    for &c in &C[1..] {
        p = p * r + c;
    }
    let q = p * r;
    let u = t.to_bits().wrapping_sub(MAGIC_BITS);
    let j = (u & 15) as usize;
    let scale = f64::from_bits(((u >> 4).wrapping_sub(1)) << 52);
    let v = (T_HI[j] + (T_LO[j] + T_HI[j] * q)) * scale;
    if x < MIN_X {
        0.0
    } else {
        v
    }
}

/// `v <- exp(v)` for every entry (each `<= 0`), eight lanes at a time. Inlined into its
/// caller, so it is compiled for the caller's instruction set ([`Isa::run`](super::cpu::Isa::run));
/// every instruction set gives the same bits: each entry is [`exp_nonpos`].
#[inline(always)]
pub fn exp_nonpos_in_place(v: &mut [f64]) {
    let mut c = v.chunks_exact_mut(LANES);
    for q in &mut c {
        Lanes::load(q).map(exp_nonpos).store(q);
    }
    for x in c.into_remainder() {
        *x = exp_nonpos(*x);
    }
}

/// `v <- exp(v - shift)` for every entry (each `v <= shift`), returning the sum of the
/// results: four lanes (entry i goes to lane i mod 4, in order) over the first
/// `4 floor(len/4)` entries, combined as `(l0 + l2) + (l1 + l3)`, then the tail in order.
/// Inlined like [`exp_nonpos_in_place`]; every instruction set gives the same bits.
#[inline(always)]
pub fn exp_shifted_sum(v: &mut [f64], shift: f64) -> f64 {
    let mut lanes = [0.0f64; 4];
    let mut c = v.chunks_exact_mut(LANES);
    for q in &mut c {
        let e = Lanes::load(q).map(|x| exp_nonpos(x - shift));
        e.store(q);
        // Entry i goes to lane i mod 4: the low half, then the high half.
        for (l, v) in lanes.iter_mut().zip(e.0[0]) {
            *l += v;
        }
        for (l, v) in lanes.iter_mut().zip(e.0[1]) {
            *l += v;
        }
    }
    shifted_sum_rest(c.into_remainder(), shift, lanes)
}

/// The end of [`exp_shifted_sum`] after its blocks of eight: the rest's blocks of four into
/// `lanes`, the last entries in order, and the documented combination.
#[inline(always)]
fn shifted_sum_rest(rest: &mut [f64], shift: f64, mut lanes: [f64; 4]) -> f64 {
    let n4 = rest.len() / 4 * 4;
    for q in rest[..n4].chunks_exact_mut(4) {
        for l in 0..4 {
            q[l] = exp_nonpos(q[l] - shift);
            lanes[l] += q[l];
        }
    }
    let mut tail = 0.0;
    for x in &mut rest[n4..] {
        *x = exp_nonpos(*x - shift);
        tail += *x;
    }
    ((lanes[0] + lanes[2]) + (lanes[1] + lanes[3])) + tail
}

/// Which code computes [`exp_shifted_sum`]: the portable lanes (compiled for the caller's
/// instruction set), or, where AVX-512 is in use, the same arithmetic on 512-bit registers
/// with the table read by a register permutation instead of gathers. `perf annotate` showed
/// the portable form compiled to four `vgatherqpd` per eight entries, the largest part of its
/// time; the permutation form takes 1.66 against 2.28 ms for E's 1.01 million exponentials on
/// one thread (`cargo bench --bench ufm -- exp_shifted_sum`). The same bits either way (tested).
#[derive(Clone, Copy, Debug)]
pub enum ExpKernel {
    /// [`exp_shifted_sum`] as written.
    Lanes,
    /// The 512-bit form; holding the token proves the CPU has AVX-512.
    #[cfg(target_arch = "x86_64")]
    Avx512(pulp::x86::V4),
}

impl ExpKernel {
    /// The kernel for code compiled for `isa` ([`Isa::run`](super::cpu::Isa::run)).
    pub fn for_isa(isa: super::cpu::Isa) -> ExpKernel {
        match isa {
            #[cfg(target_arch = "x86_64")]
            super::cpu::Isa::Avx512 => pulp::x86::V4::try_new().map_or(ExpKernel::Lanes, ExpKernel::Avx512),
            _ => ExpKernel::Lanes,
        }
    }

    /// [`exp_shifted_sum`], bit for bit.
    #[inline(always)]
    pub fn shifted_sum(self, v: &mut [f64], shift: f64) -> f64 {
        match self {
            ExpKernel::Lanes => exp_shifted_sum(v, shift),
            #[cfg(target_arch = "x86_64")]
            ExpKernel::Avx512(simd) => avx512::shifted_sum(simd, v, shift),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use core::arch::x86_64::{__m256d, __m512d, __m512i, _CMP_LT_OQ};
    use pulp::x86::V4;

    /// Entries `8 half .. 8 half + 8` of a table, as a register.
    #[inline(always)]
    fn table(t: &[f64; 16], half: usize) -> __m512d {
        let mut a = [0.0f64; 8];
        a.copy_from_slice(&t[8 * half..8 * half + 8]);
        pulp::cast(a)
    }

    /// [`exp_nonpos`] on eight lanes: the same operations in the same order (no fused
    /// multiply-add), with `T_HI[j]` and `T_LO[j]` read by `vpermt2pd` from two registers
    /// each (it uses the low four bits of each index lane, which are `j`). `tabs` holds the
    /// two halves of `T_HI`, then of `T_LO` ([`table`]), formed once per call of the caller.
    #[inline(always)]
    fn exp8(simd: V4, tabs: &[__m512d; 4], x: __m512d) -> __m512d {
        let f = simd.avx512f;
        let min_x = f._mm512_set1_pd(MIN_X);
        let below = f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, min_x);
        let xc = f._mm512_mask_blend_pd(below, x, min_x);
        let magic = f._mm512_set1_pd(MAGIC);
        let t = f._mm512_add_pd(f._mm512_mul_pd(xc, f._mm512_set1_pd(INV_STEP)), magic);
        let kf = f._mm512_sub_pd(t, magic);
        let r = f._mm512_sub_pd(f._mm512_sub_pd(xc, f._mm512_mul_pd(kf, f._mm512_set1_pd(STEP_HI))), f._mm512_mul_pd(kf, f._mm512_set1_pd(STEP_LO)));
        let mut p = f._mm512_set1_pd(C[0]);
        for &c in &C[1..] {
            p = f._mm512_add_pd(f._mm512_mul_pd(p, r), f._mm512_set1_pd(c));
        }
        let q = f._mm512_mul_pd(p, r);
        let tb: __m512i = pulp::cast(t);
        let u = f._mm512_sub_epi64(tb, f._mm512_set1_epi64(MAGIC_BITS as i64));
        let hi = f._mm512_permutex2var_pd(tabs[0], u, tabs[1]);
        let lo = f._mm512_permutex2var_pd(tabs[2], u, tabs[3]);
        let scale: __m512d = pulp::cast(f._mm512_slli_epi64::<52>(f._mm512_sub_epi64(f._mm512_srli_epi64::<4>(u), f._mm512_set1_epi64(1))));
        let v = f._mm512_mul_pd(f._mm512_add_pd(hi, f._mm512_add_pd(lo, f._mm512_mul_pd(hi, q))), scale);
        f._mm512_mask_blend_pd(below, v, f._mm512_setzero_pd())
    }

    /// [`exp_shifted_sum`](super::exp_shifted_sum) on 512-bit registers: the same lanes of
    /// four (each block's low half, then its high half), then the same remainder.
    #[inline(always)]
    pub(super) fn shifted_sum(simd: V4, v: &mut [f64], shift: f64) -> f64 {
        let f = simd.avx512f;
        let s = f._mm512_set1_pd(shift);
        let mut acc: __m256d = simd.avx._mm256_setzero_pd();
        let tabs = [table(&T_HI, 0), table(&T_HI, 1), table(&T_LO, 0), table(&T_LO, 1)];
        let (blocks, rest) = pulp::as_arrays_mut::<8, f64>(v);
        for b in blocks {
            let e = exp8(simd, &tabs, f._mm512_sub_pd(pulp::cast(*b), s));
            *b = pulp::cast(e);
            acc = simd.avx._mm256_add_pd(acc, f._mm512_castpd512_pd256(e));
            acc = simd.avx._mm256_add_pd(acc, f._mm512_extractf64x4_pd::<1>(e));
        }
        shifted_sum_rest(rest, shift, pulp::cast(acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    use crate::kernels::cpu::Isa;

    /// The instruction sets this machine runs.
    fn paths() -> Vec<Isa> {
        Isa::available()
    }

    /// Against glibc's `exp` (an independent implementation, correctly rounded to < 1 ulp),
    /// and every vector path against the scalar function, bit for bit.
    #[test]
    fn within_one_ulp_of_libm_and_every_path_matches_the_scalar() {
        let mut worst = 0;
        let n = 2_000_000;
        let xs: Vec<f64> = (0..n)
            .map(|i| {
                let u = (i as f64 + 0.5) / n as f64;
                // Dense near 0 (where softmax terms live) and spread down to MIN_X.
                if i % 2 == 0 {
                    -40.0 * u
                } else {
                    MIN_X * u
                }
            })
            .collect();
        for &x in &xs {
            worst = worst.max(ulps(exp_nonpos(x), x.exp()));
        }
        assert!(worst <= 1, "worst error {worst} ulp");
        for path in paths() {
            let mut v = xs[..200_003].to_vec();
            path.run(|| exp_nonpos_in_place(&mut v));
            for (&x, &e) in xs.iter().zip(&v) {
                assert_eq!(exp_nonpos(x).to_bits(), e.to_bits(), "{path:?} and scalar differ at {x}");
            }
        }
    }

    /// The table is 2^(j/16) split in two: the high part is exp2's value (within 1 ulp of
    /// an independent implementation) and the low part is below half an ulp of it.
    #[test]
    fn table_is_two_to_the_sixteenths() {
        for j in 0..16 {
            let want = (j as f64 / 16.0).exp2();
            assert!(ulps(T_HI[j], want) <= 1, "j = {j}");
            let half_ulp = f64::from_bits(T_HI[j].to_bits() + 1) - T_HI[j];
            assert!(T_LO[j].abs() <= 0.5 * half_ulp, "j = {j}");
        }
        // 2^(8/16) = sqrt 2: hi + lo squared is 2 to about 2^-104.
        let (h, l) = (T_HI[8], T_LO[8]);
        assert!((h.mul_add(h, -2.0) + 2.0 * h * l).abs() < 1e-30);
    }

    /// The fused shift-exp-sum against the scalar exp and a sum in the documented order, on
    /// every path.
    #[test]
    fn shifted_sum_matches_its_definition() {
        for path in paths() {
            for len in [1usize, 2, 3, 4, 5, 7, 8, 9, 12, 13, 50, 100] {
                let v: Vec<f64> = (0..len).map(|i| ((i * 37) % 11) as f64 * 0.7 - 3.0).collect();
                let shift = 4.5;
                let mut got = v.clone();
                let sum = path.run(|| exp_shifted_sum(&mut got, shift));
                let e: Vec<f64> = v.iter().map(|&x| exp_nonpos(x - shift)).collect();
                assert!(got.iter().zip(&e).all(|(a, b)| a.to_bits() == b.to_bits()), "{path:?} len {len}");
                let n4 = len / 4 * 4;
                let mut l = [0.0; 4];
                for (i, x) in e[..n4].iter().enumerate() {
                    l[i % 4] += x;
                }
                let expect = ((l[0] + l[2]) + (l[1] + l[3])) + e[n4..].iter().sum::<f64>();
                assert_eq!(sum.to_bits(), expect.to_bits(), "{path:?} len {len}");
                let plain: f64 = v.iter().map(|&x| (x - shift).exp()).sum();
                assert!((sum - plain).abs() <= 1e-14 * plain);
            }
        }
    }

    /// Every [`ExpKernel`] this machine runs gives the bits of [`exp_shifted_sum`] (entries and
    /// sum) on every length up to 40 and on arguments across the range, including values below
    /// `MIN_X`, -inf, NaN and -0. Not vacuous on this machine: the AVX-512 kernel is one of them
    /// where AVX-512 is present.
    #[test]
    fn every_exp_kernel_matches_the_lanes() {
        let xs: Vec<f64> = (0..4000)
            .map(|i| match i % 97 {
                0 => f64::NEG_INFINITY,
                1 => f64::NAN,
                2 => -0.0,
                3 => -800.0,
                4 => MIN_X + 0.5,
                _ => -((i * 7919) % 4001) as f64 * 0.013,
            })
            .collect();
        let kernels: Vec<(Isa, ExpKernel)> = paths().into_iter().map(|p| (p, ExpKernel::for_isa(p))).collect();
        for len in (0..=40).chain([97, 100, 1000, 4000]) {
            for start in [0, 5] {
                let v = &xs[start..(start + len).min(xs.len())];
                let mut want = v.to_vec();
                let want_sum = exp_shifted_sum(&mut want, 0.25);
                for &(path, kernel) in &kernels {
                    let mut got = v.to_vec();
                    let sum = path.run(|| kernel.shifted_sum(&mut got, 0.25));
                    assert_eq!(sum.to_bits(), want_sum.to_bits(), "{kernel:?} len {len}");
                    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{kernel:?} len {len}");
                }
            }
        }
    }

    #[test]
    fn edges() {
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(-708.5), 0.0);
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
        assert!(exp_nonpos(f64::NAN).is_nan());
        assert!(ulps(exp_nonpos(MIN_X), MIN_X.exp()) <= 1);
        for path in paths() {
            let mut v = vec![0.0, -1.0, f64::NAN, f64::NEG_INFINITY, -800.0, -1e-300, -0.5];
            path.run(|| exp_nonpos_in_place(&mut v));
            assert_eq!(v[0], 1.0);
            assert!(v[2].is_nan());
            assert_eq!((v[3], v[4]), (0.0, 0.0));
            assert_eq!(v[5], 1.0);
        }
    }
}
