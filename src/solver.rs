//! Minimises the UFM objective with argmin's L-BFGS and More-Thuente line search, in float64.
//!
//! The run is "converged" when the final gradient norm is at most `tol_grad`, whatever
//! argmin's termination reason says: a line search that gives up at a point whose gradient
//! is already tiny is still a converged solve, and one that gives up early is not.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use argmin::core::observers::{Observe, ObserverMode};
use argmin::core::{Error as ArgminError, Executor, IterState, State, TerminationReason, KV};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use serde::Serialize;

use crate::config::LBFGS_HISTORY;
use crate::error::{Error, Result};
use crate::linalg::norm;
use crate::ufm::{Cached, UfmObjective};

/// Solver settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SolveParams {
    /// Stop when `||grad f|| <= tol_grad`.
    pub tol_grad: f64,
    /// Iteration cap.
    pub max_iters: u64,
    /// Standard deviation of the seeded Gaussian start.
    pub init_std: f64,
}

impl Default for SolveParams {
    fn default() -> Self {
        SolveParams { tol_grad: 1e-9, max_iters: 5000, init_std: 0.1 }
    }
}

/// One point of the iteration history.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HistoryPoint {
    /// Iteration (0 = the start).
    pub iter: u64,
    /// Objective.
    pub objective: f64,
    /// Gradient norm.
    pub grad_norm: f64,
}

/// Callback run on the start and on every iterate: `(iteration, x, f(x), ||grad||)`.
pub type IterCallback = Box<dyn FnMut(u64, &[f64], f64, f64) + Send>;

/// The outcome of one solve.
#[derive(Debug, Clone)]
pub struct SolveResult {
    /// Final parameters `[W, H, b]`.
    pub x: Vec<f64>,
    /// Final objective.
    pub objective: f64,
    /// Final gradient norm.
    pub grad_norm: f64,
    /// `grad_norm <= tol_grad`.
    pub converged: bool,
    /// L-BFGS iterations.
    pub iterations: u64,
    /// Objective-and-gradient evaluations.
    pub evaluations: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// argmin's termination reason, verbatim.
    pub termination: String,
    /// Objective and gradient norm per iteration.
    pub history: Vec<HistoryPoint>,
}

struct Recorder {
    history: Arc<Mutex<Vec<HistoryPoint>>>,
    callback: Arc<Mutex<Option<IterCallback>>>,
    offset: u64,
    skip_init: bool,
}

type LbfgsState = IterState<Vec<f64>, Vec<f64>, (), (), (), f64>;

impl Recorder {
    fn record(&mut self, state: &LbfgsState) {
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

impl Observe<LbfgsState> for Recorder {
    fn observe_init(&mut self, _name: &str, state: &LbfgsState, _kv: &KV) -> std::result::Result<(), ArgminError> {
        if !self.skip_init {
            self.record(state);
        }
        Ok(())
    }
    fn observe_iter(&mut self, state: &LbfgsState, _kv: &KV) -> std::result::Result<(), ArgminError> {
        self.record(state);
        Ok(())
    }
}

/// Solves from the seeded start `N(0, init_std^2)`.
pub fn solve(objective: &UfmObjective, seed: u64, params: &SolveParams, callback: Option<IterCallback>) -> Result<SolveResult> {
    let x0 = objective.random_start(seed, params.init_std);
    solve_from(objective, x0, params, callback)
}

/// Solves from a given start. When argmin stops early (a line-search failure, typically a
/// non-descent direction from rounding in the two-loop recursion), L-BFGS is restarted from
/// the current point with an empty memory, at most `RESTARTS` times; every stop is recorded.
pub fn solve_from(objective: &UfmObjective, x0: Vec<f64>, params: &SolveParams, callback: Option<IterCallback>) -> Result<SolveResult> {
    let callback = Arc::new(Mutex::new(callback));
    const RESTARTS: usize = 3;
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let mut x = x0;
    let (mut iterations, mut evaluations) = (0u64, 0usize);
    let mut terminations = Vec::new();
    for attempt in 0..=RESTARTS {
        let problem = Cached::new(objective.clone());
        let lbfgs = LBFGS::new(MoreThuenteLineSearch::new(), LBFGS_HISTORY)
            .with_tolerance_grad(params.tol_grad)
            .and_then(|s| s.with_tolerance_cost(0.0))
            .map_err(|e| Error::new(format!("solver setup: {e}")))?;
        let recorder = Recorder { history: history.clone(), callback: callback.clone(), offset: iterations, skip_init: attempt > 0 };
        let res = Executor::new(problem, lbfgs)
            .configure(|s| s.param(x).max_iters(params.max_iters.saturating_sub(iterations)))
            .add_observer(recorder, ObserverMode::Always)
            .run()
            .map_err(|e| Error::new(format!("solver failed: {e}")))?;
        let state = res.state();
        x = state
            .get_param()
            .or_else(|| state.get_best_param())
            .cloned()
            .ok_or_else(|| Error::new("solver returned no parameters"))?;
        iterations += state.get_iter();
        evaluations += res.problem().problem.as_ref().map(|p| p.evaluations()).unwrap_or(0);
        let reason = state.get_termination_reason().cloned();
        terminations.push(match &reason {
            Some(TerminationReason::SolverExit(msg)) => format!("solver exit: {msg}"),
            Some(r) => r.text().to_string(),
            None => "running".to_string(),
        });
        let grad_small = state.get_gradient().is_some_and(|g| norm(g) <= params.tol_grad);
        if grad_small || !matches!(reason, Some(TerminationReason::SolverExit(_))) || iterations >= params.max_iters {
            break;
        }
    }
    let mut grad = vec![0.0; objective.dim()];
    let mut z = vec![0.0; objective.k * objective.n];
    let value = objective.value_and_gradient(&x, &mut grad, &mut z);
    let grad_norm = norm(&grad);
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();
    let termination = if terminations.len() > 1 {
        format!("{} (after {} restart(s): {})", terminations[terminations.len() - 1], terminations.len() - 1, terminations[..terminations.len() - 1].join("; "))
    } else {
        terminations.pop().unwrap_or_default()
    };
    Ok(SolveResult {
        x,
        objective: value,
        grad_norm,
        converged: grad_norm <= params.tol_grad,
        iterations,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
        termination,
        history,
    })
}
