//! Judging solves: every start measured against the prediction and the certificate, and the
//! report of a configuration built from its starts (docs/theory.md §2, §5 and §7).

use nalgebra::DMatrix;

use crate::analysis::metrics::{set_means, Metrics, Spread};
use crate::analysis::report::{CertifiedPrediction, RunReport, Summary, UfmReport};
use crate::analysis::verdict::{judge, Evidence, Kind, Tolerances, Verdict};
use crate::model::config::ValidConfig;
use crate::model::objective::UfmObjective;
use crate::solver::{SolveParams, SolveResult, StopReason};
use crate::theory::certificate::certify;
use crate::theory::prediction::Prediction;

/// Above this many multi-label sets the per-set syntheses (the tag-wise one, and the
/// geometry's over all single-label means) are left out of the report.
const MAX_SYNTHESIS_SETS: usize = 2000;

/// Label sets with two or more labels and samples.
fn multi_label_sets(cfg: &ValidConfig) -> usize {
    cfg.labels.sets.iter().zip(&cfg.labels.counts).filter(|(s, &c)| s.len() >= 2 && c > 0).count()
}

/// Whether a report carries the geometry (the theorem's conditions do not all hold).
fn reports_geometry(cfg: &ValidConfig, pred: &Prediction) -> bool {
    !pred.etf_possible || !cfg.labels.balanced_within_multiplicity() || !pred.loss_covered
}

/// About how many bytes one start's report holds (without its iteration history, which `ufm`
/// keeps only for `--trace`), in memory and then as JSON together: twice its JSON, estimated
/// as 4 KB, 270 bytes per tag-wise synthesis, and with the geometry 40 bytes per classifier
/// cosine (K^2) and 900 per synthesis over all single-label means. Measured, in serde_json's
/// pretty layout, for which it was made: JSON 3.8 KB a start at K = 5, M = 2; 355 KB at C
/// (1,330 syntheses); 1.58 MB at K = 20, M = 3, d = 4 (the geometry); the resident memory grew
/// by 1.66 (C, 200 starts) and 1.34 (d = 4, 50 starts) times the JSON per start. The files
/// are now written about half as large ([`crate::io::report::to_outline`]: 180 KB and 878 KB),
/// so the estimate errs further on the safe side.
pub fn report_bytes(cfg: &ValidConfig, pred: &Prediction) -> f64 {
    let multi = multi_label_sets(cfg) as f64;
    let synthesis = if multi > MAX_SYNTHESIS_SETS as f64 { 0.0 } else { multi };
    let k = cfg.config.classes as f64;
    let geometry = if reports_geometry(cfg, pred) { 40.0 * k * k + 900.0 * synthesis } else { 0.0 };
    2.0 * (4096.0 + 270.0 * synthesis + geometry)
}

/// `|a - b| / |b|`.
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Measures a finished solve against the prediction and judges it.
pub fn assess(cfg: &ValidConfig, obj: &UfmObjective, pred: &Prediction, seed: u64, sol: &SolveResult, tol: &Tolerances) -> RunReport {
    let p = obj.split(&sol.x);
    // Whether float64 can hold the point at all; if it can, how well it evaluates f there.
    let unholdable = if sol.stopped_by == StopReason::NotFinite {
        Some(format!("the solve left what float64 (and the solver's float32 pairs) can hold: {}", sol.termination))
    } else if !sol.objective.is_finite() || sol.x.iter().any(|v| !v.is_finite()) {
        Some("the solve's point or objective is not finite in float64".to_string())
    } else {
        scale_out_of_range(obj, &sol.x, pred.trivial)
    };
    // The metrics (with the syntheses and the geometry), and the certificate with the
    // rounding bound, are independent: computed side by side (the same numbers as one after
    // the other).
    let synthesis_omitted = multi_label_sets(cfg) > MAX_SYNTHESIS_SETS;
    let ((mu, mut metrics, synthesis, report_geometry), (certificate, rounding)) = rayon::join(
        || {
            let mu = set_means(p.h.into(), &cfg.labels);
            let metrics = Metrics::compute_from_means(Spread::Samples(p.h.into()), &mu, &cfg.labels, Some(p.w), Some(p.b));
            let synthesis = if synthesis_omitted { Vec::new() } else { crate::analysis::metrics::synthesis(&mu, &cfg.labels) };
            let report_geometry = reports_geometry(cfg, pred).then(|| crate::analysis::metrics::geometry(p.w, &mu, &cfg.labels, !synthesis_omitted));
            (mu, metrics, synthesis, report_geometry)
        },
        || (certify(obj, &sol.x, sol.objective), unholdable.is_none().then(|| obj.rounding_bound(&sol.x, sol.objective))),
    );
    for t in &mut metrics.tag {
        if t.multiplicity == cfg.config.classes {
            t.note = Some("m = K: h_S = 0 is predicted, so angle and scale are 0/0; its norm is checked instead".into());
        } else {
            t.scale_pred = pred.scale.get(t.multiplicity - 1).copied().flatten();
        }
    }
    let objective_gap = (sol.objective - pred.objective) / pred.objective.abs();
    let alpha_rel_error = metrics.alpha.filter(|_| pred.alpha > 0.0).map(|a| rel_err(a, pred.alpha));
    let scale_rel_error: Vec<Option<f64>> = metrics
        .tag
        .iter()
        .map(|t| match (t.scale_min, t.scale_max, t.scale_pred) {
            (Some(lo), Some(hi), Some(s)) => Some(rel_err(lo, s).max(rel_err(hi, s))),
            _ => None,
        })
        .collect();

    let has_singletons = cfg.labels.samples_per_multiplicity()[0] > 0;
    let nan = f64::NAN;
    let mut geometry = vec![
        ("nc2_w".to_string(), metrics.nc2_w.unwrap_or(nan), Kind::Linear),
        ("alpha relative error".to_string(), alpha_rel_error.unwrap_or(nan), Kind::Linear),
        (bias_name(cfg).to_string(), bias_error(cfg, p.b), Kind::Bias),
    ];
    if has_singletons {
        geometry.push(("nc1".into(), metrics.nc1.unwrap_or(nan), Kind::Nc1));
        geometry.push(("nc2_h".into(), metrics.nc2_h.unwrap_or(nan), Kind::Linear));
        geometry.push(("nc3".into(), metrics.nc3.unwrap_or(nan), Kind::Linear));
        for (t, e) in metrics.tag.iter().zip(&scale_rel_error) {
            if t.sets == 0 {
                continue;
            }
            if t.multiplicity == cfg.config.classes {
                // m = K: h_S = 0 is predicted, so angle and scale are 0/0; check the norm instead.
                let ratio = full_set_norm_ratio(&mu, &cfg.labels);
                geometry.push(("||h_S|| / mean ||h_k|| for m=K".into(), ratio, Kind::Linear));
                continue;
            }
            let m = t.multiplicity;
            geometry.push((format!("tag angle m={m} (deg)"), t.max_angle_deg.unwrap_or(nan), Kind::Angle));
            geometry.push((format!("scale s_{m} relative error"), e.unwrap_or(nan), Kind::Linear));
        }
    }
    let solve_unresolved = if unholdable.is_some() {
        unholdable
    } else if let Some(r) = rounding.filter(|&r| !(r <= tol.objective / 10.0)) {
        Some(format!("float64 evaluates the objective only to {r:.1e} relative here (the losses are below the rounding of logits this large), short of the {:.0e} the verdict needs", tol.objective))
    } else {
        certificate
            .relative_gap
            .filter(|&g| g < -tol.objective)
            .map(|g| format!("the certificate's lower bound is {:.1e} relative above the attained objective: float64 cannot evaluate one of them here", -g))
    };
    let evidence = Evidence {
        etf_possible: pred.etf_possible,
        balanced: cfg.labels.balanced_within_multiplicity(),
        loss_covered: pred.loss_covered,
        trivial: pred.trivial,
        prediction_unvalidated: pred.unvalidated_reason.clone(),
        prediction_error: pred.relative_error_bound.max(0.0),
        solve_unresolved,
        converged: sol.converged,
        objective_gap,
        certified_gap: certificate.relative_gap,
        certified_bound_gap: certificate.lower_bound.map(|d| (d - pred.objective) / pred.objective.abs()),
        geometry,
        distance: {
            let dist = sol.grad_norm / obj.curvature_scale();
            (dist, dist / sol.x.iter().map(|v| v * v).sum::<f64>().sqrt())
        },
    };
    let (verdict, reasons) = judge(&evidence, tol);
    RunReport {
        seed,
        objective: sol.objective,
        converged: sol.converged,
        iterations: sol.iterations,
        evaluations: sol.evaluations,
        seconds: sol.seconds,
        stopped_by: sol.stopped_by,
        certified_at_stop: sol.certified.map(|c| c.1),
        termination: sol.termination.clone(),
        grad_norm: sol.grad_norm,
        relative_objective_gap: objective_gap,
        alpha_rel_error,
        scale_rel_error,
        verdict,
        reasons,
        metrics,
        certificate,
        synthesis,
        synthesis_omitted,
        geometry: report_geometry,
        history: sol.history.clone(),
    }
}

/// Entries of W or H so large or so small (in their largest magnitude) that the metrics'
/// squares and products of them over- or underflow float64. In the trivial regime the
/// predicted optimum is W = H = 0 and the verdict reads no metric, so there only a scale that
/// is too large counts.
fn scale_out_of_range(obj: &UfmObjective, x: &[f64], trivial: bool) -> Option<String> {
    let p = obj.split(x);
    let top = |v: &[f64]| v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    let (w, h) = (top(p.w.data), top(p.h.data));
    let ok = |v: f64| v == 0.0 || (v <= 1e60 && (trivial || v >= 1e-60));
    (!(ok(w) && ok(h))).then(|| {
        format!("the solution's scale (|W| up to {w:.1e}, |H| up to {h:.1e}) is outside [1e-60, 1e60], where float64 computes the metrics' squares and products without over- or underflow")
    })
}

fn bias_name(cfg: &ValidConfig) -> &'static str {
    if cfg.config.lambda_b > 0.0 {
        "bias norm"
    } else {
        "centred bias norm (lambda_b = 0)"
    }
}

/// `||b||` when lambda_b > 0 (b = 0 predicted); `||b - mean(b) 1||` when lambda_b = 0
/// (b is then only defined up to c 1).
fn bias_error(cfg: &ValidConfig, b: &[f64]) -> f64 {
    let mean = if cfg.config.lambda_b > 0.0 { 0.0 } else { b.iter().sum::<f64>() / b.len() as f64 };
    b.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>().sqrt()
}

/// `||mu_S|| / mean_k ||mu_k||` for the set of all K labels (predicted 0).
fn full_set_norm_ratio(mu: &DMatrix<f64>, labels: &crate::model::labels::LabelSets) -> f64 {
    let full = labels.sets.iter().position(|s| s.len() == labels.classes);
    let singles: Vec<f64> = (0..labels.classes).filter_map(|k| labels.singleton(k)).map(|j| mu.column(j).norm()).collect();
    match full {
        Some(j) if !singles.is_empty() => mu.column(j).norm() / (singles.iter().sum::<f64>() / singles.len() as f64),
        _ => f64::NAN,
    }
}

/// Builds the report of a configuration from its runs.
pub fn summarise(cfg: &ValidConfig, pred: Prediction, runs: Vec<RunReport>, solver: &SolveParams, tol: &Tolerances) -> UfmReport {
    let counterexample = runs.iter().any(|r| r.reasons.iter().any(|s| s.starts_with("COUNTEREXAMPLE")));
    let best = super::report::best_run(&runs);
    let verdict = if counterexample { Verdict::Violated } else { best.map(|r| r.verdict).unwrap_or(Verdict::NotConverged) };
    let best_lower = runs.iter().filter_map(|r| r.certificate.lower_bound).fold(f64::NEG_INFINITY, f64::max);
    let certified_prediction = (pred.etf_possible && pred.loss_covered && cfg.labels.balanced_within_multiplicity() && best_lower.is_finite()).then(|| {
        let eps = (pred.objective - best_lower).max(0.0);
        CertifiedPrediction {
            epsilon: eps,
            statement: format!(
                "the theorem's optimum value {:.15e} is the global minimum to within {:.1e} (attained by construction; certified lower bound {:.15e})",
                pred.objective, eps, best_lower
            ),
        }
    });
    let summary = Summary {
        starts: runs.len(),
        reached_prediction: runs.iter().filter(|r| r.relative_objective_gap.abs() <= tol.objective).count(),
        verified: runs.iter().filter(|r| r.verdict == Verdict::Verified).count(),
        best_seed: best.map(|r| r.seed),
    };
    UfmReport {
        config: cfg.config.clone(),
        counts: cfg.counts.clone(),
        samples: cfg.labels.samples(),
        tolerances: *tol,
        solver: *solver,
        predicted: pred,
        runs,
        verdict,
        summary,
        certified_prediction,
        partial: None,
    }
}
