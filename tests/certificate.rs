//! The duality-gap certificate: always a valid lower bound, and tight at the optimum.

mod common;

use common::config;
use mlab_nc::model::loss::Loss;
use mlab_nc::model::objective::UfmObjective;
use mlab_nc::solver::SolveParams;
use mlab_nc::theory::certificate::certify;
use mlab_nc::theory::prediction::{predict, predicted_point};

/// At d >= K-1 the predicted value is attained (so it is >= min f); the bound from any
/// point, random or partly optimised, must stay below it.
/// (K, M, d, counts per multiplicity, lambda_b, loss).
type Case<'a> = (usize, usize, usize, &'a [usize], f64, Loss);

#[test]
fn bound_never_exceeds_the_optimum_from_any_point() {
    let cases: &[Case] = &[
        (4, 2, 4, &[1, 2], 0.0, Loss::Pal),
        (5, 3, 6, &[2, 1, 1], 2e-3, Loss::PalMean),
        (7, 2, 6, &[1, 1], 5e-3, Loss::Pal),
        (3, 2, 2, &[3, 1], 1e-2, Loss::PalMean),
    ];
    let (mut checked, mut points) = (0, 0);
    for &(k, m, d, per, lb, loss) in cases {
        let cfg = config(k, m, d, per, (4e-3, 6e-3, lb), loss);
        let pred = predict(&cfg);
        let obj = UfmObjective::new(&cfg);
        for seed in 0..4 {
            for std in [0.05, 0.5, 2.0] {
                let x = obj.random_start(seed, std);
                let c = certify(&obj, &x, obj.value(&x));
                points += 1;
                if let Some(lb) = c.lower_bound {
                    assert!(lb <= pred.objective * (1.0 + 1e-13), "K={k}: bound {lb} > optimum {}", pred.objective);
                    checked += 1;
                }
            }
            for iters in [3, 15] {
                let params = SolveParams { max_iters: iters, ..SolveParams::default() };
                let sol = obj.solve(seed, &params, None).unwrap();
                let c = certify(&obj, &sol.x, sol.objective);
                points += 1;
                if let Some(lb) = c.lower_bound {
                    assert!(lb <= pred.objective * (1.0 + 1e-13), "after {iters} iterations: {lb} > {}", pred.objective);
                    checked += 1;
                }
            }
        }
    }
    // A bound exists at most points (lambda_b = 0 far from an optimum may have none): the
    // check is not vacuous.
    assert!(checked * 4 >= points * 3, "only {checked} of {points} points had a bound");
}

#[test]
fn gap_closes_as_the_solve_converges() {
    let cfg = config(5, 2, 5, &[2, 1], (5e-3, 5e-3, 5e-3), Loss::Pal);
    let obj = UfmObjective::new(&cfg);
    let mut gaps = Vec::new();
    for iters in [10, 40, 5000] {
        let sol = obj.solve(1, &SolveParams { max_iters: iters, ..SolveParams::default() }, None).unwrap();
        gaps.push(certify(&obj, &sol.x, sol.objective).relative_gap.unwrap());
    }
    assert!(gaps[0] > gaps[2] && gaps[1] > gaps[2], "{gaps:?}");
    assert!(gaps[2] <= 1e-7, "{gaps:?}");
    assert!(gaps.iter().all(|&g| g >= -1e-14));
}

/// At the exact predicted optimum the dual bound equals the primal value (strong duality).
#[test]
fn bound_is_tight_at_the_predicted_point() {
    for (loss, lb) in [(Loss::Pal, 5e-3), (Loss::PalMean, 5e-3), (Loss::Pal, 0.0)] {
        let cfg = config(6, 3, 5, &[1, 2, 1], (3e-3, 3e-3, lb), loss);
        let pred = predict(&cfg);
        let obj = UfmObjective::new(&cfg);
        let x = predicted_point(&cfg, &pred).unwrap();
        let c = certify(&obj, &x, obj.value(&x));
        assert!(c.relative_gap.unwrap().abs() < 1e-9, "{loss:?} lb={lb}: {:?}", c.relative_gap);
        assert!((c.spectral_ratio - 1.0).abs() < 1e-9);
    }
}

#[test]
fn gap_stays_large_below_the_etf_dimension() {
    for d in [2, 3] {
        let cfg = config(5, 2, d, &[1], (5e-3, 5e-3, 5e-3), Loss::Pal);
        let obj = UfmObjective::new(&cfg);
        let sol = obj.solve(0, &SolveParams::default(), None).unwrap();
        let c = certify(&obj, &sol.x, sol.objective);
        assert!(sol.converged);
        assert!(c.relative_gap.unwrap() > 1e-2, "d={d}: {:?}", c.relative_gap);
        assert!(c.lower_bound.unwrap() < sol.objective);
    }
}
