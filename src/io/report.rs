//! The JSON report and the terminal table.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::theory::certificate::Certificate;
use crate::model::config::{SetCount, UfmConfig};
use crate::error::{Error, Result};
use crate::analysis::metrics::{Geometry, Metrics, Synthesis};
use crate::solver::{HistoryPoint, SolveParams};
use crate::theory::prediction::Prediction;
use crate::analysis::verdict::{Tolerances, Verdict};

/// One start of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Seed of the random start.
    pub seed: u64,
    /// Final objective f(W, H, b).
    pub objective: f64,
    /// Gradient tolerance reached.
    pub converged: bool,
    /// L-BFGS iterations.
    pub iterations: u64,
    /// Objective-and-gradient evaluations.
    pub evaluations: usize,
    /// Wall time of the solve.
    pub seconds: f64,
    /// argmin's termination reason.
    pub termination: String,
    /// Final gradient norm.
    pub grad_norm: f64,
    /// (f - f*) / |f*|.
    pub relative_objective_gap: f64,
    /// |alpha - alpha*| / alpha*.
    pub alpha_rel_error: Option<f64>,
    /// Worst relative error of the measured scale against s_m (index m-2).
    pub scale_rel_error: Vec<Option<f64>>,
    /// The verdict.
    pub verdict: Verdict,
    /// What failed, and by how much.
    pub reasons: Vec<String>,
    /// Neural-collapse metrics.
    pub metrics: Metrics,
    /// Duality-gap certificate.
    pub certificate: Certificate,
    /// Least-squares synthesis of each multi-label mean over its own tags' means (omitted,
    /// with `synthesis_omitted`, above 2000 multi-label sets).
    pub synthesis: Vec<Synthesis>,
    /// True when `synthesis` was too large to include.
    pub synthesis_omitted: bool,
    /// Classifier norms, cosines and spectrum, and the synthesis over all multiplicity-1
    /// means, when a precondition of the theorem fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Geometry>,
    /// Objective and gradient norm per iteration.
    pub history: Vec<HistoryPoint>,
}

/// Counts over the starts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Number of starts.
    pub starts: usize,
    /// Starts whose objective is within the objective tolerance of the prediction.
    pub reached_prediction: usize,
    /// Starts verified.
    pub verified: usize,
    /// Seed of the lowest objective.
    pub best_seed: Option<u64>,
}

/// The theorem's optimum value, certified.
#[derive(Debug, Clone, Serialize)]
pub struct CertifiedPrediction {
    /// Prediction minus the best certified lower bound.
    pub epsilon: f64,
    /// Plain statement.
    pub statement: String,
}

/// The full report of `mlab-nc ufm`.
#[derive(Debug, Clone, Serialize)]
pub struct UfmReport {
    /// Configuration.
    pub config: UfmConfig,
    /// Explicit per-set counts, when given (`--counts`, `--class-skew`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<SetCount>>,
    /// Number of samples N.
    pub samples: usize,
    /// Verdict thresholds.
    pub tolerances: Tolerances,
    /// Solver settings.
    pub solver: SolveParams,
    /// The theorem's prediction.
    pub predicted: Prediction,
    /// One entry per start.
    pub runs: Vec<RunReport>,
    /// Overall verdict.
    pub verdict: Verdict,
    /// Counts over starts.
    pub summary: Summary,
    /// The theorem's optimum certified to epsilon, when d >= K-1.
    pub certified_prediction: Option<CertifiedPrediction>,
}

/// Writes `value` as pretty JSON to `path` atomically (temporary file, then rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::new(format!("{}: cannot serialise: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Writes bytes to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, bytes).map_err(|e| Error::new(format!("{}: cannot write: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::new(format!("{}: cannot write: {e}", path.display())))
}

fn fixed(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.10}")).unwrap_or_else(|| "-".into())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
}

/// The prediction as a short block of text.
pub fn prediction_text(c: &UfmConfig, n: usize, p: &Prediction) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "UFM  K={} M={} d={} N={} per-set={:?} loss={} lambda_w={:e} lambda_h={:e} lambda_b={:e}",
        c.classes,
        c.max_labels,
        c.dim,
        n,
        c.per_set,
        c.loss.name(),
        c.lambda_w,
        c.lambda_h,
        c.lambda_b
    );
    let _ = writeln!(
        s,
        "predicted  f* = {:.15e}   alpha = {:.10e}   trivial = {} (statistic {:.4})   etf_possible = {}",
        p.objective, p.alpha, p.trivial, p.trivial_statistic, p.etf_possible
    );
    for (i, g) in p.gamma.iter().enumerate() {
        if let Some(g) = g {
            let _ = writeln!(s, "  m={}  gamma = {:.12e}   s_m = {}", i + 1, g, fixed(p.scale[i]));
        }
    }
    s
}

/// The terminal table of a `ufm` report.
pub fn table(r: &UfmReport) -> String {
    let mut s = prediction_text(&r.config, r.samples, &r.predicted);
    let _ = writeln!(
        s,
        "\n{:>5} {:>22} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7}  verdict",
        "seed", "objective", "rel.gap", "cert.gap", "NC1", "NC2-W", "NC2-H", "NC3", "bias", "alpha.err", "iters", "secs"
    );
    for run in &r.runs {
        let m = &run.metrics;
        let _ = writeln!(
            s,
            "{:>5} {:>22.15e} {:>10.2e} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7.3}  {}",
            run.seed,
            run.objective,
            run.relative_objective_gap,
            opt(run.certificate.relative_gap),
            opt(m.nc1),
            opt(m.nc2_w),
            opt(m.nc2_h),
            opt(m.nc3),
            opt(m.bias_norm),
            opt(run.alpha_rel_error),
            run.iterations,
            run.seconds,
            run.verdict.name()
        );
    }
    if r.runs.iter().any(|run| !run.metrics.tag.is_empty()) {
        let _ = writeln!(s, "\ntag-wise average (seed, m: max angle deg | scale measured [min..max] vs predicted s_m)");
        for run in &r.runs {
            for t in &run.metrics.tag {
                let _ = writeln!(
                    s,
                    "{:>5}  m={}: {:>9} deg | {} [{}..{}] vs {}{}",
                    run.seed,
                    t.multiplicity,
                    opt(t.max_angle_deg),
                    fixed(t.scale_mean),
                    fixed(t.scale_min),
                    fixed(t.scale_max),
                    fixed(t.scale_pred),
                    t.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default()
                );
            }
        }
    }
    for run in &r.runs {
        let _ = writeln!(s, "seed {}: termination: {}; |grad| = {:.2e}; certificate: D = {}, spectral ratio {:.12}", run.seed, run.termination, run.grad_norm, opt(run.certificate.lower_bound), run.certificate.spectral_ratio);
        for reason in &run.reasons {
            let _ = writeln!(s, "seed {}: {}", run.seed, reason);
        }
    }
    if let Some(c) = &r.certified_prediction {
        let _ = writeln!(s, "certified: {}", c.statement);
    }
    let _ = writeln!(
        s,
        "\n{}/{} starts reached the predicted optimum; {} verified.  VERDICT: {}",
        r.summary.reached_prediction,
        r.summary.starts,
        r.summary.verified,
        r.verdict.name()
    );
    s
}
