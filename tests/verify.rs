//! The theorem as a regression test: solves reach the prediction and are judged correctly.

mod common;

use common::{config, reference_prediction};
use mlab_nc::analysis::verdict::Verdict;
use mlab_nc::commands::verify::{verify, VerifyOptions};
use mlab_nc::model::loss::Loss;

/// (K, M, d, per-set, lw, lh, lb, PAL (else PAL-mean)).
type Case<'a> = (usize, usize, usize, &'a [usize], f64, f64, f64, bool);

#[test]
fn solves_reach_the_prediction_and_are_verified() {
    // Unequal counts across multiplicities, d >= K-1.
    let cases: &[Case] = &[
        (4, 2, 3, &[2, 1], 5e-3, 5e-3, 5e-3, true),
        (5, 3, 8, &[1, 3, 2], 3e-3, 6e-3, 1e-3, true),
        (6, 2, 6, &[3, 1], 1e-3, 2e-3, 0.0, false),
        (8, 3, 7, &[1, 1, 1], 2e-3, 2e-3, 2e-3, false),
        (4, 4, 5, &[2, 1, 1, 3], 5e-3, 5e-3, 5e-3, true),
    ];
    for &(k, m, d, per, lw, lh, lb, pal) in cases {
        let loss = if pal { Loss::Pal } else { Loss::PalMean };
        let cfg = config(k, m, d, per, (lw, lh, lb), loss);
        let report = verify(&cfg, &[0, 1], &VerifyOptions::default()).unwrap();
        let (reference, _, _) = reference_prediction(k, per, pal, lw, lh);
        assert!(((report.predicted.objective - reference) / reference).abs() < 1e-12);
        for run in &report.runs {
            assert!(((run.objective - reference) / reference).abs() < 1e-9, "K={k} M={m}: {} vs {reference}", run.objective);
            assert!(run.certificate.relative_gap.unwrap() <= 1e-7);
            assert!(run.certificate.lower_bound.unwrap() <= reference * (1.0 + 1e-12));
        }
        assert_eq!(report.verdict, Verdict::Verified, "K={k} M={m}: {:?}", report.runs[0].reasons);
        assert_eq!(report.summary.verified, 2);
    }
}

#[test]
fn trivial_regime_is_recognised_by_the_solve() {
    let lam_c = mlab_nc::theory::prediction::predict(&config(4, 2, 4, &[2, 1], (1.0, 1.0, 1.0), Loss::Pal)).trivial_statistic.sqrt();
    let above = config(4, 2, 4, &[2, 1], (1.5 * lam_c, 1.5 * lam_c, 1e-2), Loss::Pal);
    let r = verify(&above, &[0], &VerifyOptions::default()).unwrap();
    assert!(r.predicted.trivial);
    assert_eq!(r.verdict, Verdict::Trivial, "{:?}", r.runs[0].reasons);
    // g(0) = sum_m p_m c_m log K, with N_1 = 8, N_2 = 6 (PAL: c_m = m).
    let g0 = (8.0 * 1.0 + 6.0 * 2.0) / 14.0 * 4f64.ln();
    assert!((r.runs[0].objective - g0).abs() < 1e-9 * g0);
    let below = config(4, 2, 4, &[2, 1], (0.6 * lam_c, 0.6 * lam_c, 1e-2), Loss::Pal);
    let r = verify(&below, &[0], &VerifyOptions::default()).unwrap();
    assert!(!r.predicted.trivial);
    assert_eq!(r.verdict, Verdict::Verified, "{:?}", r.runs[0].reasons);
    assert!(r.runs[0].objective < g0 * (1.0 - 1e-3));
}

/// Far inside the trivial regime, up to the largest weight decays float64 holds (one weight
/// decay huge, the others at their defaults; W, H or b huge): the origin is the optimum, the
/// start is scaled so that its gradient fits the solver's f32 pairs, and the verdict is
/// `trivial` at g(0) (same counts as above), not unresolved. Also with an unregularised bias
/// (lambda_b = 0), whose optimum is then c 1 by the symmetry of the counts, so g(0) is the
/// same; there the gradient rule must not stop before the bias has converged.
#[test]
fn huge_weight_decays_are_trivial() {
    let g0 = (8.0 * 1.0 + 6.0 * 2.0) / 14.0 * 4f64.ln();
    for lam in [
        (1e20, 5e-3, 5e-3),
        (1e50, 5e-3, 5e-3),
        (1e300, 5e-3, 5e-3),
        (5e-3, 1e300, 5e-3),
        (1e100, 1e100, 1e100),
        (5e-3, 1e300, 0.0),
        (1e300, 5e-3, 0.0),
        (10.0, 10.0, 0.0),
    ] {
        let cfg = config(4, 2, 4, &[2, 1], lam, Loss::Pal);
        let r = verify(&cfg, &[0, 1], &VerifyOptions::default()).unwrap();
        assert!(r.predicted.trivial);
        assert_eq!(r.verdict, Verdict::Trivial, "{lam:?}: {:?}", r.runs[0].reasons);
        for run in &r.runs {
            assert!((run.objective - g0).abs() <= 1e-12 * g0, "{lam:?}: f = {} vs g(0) = {g0}", run.objective);
        }
    }
}

#[test]
fn small_dimension_is_outside_the_theorem_with_a_large_certified_gap() {
    let cfg = config(6, 3, 4, &[1], (5e-3, 5e-3, 5e-3), Loss::Pal);
    let r = verify(&cfg, &[0], &VerifyOptions::default()).unwrap();
    assert!(!r.predicted.etf_possible);
    assert_eq!(r.verdict, Verdict::OutsideTheorem);
    let run = &r.runs[0];
    assert!(run.converged);
    assert!(run.relative_objective_gap > 1e-2, "the ETF value is unattainable: gap {}", run.relative_objective_gap);
    assert!(run.certificate.relative_gap.unwrap() > 1e-2);
    // The bound stays valid: it is below the value the solve attained.
    assert!(run.certificate.lower_bound.unwrap() <= run.objective);
}

#[test]
fn multiclass_case_verifies() {
    let cfg = config(5, 1, 5, &[3], (5e-3, 5e-3, 5e-3), Loss::Pal);
    let r = verify(&cfg, &[3], &VerifyOptions::default()).unwrap();
    assert_eq!(r.verdict, Verdict::Verified, "{:?}", r.runs[0].reasons);
    assert!(r.runs[0].metrics.tag.is_empty());
    assert!(r.runs[0].metrics.nc1.unwrap() < 1e-8);
}

#[test]
fn not_converged_when_iterations_run_out() {
    let cfg = config(5, 2, 5, &[1], (5e-3, 5e-3, 5e-3), Loss::Pal);
    let mut opts = VerifyOptions::default();
    opts.solve.max_iters = 5;
    let r = verify(&cfg, &[0], &opts).unwrap();
    assert_eq!(r.verdict, Verdict::NotConverged);
    assert!(!r.runs[0].converged);
}

#[test]
fn same_seed_same_numbers_whatever_the_thread_count() {
    let cfg = config(5, 2, 5, &[2, 1], (5e-3, 5e-3, 5e-3), Loss::Pal);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| verify(&cfg, &[0, 1, 2], &VerifyOptions::default()).unwrap())
    };
    let (a, b) = (run(1), run(2));
    for (x, y) in a.runs.iter().zip(&b.runs) {
        assert_eq!(x.objective.to_bits(), y.objective.to_bits());
        assert_eq!(x.iterations, y.iterations);
        // The syntheses are solved in parallel: the same sets in the same order, the same bits.
        assert_eq!(x.synthesis.len(), 10, "every pair of the 5 classes");
        for (p, q) in x.synthesis.iter().zip(&y.synthesis) {
            assert_eq!(p.set, q.set);
            assert!(p.weights.iter().zip(&q.weights).all(|(u, v)| u.to_bits() == v.to_bits()));
            assert_eq!(p.residual.to_bits(), q.residual.to_bits());
        }
    }
}

/// Large enough (135k variables, N = 2700) that the chunked objective and the vector kernels
/// run in parallel: the iterates must still be bit-identical for 1 and 2 threads.
#[test]
fn parallel_paths_are_deterministic() {
    use mlab_nc::model::objective::UfmObjective;
    use mlab_nc::solver::SolveParams;
    let cfg = config(20, 3, 50, &[2], (1e-3, 1e-3, 1e-3), Loss::Pal);
    let obj = UfmObjective::new(&cfg);
    assert!(obj.dim() > 8 * (1 << 14), "above the solver's parallel threshold (8 chunks of 2^14)");
    let params = SolveParams { max_iters: 25, ..SolveParams::default() };
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| obj.solve(4, &params, None).unwrap())
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.iterations, b.iterations);
    assert!(a.x.iter().zip(&b.x).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn argmin_lbfgs_path_also_reaches_the_prediction() {
    use mlab_nc::solver::Method;
    let cfg = config(5, 2, 5, &[2, 1], (5e-3, 5e-3, 5e-3), Loss::PalMean);
    let mut opts = VerifyOptions::default();
    opts.solve.method = Method::Argmin;
    let r = verify(&cfg, &[0], &opts).unwrap();
    assert!(r.runs[0].relative_objective_gap.abs() < 1e-9, "{}", r.runs[0].relative_objective_gap);
}

/// The estimate that refuses a `--seeds` count whose reports would not fit in memory bounds a
/// report's own JSON (as written, without the iteration history) from above, within a factor of 10: in the theorem's
/// regime with the tag-wise syntheses, and outside it (d < K - 1), where the geometry adds a
/// synthesis per set and the classifier's cosines.
#[test]
fn the_report_size_estimate_bounds_a_report() {
    for (k, m, d) in [(6, 3, 8), (8, 2, 3), (4, 2, 4)] {
        let cfg = config(k, m, d, &[1], (5e-3, 5e-3, 5e-3), Loss::Pal);
        let mut report = verify(&cfg, &[0], &VerifyOptions::default()).unwrap();
        report.runs[0].history.clear();
        let json = mlab_nc::io::report::to_outline(&report.runs[0]).unwrap().len() as f64;
        let estimate = mlab_nc::analysis::assess::report_bytes(&cfg, &report.predicted);
        assert!(json <= estimate && estimate <= 10.0 * json, "K={k} M={m} d={d}: JSON {json} bytes, estimate {estimate}");
    }
}

/// A run with several starts shows its finished starts as it goes: each partial report holds
/// exactly the starts finished so far, in seed order, each as the final report has it, and
/// says how many of how many; the final report is the one a run without progress gives.
#[test]
fn partial_reports_hold_the_finished_starts() {
    use mlab_nc::commands::verify::{ufm, ufm_with_progress, Progress};
    let cfg = config(4, 2, 4, &[2, 1], (5e-3, 5e-3, 5e-3), Loss::Pal);
    let opts = VerifyOptions::default();
    let seen = std::sync::Mutex::new(Vec::new());
    let show = |r: &mlab_nc::analysis::report::UfmReport| {
        let p = r.partial.expect("a partial report says so");
        let seeds: Vec<u64> = r.runs.iter().map(|x| x.seed).collect();
        seen.lock().unwrap().push((p.finished, p.starts, r.summary.starts, seeds, serde_json::to_value(&r.runs).unwrap()));
    };
    let report = ufm_with_progress(&cfg, 3, 6, &opts, false, Some(Progress { every: std::time::Duration::ZERO, show: &show })).unwrap();
    let plain = ufm(&cfg, 3, 6, &opts, false).unwrap();
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        for r in v.as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("seconds");
        }
        v
    };
    assert!(report.partial.is_none());
    assert_eq!(strip(&serde_json::to_value(&report.runs).unwrap()), strip(&serde_json::to_value(&plain.runs).unwrap()));
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 5, "one partial report per start finished before the last");
    let all = strip(&serde_json::to_value(&report.runs).unwrap());
    for (k, (finished, starts, summarised, seeds, runs)) in seen.iter().enumerate() {
        assert_eq!((*finished, *starts, *summarised, seeds.len()), (k + 1, 6, k + 1, k + 1));
        assert!(seeds.windows(2).all(|w| w[0] < w[1]) && seeds.iter().all(|s| (3..9).contains(s)), "{seeds:?}");
        for (seed, run) in seeds.iter().zip(strip(runs).as_array().unwrap()) {
            assert_eq!(run, &all[(*seed - 3) as usize], "seed {seed}");
        }
    }
}
