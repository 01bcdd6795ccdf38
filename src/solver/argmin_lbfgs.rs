//! argmin's own L-BFGS (with its More-Thuente line search) on the cached objective.
//! Kept as `--solver argmin` to compare against the in-place solver side by side.

use std::sync::{Arc, Mutex};

use argmin::core::observers::{Observe, ObserverMode};
use argmin::core::{Error as ArgminError, Executor, IterState, State, TerminationReason, KV};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::{HistoryPoint, IterCallback, SolveParams, SolveResult};
use crate::error::{Error, Result};
use crate::linalg::norm;
use crate::ufm::{Cached, UfmObjective, Workspace};

type ArgminState = IterState<Vec<f64>, Vec<f64>, (), (), (), f64>;

struct Recorder {
    history: Arc<Mutex<Vec<HistoryPoint>>>,
    callback: Arc<Mutex<Option<IterCallback>>>,
    offset: u64,
    skip_init: bool,
}

impl Recorder {
    fn record(&mut self, state: &ArgminState) {
        let grad_norm = state.get_gradient().map(|g| norm(g)).unwrap_or(f64::NAN);
        let point = HistoryPoint { iter: self.offset + state.get_iter(), objective: state.get_cost(), grad_norm };
        if let Ok(mut h) = self.history.lock() {
            h.push(point);
        }
        if let (Ok(mut cb), Some(x)) = (self.callback.lock(), state.get_param()) {
            if let Some(cb) = cb.as_mut() {
                cb(point.iter, x, point.objective, grad_norm);
            }
        }
    }
}

impl Observe<ArgminState> for Recorder {
    fn observe_init(&mut self, _name: &str, state: &ArgminState, _kv: &KV) -> std::result::Result<(), ArgminError> {
        if !self.skip_init {
            self.record(state);
        }
        Ok(())
    }
    fn observe_iter(&mut self, state: &ArgminState, _kv: &KV) -> std::result::Result<(), ArgminError> {
        self.record(state);
        Ok(())
    }
}

/// Solves with argmin's L-BFGS. The gradient tolerance handed to argmin is the relative
/// rule evaluated at the start's objective value / 10; `converged` is judged at the end with
/// the same rule as the in-place solver. A line-search exit restarts it (at most 3 times).
pub fn solve_argmin(objective: &UfmObjective, x0: Vec<f64>, params: &SolveParams, callback: Option<IterCallback>) -> Result<SolveResult> {
    const RESTARTS: usize = 3;
    let start = std::time::Instant::now();
    let callback = Arc::new(Mutex::new(callback));
    let history = Arc::new(Mutex::new(Vec::new()));
    let threshold = |f: f64| params.tol_grad * (2.0 * objective.curvature_scale() * f.abs()).sqrt();
    let abs_tol = threshold(objective.value(&x0)) / 10.0;
    let mut x = x0;
    let (mut iterations, mut evaluations) = (0u64, 0usize);
    let mut terminations = Vec::new();
    for attempt in 0..=RESTARTS {
        let problem = Cached::new(objective.clone());
        let lbfgs = LBFGS::new(MoreThuenteLineSearch::new(), params.history)
            .with_tolerance_grad(abs_tol)
            .and_then(|s| s.with_tolerance_cost(0.0))
            .map_err(|e| Error::new(format!("solver setup: {e}")))?;
        let recorder = Recorder { history: history.clone(), callback: callback.clone(), offset: iterations, skip_init: attempt > 0 };
        let res = Executor::new(problem, lbfgs)
            .configure(|s| {
                let s = s.param(x).max_iters(params.max_iters.saturating_sub(iterations));
                match params.target_objective {
                    Some(t) => s.target_cost(t),
                    None => s,
                }
            })
            .add_observer(recorder, ObserverMode::Always)
            .run()
            .map_err(|e| Error::new(format!("solver failed: {e}")))?;
        let state = res.state();
        x = state.get_param().or_else(|| state.get_best_param()).cloned().ok_or_else(|| Error::new("solver returned no parameters"))?;
        iterations += state.get_iter();
        evaluations += res.problem().problem.as_ref().map(|p| p.evaluations()).unwrap_or(0);
        let reason = state.get_termination_reason().cloned();
        terminations.push(super::reason_text(reason.as_ref()));
        let grad_small = state.get_gradient().is_some_and(|g| norm(g) <= threshold(state.get_cost()));
        let target_hit = params.target_objective.is_some_and(|t| state.get_cost() <= t);
        if grad_small || target_hit || !matches!(reason, Some(TerminationReason::SolverExit(_))) || iterations >= params.max_iters {
            break;
        }
    }
    let mut grad = vec![0.0; objective.dim()];
    let value = objective.value_and_gradient(&x, &mut grad, &mut Workspace::new(objective));
    let grad_norm = norm(&grad);
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();
    Ok(SolveResult {
        x,
        objective: value,
        grad_norm,
        converged: grad_norm <= threshold(value),
        iterations,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
        termination: super::join_terminations(terminations),
        history,
    })
}
