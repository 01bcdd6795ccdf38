//! argmin's own L-BFGS (with its More-Thuente line search) on any [`FusedObjective`], through
//! a one-point cache ([`Cached`]): argmin asks for the cost and the gradient separately, and
//! the objective computes both at once. Kept as `--solver argmin` to compare against the
//! in-place solver side by side.

use std::sync::{Arc, Mutex};

use argmin::core::observers::{Observe, ObserverMode};
use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, IterState, State, TerminationReason, KV};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::problem::FusedObjective;
use super::{HistoryPoint, IterCallback, SolveParams, SolveResult};
use crate::error::{Error, Result};
use crate::linalg::norm;

/// An objective with a one-point cache of `(x, f(x), grad f(x))`, for argmin's own L-BFGS.
pub struct Cached<O> {
    state: Mutex<CacheState<O>>,
}

struct CacheState<O> {
    objective: O,
    x: Vec<f64>,
    cost: f64,
    grad: Vec<f64>,
    evaluations: usize,
}

impl<O: FusedObjective> Cached<O> {
    /// Wraps an objective.
    pub fn new(objective: O) -> Self {
        let n = objective.dim();
        Cached { state: Mutex::new(CacheState { objective, x: Vec::new(), cost: f64::NAN, grad: vec![0.0; n], evaluations: 0 }) }
    }

    /// Number of real (uncached) evaluations so far.
    pub fn evaluations(&self) -> usize {
        self.state.lock().map(|s| s.evaluations).unwrap_or(0)
    }

    /// The objective back.
    pub fn into_inner(self) -> Option<O> {
        self.state.into_inner().ok().map(|s| s.objective)
    }

    fn with_eval<T>(&self, x: &[f64], read: impl FnOnce(&CacheState<O>) -> T) -> std::result::Result<T, ArgminError> {
        let mut st = self.state.lock().map_err(|_| ArgminError::msg("objective cache poisoned"))?;
        if st.x.as_slice() != x {
            let CacheState { objective, grad, .. } = &mut *st;
            let cost = objective.eval(x, grad);
            st.cost = cost;
            st.x.clear();
            st.x.extend_from_slice(x);
            st.evaluations += 1;
        }
        Ok(read(&st))
    }
}

impl<O: FusedObjective> CostFunction for Cached<O> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, x: &Self::Param) -> std::result::Result<f64, ArgminError> {
        self.with_eval(x, |s| s.cost)
    }
}

impl<O: FusedObjective> Gradient for Cached<O> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, x: &Self::Param) -> std::result::Result<Vec<f64>, ArgminError> {
        self.with_eval(x, |s| s.grad.clone())
    }
}

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

/// Minimises with argmin's L-BFGS. The gradient tolerance handed to argmin is the relative
/// rule evaluated at the start's objective value / 10; `converged` is judged at the end with
/// the same rule as the in-place solver. A line-search exit restarts it (at most 3 times).
pub fn minimize_argmin<O: FusedObjective>(objective: O, x0: Vec<f64>, params: &SolveParams, callback: Option<IterCallback>) -> Result<(SolveResult, O)> {
    const RESTARTS: usize = 3;
    params.validate()?;
    let start = std::time::Instant::now();
    let callback = Arc::new(Mutex::new(callback));
    let history = Arc::new(Mutex::new(Vec::new()));
    let curvature = objective.curvature_scale();
    let threshold = |f: f64| params.tol_grad * (2.0 * curvature * f.abs()).sqrt();
    let mut objective = objective;
    let mut grad = vec![0.0; objective.dim()];
    let abs_tol = threshold(objective.eval(&x0, &mut grad)) / 10.0;
    let mut x = x0;
    let (mut iterations, mut evaluations) = (0u64, 0usize);
    let mut terminations = Vec::new();
    for attempt in 0..=RESTARTS {
        let problem = Cached::new(objective);
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
        let reason = state.get_termination_reason().cloned();
        terminations.push(super::reason_text(reason.as_ref()));
        let grad_small = state.get_gradient().is_some_and(|g| norm(g) <= threshold(state.get_cost()));
        let target_hit = params.target_objective.is_some_and(|t| state.get_cost() <= t);
        let cached = res.problem.problem.ok_or_else(|| Error::new("solver lost the objective"))?;
        evaluations += cached.evaluations();
        objective = cached.into_inner().ok_or_else(|| Error::new("objective cache poisoned"))?;
        if grad_small || target_hit || !matches!(reason, Some(TerminationReason::SolverExit(_))) || iterations >= params.max_iters {
            break;
        }
    }
    let value = objective.eval(&x, &mut grad);
    let grad_norm = norm(&grad);
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();
    let converged = grad_norm <= threshold(value);
    let result = SolveResult {
        x,
        objective: value,
        grad_norm,
        converged,
        stopped_by: if converged { super::StopReason::Gradient } else { super::StopReason::MaxIters },
        certified: None,
        iterations,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
        termination: super::join_terminations(terminations),
        history,
    };
    Ok((result, objective))
}
