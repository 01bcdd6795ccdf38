//! In-place L-BFGS with a More-Thuente line search, as an argmin [`Solver`].
//!
//! argmin's own L-BFGS allocates and clones whole parameter vectors on every vector
//! operation; at 10^5..10^7 variables that costs far more than the objective (measured: see
//! `benches/` and the README). This solver keeps every vector in buffers allocated once:
//! x, grad, direction, trial point and trial gradient, and an m-pair ring buffer of (s, y).
//! The two-loop recursion fuses each axpy with the next dot product (one pass per pair and
//! loop). argmin's executor still drives the iterations, counts them, applies `max_iters`,
//! runs observers, and reports termination reasons. The state carries the cost only; the
//! iterate lives here and is read back from the solver after the run.

use argmin::core::{Error as ArgminError, IterState, Problem, Solver, State, TerminationReason, TerminationStatus, KV};

use super::morethuente::{Action, MoreThuente, MoreThuenteParams};
use super::{HistoryPoint, IterCallback};
use crate::ufm::FusedObjective;
use crate::vecops::{axpy_dot, chunks, dot2, pair_update, scale_in_place_dot, scale_into_dot, step_into};

/// argmin state type of this solver (cost only).
pub type LbfgsState = IterState<Vec<f64>, (), (), (), (), f64>;

/// Most objective evaluations in one line search.
const MAX_LINE_SEARCH_EVALS: usize = 30;

/// The in-place L-BFGS solver.
pub struct InPlaceLbfgs {
    m: usize,
    tol_grad: f64,
    ls: MoreThuenteParams,
    /// Current iterate.
    pub x: Vec<f64>,
    g: Vec<f64>,
    d: Vec<f64>,
    x_new: Vec<f64>,
    g_new: Vec<f64>,
    s: Vec<Vec<f64>>,
    y: Vec<Vec<f64>>,
    rho: Vec<f64>,
    alpha: Vec<f64>,
    order: Vec<usize>,
    gamma: f64,
    newest: usize,
    len: usize,
    /// Objective at `x`.
    pub f: f64,
    /// Gradient norm at `x`.
    pub grad_norm: f64,
    curvature: f64,
    parts: Vec<[f64; 2]>,
    /// Objective-and-gradient evaluations.
    pub evaluations: usize,
    /// Objective and gradient norm per iteration.
    pub history: Vec<HistoryPoint>,
    callback: Option<IterCallback>,
    iter: u64,
    /// Times the memory was reset because the direction was not a descent direction.
    pub resets: usize,
}

impl InPlaceLbfgs {
    /// A solver starting at `x0`, with `m` stored pairs, stopping when
    /// `||grad|| <= tol_grad sqrt(2 lambda_min |f|)`.
    pub fn new(x0: Vec<f64>, m: usize, tol_grad: f64, callback: Option<IterCallback>) -> Self {
        let n = x0.len();
        InPlaceLbfgs {
            m: m.max(1),
            tol_grad,
            ls: MoreThuenteParams::default(),
            g: vec![0.0; n],
            d: vec![0.0; n],
            x_new: vec![0.0; n],
            g_new: vec![0.0; n],
            s: (0..m.max(1)).map(|_| vec![0.0; n]).collect(),
            y: (0..m.max(1)).map(|_| vec![0.0; n]).collect(),
            rho: vec![0.0; m.max(1)],
            alpha: vec![0.0; m.max(1)],
            order: Vec::with_capacity(m.max(1)),
            gamma: 1.0,
            newest: 0,
            len: 0,
            f: f64::NAN,
            grad_norm: f64::NAN,
            curvature: 1.0,
            parts: vec![[0.0; 2]; chunks(n)],
            evaluations: 0,
            history: Vec::new(),
            callback,
            iter: 0,
            resets: 0,
            x: x0,
        }
    }

    /// Hands the callback back (for a restart).
    pub fn take_callback(&mut self) -> Option<IterCallback> {
        self.callback.take()
    }

    /// The absolute gradient threshold at objective value `f`.
    pub fn threshold(&self, f: f64) -> f64 {
        self.tol_grad * (2.0 * self.curvature * f.abs()).sqrt()
    }

    fn record(&mut self) {
        let point = HistoryPoint { iter: self.iter, objective: self.f, grad_norm: self.grad_norm };
        self.history.push(point);
        if let Some(cb) = self.callback.as_mut() {
            cb(point.iter, &self.x, point.objective, point.grad_norm);
        }
    }

    /// `d = -H g` by the two-loop recursion over the stored pairs (newest first).
    fn direction(&mut self) {
        let len = self.len;
        if len == 0 {
            scale_into_dot(-1.0, &self.g, &mut self.d, None, &mut self.parts);
            return;
        }
        self.order.clear();
        self.order.extend((0..len).map(|j| (self.newest + self.m - j) % self.m));
        let (slots, s, y, d, parts) = (&self.order, &self.s, &self.y, &mut self.d, &mut self.parts);
        let mut sq = scale_into_dot(-1.0, &self.g, d, Some(&s[slots[0]]), parts);
        for j in 0..len {
            let i = slots[j];
            self.alpha[i] = self.rho[i] * sq;
            let next = slots.get(j + 1).map(|&k| s[k].as_slice());
            sq = axpy_dot(-self.alpha[i], &y[i], d, next, parts);
        }
        let mut yr = scale_in_place_dot(self.gamma, d, Some(&y[slots[len - 1]]), parts);
        for j in (0..len).rev() {
            let i = slots[j];
            let beta = self.rho[i] * yr;
            let next = if j > 0 { Some(y[slots[j - 1]].as_slice()) } else { None };
            yr = axpy_dot(self.alpha[i] - beta, &s[i], d, next, parts);
        }
    }
}

/// Relative slack of the approximate-Wolfe decrease test, `phi(a) <= phi(0) + EPS_F |phi(0)|`:
/// a few hundred ulps, the level below which f64 cannot see a decrease.
const EPS_F: f64 = 1e-13;

impl InPlaceLbfgs {
    /// Evaluates phi(a) and phi'(a) at `x + a d` into `x_new`, `g_new`; returns (f, phi', |g|^2).
    fn trial<O: FusedObjective>(&mut self, obj: &mut O, a: f64) -> (f64, f64, f64) {
        step_into(&self.x, a, &self.d, &mut self.x_new, &mut self.parts);
        let f = obj.eval(&self.x_new, &mut self.g_new);
        self.evaluations += 1;
        let (gd, gg) = dot2(&self.g_new, &self.d, &mut self.parts);
        (f, gd, gg)
    }

    /// Approximate Wolfe (Hager & Zhang 2005): `0.9 phi'(0) <= phi'(a) <= -0.8 phi'(0)` and
    /// `phi(a) <= phi(0) + EPS_F |phi(0)|`. Valid where f64 can no longer resolve decreases.
    fn approx_wolfe(&self, dg0: f64, f: f64, gd: f64) -> bool {
        f <= self.f + EPS_F * self.f.abs() && gd >= 0.9 * dg0 && gd <= -0.8 * dg0
    }

    /// More-Thuente (strong Wolfe) first; any trial meeting approximate Wolfe is accepted too.
    /// If More-Thuente stops (rounding), a derivative-only secant/bisection search on
    /// phi'(a) = 0 takes over. Returns (step, f, |g|^2) with x_new, g_new at that step.
    fn line_search<O: FusedObjective>(&mut self, obj: &mut O, dg0: f64, first: f64) -> Option<(f64, f64, f64)> {
        let (mut ls, mut action) = MoreThuente::start(self.ls, self.f, dg0, first);
        let mut last = f64::NAN;
        let mut evals = 0;
        while evals < MAX_LINE_SEARCH_EVALS {
            match action {
                Action::Evaluate(a) if a != last => {
                    let (f, gd, gg) = self.trial(obj, a);
                    evals += 1;
                    last = a;
                    if self.approx_wolfe(dg0, f, gd) {
                        return Some((a, f, gg));
                    }
                    action = ls.next(f, gd);
                    if let Action::Converged(_) = action {
                        return Some((a, f, gg));
                    }
                }
                _ => break,
            }
        }
        // Derivative-only search: bracket a sign change of phi', then secant steps.
        let (mut lo, mut dlo) = (0.0, dg0);
        let mut hi = f64::NAN;
        let mut dhi = f64::NAN;
        let mut a = first;
        while evals < 2 * MAX_LINE_SEARCH_EVALS {
            let (f, gd, gg) = self.trial(obj, a);
            evals += 1;
            if self.approx_wolfe(dg0, f, gd) {
                return Some((a, f, gg));
            }
            if gd < 0.0 && f <= self.f + EPS_F * self.f.abs() {
                lo = a;
                dlo = gd;
            } else {
                hi = a;
                dhi = gd;
            }
            a = if hi.is_nan() {
                4.0 * a
            } else if dhi > 0.0 && dlo < 0.0 {
                let sec = lo - dlo * (hi - lo) / (dhi - dlo);
                if sec > lo && sec < hi { sec } else { 0.5 * (lo + hi) }
            } else {
                0.5 * (lo + hi)
            };
            if !(a > 0.0) || (!hi.is_nan() && (hi - lo) <= 1e-15 * hi) {
                break;
            }
        }
        None
    }
}

impl<O: FusedObjective> Solver<O, LbfgsState> for InPlaceLbfgs {
    fn name(&self) -> &str {
        "in-place L-BFGS (More-Thuente)"
    }

    fn init(&mut self, problem: &mut Problem<O>, state: LbfgsState) -> Result<(LbfgsState, Option<KV>), ArgminError> {
        let obj = problem.problem.as_mut().ok_or_else(|| ArgminError::msg("no objective"))?;
        if obj.dim() != self.x.len() {
            return Err(ArgminError::msg("start vector has the wrong length"));
        }
        self.curvature = obj.curvature_scale();
        self.f = obj.eval(&self.x, &mut self.g);
        self.evaluations += 1;
        self.grad_norm = dot2(&self.g, &self.g, &mut self.parts).0.sqrt();
        self.record();
        Ok((state.cost(self.f), None))
    }

    fn next_iter(&mut self, problem: &mut Problem<O>, state: LbfgsState) -> Result<(LbfgsState, Option<KV>), ArgminError> {
        let obj = problem.problem.as_mut().ok_or_else(|| ArgminError::msg("no objective"))?;
        self.direction();
        let mut dg = dot2(&self.d, &self.g, &mut self.parts).0;
        if !(dg < 0.0) {
            self.len = 0;
            self.resets += 1;
            scale_into_dot(-1.0, &self.g, &mut self.d, None, &mut self.parts);
            dg = -self.grad_norm * self.grad_norm;
        }
        let first = if self.len == 0 && self.iter == 0 { (1.0 / self.grad_norm).min(1.0) } else { 1.0 };
        let Some((step, f_new, gn2)) = self.line_search(obj, dg, first) else {
            let msg = "line search failed: no acceptable step (strong or approximate Wolfe)".to_string();
            return Ok((state.cost(self.f).terminate_with(TerminationReason::SolverExit(msg)), None));
        };
        let slot = (self.newest + 1) % self.m;
        let (sy, yy) = pair_update(step, &self.d, &self.g_new, &self.g, &mut self.s[slot], &mut self.y[slot], &mut self.parts);
        if sy > f64::EPSILON * yy && yy > 0.0 {
            self.newest = slot;
            self.len = (self.len + 1).min(self.m);
            self.rho[slot] = 1.0 / sy;
            self.gamma = sy / yy;
        }
        std::mem::swap(&mut self.x, &mut self.x_new);
        std::mem::swap(&mut self.g, &mut self.g_new);
        self.f = f_new;
        self.grad_norm = gn2.sqrt();
        self.iter = state.get_iter() + 1;
        self.record();
        Ok((state.cost(self.f), None))
    }

    fn terminate(&mut self, _state: &LbfgsState) -> TerminationStatus {
        if self.grad_norm <= self.threshold(self.f) {
            TerminationStatus::Terminated(TerminationReason::SolverConverged)
        } else {
            TerminationStatus::NotTerminated
        }
    }
}
