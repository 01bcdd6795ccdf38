//! mlab-nc verifies multi-label neural collapse (Li, Wang, Li, Qu, ICML 2024) in the
//! unconstrained feature model (UFM) with the pick-all-label loss, by optimisation: it solves
//! the UFM in float64, computes the optimum the theorem predicts from a small convex problem,
//! proves global optimality with a duality certificate, measures the neural-collapse
//! metrics, and returns a verdict. The derivations are in `docs/theory.md`.
//!
//! The modules follow the pipeline: [`model`] (labels, losses, configuration, objective) ->
//! [`solver`] (L-BFGS behind argmin's `Solver`) -> [`theory`] (prediction, certificate) ->
//! [`analysis`] (metrics, verdict, reports) -> [`io`] -> [`commands`] -> [`cli`].
//!
//! # One configuration, step by step
//!
//! ```
//! use mlab_nc::analysis::Metrics;
//! use mlab_nc::model::{UfmConfig, UfmObjective};
//! use mlab_nc::solver::SolveParams;
//! use mlab_nc::theory::{certify, predict};
//!
//! // K = 4 classes, label sets of up to M = 2 labels, one sample per set.
//! let cfg = UfmConfig::new(4, 2).validate()?;
//! let pred = predict(&cfg);
//! let obj = UfmObjective::new(&cfg);
//! let sol = obj.solve(0, &SolveParams::default(), None)?;
//! assert!(sol.converged && ((sol.objective - pred.objective) / pred.objective).abs() < 1e-9);
//!
//! // A lower bound on the global minimum that does not assume the theorem.
//! let cert = certify(&obj, &sol.x, sol.objective);
//! assert!(cert.relative_gap.unwrap() < 1e-7);
//!
//! // The neural-collapse metrics of the solution.
//! let p = obj.split(&sol.x);
//! let m = Metrics::compute(p.h, &cfg.labels, Some(p.w), Some(p.b));
//! assert!(m.nc1.unwrap() < 1e-8 && m.nc2_w.unwrap() < 1e-4);
//! # Ok::<(), mlab_nc::error::Error>(())
//! ```
//!
//! # The whole pipeline, and a verdict
//!
//! ```
//! use mlab_nc::analysis::Verdict;
//! use mlab_nc::commands::verify::{verify, VerifyOptions};
//! use mlab_nc::model::UfmConfig;
//!
//! let cfg = UfmConfig { per_set: vec![2, 1], ..UfmConfig::new(4, 2) }.validate()?;
//! let report = verify(&cfg, &[0, 1], &VerifyOptions::default())?;
//! assert_eq!(report.verdict, Verdict::Verified);
//! # Ok::<(), mlab_nc::error::Error>(())
//! ```
//!
//! # Features from a real network
//!
//! ```
//! use mlab_nc::analysis::arrays::Array2;
//! use mlab_nc::analysis::measure::{measure_inputs, Inputs, Names};
//!
//! // Six samples in d = 2, K = 3 classes: three single-label samples and three pairs, with
//! // features placed exactly on a simplex ETF and its tag-wise sums.
//! let s = 3f64.sqrt() / 2.0;
//! let e = [[1.0, 0.0], [-0.5, s], [-0.5, -s]];
//! let mut features = Vec::new();
//! for v in &e {
//!     features.extend_from_slice(v);
//! }
//! for (a, b) in [(0, 1), (0, 2), (1, 2)] {
//!     features.extend_from_slice(&[e[a][0] + e[b][0], e[a][1] + e[b][1]]);
//! }
//! let labels = [1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 1., 0., 1., 0., 1., 0., 1., 1.];
//! let inp = Inputs {
//!     features: Array2::row_major(&features, 6, 2)?,
//!     labels: Array2::row_major(&labels, 6, 3)?,
//!     classifier: None,
//!     bias: None,
//! };
//! let r = measure_inputs(&inp, &Names::ARGUMENTS)?;
//! assert!(r.metrics.nc1.unwrap() < 1e-20 && r.metrics.nc2_h.unwrap() < 1e-12);
//! assert!(r.metrics.tag[0].max_angle_deg.unwrap() < 1e-6);
//! # Ok::<(), mlab_nc::error::Error>(())
//! ```

// `!(x > 0.0)` is the code's way of rejecting NaN together with the values that fail.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod analysis;
#[doc(hidden)]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
pub mod commands;
#[cfg(feature = "train")]
pub mod data;
pub mod error;
pub mod io;
pub(crate) mod kernels;
pub mod linalg;
pub mod model;
#[cfg(feature = "train")]
pub mod network;
pub mod solver;
pub mod theory;

pub use kernels::cpu::Isa;

/// Runs `f` on a worker of the current rayon pool and waits for it (runs it directly when
/// this thread is a worker already).
///
/// A solve runs a parallel loop per evaluation (on preset C, one every 0.4 ms). In the `ufm`
/// command, started from the main thread, each loop was handed to the workers while the main
/// thread slept until it ended, and `perf sched` showed the two workers sharing one of this
/// machine's two cores for most of C's solve, the other idle 55% to 75% of the run; run on a
/// worker, C's whole `ufm` took 15% less time and D's 6%. The command line runs every command
/// through it, and the Python module its `ufm` (C: 44 -> 34-38 ms). Not everywhere: a
/// program's own loop of C's solves from `main` measured the same either way (medians of
/// 34.1 ms, six alternated runs, without the CLI's allocator settings), and the streaming
/// accumulator, one long loop per batch, gains nothing.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    /// `on_pool` runs its closure on a worker of the current pool: from outside the pool on
    /// one of them, from a worker on that worker itself (no hand-off).
    #[test]
    fn on_pool_runs_on_a_worker() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert_eq!(rayon::current_thread_index(), None, "the test's own thread is no worker");
        assert!(super::on_pool(rayon::current_thread_index).is_some());
        pool.install(|| {
            let me = std::thread::current().id();
            assert_eq!(super::on_pool(|| std::thread::current().id()), me);
        });
    }
}
