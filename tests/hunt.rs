//! `hunt`: deterministic draws inside the preconditions, classification, resumability, and
//! shrinking of precondition failures.

use mlab_nc::analysis::verdict::Verdict;
use mlab_nc::commands::hunt::{classify, draw, draw_wide, hunt, shrink, Class, HuntParams};
use mlab_nc::commands::verify::{verify, VerifyOptions};

#[test]
fn draws_are_deterministic_and_inside_the_stated_range() {
    for i in 0..200 {
        let a = draw(7, i, false).unwrap();
        let b = draw(7, i, false).unwrap();
        assert_eq!(a.config, b.config);
        let c = &a.config;
        assert!((2..=12).contains(&c.classes));
        assert!(c.max_labels >= 1 && c.max_labels <= c.classes.min(4));
        assert!(c.dim + 1 >= c.classes && c.dim <= 2 * c.classes);
        assert!(c.per_set.iter().all(|&n| (1..=5).contains(&n)));
    }
    assert_ne!(draw(7, 0, false).unwrap().config, draw(8, 0, false).unwrap().config);
}

#[test]
fn hunt_classifies_resumes_and_shrinks() {
    let out = std::env::temp_dir().join(format!("mlab-nc-hunt-{}.jsonl", std::process::id()));
    std::fs::remove_file(&out).ok();
    let opts = VerifyOptions::default();
    let p = HuntParams { budget: 24, seed: 1, seeds: 2, outside: true, wide: false, shrink: 1, progress: false };
    let s = hunt(&p, &out, &opts).unwrap();
    assert_eq!(s.tried, 24);
    assert_eq!(s.counterexamples, 0);
    assert!(s.verified + s.trivial > 0);
    assert!(s.outside_failures > 0, "d < K-1 draws must fail to reach the ETF value");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("\"class_skew\""), "some outside draws skew the counts");
    assert!(s.worst_verified_certified_gap <= 1e-7);
    // The shrunk failure is small and still fails.
    let small = &s.shrunk[0];
    let k: usize = small.split("--classes ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(k <= 4, "{small}");
    // Resuming with a larger budget only adds the new indices.
    let lines_before = std::fs::read_to_string(&out).unwrap().lines().count();
    let s2 = hunt(&HuntParams { budget: 30, shrink: 0, ..p }, &out, &opts).unwrap();
    assert_eq!(s2.tried, 30);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), lines_before + 6);
    // A smaller budget summarises only its own indices, and adds nothing.
    let s3 = hunt(&HuntParams { budget: 10, shrink: 0, ..p }, &out, &opts).unwrap();
    assert_eq!(s3.tried, 10);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), lines_before + 6);
    // Other settings refuse to resume the file instead of mixing two hunts.
    for other in [HuntParams { seed: 2, shrink: 0, ..p }, HuntParams { outside: false, shrink: 0, ..p }, HuntParams { seeds: 3, shrink: 0, ..p }] {
        let err = hunt(&other, &out, &opts).unwrap_err().to_string();
        assert!(err.contains("--seed 1 --seeds 2 --outside") && err.contains("another --out"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), lines_before + 6);
    std::fs::remove_file(&out).ok();
}

#[test]
fn shrinking_keeps_a_failure_and_reduces_it() {
    let cfg = mlab_nc::model::config::UfmConfig {
        classes: 6,
        max_labels: 3,
        dim: 3,
        per_set: vec![3, 2, 2],
        lambda_w: 4.3e-3,
        lambda_h: 6.1e-3,
        lambda_b: 1e-3,
        loss: mlab_nc::model::loss::Loss::Pal,
    };
    let opts = VerifyOptions::default();
    assert_eq!(classify(&cfg.clone().validate().unwrap(), 2, &opts).unwrap().class, Class::OutsideFailure);
    let (small, steps) = shrink(&cfg, None, 2, &opts).unwrap();
    assert!(steps > 0 && small.classes <= 4 && small.dim + 1 < small.classes);
    assert_eq!(classify(&small.validate().unwrap(), 2, &opts).unwrap().class, Class::OutsideFailure);
}

/// A bounded wide hunt (weight decays over [1e-8, 1e4], start scales 1e-3 to 10): no
/// counterexample, and every configuration that is not verified or trivial states why.
#[test]
fn wide_hunt_finds_no_counterexample_and_states_every_unresolved_reason() {
    let out = std::env::temp_dir().join(format!("mlab-nc-hunt-wide-{}.jsonl", std::process::id()));
    std::fs::remove_file(&out).ok();
    let mut opts = VerifyOptions::default();
    opts.solve.time_limit = Some(3.0);
    let p = HuntParams { budget: 40, seed: 3, seeds: 1, outside: false, wide: true, shrink: 0, progress: false };
    let s = hunt(&p, &out, &opts).unwrap();
    assert_eq!(s.tried, 40);
    assert_eq!(s.counterexamples, 0);
    assert!(s.verified + s.trivial >= 20, "{s:?}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let spread = records.iter().map(|r| r["config"]["lambda_w"].as_f64().unwrap()).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    assert!(spread.0 < 1e-5 && spread.1 > 10.0, "the draws span the range: {spread:?}");
    for r in &records {
        if r["class"] == "unresolved" {
            assert!(r["reasons"].as_array().is_some_and(|a| !a.is_empty()), "{r}");
        }
    }
    assert!(hunt(&HuntParams { outside: true, ..p }, &out, &opts).is_err(), "--wide and --outside do not mix");
    std::fs::remove_file(&out).ok();
}

/// Draw 279 of `hunt --wide --seed 2026` (K = 2, weight decays 2e-7 and 1e-6, a start of
/// scale 9.3), seed 2: with the line search's nonmonotone test allowed any rise below the
/// window's largest f, this start climbed from f = 0.44 to the saddle W = H = 0 (f = ln 2) and
/// ended not-converged; with the rise capped at 1e-6 |f| (`solver::lbfgs`) it is verified.
#[test]
fn a_large_start_does_not_climb_to_the_saddle() {
    let (cfg, init_std) = draw_wide(2026, 279).unwrap();
    assert_eq!(cfg.config.classes, 2, "the draw this test is about");
    let mut opts = VerifyOptions::default();
    opts.solve.init_std = init_std;
    let r = verify(&cfg, &[2], &opts).unwrap();
    assert_eq!(r.verdict, Verdict::Verified, "{:?}", r.runs[0].reasons);
}

/// Draw 147 of `hunt --wide --seed 2026` (K = 2, d = 1, lambda_w = 3.3e-7 against lambda_h =
/// 0.14, PAL-mean), seed 1: a line search found no step meeting a curvature condition, and
/// so did the line search after each of the three restarts, and the start ended
/// not-converged. With the best sufficient-decrease step taken instead (`solver::lbfgs`) it
/// is verified.
#[test]
fn a_line_search_without_a_wolfe_step_takes_a_sufficient_decrease() {
    let (cfg, init_std) = draw_wide(2026, 147).unwrap();
    assert_eq!((cfg.config.classes, cfg.config.dim), (2, 1), "the draw this test is about");
    let mut opts = VerifyOptions::default();
    opts.solve.init_std = init_std;
    let r = verify(&cfg, &[1], &opts).unwrap();
    assert_eq!(r.verdict, Verdict::Verified, "{:?} {}", r.runs[0].reasons, r.runs[0].termination);
}

/// A start a million times the default scale (K = 3, M = 2): the logits reach 1e12, where the
/// softmax saturates and the loss is piecewise linear in float64, so phi' jumps across zero
/// and no step meets a curvature condition. Sufficient-decrease steps carry the solve back
/// to the optimum, which the verdict compares with the reduced problem's prediction.
#[test]
fn a_start_of_scale_1e6_reaches_the_optimum() {
    let cfg = mlab_nc::model::config::UfmConfig::new(3, 2).validate().unwrap();
    let mut opts = VerifyOptions::default();
    opts.solve.init_std = 1e6;
    let r = verify(&cfg, &[0], &opts).unwrap();
    assert_eq!(r.verdict, Verdict::Verified, "{:?} {}", r.runs[0].reasons, r.runs[0].termination);
}

/// A count of starts whose reports would not fit in memory is an error naming --seeds, before
/// any list of seeds is made (10^12 seeds aborted the process on an 8 TB allocation).
#[test]
fn too_many_starts_are_refused() {
    let cfg = mlab_nc::model::config::UfmConfig {
        classes: 4,
        max_labels: 2,
        dim: 4,
        per_set: vec![1],
        lambda_w: 5e-3,
        lambda_h: 5e-3,
        lambda_b: 5e-3,
        loss: mlab_nc::model::loss::Loss::Pal,
    }
    .validate()
    .unwrap();
    let err = classify(&cfg, 1_000_000_000_000, &VerifyOptions::default()).err().unwrap().0;
    assert!(err.starts_with("--seeds 1000000000000:") && err.contains("alone would need"), "{err}");
    assert!(classify(&cfg, 2, &VerifyOptions::default()).is_ok());
}
