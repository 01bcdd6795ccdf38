//! The report of one configuration: every start's solve, metrics, certificate and verdict.
//! (Written as JSON and printed as a table by `io::report`.)

use serde::Serialize;

use crate::analysis::metrics::{Geometry, Metrics, Synthesis};
use crate::analysis::verdict::{Tolerances, Verdict};
use crate::model::config::{SetCount, UfmConfig};
use crate::solver::{HistoryPoint, SolveParams, StopReason};
use crate::theory::certificate::Certificate;
use crate::theory::prediction::Prediction;

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
    /// What ended the solve: `certificate`, `gradient`, `max-iters`, `time-limit`, ...
    pub stopped_by: StopReason,
    /// The certified relative suboptimality the solver took last (the one it stopped on, if
    /// `stopped_by` is `certificate`).
    pub certified_at_stop: Option<f64>,
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
    /// True when `synthesis` (and the geometry's `synthesis_all`) was too large to include.
    pub synthesis_omitted: bool,
    /// Classifier norms, cosines and spectrum, and the synthesis over all multiplicity-1
    /// means, when a precondition of the theorem fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Geometry>,
    /// Objective and gradient norm per iteration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
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

/// The report of `mlab-nc predict --json`: the configuration and the theorem's predicted
/// optimum, under the same keys as in [`UfmReport`].
#[derive(Debug, Clone, Serialize)]
pub struct PredictionReport {
    /// Configuration.
    pub config: UfmConfig,
    /// Explicit per-set counts, when given (`--counts`, `--class-skew`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<SetCount>>,
    /// Number of samples N.
    pub samples: usize,
    /// The theorem's prediction.
    pub predicted: Prediction,
}

impl PredictionReport {
    /// Predicts the optimum of a configuration.
    pub fn new(cfg: &crate::model::config::ValidConfig) -> Self {
        PredictionReport { config: cfg.config.clone(), counts: cfg.counts.clone(), samples: cfg.labels.samples(), predicted: crate::theory::predict(cfg) }
    }
}

/// The start with the lowest objective (the first of equals): the one whose verdict is the
/// configuration's, unless another start found a counterexample.
pub fn best_run(runs: &[RunReport]) -> Option<&RunReport> {
    runs.iter().min_by(|a, b| a.objective.total_cmp(&b.objective))
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
    /// Set while the run goes on: a report written before every start has finished, whose
    /// runs, summary and verdict cover the finished starts only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// How far a run had got when its report was written.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Partial {
    /// Starts finished (the report's runs).
    pub finished: usize,
    /// Starts asked for.
    pub starts: u64,
}

impl UfmReport {
    /// The start with the lowest objective ([`best_run`]).
    pub fn best_run(&self) -> Option<&RunReport> {
        best_run(&self.runs)
    }
}
