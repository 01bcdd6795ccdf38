//! Benchmarks of streaming measurement (`analysis::accumulate`): one `update` of a 10,000 x
//! 512 float32 batch (K = 10, M = 2), on every thread and on one, beside what its within-set
//! scatter product cost before it was blocked: matrixmultiply's `linalg::syrk_upper` on the
//! whole batch's float64 deviations (the update now forms them 256 samples at a time and
//! multiplies with the AVX-512 tiles of `kernels::products`; docs/performance.md), and beside
//! the same blocked update with matrixmultiply in place of the tiles.
//!
//! Beside them, `measure` on the same batch whole (`analysis::measure::measure_inputs`): float32
//! and float64, C and Fortran order, read a row at a time where they lie, and float32 copied
//! to row-major float64 first, as `measure` did before it read rows in place.
//!
//! `cargo bench --bench accumulate`. The end-to-end comparison with numpy is
//! `python/benches/accumulator.py`; results in docs/performance.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mlab_nc::analysis::accumulate::Accumulator;
use mlab_nc::analysis::arrays::{Array2, Order, Values};
use mlab_nc::analysis::measure::{measure_inputs, Inputs, Names};
use mlab_nc::linalg::syrk_upper;

const N: usize = 10_000;
const D: usize = 512;
const K: usize = 10;

fn batch() -> (Vec<f32>, Vec<f64>) {
    let mut sets: Vec<Vec<usize>> = (0..K).map(|c| vec![c]).collect();
    for a in 0..K {
        for b in a + 1..K {
            sets.push(vec![a, b]);
        }
    }
    let x: Vec<f32> = (0..N * D).map(|i| 3.0 + ((i * 7919 % 10007) as f32 / 10007.0 - 0.5)).collect();
    let mut y = vec![0.0; N * K];
    for i in 0..N {
        for &c in &sets[i * 31 % sets.len()] {
            y[i * K + c] = 1.0;
        }
    }
    (x, y)
}

fn stream(c: &mut Criterion) {
    let (x, y) = batch();
    let f = Array2::new(Values::F32(&x), N, D, Order::RowMajor).unwrap();
    let l = Array2::row_major(&y, N, K).unwrap();
    let dev: Vec<f64> = x.iter().map(|&v| v as f64 - 3.0).collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let f64_batch = Array2::new(Values::F64(&x64), N, D, Order::RowMajor).unwrap();
    let mut g = c.benchmark_group("accumulate");
    g.sample_size(10);
    for threads in [0usize, 1] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let tag = if threads == 0 { "all threads".to_string() } else { "1 thread".to_string() };
        g.bench_function(format!("update_10000x512_f32/{tag}"), |b| {
            let mut acc = Accumulator::new(K, D).unwrap();
            b.iter(|| pool.install(|| acc.update(&f, &l, &Names::ARGUMENTS).unwrap()))
        });
        g.bench_function(format!("update_10000x512_f64/{tag}"), |b| {
            let mut acc = Accumulator::new(K, D).unwrap();
            b.iter(|| pool.install(|| acc.update(&f64_batch, &l, &Names::ARGUMENTS).unwrap()))
        });
        g.bench_function(format!("update_10000x512_f32_matrixmultiply_blocks/{tag}"), |b| {
            let mut acc = mlab_nc::bench::accumulator_with_matrixmultiply(K, D).unwrap();
            b.iter(|| pool.install(|| acc.update(&f, &l, &Names::ARGUMENTS).unwrap()))
        });
        g.bench_function(format!("syrk_10000x512/{tag}"), |b| {
            let mut s = vec![0.0; D * D];
            b.iter(|| pool.install(|| syrk_upper(1.0, black_box(&dev), N, D, true, &mut s)))
        });
    }
    g.finish();
}

fn whole(c: &mut Criterion) {
    let (x, y) = batch();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let fortran: Vec<f32> = (0..N * D).map(|e| x[(e % N) * D + e / N]).collect();
    let l = Array2::row_major(&y, N, K).unwrap();
    fn inputs<'a>(features: Array2<'a>, labels: Array2<'a>) -> Inputs<'a> {
        Inputs { features, labels, classifier: None, bias: None }
    }
    let mut g = c.benchmark_group("measure");
    g.sample_size(10);
    let cases = [
        ("f32_c", Array2::new(Values::F32(&x), N, D, Order::RowMajor).unwrap()),
        ("f32_fortran", Array2::new(Values::F32(&fortran), N, D, Order::ColMajor).unwrap()),
        ("f64_c", Array2::row_major(&x64, N, D).unwrap()),
    ];
    for (name, f) in cases {
        g.bench_function(format!("10000x512/{name}"), |b| b.iter(|| black_box(measure_inputs(&inputs(f, l), &Names::ARGUMENTS).unwrap().samples)));
    }
    g.bench_function("10000x512/f32_c_copied_to_f64_first", |b| {
        let f = Array2::new(Values::F32(&x), N, D, Order::RowMajor).unwrap();
        b.iter(|| {
            let copy = f.row_major_f64();
            let f64_copy = Array2::row_major(&copy, N, D).unwrap();
            black_box(measure_inputs(&inputs(f64_copy, l), &Names::ARGUMENTS).unwrap().samples)
        })
    });
    g.finish();
}

criterion_group!(benches, stream, whole);
criterion_main!(benches);
