//! Access for `benches/` to kernels that are otherwise private to the crate. Not part of the
//! API: nothing here is stable, and nothing else uses it.

use crate::analysis::accumulate::Accumulator;
use crate::error::Result;
use crate::kernels::cpu::Isa;
use crate::kernels::products::ChunkProducts;
use crate::linalg::Mat;
use crate::model::objective::{UfmObjective, SAMPLE_CHUNK};

/// The objective's three matrix products alone (`Z = W H`, `dW = G H^T`, `W^T G`), chunked
/// like the objective (serially, on one thread).
pub struct ThreeProducts {
    products: ChunkProducts,
    wt: Vec<f64>,
    z: Vec<f64>,
    dw: Vec<f64>,
    dh: Vec<f64>,
}

impl ThreeProducts {
    /// Buffers for `obj`; the hand-written AVX-512 kernels when `isa` is AVX-512, else
    /// matrixmultiply (portable code, which packs its operands).
    pub fn new(obj: &UfmObjective, isa: Isa) -> Self {
        ThreeProducts {
            products: ChunkProducts::new(isa),
            wt: vec![0.0; obj.k * obj.d],
            z: vec![0.0; obj.k * SAMPLE_CHUNK],
            dw: vec![0.0; obj.k * obj.d],
            dh: vec![0.0; obj.d * SAMPLE_CHUNK],
        }
    }

    /// Whether the hand-written kernels run.
    pub fn hand_written(&self) -> bool {
        self.products.vectorised()
    }

    /// The three products of every chunk of `x`.
    pub fn run(&mut self, obj: &UfmObjective, x: &[f64]) {
        let (k, d) = (obj.k, obj.d);
        let p = obj.split(x);
        self.products.prepare(p.w);
        for i in 0..k {
            for l in 0..d {
                self.wt[l + d * i] = p.w.data[i + k * l];
            }
        }
        let wt = Mat::new(&self.wt, d, k);
        for c in 0..obj.chunks() {
            let std::ops::Range { start: a, end: b } = obj.chunk_range(c);
            let m = b - a;
            let hc = Mat::new(&p.h.data[d * a..d * b], d, m);
            let z = &mut self.z[..k * m];
            self.products.logits(p.w, hc, z);
            self.products.grad_w(Mat::new(z, k, m), hc, &mut self.dw);
            self.products.logits(wt, Mat::new(z, k, m), &mut self.dh[..d * m]);
        }
    }
}

/// A streaming accumulator whose within-set scatter product runs through matrixmultiply (the
/// portable path) on the same blocks as the AVX-512 tiles, for the side-by-side benchmark.
pub fn accumulator_with_matrixmultiply(classes: usize, dim: usize) -> Result<Accumulator> {
    Ok(Accumulator::new(classes, dim)?.with_isa(Isa::Portable))
}

/// The softmax's exponentials as the objective computes them for a K-entry column:
/// `exp(v - max)` and their sum over each block of `k` entries of `v`, with the kernel the
/// objective uses under `isa` (`lanes`: the portable lanes whatever `isa` is). Returns the
/// total of the sums. `v` is overwritten.
pub fn softmax_exps(isa: Isa, lanes: bool, v: &mut [f64], k: usize) -> f64 {
    use crate::kernels::exp::ExpKernel;
    let kernel = if lanes { ExpKernel::Lanes } else { ExpKernel::for_isa(isa) };
    isa.run(
        #[inline(always)]
        || {
            let mut total = 0.0;
            for col in v.chunks_mut(k) {
                total += kernel.shifted_sum(col, 0.0);
            }
            total
        },
    )
}
