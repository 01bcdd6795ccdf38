//! The predicted optimum against independent computations.

mod common;

use common::{config, reference_prediction};
use mlab_nc::linalg::norm;
use mlab_nc::model::loss::Loss;
use mlab_nc::model::objective::UfmObjective;
use mlab_nc::theory::prediction::{predict, predicted_point};
use nalgebra::DMatrix;

/// (K, M, counts per multiplicity, lw, lh, PAL (else PAL-mean)).
type Case = (usize, usize, &'static [usize], f64, f64, bool);

const CASES: &[Case] = &[
    (4, 2, &[1, 1], 5e-3, 5e-3, true),
    (5, 3, &[3, 1, 2], 2e-3, 7e-3, true),
    (7, 2, &[2, 5], 1e-3, 1e-3, false),
    (6, 4, &[1, 2, 1, 3], 4e-3, 1e-3, true),
    (12, 3, &[2, 1, 1], 3e-4, 2e-4, false),
    (3, 3, &[4, 1, 2], 1e-2, 1e-2, true),
];

#[test]
fn prediction_matches_an_independent_fixed_point_solution() {
    for &(k, m, per, lw, lh, pal) in CASES {
        let loss = if pal { Loss::Pal } else { Loss::PalMean };
        let cfg = config(k, m, k, per, (lw, lh, 1e-3), loss);
        let p = predict(&cfg);
        let (obj, gamma, alpha) = reference_prediction(k, per, pal, lw, lh);
        assert!(!p.trivial);
        assert!(((p.objective - obj) / obj).abs() < 1e-13, "K={k} M={m}: {} vs {obj}", p.objective);
        assert!(((p.alpha - alpha) / alpha).abs() < 1e-9, "alpha {} vs {alpha}", p.alpha);
        for (i, g) in gamma.iter().enumerate() {
            if g.is_finite() {
                assert!((p.gamma[i].unwrap() - g).abs() < 1e-9 * g, "gamma_{}: {:?} vs {g}", i + 1, p.gamma[i]);
            }
        }
    }
}

/// The ansatz point built from the prediction is a critical point of the full UFM
/// (its gradient vanishes) and its UFM objective is the predicted g(gamma*).
#[test]
fn predicted_point_is_stationary_in_the_full_ufm() {
    for &(k, m, per, lw, lh, pal) in CASES {
        let loss = if pal { Loss::Pal } else { Loss::PalMean };
        let cfg = config(k, m, k - 1, per, (lw, lh, 1e-3), loss);
        let p = predict(&cfg);
        let obj = UfmObjective::new(&cfg);
        let x = predicted_point(&cfg, &p).unwrap();
        let mut g = vec![0.0; obj.dim()];
        let mut ws = mlab_nc::model::objective::Workspace::new(&obj);
        let f = obj.value_and_gradient(&x, &mut g, &mut ws);
        assert!(((f - p.objective) / p.objective).abs() < 1e-13, "f {f} vs {}", p.objective);
        assert!(norm(&g) < 1e-12, "K={k} M={m}: |grad| = {:e}", norm(&g));
    }
}

/// The origin is the global optimum iff ||dl/dZ(0)||_2 <= sqrt(lw lh) (the nuclear-norm
/// relaxation's optimality condition). Computed here with an SVD, independently of the
/// closed-form statistic; both must agree on each side of the threshold.
#[test]
fn trivial_threshold_agrees_with_the_spectral_test_on_both_sides() {
    for &(k, m, per, _, _, pal) in CASES {
        let loss = if pal { Loss::Pal } else { Loss::PalMean };
        let probe = config(k, m, k, per, (1.0, 1.0, 1.0), loss);
        // statistic scales as 1/(lw lh): lambda_c = sqrt(statistic at lambda = 1).
        let lam_c = predict(&probe).trivial_statistic.sqrt();
        for factor in [0.98, 1.02] {
            let lam = lam_c * factor;
            let cfg = config(k, m, k, per, (lam, lam, lam), loss);
            let p = predict(&cfg);
            let obj = UfmObjective::new(&cfg);
            let mut zmat = vec![0.0; obj.k * obj.n];
            obj.logits(&vec![0.0; obj.dim()], &mut zmat);
            obj.data_term_and_dual(&mut zmat);
            let g0 = DMatrix::from_column_slice(obj.k, obj.n, &zmat);
            let spec = g0.svd(false, false).singular_values.max();
            assert_eq!(p.trivial, spec <= lam, "K={k} M={m} factor {factor}: ||G0|| = {spec}, lam = {lam}");
            assert_eq!(p.trivial, factor > 1.0);
            if !p.trivial {
                assert!(p.gamma[0].unwrap() > 0.0);
            }
        }
    }
}

/// The path's threshold (`UfmObjective::trivial_threshold`, a closed form in the counts) is
/// the spectral norm of dl/dZ at the origin, computed here by an SVD: the weight decay
/// sqrt(lw lh) at which the origin stops being optimal. BCE has none.
#[test]
fn trivial_threshold_is_the_spectral_norm_at_the_origin() {
    for &(k, m, per, lw, lh, pal) in CASES {
        let loss = if pal { Loss::Pal } else { Loss::PalMean };
        let cfg = config(k, m, k, per, (lw, lh, 1e-3), loss);
        let obj = UfmObjective::new(&cfg);
        let mut zmat = vec![0.0; obj.k * obj.n];
        obj.logits(&vec![0.0; obj.dim()], &mut zmat);
        obj.data_term_and_dual(&mut zmat);
        let spec = DMatrix::from_column_slice(obj.k, obj.n, &zmat).svd(false, false).singular_values.max();
        let c = obj.trivial_threshold().unwrap();
        assert!((c - spec).abs() <= 1e-12 * spec, "K={k} M={m}: closed form {c} vs SVD {spec}");
    }
    let bce = UfmObjective::new(&config(4, 2, 4, &[1, 1], (1e-3, 1e-3, 1e-3), Loss::Bce));
    assert!(bce.trivial_threshold().is_none());
}

/// M = 1 is the multi-class UFM: PAL on singletons is plain cross-entropy, and the optimum is
/// the closed form gamma = log((K-1)(1-r)/r), r = sqrt(q)/c (Zhu et al. 2021's setting).
#[test]
fn multiclass_reduction() {
    let (k, n, lam) = (6usize, 3usize, 4e-3);
    let cfg = config(k, 1, k, &[n], (lam, lam, lam), Loss::Pal);
    let obj = UfmObjective::new(&cfg);
    let x = obj.random_start(5, 1.0);
    let p = obj.split(&x);
    let mut ce = 0.0;
    for i in 0..obj.n {
        let label = cfg.labels.sets[cfg.labels.set_of[i] as usize][0];
        let z: Vec<f64> = (0..k).map(|r| (0..k).map(|j| p.w.data[r + j * k] * p.h.col(i)[j]).sum::<f64>() + p.b[r]).collect();
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        ce += lse - z[label];
    }
    let reg = 0.5 * lam * x.iter().map(|v| v * v).sum::<f64>();
    assert!((obj.value(&x) - (ce / obj.n as f64 + reg)).abs() < 1e-12);
    let kf = k as f64;
    let r = (lam * lam * (kf - 1.0) / kf * (n * k) as f64 * (kf - 1.0)).sqrt();
    let gamma = ((kf - 1.0) * (1.0 - r) / r).ln();
    let pred = predict(&cfg);
    assert!((pred.gamma[0].unwrap() - gamma).abs() < 1e-12 * gamma);
}
