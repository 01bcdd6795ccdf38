//! The benchmark configurations of the speed comparison (A to E, and the scale run), and the
//! measurement "wall time from the seeded start to a given relative gap to the prediction".

use serde::Serialize;

use crate::bail;
use crate::error::Result;
use crate::model::config::{UfmConfig, ValidConfig};
use crate::model::loss::Loss;
use crate::model::objective::UfmObjective;
use crate::solver::SolveParams;
use crate::theory::prediction::predict;

/// A named benchmark configuration.
pub fn preset(name: &str) -> Result<UfmConfig> {
    let (k, m, d, per, lam) = match name {
        "A" => (4, 2, 8, 5, 5e-3),
        "B" => (10, 3, 16, 2, 2e-3),
        "C" => (20, 3, 32, 2, 1e-3),
        "D" => (50, 3, 64, 1, 2e-4),
        "E" => (100, 2, 128, 2, 2e-4),
        "scale" => (100, 3, 100, 1, 5e-5),
        _ => bail!("--preset: unknown preset '{name}' (A, B, C, D, E or scale)"),
    };
    Ok(UfmConfig { classes: k, max_labels: m, dim: d, per_set: vec![per], lambda_w: lam, lambda_h: lam, lambda_b: lam, loss: Loss::Pal })
}

/// One timed solve.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Preset name.
    pub name: String,
    /// Seconds from the start to the target gap (including setup of the solver).
    pub seconds: f64,
    /// Iterations used.
    pub iterations: u64,
    /// Objective evaluations used.
    pub evaluations: usize,
    /// Relative gap to the prediction at the end.
    pub gap: f64,
}

/// Solves `cfg` from seed 0 until `f <= f* (1 + gap)`, and times it.
pub fn time_to_gap(name: &str, cfg: &ValidConfig, gap: f64, params: &SolveParams) -> Result<Timing> {
    let pred = predict(cfg);
    let obj = UfmObjective::new(cfg);
    let params = SolveParams { target_objective: Some(pred.objective * (1.0 + gap)), tol_stop: 0.0, ..*params };
    let sol = obj.solve(0, &params, None)?;
    Ok(Timing {
        name: name.to_string(),
        seconds: sol.seconds,
        iterations: sol.iterations,
        evaluations: sol.evaluations,
        gap: (sol.objective - pred.objective) / pred.objective,
    })
}
