//! Benchmarks: the objective and gradient against its three matrix products alone (hand-written
//! AVX-512 kernels against matrixmultiply), one L-BFGS iteration with its passes fused into the
//! evaluation against the evaluation alone (on every instruction set), 20 iterations
//! (in-place against argmin), full solves of A to C to a 1e-10 gap, the certificate against
//! one evaluation, the prediction, and the small SVDs of the tag-wise syntheses.
//!
//! `cargo bench --bench ufm` (add `-- objective` etc. to filter). Results: docs/performance.md.

use std::hint::black_box;

use argmin::core::Executor;
use criterion::{criterion_group, criterion_main, Criterion};
use mlab_nc::bench::{softmax_exps, ThreeProducts};
use mlab_nc::commands::timing::{preset, time_to_gap};
use mlab_nc::model::config::ValidConfig;
use mlab_nc::model::objective::{UfmEval, UfmObjective, Workspace};
use mlab_nc::solver::lbfgs::InPlaceLbfgs;
use mlab_nc::solver::problem::FusedObjective;
use mlab_nc::solver::{Method, SolveParams, LBFGS_HISTORY};
use mlab_nc::theory::certificate::certify_with;
use mlab_nc::theory::prediction::predict;
use mlab_nc::Isa;

fn cfg(name: &str) -> ValidConfig {
    preset(name).unwrap().validate().unwrap()
}

/// One evaluation, its three products (hand-written and matrixmultiply, on one thread), and
/// the certificate.
fn objective(c: &mut Criterion) {
    let mut g = c.benchmark_group("objective");
    g.sample_size(20);
    for name in ["C", "D", "E"] {
        let cfg = cfg(name);
        let obj = UfmObjective::new(&cfg);
        let x = obj.random_start(0, 0.1);
        let mut grad = vec![0.0; obj.dim()];
        let mut ws = Workspace::new(&obj);
        g.bench_function(format!("value_and_gradient/{name}"), |b| b.iter(|| black_box(obj.value_and_gradient(&x, &mut grad, &mut ws))));
        for isa in [Isa::Avx512, Isa::Portable] {
            let mut p = ThreeProducts::new(&obj, isa);
            let label = if p.hand_written() { "hand_written_avx512" } else { "matrixmultiply" };
            if isa == Isa::Avx512 && !p.hand_written() {
                continue;
            }
            g.bench_function(format!("three_products_one_thread/{label}/{name}"), |b| b.iter(|| p.run(&obj, &x)));
        }
        let f = obj.value(&x);
        let mut cws = Workspace::new(&obj);
        g.bench_function(format!("certificate/{name}"), |b| b.iter(|| black_box(certify_with(&obj, &x, f, &mut cws))));
    }
    g.finish();
}

/// One iteration as the solver runs it (direction coefficients, then one evaluation with the
/// direction and curvature passes fused into it), against the same evaluation alone, after
/// six iterations from the seed-0 start (memory full), with every kernel compiled for each
/// instruction set. Bookkeeping share of an iteration: `1 - evaluation / fused_trial`.
fn fused_iteration(c: &mut Criterion) {
    let mut g = c.benchmark_group("lbfgs_iteration");
    g.sample_size(20);
    for name in ["C", "D", "E"] {
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Portable) {
            let obj = UfmObjective::new(&cfg(name));
            let solver = InPlaceLbfgs::new(obj.random_start(0, 0.1), LBFGS_HISTORY, 1e-300, None).unwrap().with_isa(isa);
            let res = Executor::new(UfmEval::new(obj).with_isa(isa), solver).configure(|s| s.max_iters(6)).ctrlc(false).run().unwrap();
            let mut solver = res.solver;
            let mut eval = res.problem.problem.unwrap();
            let x = solver.x().to_vec();
            let mut grad = vec![0.0; x.len()];
            let isa = isa.name();
            // Timed: the trial alone; moving x back to the iterate afterwards is not.
            g.bench_function(format!("fused_trial/{name}/{isa}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        let start = std::time::Instant::now();
                        black_box(solver.unit_trial(&mut eval));
                        total += start.elapsed();
                        solver.undo_trial();
                    }
                    total
                })
            });
            g.bench_function(format!("evaluation/{name}/{isa}"), |b| b.iter(|| black_box(eval.eval(&x, &mut grad))));
        }
    }
    g.finish();
}

/// 20 L-BFGS iterations from a fixed start (divide by 20 for one iteration).
fn iterations(c: &mut Criterion) {
    let mut g = c.benchmark_group("lbfgs_20_iterations");
    g.sample_size(10);
    for name in ["C", "D", "E"] {
        let obj = UfmObjective::new(&cfg(name));
        for method in [Method::InPlace, Method::Argmin] {
            if method == Method::Argmin && name != "C" {
                continue;
            }
            let params = SolveParams { max_iters: 20, tol_grad: 1e-300, method, ..SolveParams::default() };
            g.bench_function(format!("{method:?}/{name}"), |b| b.iter(|| black_box(obj.solve(0, &params, None).unwrap().objective)));
        }
    }
    g.finish();
}

fn solves(c: &mut Criterion) {
    let mut g = c.benchmark_group("solve_to_1e-10");
    g.sample_size(10);
    for name in ["A", "B", "C"] {
        let cfg = cfg(name);
        for method in [Method::InPlace, Method::Argmin] {
            let params = SolveParams { method, ..SolveParams::default() };
            g.bench_function(format!("{method:?}/{name}"), |b| b.iter(|| black_box(time_to_gap(name, &cfg, 1e-10, &params).unwrap().gap)));
        }
    }
    g.finish();
}

/// The prediction alone (the reduced convex problem), on D's configuration and on the scale
/// run's.
fn prediction(c: &mut Criterion) {
    let mut g = c.benchmark_group("predict");
    for name in ["D", "scale"] {
        let cfg = cfg(name);
        g.bench_function(name, |b| b.iter(|| black_box(predict(&cfg).objective)));
    }
    g.finish();
}

/// The softmax's exponentials of one evaluation of E (K = 100, N = 10,100; arguments spread
/// over [-12, 0] like logits minus their maximum), one thread: the portable lanes against the
/// kernel each instruction set uses (on AVX-512 the table read by register permutation).
fn exponentials(c: &mut Criterion) {
    let mut g = c.benchmark_group("exp_shifted_sum");
    let xs: Vec<f64> = (0..100 * 10_100).map(|i| -(((i * 7919) % 1000) as f64) * 0.012).collect();
    let mut v = xs.clone();
    for isa in Isa::available() {
        for lanes in [true, false] {
            let label = if lanes { "lanes" } else { "kernel" };
            g.bench_function(format!("E/{}/{label}", isa.name()), |b| {
                b.iter(|| {
                    v.copy_from_slice(&xs);
                    black_box(softmax_exps(isa, lanes, &mut v, 100))
                })
            });
        }
    }
    g.finish();
}

/// Small SVDs through one-sided Jacobi against the checked nalgebra SVD, on either side of
/// `jacobi::NARROW`, and preset C's 1,330 tag-wise syntheses (the label-set means of a
/// random start), which go through Jacobi.
fn small_svds(c: &mut Criterion) {
    use mlab_nc::analysis::metrics::{set_means, synthesis};
    use mlab_nc::linalg::{jacobi, Mat};
    use nalgebra::DMatrix;
    let mut g = c.benchmark_group("svd");
    for (m, n) in [(32, 3), (32, 6), (32, 8), (32, 20)] {
        let a = DMatrix::from_fn(m, n, |i, j| ((i * 7 + j * 13) % 17) as f64 / 17.0 - 0.5 + 1e-3 * (i * j) as f64);
        g.bench_function(format!("{m}x{n}/jacobi"), |b| b.iter(|| black_box(jacobi::svd_jacobi(&a))));
        g.bench_function(format!("{m}x{n}/checked_nalgebra"), |b| b.iter(|| black_box(jacobi::checked_nalgebra_svd(&a))));
    }
    let cfg = cfg("C");
    let obj = UfmObjective::new(&cfg);
    let x = obj.random_start(0, 0.1);
    let h = &x[obj.k * obj.d..obj.k * obj.d + obj.d * obj.n];
    let mu = set_means(Mat::new(h, obj.d, obj.n).into(), &cfg.labels);
    g.bench_function("synthesis/C", |b| b.iter(|| black_box(synthesis(&mu, &cfg.labels).len())));
    g.finish();
}

criterion_group!(benches, objective, fused_iteration, iterations, solves, prediction, exponentials, small_svds);
criterion_main!(benches);
