//! The vector instruction set the kernels run on: detected once, passed by argument.
//!
//! Every kernel has one portable body, written as loops over fixed lanes of eight (plain
//! arrays, `f64::mul_add` where the fused product is wanted). [`Isa::run`] compiles that body
//! for the chosen target through `pulp`: AVX-512 (x86-64-v4), AVX2 with FMA (x86-64-v3), or
//! the baseline. The lanes and the order of operations are in the source, so every target
//! gives the same bits; only the speed differs. Tests and benchmarks choose the target by
//! argument ([`Isa::available`]), never by a global switch.

use std::sync::OnceLock;

/// A vector instruction set the kernels can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512 F, VL, BW, DQ and CD with AVX2 and FMA (x86-64-v4).
    Avx512,
    /// AVX2 with FMA (x86-64-v3).
    Avx2,
    /// The baseline target: no detected extension.
    Portable,
}

impl Isa {
    /// The best instruction set of this CPU (detected once).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Isa::Avx512.is_available() {
                Isa::Avx512
            } else if Isa::Avx2.is_available() {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        })
    }

    /// Whether this CPU runs `self`.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => pulp::x86::V4::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => pulp::x86::V3::try_new().is_some(),
            Isa::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every instruction set this CPU runs, best first.
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable].into_iter().filter(|i| i.is_available()).collect()
    }

    /// Name as printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Runs `f` compiled for this instruction set (`f` and everything it calls should be
    /// `#[inline(always)]`, so that it is compiled inside the target's context). An
    /// instruction set this CPU lacks runs the baseline.
    #[inline(always)]
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => match pulp::x86::V4::try_new() {
                Some(v4) => v4.vectorize(f),
                None => f(),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => match pulp::x86::V3::try_new() {
                Some(v3) => v3.vectorize(f),
                None => f(),
            },
            _ => f(),
        }
    }
}

/// Lanes of the kernels' loops (one AVX-512 register, two AVX2 registers of f64).
pub const LANES: usize = 8;

/// Eight f64 lanes, held as two halves of four: lane `k` is `self.0[k / 4][k % 4]`. Written
/// this way (rather than as one array of eight) the loops vectorise into one 256-bit
/// register per half on every x86-64 target (measured: docs/performance.md).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lanes(pub [[f64; 4]; 2]);

impl Lanes {
    /// All lanes `v`.
    #[inline(always)]
    pub fn splat(v: f64) -> Lanes {
        Lanes([[v; 4]; 2])
    }

    /// Eight f64 from a slice of at least eight.
    #[inline(always)]
    pub fn load(v: &[f64]) -> Lanes {
        let v = &v[..LANES];
        Lanes([[v[0], v[1], v[2], v[3]], [v[4], v[5], v[6], v[7]]])
    }

    /// Eight f32 from a slice of at least eight, widened to f64.
    #[inline(always)]
    pub fn widen(v: &[f32]) -> Lanes {
        let v = &v[..LANES];
        let w = |x: f32| f64::from(x);
        Lanes([[w(v[0]), w(v[1]), w(v[2]), w(v[3])], [w(v[4]), w(v[5]), w(v[6]), w(v[7])]])
    }

    /// Rounds every lane to f32, writes the results into a slice of at least eight, and
    /// returns them widened back to f64.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // h and k walk two arrays of halves together
    pub fn round_store_f32(&self, out: &mut [f32]) -> Lanes {
        let out = &mut out[..LANES];
        let mut r = [[0.0f32; 4]; 2];
        for h in 0..2 {
            for k in 0..4 {
                r[h][k] = self.0[h][k] as f32;
            }
        }
        out[..4].copy_from_slice(&r[0]);
        out[4..].copy_from_slice(&r[1]);
        let mut w = Lanes::default();
        for h in 0..2 {
            for k in 0..4 {
                w.0[h][k] = f64::from(r[h][k]);
            }
        }
        w
    }

    /// Writes the lanes into a slice of at least eight.
    #[inline(always)]
    pub fn store(self, out: &mut [f64]) {
        let out = &mut out[..LANES];
        out[..4].copy_from_slice(&self.0[0]);
        out[4..].copy_from_slice(&self.0[1]);
    }

    /// `self <- x y + self` lane by lane, fused.
    #[inline(always)]
    pub fn fma(&mut self, x: &Lanes, y: &Lanes) {
        for h in 0..2 {
            for k in 0..4 {
                self.0[h][k] = x.0[h][k].mul_add(y.0[h][k], self.0[h][k]);
            }
        }
    }

    /// `self + a b` lane by lane, unfused (a product, then a sum).
    #[inline(always)]
    pub fn add_mul(&self, a: &Lanes, b: &Lanes) -> Lanes {
        let mut o = *self;
        for h in 0..2 {
            for k in 0..4 {
                o.0[h][k] = self.0[h][k] + a.0[h][k] * b.0[h][k];
            }
        }
        o
    }

    /// `self - a` lane by lane.
    #[inline(always)]
    pub fn sub(&self, a: &Lanes) -> Lanes {
        let mut o = *self;
        for h in 0..2 {
            for k in 0..4 {
                o.0[h][k] = self.0[h][k] - a.0[h][k];
            }
        }
        o
    }

    /// `f` applied lane by lane.
    #[inline(always)]
    pub fn map(self, f: impl Fn(f64) -> f64) -> Lanes {
        let mut o = self;
        for h in 0..2 {
            for k in 0..4 {
                o.0[h][k] = f(self.0[h][k]);
            }
        }
        o
    }

    /// The sum of the lanes in a fixed order, `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`.
    #[inline(always)]
    pub fn hsum(&self) -> f64 {
        let [lo, hi] = self.0;
        ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]))
    }

    /// [`hsum`](Self::hsum) of each accumulator of a loop. The accumulators pass through
    /// `black_box` first: seeing the horizontal sums right after a loop of [`fma`](Self::fma)s
    /// leads LLVM to vectorise that loop across the accumulators instead of along the
    /// elements, which measured 5.6 times slower.
    #[inline(always)]
    pub fn hsums<const N: usize>(l: [Lanes; N]) -> [f64; N] {
        let l = std::hint::black_box(l);
        std::array::from_fn(|k| l[k].hsum())
    }
}

/// Eight lanes loaded from a slice of f64 or f32 (widened).
pub trait LaneLoad: Copy + Into<f64> {
    /// The first eight entries of `v` as lanes.
    fn lanes(v: &[Self]) -> Lanes;
}

impl LaneLoad for f64 {
    #[inline(always)]
    fn lanes(v: &[f64]) -> Lanes {
        Lanes::load(v)
    }
}

impl LaneLoad for f32 {
    #[inline(always)]
    fn lanes(v: &[f32]) -> Lanes {
        Lanes::widen(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The detected set is available and listed first; on CI, a host with AVX-512 must list
    /// it (the tests that loop over `available()` then cover it).
    #[test]
    fn detection_lists_what_the_host_runs() {
        let all = Isa::available();
        assert_eq!(all[0], Isa::detect());
        assert!(all.contains(&Isa::Portable));
        #[cfg(target_arch = "x86_64")]
        if std::env::var("CI").is_ok_and(|v| v == "true") && std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
            assert!(all.contains(&Isa::Avx512), "AVX-512 host, but the AVX-512 path is not tested");
        }
    }
}
