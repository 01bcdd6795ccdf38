//! One configuration end to end: predict, solve every start (in parallel), measure, certify,
//! judge. Results are independent of the thread count: each start is seeded on its own and
//! solved on one thread.

use rayon::prelude::*;

use crate::analysis::assess::{assess, report_bytes, summarise};
use crate::analysis::report::{Partial, RunReport, UfmReport};
use crate::analysis::verdict::{Tolerances, Verdict};
use crate::error::Result;
use crate::model::config::ValidConfig;
use crate::model::objective::UfmObjective;
use crate::solver::{HistoryPoint, SolveParams, SolveResult, StopReason};
use crate::theory::prediction::{predict, Prediction};

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
    let pred = checked_prediction(cfg, seeds.len() as u64, opts)?;
    verify_predicted(cfg, pred, seeds, opts, true, None)
}

/// `ufm` as the front ends run it: the seeds `seed, seed + 1, ...` (`seeds` of them), with
/// the iteration history kept only when `trace` asks for it.
pub fn ufm(cfg: &ValidConfig, seed: u64, seeds: u64, opts: &VerifyOptions, trace: bool) -> Result<UfmReport> {
    ufm_with_progress(cfg, seed, seeds, opts, trace, None)
}

/// Where [`ufm_with_progress`] shows the finished starts while the others run: `show` gets a
/// partial report (`partial` set, the finished runs in seed order) when a start finishes at
/// least `every` after the last one it got.
pub struct Progress<'a> {
    /// The least time between two partial reports.
    pub every: std::time::Duration,
    /// What receives them (the CLI writes each to `--json`, so that a run that is stopped
    /// keeps its finished starts).
    pub show: &'a (dyn Fn(&UfmReport) + Sync),
}

/// [`ufm`], showing partial reports to `progress` as starts finish.
pub fn ufm_with_progress(cfg: &ValidConfig, seed: u64, seeds: u64, opts: &VerifyOptions, trace: bool, progress: Option<Progress<'_>>) -> Result<UfmReport> {
    let Some(last) = seed.checked_add(seeds.saturating_sub(1)) else {
        return Err(crate::error::Error::new(format!("--seed {seed} + --seeds {seeds} runs past the largest seed")));
    };
    let pred = checked_prediction(cfg, seeds, opts)?;
    let list: Vec<u64> = (seed..=last).collect();
    verify_predicted(cfg, pred, &list, opts, trace, progress)
}

/// The prediction, after checking the options and that `seeds` reports fit in memory (at
/// least one; [`report_bytes`] each, without the iteration histories), before anything is
/// allocated per seed.
fn checked_prediction(cfg: &ValidConfig, seeds: u64, opts: &VerifyOptions) -> Result<Prediction> {
    opts.solve.validate()?;
    opts.tol.validate()?;
    if seeds == 0 {
        return Err(crate::error::Error::new("--seeds must be at least 1"));
    }
    let pred = predict(cfg);
    if let Some(short) = crate::model::config::beyond_memory(seeds as f64 * report_bytes(cfg, &pred)) {
        return Err(crate::error::Error::new(format!("--seeds {seeds}: the reports of {seeds} starts alone would need {short}; use fewer starts at a time")));
    }
    Ok(pred)
}

/// Every seed solved and judged; each run's iteration history dropped as it ends unless
/// `keep_history`; partial reports shown to `progress` as runs finish.
fn verify_predicted(
    cfg: &ValidConfig,
    pred: Prediction,
    seeds: &[u64],
    opts: &VerifyOptions,
    keep_history: bool,
    progress: Option<Progress<'_>>,
) -> Result<UfmReport> {
    let obj = UfmObjective::new(cfg);
    // The finished runs with their places in `seeds`, and when the last partial report went out.
    let finished = std::sync::Mutex::new((Vec::<(usize, RunReport)>::with_capacity(seeds.len()), std::time::Instant::now()));
    let lock = || finished.lock().map_err(|_| crate::error::Error::new("ufm: a worker panicked"));
    seeds.par_iter().enumerate().try_for_each(|(i, &seed)| -> Result<()> {
        let mut run = run_start(cfg, &obj, &pred, seed, opts)?;
        if !keep_history {
            run.history = Vec::new();
        }
        let mut guard = lock()?;
        let (done, last) = &mut *guard;
        done.push((i, run));
        if let Some(p) = progress.as_ref().filter(|p| done.len() < seeds.len() && last.elapsed() >= p.every) {
            done.sort_by_key(|(i, _)| *i);
            let mut partial = summarise(cfg, pred.clone(), done.iter().map(|(_, r)| r.clone()).collect(), &opts.solve, &opts.tol);
            partial.partial = Some(Partial { finished: done.len(), starts: seeds.len() as u64 });
            (p.show)(&partial);
            *last = std::time::Instant::now();
        }
        Ok(())
    })?;
    let mut done = std::mem::take(&mut lock()?.0);
    done.sort_by_key(|(i, _)| *i);
    Ok(summarise(cfg, pred, done.into_iter().map(|(_, r)| r).collect(), &opts.solve, &opts.tol))
}

/// One start: solved with the certified stop (`theory::solve`), then judged. When the solve
/// stopped on the certificate but the verdict is not settled at that precision (anything but
/// `verified`, `trivial` or `outside-theorem`), the solve continues from that point to the
/// gradient rule (or its iteration or time budget) and is judged again, so stopping early
/// never changes a verdict. The run stays `converged`: the certificate taken at the stop
/// still bounds the suboptimality of a point with a lower objective.
pub fn run_start(cfg: &ValidConfig, obj: &UfmObjective, pred: &Prediction, seed: u64, opts: &VerifyOptions) -> Result<RunReport> {
    let sol = crate::theory::solve(obj, seed, &opts.solve, None)?;
    let report = assess(cfg, obj, pred, seed, &sol, &opts.tol);
    let settled = matches!(report.verdict, Verdict::Verified | Verdict::Trivial | Verdict::OutsideTheorem);
    let iters_left = opts.solve.max_iters.saturating_sub(sol.iterations);
    let time_left = opts.solve.time_limit.map(|t| t - sol.seconds);
    if sol.stopped_by != StopReason::Certificate || settled || iters_left == 0 || time_left.is_some_and(|t| t <= 0.0) {
        return Ok(report);
    }
    let rest = SolveParams { tol_stop: 0.0, max_iters: iters_left, time_limit: time_left, ..opts.solve };
    let more = obj.solve_from(sol.x.clone(), &rest, None)?;
    let offset = sol.iterations;
    let mut history = sol.history;
    history.extend(more.history.iter().skip(1).map(|h| HistoryPoint { iter: h.iter + offset, ..*h }));
    let joined = SolveResult {
        // The continuation starts at a certified point and only lowers f, so the certificate
        // taken there still bounds the suboptimality of where it ends.
        converged: true,
        iterations: sol.iterations + more.iterations,
        evaluations: sol.evaluations + more.evaluations,
        seconds: sol.seconds + more.seconds,
        termination: format!("{}; then, to the gradient rule: {}", sol.termination, more.termination),
        certified: sol.certified,
        history,
        ..more
    };
    Ok(assess(cfg, obj, pred, seed, &joined, &opts.tol))
}
