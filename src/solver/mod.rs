//! Minimises a smooth objective in float64 with L-BFGS and a More-Thuente line search,
//! driven by argmin's executor. The solver knows nothing of the UFM: it defines what it needs
//! of a problem ([`problem::FusedObjective`]), and `model::objective` implements it.
//!
//! The stopping rule and the method are derived in docs/theory.md §6.
//!
//! Two solvers: the default in-place L-BFGS ([`lbfgs`], no allocation per iteration) and
//! argmin's own L-BFGS ([`argmin_lbfgs`], for comparison). Both stop on the relative rule
//! `||grad f|| <= tol_grad sqrt(2 lambda_min |f|)`: if the curvature along the remaining
//! error is at least lambda_min (the weight decay), the objective is then within
//! `tol_grad^2 |f|` of a stationary value. The run is "converged" when that rule holds at the
//! final point, whatever argmin's termination reason says (it is recorded verbatim).
//! A line-search failure restarts L-BFGS with an empty memory, at most 3 times.

pub mod argmin_lbfgs;
pub mod lbfgs;
pub mod linesearch;
pub mod problem;

use std::time::Instant;

use argmin::core::{Executor, State, TerminationReason};
use serde::Serialize;

use crate::error::{Error, Result};
use lbfgs::{Exit, InPlaceLbfgs};
use problem::{FusedObjective, MAX_HISTORY};

/// Default number of stored L-BFGS pairs (measured: docs/performance.md).
pub const LBFGS_HISTORY: usize = 3;

/// Which L-BFGS implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// In-place L-BFGS implementing argmin's `Solver` trait (default).
    #[default]
    InPlace,
    /// argmin's own `LBFGS` with `MoreThuenteLineSearch`.
    Argmin,
}

impl Method {
    /// The method of a command-line name (`in-place` or `argmin`).
    pub fn from_name(name: &str) -> crate::error::Result<Method> {
        match name {
            "in-place" => Ok(Method::InPlace),
            "argmin" => Ok(Method::Argmin),
            _ => Err(crate::error::Error::new(format!("solver: unknown solver '{name}' (in-place or argmin)"))),
        }
    }
}

/// Solver settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SolveParams {
    /// Relative gradient tolerance (see the module docs).
    pub tol_grad: f64,
    /// Iteration cap.
    pub max_iters: u64,
    /// Standard deviation of the seeded Gaussian start.
    pub init_std: f64,
    /// Number of stored L-BFGS pairs.
    pub history: usize,
    /// Implementation.
    pub method: Method,
    /// Also stop as soon as the objective is at most this (argmin's target cost); used to
    /// time "reach a given gap to the prediction".
    pub target_objective: Option<f64>,
    /// Stop as soon as the certificate proves a relative suboptimality of at most this, when
    /// the objective has a certificate (docs/theory.md §6); 0 turns the certified stop off.
    pub tol_stop: f64,
    /// Wall-time limit in seconds; a solve that reaches it stops, not converged.
    pub time_limit: Option<f64>,
}

/// Default of [`SolveParams::tol_stop`]: the objective is then within 2e-11 of the global
/// minimum, 50 times inside the verdict's objective threshold, and the geometry (linear in
/// the distance to the optimum, about the square root of the objective's error) measured at
/// least 9 times inside its threshold on the benchmark presets (docs/theory.md §6 and §7).
pub const TOL_STOP: f64 = 2e-11;

impl Default for SolveParams {
    fn default() -> Self {
        SolveParams {
            tol_grad: 1e-8,
            max_iters: 5000,
            init_std: 0.1,
            history: LBFGS_HISTORY,
            method: Method::InPlace,
            target_objective: None,
            tol_stop: TOL_STOP,
            time_limit: None,
        }
    }
}

impl SolveParams {
    /// Checks every setting; the error names the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if !(self.tol_grad.is_finite() && self.tol_grad > 0.0) {
            return Err(Error::new(format!("--tol-grad must be a finite number > 0 (got {})", self.tol_grad)));
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return Err(Error::new(format!("--init-std must be a finite number > 0 (got {})", self.init_std)));
        }
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return Err(Error::new(format!("--history must be between 1 and {MAX_HISTORY} (got {})", self.history)));
        }
        if self.target_objective.is_some_and(|t| !t.is_finite()) {
            return Err(Error::new("target objective must be finite"));
        }
        if !(self.tol_stop.is_finite() && self.tol_stop >= 0.0) {
            return Err(Error::new(format!("--tol-stop must be a finite number >= 0 (got {})", self.tol_stop)));
        }
        if self.time_limit.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            return Err(Error::new(format!("--time-limit must be a finite number of seconds > 0 (got {:?})", self.time_limit)));
        }
        Ok(())
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

/// What ended a solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The certificate proved the relative suboptimality at most `tol_stop`.
    Certificate,
    /// The relative gradient rule holds.
    Gradient,
    /// The objective reached the target value.
    Target,
    /// The iteration cap.
    MaxIters,
    /// The wall-time limit.
    TimeLimit,
    /// No acceptable step, after the restarts.
    LineSearch,
    /// The objective or its gradient is not finite in float64.
    NotFinite,
}

impl StopReason {
    /// Whether the solve ended converged: certified, or at the gradient rule.
    pub fn converged(self) -> bool {
        matches!(self, StopReason::Certificate | StopReason::Gradient)
    }
}

/// Set while the running solves are asked to stop ([`request_interrupt`]).
static INTERRUPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every running in-place solve to stop after its current iteration; each then ends with
/// the error "interrupted" (nothing is judged from a cut-off solve). The Python binding calls
/// it on Ctrl-C, and [`clear_interrupt`] once the call has returned.
pub fn request_interrupt() {
    INTERRUPT.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Lets solves run again after [`request_interrupt`].
pub fn clear_interrupt() {
    INTERRUPT.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`request_interrupt`] is in force.
pub fn interrupted() -> bool {
    INTERRUPT.load(std::sync::atomic::Ordering::Relaxed)
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
    /// Certified at the stop tolerance, or the gradient rule holds at the final point.
    pub converged: bool,
    /// What ended the solve.
    pub stopped_by: StopReason,
    /// The last certified relative suboptimality the solver took, and its iteration.
    pub certified: Option<(u64, f64)>,
    /// L-BFGS iterations.
    pub iterations: u64,
    /// Objective-and-gradient evaluations.
    pub evaluations: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// argmin's termination reason(s), verbatim.
    pub termination: String,
    /// Objective and gradient norm per iteration.
    pub history: Vec<HistoryPoint>,
}

fn reason_text(r: Option<&TerminationReason>) -> String {
    match r {
        Some(TerminationReason::SolverExit(msg)) => format!("solver exit: {msg}"),
        Some(r) => r.text().to_string(),
        None => "running".to_string(),
    }
}

fn join_terminations(mut t: Vec<String>) -> String {
    match t.len() {
        0 => String::new(),
        1 => t.pop().unwrap_or_default(),
        n => format!("{} (after {} restart(s): {})", t[n - 1], n - 1, t[..n - 1].join("; ")),
    }
}

/// Minimises `objective` from `x0` with the in-place L-BFGS, restarting with an empty memory
/// after a line-search failure (at most 3 times). Returns the result and the objective.
pub fn minimize<O: FusedObjective>(objective: O, x0: Vec<f64>, params: &SolveParams, mut callback: Option<IterCallback>) -> Result<(SolveResult, O)> {
    const RESTARTS: usize = 3;
    params.validate()?;
    if x0.len() != objective.dim() {
        return Err(Error::new(format!("start vector has {} entries, the objective {}", x0.len(), objective.dim())));
    }
    let start = Instant::now();
    let mut eval = objective;
    let (mut x, mut iterations, mut evaluations) = (x0, 0u64, 0usize);
    let mut history: Vec<HistoryPoint> = Vec::new();
    let mut terminations = Vec::new();
    let (mut f, mut grad_norm, mut gradient_rule) = (f64::NAN, f64::NAN, false);
    let (mut stopped_by, mut certified) = (StopReason::MaxIters, None);
    for attempt in 0..=RESTARTS {
        let solver = InPlaceLbfgs::new(x, params.history, params.tol_grad, callback.take())?.with_certified_stop(params.tol_stop);
        // What is left of the limit; at 0 the solver stops after its first iteration.
        let left = params.time_limit.map(|t| (t - start.elapsed().as_secs_f64()).max(0.0));
        let res = Executor::new(eval, solver)
            .configure(|s| {
                let s = s.max_iters(params.max_iters.saturating_sub(iterations));
                match params.target_objective {
                    Some(t) => s.target_cost(t),
                    None => s,
                }
            })
            .timeout(std::time::Duration::from_secs_f64(left.unwrap_or(1e9)))
            .ctrlc(false)
            .run()
            .map_err(|e| Error::new(format!("solver failed: {e}")))?;
        if interrupted() {
            return Err(Error::new("interrupted"));
        }
        let reason = res.state().get_termination_reason().cloned();
        terminations.push(reason_text(reason.as_ref()));
        let mut solver = res.solver;
        eval = res.problem.problem.ok_or_else(|| Error::new("solver lost the objective"))?;
        let skip = usize::from(attempt > 0);
        history.extend(solver.history.iter().skip(skip).map(|h| HistoryPoint { iter: h.iter + iterations, ..*h }));
        iterations += res.state.get_iter();
        evaluations += solver.evaluations;
        f = solver.f;
        grad_norm = solver.grad_norm;
        gradient_rule = grad_norm <= solver.threshold(f);
        certified = solver.certified.map(|(it, g)| (it + iterations - res.state.get_iter(), g)).or(certified);
        callback = solver.take_callback();
        x = solver.take_x();
        stopped_by = match (solver.exit, reason.as_ref()) {
            (Some(Exit::Certified), _) => StopReason::Certificate,
            (Some(Exit::NotFinite), _) => StopReason::NotFinite,
            (_, Some(TerminationReason::SolverConverged)) => StopReason::Gradient,
            (_, Some(TerminationReason::TargetCostReached)) => StopReason::Target,
            (_, Some(TerminationReason::Timeout)) => StopReason::TimeLimit,
            (Some(Exit::LineSearch), _) => StopReason::LineSearch,
            _ => StopReason::MaxIters,
        };
        let out_of_time = params.time_limit.is_some_and(|t| start.elapsed().as_secs_f64() >= t);
        if stopped_by != StopReason::LineSearch || iterations >= params.max_iters || out_of_time {
            break;
        }
    }
    if stopped_by == StopReason::LineSearch && gradient_rule {
        stopped_by = StopReason::Gradient;
    }
    let result = SolveResult {
        x,
        objective: f,
        grad_norm,
        converged: stopped_by == StopReason::Certificate || gradient_rule,
        stopped_by,
        certified,
        iterations,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
        termination: join_terminations(terminations),
        history,
    };
    Ok((result, eval))
}
