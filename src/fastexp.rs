//! A vectorisable `exp` for the softmax: arguments `x <= 0` (logits minus their maximum).
//!
//! The objective spends about 15% of its time in `exp` (one per logit, 10^6 per evaluation
//! on the benchmark presets), and glibc's `exp` is scalar. This one runs four lanes at a time
//! with AVX2 and has a portable version doing the same operations in the same order, so
//! both give the same bits.
//!
//! # Derivation
//! - Range reduction (Cody and Waite): `n = round(x log2 e)`, `r = (x - n ln2_hi) - n ln2_lo`,
//!   with fdlibm's split `ln2 = ln2_hi + ln2_lo` (`ln2_hi` has 32 significant bits, so
//!   `n ln2_hi` is exact for `|n| < 2^11`). Then `|r| <= ln2 / 2 + tiny` and
//!   `exp(x) = 2^n exp(r)`.
//! - `exp(r)` is the degree-13 Taylor polynomial in Horner form. The truncation error is at
//!   most `(ln2/2)^14 / 14! < 5e-18` relative (below 0.05 ulp); Horner's rounding adds about
//!   one ulp. Measured against glibc over 2 x 10^6 arguments: at most 2 ulp (test below).
//! - `n` is rounded with the `1.5 2^52` trick, and `2^n` is built from its bits.
//! - Arguments below `MIN_X = -708` return 0 (the true value is below 3.1e-308, the bottom
//!   of the normal range; next to the softmax's largest term, 1, it is invisible in f64).
//!   NaN propagates.

/// Smallest argument computed; below it the result is 0.
pub const MIN_X: f64 = -708.0;
const LOG2E: f64 = std::f64::consts::LOG2_E;
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;
/// 1/k! for k = 13 down to 0 (Horner order).
const C: [f64; 14] = [
    1.605_904_383_682_161_3e-10,
    2.087_675_698_786_81e-9,
    2.505_210_838_544_172e-8,
    2.755_731_922_398_589e-7,
    2.755_731_922_398_589_3e-6,
    2.480_158_730_158_73e-5,
    1.984_126_984_126_984e-4,
    1.388_888_888_888_889e-3,
    8.333_333_333_333_333e-3,
    4.166_666_666_666_666_4e-2,
    1.666_666_666_666_666_6e-1,
    0.5,
    1.0,
    1.0,
];

/// `exp(x)` for `x <= 0` (any `x` below [`MIN_X`] gives 0).
#[inline]
pub fn exp_nonpos(x: f64) -> f64 {
    let xc = if x < MIN_X { MIN_X } else { x };
    let t = xc * LOG2E + MAGIC;
    let nf = t - MAGIC;
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let mut p = C[0];
    for &c in &C[1..] {
        p = p * r + c;
    }
    let bits = (t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(1023)) << 52;
    let v = p * f64::from_bits(bits);
    if x < MIN_X {
        0.0
    } else {
        v
    }
}

/// `v <- exp(v)` for every entry (each `<= 0`), four lanes at a time where AVX2 exists.
pub fn exp_nonpos_in_place(v: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        let n = v.len() / 4 * 4;
        if n > 0 && crate::vecops::has_avx2() {
            // SAFETY: AVX2 is present (checked at run time); the slice has n elements.
            unsafe { simd::exp_nonpos(&mut v[..n]) };
            v[n..].iter_mut().for_each(|x| *x = exp_nonpos(*x));
            return;
        }
    }
    v.iter_mut().for_each(|x| *x = exp_nonpos(*x));
}

/// `v <- exp(v - shift)` for every entry (each `v <= shift`), returning the sum of the
/// results: four lanes (entry i goes to lane i mod 4, in order) over the first
/// `4 floor(len/4)` entries, combined as `(l0 + l2) + (l1 + l3)`, then the tail in order.
/// The AVX2 and portable versions give the same bits.
pub fn exp_shifted_sum(v: &mut [f64], shift: f64) -> f64 {
    let n = v.len() / 4 * 4;
    let mut lanes = [0.0f64; 4];
    #[cfg(target_arch = "x86_64")]
    let done = if n > 0 && crate::vecops::has_avx2() {
        // SAFETY: AVX2 is present (checked at run time); the slice has n elements.
        unsafe { simd::exp_shifted_sum(&mut v[..n], shift, &mut lanes) };
        n
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for q in v[done..n].chunks_exact_mut(4) {
        for l in 0..4 {
            q[l] = exp_nonpos(q[l] - shift);
            lanes[l] += q[l];
        }
    }
    let mut tail = 0.0;
    for x in &mut v[n..] {
        *x = exp_nonpos(*x - shift);
        tail += *x;
    }
    ((lanes[0] + lanes[2]) + (lanes[1] + lanes[3])) + tail
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{C, LN2_HI, LN2_LO, LOG2E, MAGIC, MIN_X};
    use std::arch::x86_64::*;

    /// exp of four lanes (see the module docs; the same operations as the scalar version).
    #[inline(always)]
    unsafe fn exp4(x: __m256d) -> __m256d {
        let (min, magic) = (_mm256_set1_pd(MIN_X), _mm256_set1_pd(MAGIC));
        let under = _mm256_cmp_pd::<_CMP_LT_OQ>(x, min);
        let xc = _mm256_blendv_pd(x, min, under);
        let t = _mm256_add_pd(_mm256_mul_pd(xc, _mm256_set1_pd(LOG2E)), magic);
        let nf = _mm256_sub_pd(t, magic);
        let r = _mm256_sub_pd(_mm256_sub_pd(xc, _mm256_mul_pd(nf, _mm256_set1_pd(LN2_HI))), _mm256_mul_pd(nf, _mm256_set1_pd(LN2_LO)));
        let mut q = _mm256_set1_pd(C[0]);
        for &c in &C[1..] {
            q = _mm256_add_pd(_mm256_mul_pd(q, r), _mm256_set1_pd(c));
        }
        let bias = _mm256_set1_epi64x(1023i64.wrapping_sub(MAGIC.to_bits() as i64));
        let bits = _mm256_slli_epi64::<52>(_mm256_add_epi64(_mm256_castpd_si256(t), bias));
        let e = _mm256_mul_pd(q, _mm256_castsi256_pd(bits));
        _mm256_blendv_pd(e, _mm256_setzero_pd(), under)
    }

    /// # Safety
    /// AVX2 must be available; `v.len()` is a multiple of 4.
    #[target_feature(enable = "avx2")]
    pub unsafe fn exp_nonpos(v: &mut [f64]) {
        let p = v.as_mut_ptr();
        let n = v.len();
        let mut i = 0;
        // Two independent vectors per step: the Horner chain is latency-bound.
        while i + 8 <= n {
            let (a, b) = (exp4(_mm256_loadu_pd(p.add(i))), exp4(_mm256_loadu_pd(p.add(i + 4))));
            _mm256_storeu_pd(p.add(i), a);
            _mm256_storeu_pd(p.add(i + 4), b);
            i += 8;
        }
        if i < n {
            _mm256_storeu_pd(p.add(i), exp4(_mm256_loadu_pd(p.add(i))));
        }
    }
    /// # Safety
    /// AVX2 must be available; `v.len()` is a multiple of 4.
    #[target_feature(enable = "avx2")]
    pub unsafe fn exp_shifted_sum(v: &mut [f64], shift: f64, lanes: &mut [f64; 4]) {
        let p = v.as_mut_ptr();
        let n = v.len();
        let sh = _mm256_set1_pd(shift);
        let mut acc = _mm256_loadu_pd(lanes.as_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let a = exp4(_mm256_sub_pd(_mm256_loadu_pd(p.add(i)), sh));
            let b = exp4(_mm256_sub_pd(_mm256_loadu_pd(p.add(i + 4)), sh));
            _mm256_storeu_pd(p.add(i), a);
            _mm256_storeu_pd(p.add(i + 4), b);
            acc = _mm256_add_pd(_mm256_add_pd(acc, a), b);
            i += 8;
        }
        if i < n {
            let a = exp4(_mm256_sub_pd(_mm256_loadu_pd(p.add(i)), sh));
            _mm256_storeu_pd(p.add(i), a);
            acc = _mm256_add_pd(acc, a);
        }
        _mm256_storeu_pd(lanes.as_mut_ptr(), acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// Against glibc's `exp` (an independent implementation, correctly rounded to < 1 ulp).
    #[test]
    fn within_two_ulp_of_libm_and_simd_matches_portable() {
        let mut worst = 0;
        let n = 2_000_000;
        let xs: Vec<f64> = (0..n)
            .map(|i| {
                let u = (i as f64 + 0.5) / n as f64;
                // Dense near 0 (where softmax terms live) and spread down to MIN_X.
                if i % 2 == 0 { -40.0 * u } else { MIN_X * u }
            })
            .collect();
        let mut v = xs.clone();
        exp_nonpos_in_place(&mut v);
        for (&x, &e) in xs.iter().zip(&v) {
            let p = exp_nonpos(x);
            assert_eq!(p.to_bits(), e.to_bits(), "lane and scalar differ at {x}");
            worst = worst.max(ulps(p, x.exp()));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    /// The fused shift-exp-sum against the scalar exp and a sum in the documented order.
    #[test]
    fn shifted_sum_matches_its_definition() {
        for len in [1usize, 3, 4, 7, 8, 13, 50, 100] {
            let v: Vec<f64> = (0..len).map(|i| ((i * 37) % 11) as f64 * 0.7 - 3.0).collect();
            let shift = 4.5;
            let mut got = v.clone();
            let sum = exp_shifted_sum(&mut got, shift);
            let e: Vec<f64> = v.iter().map(|&x| exp_nonpos(x - shift)).collect();
            assert!(got.iter().zip(&e).all(|(a, b)| a.to_bits() == b.to_bits()));
            let n4 = len / 4 * 4;
            let mut l = [0.0; 4];
            for (i, x) in e[..n4].iter().enumerate() {
                l[i % 4] += x;
            }
            let expect = ((l[0] + l[2]) + (l[1] + l[3])) + e[n4..].iter().sum::<f64>();
            assert_eq!(sum.to_bits(), expect.to_bits(), "len {len}");
            let plain: f64 = v.iter().map(|&x| (x - shift).exp()).sum();
            assert!((sum - plain).abs() <= 1e-14 * plain);
        }
    }

    #[test]
    fn edges() {
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(-708.5), 0.0);
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
        assert!(exp_nonpos(f64::NAN).is_nan());
        assert!(ulps(exp_nonpos(MIN_X), MIN_X.exp()) <= 2);
        let mut v = vec![0.0, -1.0, f64::NAN, f64::NEG_INFINITY, -800.0, -1e-300, -0.5];
        exp_nonpos_in_place(&mut v);
        assert_eq!(v[0], 1.0);
        assert!(v[2].is_nan());
        assert_eq!((v[3], v[4]), (0.0, 0.0));
        assert_eq!(v[5], 1.0);
    }
}
