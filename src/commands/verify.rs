//! One configuration end to end: predict, solve every start (in parallel), measure, certify,
//! judge. Results are independent of the thread count: each start is seeded on its own and
//! solved on one thread.

use rayon::prelude::*;

use crate::analysis::assess::{assess, summarise};
use crate::analysis::report::{RunReport, UfmReport};
use crate::analysis::verdict::Tolerances;
use crate::error::Result;
use crate::model::config::ValidConfig;
use crate::model::objective::UfmObjective;
use crate::solver::SolveParams;
use crate::theory::prediction::predict;

/// Settings of a verification run.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Solver settings.
    pub solve: SolveParams,
    /// Verdict thresholds.
    pub tol: Tolerances,
}

/// Solves and judges every seed of one configuration.
pub fn verify(cfg: &ValidConfig, seeds: &[u64], opts: &VerifyOptions) -> Result<UfmReport> {
    opts.solve.validate()?;
    opts.tol.validate()?;
    if seeds.is_empty() {
        return Err(crate::error::Error::new("--seeds must be at least 1"));
    }
    let pred = predict(cfg);
    let obj = UfmObjective::new(cfg);
    let runs: Vec<RunReport> =
        seeds.par_iter().map(|&seed| obj.solve(seed, &opts.solve, None).map(|sol| assess(cfg, &obj, &pred, seed, sol, &opts.tol))).collect::<Result<_>>()?;
    Ok(summarise(cfg, pred, runs, &opts.solve, &opts.tol))
}
