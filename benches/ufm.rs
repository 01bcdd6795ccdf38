//! Benchmarks: objective and gradient against its three matrix products alone, one L-BFGS
//! iteration with its passes fused into the evaluation against the evaluation alone, 20
//! iterations (in-place vs argmin), full solves of A to C to a 1e-10 gap (in-place vs argmin),
//! and the certificate against one objective evaluation.
//!
//! `cargo bench --bench ufm` (add `-- objective` etc. to filter).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mlab_nc::certificate::certify_with;
use mlab_nc::config::ValidConfig;
use mlab_nc::linalg::{ChunkProducts, Mat};
use mlab_nc::solver::{solve, Method, SolveParams};
use mlab_nc::timing::{preset, time_to_gap};
use mlab_nc::config::LBFGS_HISTORY;
use argmin::core::Executor;
use mlab_nc::solver::lbfgs::InPlaceLbfgs;
use mlab_nc::ufm::{FusedObjective, UfmEval, UfmObjective, Workspace, SAMPLE_CHUNK};
use mlab_nc::vecops::{combine_and_step, curvature_pass, Staggered};
use rayon::prelude::*;

fn cfg(name: &str) -> ValidConfig {
    preset(name).unwrap().validate().unwrap()
}

/// The objective's three matrix products alone (`Z = W H`, `dW = G H^T`, `W^T G`), chunked
/// and parallel exactly like the objective, through `prod` (the packing-free kernels, or
/// matrixmultiply when `prod` is portable). `wt` is W^T, formed once per call as in the
/// objective.
fn three_gemms(prod: &ChunkProducts, obj: &UfmObjective, x: &[f64], wt: &mut [f64], z: &mut [f64], dw: &mut [f64], dh: &mut [f64]) {
    let (k, d, n) = (obj.k, obj.d, obj.n);
    let p = obj.split(x);
    for i in 0..k {
        for l in 0..d {
            wt[l + d * i] = p.w.data[i + k * l];
        }
    }
    let wt = Mat::new(wt, d, k);
    let chunks = n.div_ceil(SAMPLE_CHUNK);
    let zc: Vec<&mut [f64]> = z.chunks_mut(k * SAMPLE_CHUNK).collect();
    let dwc: Vec<&mut [f64]> = dw.chunks_mut(k * d).collect();
    let dhc: Vec<&mut [f64]> = dh.chunks_mut(d * SAMPLE_CHUNK).collect();
    zc.into_par_iter().zip(dwc).zip(dhc).enumerate().take(chunks).for_each(|(c, ((z, dw), dh))| {
        let m = z.len() / k;
        let hc = Mat::new(&p.h.data[d * c * SAMPLE_CHUNK..d * (c * SAMPLE_CHUNK + m)], d, m);
        prod.logits(p.w, hc, z);
        prod.grad_w(Mat::new(z, k, m), hc, dw);
        prod.logits(wt, Mat::new(z, k, m), dh);
    });
}

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
        let chunks = obj.n.div_ceil(SAMPLE_CHUNK);
        let (mut z, mut dw, mut dh) = (vec![0.0; obj.k * obj.n], vec![0.0; chunks * obj.k * obj.d], vec![0.0; obj.d * obj.n]);
        let mut wt = vec![0.0; obj.k * obj.d];
        let (fast, packed) = (ChunkProducts::new(), ChunkProducts::portable());
        g.bench_function(format!("three_gemms/{name}"), |b| b.iter(|| three_gemms(&fast, &obj, &x, &mut wt, &mut z, &mut dw, &mut dh)));
        g.bench_function(format!("three_gemms_matrixmultiply/{name}"), |b| {
            b.iter(|| three_gemms(&packed, &obj, &x, &mut wt, &mut z, &mut dw, &mut dh))
        });
        let f = obj.value(&x);
        let mut cws = Workspace::new(&obj);
        g.bench_function(format!("certificate/{name}"), |b| b.iter(|| black_box(certify_with(&obj, &x, f, &mut cws))));
    }
    g.finish();
}

/// The solver's two passes over memory per iteration (direction, then curvature) run over
/// whole vectors, at the size of C, D and E with the default history (and D with m = 2):
/// the bookkeeping as it cost before the passes were fused into the evaluation (see
/// `lbfgs_iteration`), to set against `objective/value_and_gradient`.
fn passes(c: &mut Criterion) {
    let mut g = c.benchmark_group("lbfgs_bookkeeping");
    g.sample_size(20);
    let cases = [("C", LBFGS_HISTORY, true), ("D", LBFGS_HISTORY, true), ("E", LBFGS_HISTORY, true), ("D", 2, true), ("D", LBFGS_HISTORY, false)];
    for (name, m, stagger) in cases {
        let n = UfmObjective::new(&cfg(name)).dim();
        let v = |seed: u64| UfmObjective::new(&cfg(name)).random_start(seed, 1.0);
        // As in the solver: buffer k starts 5k cache lines into its allocation (or all at the
        // same page offset, to show what the staggering buys).
        let k = |i: usize| if stagger { i } else { 0 };
        let (grad, mut x, g_new) = (Staggered::from_slice(&v(1), k(2)), Staggered::from_slice(&v(2), k(0)), Staggered::from_slice(&v(3), k(3)));
        let f32s = |seed: u64| v(seed).iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let dirs: Vec<Staggered<f32>> = (0..m).map(|i| Staggered::from_slice(&f32s(10 + i as u64), k(4 + i))).collect();
        let ys: Vec<Staggered<f32>> = (0..m).map(|i| Staggered::from_slice(&f32s(20 + i as u64), k(4 + m + i))).collect();
        let mut out = Staggered::<f32>::zeros(n, k(4));
        let mut y = Staggered::<f32>::zeros(n, k(4 + m));
        let mut parts = Vec::new();
        let mut dots = vec![0.0; 6 * m + 6];
        let label = if stagger { format!("{name}/m{m}") } else { format!("{name}/m{m}/same-page-offset") };
        g.bench_function(format!("direction_and_curvature/{label}"), |b| {
            b.iter(|| {
                // Memory full: m - 1 kept directions and m differences enter the direction;
                // the retiring direction is `out` itself.
                let mut terms: Vec<(&[f32], f64)> = dirs[1..].iter().map(|d| (&d[..], 0.1)).collect();
                terms.extend(ys.iter().map(|y| (&y[..], -0.2)));
                // x moves in place by 1e-3 out per call (bounded over a run).
                let dg = combine_and_step(&mut out, 0.3, &terms, &grad, -0.5, 1e-3, &mut x, &mut parts);
                let olds: Vec<&[f32]> = dirs[1..].iter().chain(&ys[1..]).map(|v| &v[..]).collect();
                curvature_pass(&g_new, &grad, &out, &mut y, &olds, &mut parts, &mut dots);
                black_box((dg, dots[0]))
            })
        });
    }
    g.finish();
}

/// One iteration as the solver runs it (direction coefficients, then one evaluation with the
/// direction and curvature passes fused into it), against the same evaluation alone, after
/// six iterations from the seed-0 start (memory full). Bookkeeping share of an iteration:
/// `1 - evaluation / fused_trial`.
fn fused_iteration(c: &mut Criterion) {
    let mut g = c.benchmark_group("lbfgs_iteration");
    g.sample_size(20);
    for name in ["C", "D", "E"] {
        let obj = UfmObjective::new(&cfg(name));
        let solver = InPlaceLbfgs::new(obj.random_start(0, 0.1), LBFGS_HISTORY, 1e-300, None);
        let res = Executor::new(UfmEval::new(obj), solver).configure(|s| s.max_iters(6)).ctrlc(false).run().unwrap();
        let mut solver = res.solver;
        let mut eval = res.problem.problem.unwrap();
        let x = solver.x().to_vec();
        let mut grad = vec![0.0; x.len()];
        // Timed: the trial alone; moving x back to the iterate afterwards is not.
        g.bench_function(format!("fused_trial/{name}"), |b| {
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
        g.bench_function(format!("evaluation/{name}"), |b| b.iter(|| black_box(eval.eval(&x, &mut grad))));
    }
    g.finish();
}

/// 20 L-BFGS iterations from a fixed start (divide by 20 for one iteration).
fn iterations(c: &mut Criterion) {
    let mut g = c.benchmark_group("lbfgs_20_iterations");
    g.sample_size(10);
    for name in ["C", "D", "E"] {
        let cfg = cfg(name);
        let obj = UfmObjective::new(&cfg);
        for method in [Method::InPlace, Method::Argmin] {
            if method == Method::Argmin && name != "C" {
                continue;
            }
            let params = SolveParams { max_iters: 20, tol_grad: 1e-300, method, ..SolveParams::default() };
            g.bench_function(format!("{method:?}/{name}"), |b| b.iter(|| black_box(solve(&obj, 0, &params, None).unwrap().objective)));
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

criterion_group!(benches, objective, passes, fused_iteration, iterations, solves);
criterion_main!(benches);
