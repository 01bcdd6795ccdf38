//! In-place L-BFGS with a More-Thuente line search, as an argmin [`Solver`].
//!
//! argmin's own L-BFGS allocates and clones whole parameter vectors on every vector
//! operation; at 10^5..10^7 variables that costs far more than the objective (measured: see
//! `benches/` and docs/performance.md). This solver keeps every vector in buffers allocated once:
//! x (the iterate, or during a line search the trial point, moved in place), the gradient
//! and the trial gradient (f64), and m stored pairs (d_i, y_i) with s_i = sigma_i d_i
//! (sigma_i the accepted step), kept in f32: 3 + m f64-sized vectors in all.
//!
//! # Why the pairs may be f32
//! The pairs only shape the quasi-Newton model H. The direction is rounded to f32 *before*
//! the trial point `x + a d` is formed, so `s = sigma d` holds for the stored d up to the
//! rounding of x itself;
//! `y = round_f32(g_new - g)` is off by at most 2^-24 relative, a perturbation of the model,
//! not of the iterate. Every dot product is accumulated in f64 from the stored values, so the
//! recursion is exactly the L-BFGS recursion of the stored pairs, descent is checked on the
//! f64 `d . g`, and the stopping rule sees the f64 gradient. Measured: the same iteration
//! counts as f64 storage within noise (D: 182 against 180).
//!
//! # Two passes over memory per iteration
//! At 10^6..10^7 variables the solver's cost is memory traffic, so the two-loop recursion is
//! run on *coefficients* (the dot-product formulation of Chen, Wang, Zhou and Gao, "Large-scale
//! L-BFGS using MapReduce", NIPS 2014). The direction lies in the span of the basis
//! `B = [d_1..d_m, y_1..y_m, g]`; given the Gram matrix `B^T B`, the recursion
//!
//! ```text
//! q = -g;  for i newest..oldest: alpha_i = rho_i s_i.q;  q -= alpha_i y_i
//! r = gamma q;  for i oldest..newest: beta = rho_i y_i.r;  r += (alpha_i - beta) s_i
//! ```
//! (rho_i = 1 / s_i.y_i, gamma = s.y / y.y of the newest pair) is carried out on the
//! coefficient vectors of q and r in B, with every dot product read from the Gram matrix.
//! Then two passes touch the long vectors:
//! 1. *direction pass*: `d = B c` and the first trial point `x + a d` in one read of the
//!    basis, also returning `d . g`;
//! 2. *curvature pass* after each evaluation: `y = g_new - g` and all dot products of the new
//!    vectors (d, y, g_new) with the kept basis, which refresh the Gram matrix. `d . g_new`
//!    is the line search's phi'(a).
//!
//! # Block-diagonal initial inverse Hessian
//! The recursion's `r = gamma q` becomes `r = H0 q` with `H0 = diag(gamma_b I)` over the
//! objective's blocks of variables ([`FusedObjective::block_ranges`]), each
//! `gamma_b = s_b . y_b / y_b . y_b` from the newest pair restricted to block b (the scalar
//! gamma where that is not positive). H0 stays positive definite, so the L-BFGS matrix does
//! too (every stored pair has s . y > 0). In coefficient form, the first loop is unchanged,
//! `H0` scales each block's coefficients, and the second loop's products `y_i . r` are summed
//! block by block from per-block Gram matrices; the direction pass then uses each block's
//! coefficients on that block's range. For the UFM the blocks are (W, H) and b (see
//! `UfmEval::block_ranges`); tested against the textbook two-loop recursion on explicit
//! vectors.
//!
//! # A preconditioner in block 0
//! When the objective passes factors to its hooks (`model::precond`: for the UFM, the
//! features of samples with several labels, on problems where the extra work is cheap),
//! block 0's `gamma_0 I` becomes `gamma_0 P`, with `P = I - sum_i B_i^T M_i B_i`
//! symmetric positive definite and changing with the iterate. The recursion needs P only in
//! the second loop's `y_i . (gamma_0 P q)`, with `q = c_g g + sum_j c_j y_j`:
//! `y_i . P v = y_i . v - pc(y_i, v)` over block 0, where
//! `pc(u, v) = sum_i (B_i u_i)^T M_i (B_i v_i)` comes from the projections `B_i y_j` and
//! `B_i g` (a few numbers per sample). The curvature pass computes those projections and all
//! the `pc` entries at the trial point (P changes with the point, so old y's are projected
//! again); if the point is accepted, they are the ones of the next direction. The direction
//! pass adds `(P - I) gamma_0 q = -sum_i B_i^T M_i (B_i gamma_0 q)_i` to the combined
//! direction, sample by sample, with the factors of the iterate (the last evaluation), and
//! moves x and `d . g` with it. `gamma_0 = s.y / y.P y`. Without a stored pair (the first
//! step, or after a reset), P is not used. Tested: the coefficient form with `pc` and the
//! correction against the textbook recursion with `H0 = diag(gamma_0 P, gamma_1 I)` for a
//! dense P; the same optimum with and without P; the same bits on one or two threads.
//!
//! # Fused into the objective's pass
//! Both passes run inside the evaluation, range by range ([`ChunkHooks`]): the objective asks
//! for each chunk of x just before it evaluates that chunk, and shows each chunk of the
//! gradient as soon as it is final. So the direction pass's range is in cache when the
//! objective reads it, and the curvature pass re-reads the basis and g from cache instead of
//! memory. Dot products are summed per hook slot, in slot order, so the result does not
//! depend on the thread count; against the unfused passes only the summation order changes
//! (tested: the same first iterates to 1e-14, and the same optimum).
//!
//! Every Gram entry is a direct dot product of two stored vectors (none is derived by
//! algebra), so the recursion sees the same numbers the textbook loop would compute, up to
//! summation order. The new d is written over the retiring pair's d (its old content is one
//! of the combined terms), and the new y over the retiring y.
//!
//! argmin's executor still drives the iterations, counts them, applies `max_iters`, runs
//! observers, and reports termination reasons. The state carries the cost only; the iterate
//! lives here and is read back from the solver after the run.

use argmin::core::{Error as ArgminError, IterState, Problem, Solver, State, TerminationReason, TerminationStatus, KV};

use super::linesearch::{Action, MoreThuente, MoreThuenteParams};
use super::problem::{CertifiedGap, ChunkHooks, FusedObjective, RangePreconditioner, MAX_BLOCKS, MAX_HISTORY};
use super::{HistoryPoint, IterCallback};
use crate::error::Error;
use crate::kernels::cpu::Isa;
use crate::kernels::shared::{SharedMut, Staggered};
use crate::kernels::vecops::{combine_range, curvature_range, dot2, step_into_f32, step_range, MAX_STREAMS};

/// argmin state type of this solver (cost only).
pub type LbfgsState = IterState<Vec<f64>, (), (), (), (), f64>;

/// Most objective evaluations in one line search.
const MAX_LINE_SEARCH_EVALS: usize = 30;

/// The nonmonotone window: a first trial step is judged against the largest objective of the
/// last this many iterates ([`InPlaceLbfgs::nonmonotone_accept`]). Grippo, Lampariello and
/// Lucidi's value.
const NONMONOTONE_WINDOW: usize = 10;

/// The most a nonmonotone step may raise f, relative to |f|: enough for the small overshoots
/// of a unit step near the optimum (E: 2e-10 to 5e-7 of f), too little to carry the iterate
/// into another region of the landscape (measured: without it, a start of scale 9 on a wide
/// hunt's problem rose from f = 0.44 to the saddle W = H = 0 at f = ln 2 and stalled there).
const NONMONOTONE_RISE: f64 = 1e-6;

/// A basis vector of the direction: a stored d, a stored y, or the current gradient.
#[derive(Clone, Copy)]
enum Basis {
    D(usize),
    Y(usize),
    G,
}

/// Dot products among the stored d_i, y_i (by slot) and the current gradient g.
struct Gram {
    m: usize,
    dd: Vec<f64>,
    /// `dy[i m + j] = d_i . y_j`.
    dy: Vec<f64>,
    yy: Vec<f64>,
    dg: Vec<f64>,
    yg: Vec<f64>,
    gg: f64,
}

impl Gram {
    fn new(m: usize) -> Self {
        Gram { m, dd: vec![0.0; m * m], dy: vec![0.0; m * m], yy: vec![0.0; m * m], dg: vec![0.0; m], yg: vec![0.0; m], gg: 0.0 }
    }

    fn get(&self, a: Basis, b: Basis) -> f64 {
        let m = self.m;
        match (a, b) {
            (Basis::D(i), Basis::D(j)) => self.dd[i * m + j],
            (Basis::D(i), Basis::Y(j)) | (Basis::Y(j), Basis::D(i)) => self.dy[i * m + j],
            (Basis::Y(i), Basis::Y(j)) => self.yy[i * m + j],
            (Basis::D(i), Basis::G) | (Basis::G, Basis::D(i)) => self.dg[i],
            (Basis::Y(i), Basis::G) | (Basis::G, Basis::Y(i)) => self.yg[i],
            (Basis::G, Basis::G) => self.gg,
        }
    }

    /// `a . (B c)` for the coefficients `(cd, cy, cg)` over the pairs in `slots`.
    fn apply(&self, a: Basis, slots: &[usize], cd: &[f64], cy: &[f64], cg: f64) -> f64 {
        let mut v = cg * self.get(a, Basis::G);
        for &j in slots {
            v += cd[j] * self.get(a, Basis::D(j)) + cy[j] * self.get(a, Basis::Y(j));
        }
        v
    }
}

/// The in-place L-BFGS solver.
pub struct InPlaceLbfgs {
    m: usize,
    tol_grad: f64,
    ls: MoreThuenteParams,
    /// The iterate, or during a line search the trial point `x + at d`.
    x: Staggered<f64>,
    g: Staggered<f64>,
    g_new: Staggered<f64>,
    /// Step of the trial point `x` holds (0 at the iterate).
    at: f64,
    /// Stored directions (slot `slot()` holds the current one).
    dirs: Vec<Staggered<f32>>,
    /// Stored gradient differences.
    ys: Vec<Staggered<f32>>,
    sigma: Vec<f64>,
    rho: Vec<f64>,
    alpha: Vec<f64>,
    cd: Vec<f64>,
    cy: Vec<f64>,
    order: Vec<usize>,
    gram: Gram,
    /// The Gram matrix split by block of variables (sums to `gram`).
    bgram: Vec<Gram>,
    /// Initial inverse-Hessian scale per block.
    bgamma: [f64; MAX_BLOCKS],
    /// `(range, block)` of the objective.
    block_ranges: Vec<(std::ops::Range<usize>, usize)>,
    blocks: usize,
    /// The last curvature pass's dot products per block.
    bpending: Vec<f64>,
    /// Direction coefficients per block: `bcd[b m + i]`, `bcy[b m + i]`, `bcg[b]`.
    bcd: Vec<f64>,
    bcy: Vec<f64>,
    bcg: [f64; MAX_BLOCKS],
    /// Output of the last curvature pass.
    pending: Vec<f64>,
    /// Per hook slot: the direction pass's share of `d . g`.
    hook_dg: Vec<f64>,
    /// Per hook slot: the curvature pass's share of its dot products.
    hook_dots: Vec<f64>,
    gamma: f64,
    newest: usize,
    len: usize,
    /// Objective at `x`.
    pub f: f64,
    /// The objective at the last [`NONMONOTONE_WINDOW`] iterates (the newest at
    /// `recent_next - 1`, cyclically; NaN where none yet).
    recent_f: [f64; NONMONOTONE_WINDOW],
    recent_next: usize,
    /// Gradient norm at `x`.
    pub grad_norm: f64,
    curvature: f64,
    parts: Vec<f64>,
    /// Objective-and-gradient evaluations.
    pub evaluations: usize,
    /// Objective and gradient norm per iteration.
    pub history: Vec<HistoryPoint>,
    callback: Option<IterCallback>,
    iter: u64,
    /// Times the memory was reset because the direction was not a descent direction.
    pub resets: usize,
    /// The objective's preconditioner (see `crate::precond` and the module docs): length of
    /// one vector's projections (0: none).
    pre_total: usize,
    /// Projections of the stored y (by slot) and of g (index m): `proj[v pre_total + j]`.
    proj: Vec<f64>,
    /// `pc[u (m + 1) + v] = sum_i (B y_u)_i^T M_i (B y_v)_i` (index m: g) at the iterate, so
    /// that `y_u . P y_v = y_u . y_v - pc[..]` over block 0.
    pc: Vec<f64>,
    pc_pending: Vec<f64>,
    hook_pc: Vec<f64>,
    /// Whether `proj` and `pc` belong to the iterate.
    pre_ok: bool,
    /// Scratch for the direction pass's preconditioner correction (`pre_total` numbers).
    pre_t: Vec<f64>,
    /// Instruction set of the vector passes.
    isa: Isa,
    /// Stop once the objective certifies a relative suboptimality of at most this (0: never).
    tol_stop: f64,
    /// Iterations between certificate checks, on average at most (0: never).
    cert_period: u64,
    /// The last check's iteration and gradient norm.
    cert_last: Option<(u64, f64)>,
    /// The last check's prediction: the next one is due once the gradient norm has fallen by
    /// this factor (see [`CertifiedGap::next`]).
    cert_next: Option<f64>,
    /// Checks taken, and the iteration of the first.
    cert_checks: u64,
    cert_first: u64,
    /// The tolerance the last certified gap had to meet (the objective's, from `tol_stop`).
    cert_target: f64,
    /// The last certified relative suboptimality, and the iteration it was taken at.
    pub certified: Option<(u64, f64)>,
    /// Why the solver itself ended the run, if it did.
    pub exit: Option<Exit>,
    /// What the exit means, in words, when there is more to say than its name.
    pub exit_note: Option<String>,
}

/// The certificate is checked once the relative gradient is below this many times its reach.
const CERT_TRIGGER: f64 = 30.0;

/// A check predicted by the last one waits at most this many certificate periods.
const CERT_FALLBACK: u64 = 4;

/// Predicted checks may run ahead of one per certificate period by this many.
const CERT_BURST: u64 = 2;

/// Largest gradient entry the f32 pairs take with room to spare (f32's range ends at 3.4e38;
/// a gradient difference can be twice the gradient).
const F32_SAFE: f64 = 1e36;

/// Why the in-place solver ended a run by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The certificate proved the relative suboptimality at most the stop tolerance.
    Certified,
    /// The objective or its gradient is not finite (at the start, or at every trial).
    NotFinite,
    /// No step met the line search's conditions.
    LineSearch,
}

impl InPlaceLbfgs {
    /// A solver starting at `x0`, with `m` stored pairs (1 to [`MAX_HISTORY`]), stopping when
    /// `||grad|| <= tol_grad sqrt(2 lambda_min |f|)`.
    pub fn new(x0: Vec<f64>, m: usize, tol_grad: f64, callback: Option<IterCallback>) -> crate::error::Result<Self> {
        if !(1..=MAX_HISTORY).contains(&m) {
            return Err(Error::new(format!("--history must be between 1 and {MAX_HISTORY} (got {m})")));
        }
        if !(tol_grad >= 0.0) {
            return Err(Error::new(format!("--tol-grad must be a number >= 0 (got {tol_grad})")));
        }
        let n = x0.len();
        Ok(InPlaceLbfgs {
            m,
            tol_grad,
            ls: MoreThuenteParams::default(),
            x: Staggered::from_vec(x0),
            at: 0.0,
            g: Staggered::zeros(n, 2),
            g_new: Staggered::zeros(n, 3),
            dirs: (0..m).map(|i| Staggered::zeros(n, 4 + i)).collect(),
            ys: (0..m).map(|i| Staggered::zeros(n, 4 + m + i)).collect(),
            sigma: vec![0.0; m],
            rho: vec![0.0; m],
            alpha: vec![0.0; m],
            cd: vec![0.0; m],
            cy: vec![0.0; m],
            order: Vec::with_capacity(m),
            gram: Gram::new(m),
            bgram: (0..MAX_BLOCKS).map(|_| Gram::new(m)).collect(),
            bgamma: [1.0; MAX_BLOCKS],
            block_ranges: Vec::new(),
            blocks: 1,
            bpending: vec![0.0; MAX_BLOCKS * (6 * m + 6)],
            bcd: vec![0.0; MAX_BLOCKS * m],
            bcy: vec![0.0; MAX_BLOCKS * m],
            bcg: [0.0; MAX_BLOCKS],
            pending: vec![0.0; 6 * m + 6],
            hook_dg: Vec::new(),
            hook_dots: Vec::new(),
            gamma: 1.0,
            newest: 0,
            len: 0,
            f: f64::NAN,
            recent_f: [f64::NAN; NONMONOTONE_WINDOW],
            recent_next: 0,
            grad_norm: f64::NAN,
            curvature: 1.0,
            parts: Vec::new(),
            evaluations: 0,
            history: Vec::new(),
            callback,
            iter: 0,
            resets: 0,
            pre_total: 0,
            proj: Vec::new(),
            pc: vec![0.0; (m + 1) * (m + 1)],
            pc_pending: vec![0.0; (m + 1) * (m + 1)],
            hook_pc: Vec::new(),
            pre_ok: false,
            pre_t: Vec::new(),
            isa: Isa::detect(),
            tol_stop: 0.0,
            cert_period: 0,
            cert_last: None,
            cert_next: None,
            cert_checks: 0,
            cert_first: 0,
            cert_target: 0.0,
            certified: None,
            exit: None,
            exit_note: None,
        })
    }

    /// The same solver, also stopping as soon as the objective certifies a relative
    /// suboptimality of at most `tol_stop` ([`FusedObjective::certified_gap`], taken on
    /// average at most once every [`FusedObjective::certificate_period`] iterations; see
    /// `certified_stop`). 0 turns it off.
    pub fn with_certified_stop(mut self, tol_stop: f64) -> Self {
        self.tol_stop = tol_stop;
        self
    }

    /// Takes the certificate at the iterate (the last evaluated point) when it is due; true
    /// when it proves the stop tolerance.
    ///
    /// The first check comes at a multiple of the period once the gradient allows it (below).
    /// Each check predicts how far the gradient norm must fall before the next can meet its
    /// target (a second-order bound falls like its square; [`CertifiedGap::next`]), and the
    /// next is taken there, or after [`CERT_FALLBACK`] periods at the latest; without a
    /// prediction, after one period. Checks ahead of the period are taken only while they
    /// number at most one per period since the first, plus [`CERT_BURST`], so they cost at
    /// most that many checks more than the periodic schedule.
    fn certified_stop<O: FusedObjective>(&mut self, obj: &mut O) -> bool {
        if self.tol_stop <= 0.0 || self.cert_period == 0 {
            return false;
        }
        // A scaled certificate is first order, like the relative gradient (measured: within a
        // factor 2 of each other along whole solves, `examples/cert_trace.rs`); a second-order
        // one is about its square. So no check before the gradient says either could be
        // within 30 times its reach: tol for the first, sqrt(10 tol) for the second.
        let reach = (10.0 * self.tol_stop).sqrt().max(self.tol_stop);
        if self.grad_norm > CERT_TRIGGER * reach * (2.0 * self.curvature * self.f.abs()).sqrt() {
            return false;
        }
        let due = match (self.cert_last, self.cert_next) {
            (None, _) => self.iter.is_multiple_of(self.cert_period),
            (Some((at, _)), None) => self.iter - at >= self.cert_period,
            (Some((at, grad)), Some(fall)) => {
                self.iter - at >= CERT_FALLBACK * self.cert_period
                    || (self.grad_norm <= fall * grad && self.cert_checks < (self.iter - self.cert_first) / self.cert_period + CERT_BURST)
            }
        };
        if !due {
            return false;
        }
        if self.cert_last.is_none() {
            self.cert_first = self.iter;
        }
        self.cert_checks += 1;
        self.cert_last = Some((self.iter, self.grad_norm));
        self.cert_next = None;
        let Some(CertifiedGap { gap, target, next }) = obj.certified_gap(&self.x, self.f, &self.g, self.tol_stop) else { return false };
        self.certified = Some((self.iter, gap));
        self.cert_target = target;
        self.cert_next = next.filter(|v| *v > 0.0 && *v < 1.0);
        // A gap below -target means float64 cannot evaluate the objective or the bound here:
        // it proves nothing, so the solve goes on.
        gap.abs() <= self.cert_target
    }

    /// The same solver with its vector passes compiled for `isa` (every instruction set gives
    /// the same bits; tests and benchmarks compare them).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// The current iterate.
    pub fn x(&self) -> &[f64] {
        &self.x
    }

    /// The current iterate, moved out (after the run).
    pub fn take_x(&mut self) -> Vec<f64> {
        std::mem::take(&mut self.x).into_vec()
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
        self.recent_f[self.recent_next] = self.f;
        self.recent_next = (self.recent_next + 1) % NONMONOTONE_WINDOW;
        self.history.push(point);
        if let Some(cb) = self.callback.as_mut() {
            cb(point.iter, &self.x, point.objective, point.grad_norm);
        }
    }

    /// The slot that receives the new direction and gradient difference.
    fn slot(&self) -> usize {
        (self.newest + 1) % self.m
    }

    /// The stored pairs, newest first, into `order`.
    fn fill_order(&mut self) {
        self.order.clear();
        let (m, newest) = (self.m, self.newest);
        self.order.extend((0..self.len).map(|j| (newest + m - j) % m));
    }

    /// Coefficients of `d = -H g` in the basis, per block, by the two-loop recursion on the
    /// Gram matrix, into `bcd`, `bcy`, `bcg`. The first loop sees whole vectors; the initial
    /// inverse Hessian `H0 = diag(gamma_b I)` scales each block's coefficients, so the second
    /// loop sums its dot products block by block.
    fn coefficients(&mut self) {
        let m = self.m;
        self.cd.iter_mut().for_each(|v| *v = 0.0);
        self.cy.iter_mut().for_each(|v| *v = 0.0);
        let cg = -1.0;
        for idx in 0..self.order.len() {
            let i = self.order[idx];
            let sq = self.sigma[i] * self.gram.apply(Basis::D(i), &self.order, &self.cd, &self.cy, cg);
            self.alpha[i] = self.rho[i] * sq;
            self.cy[i] -= self.alpha[i];
        }
        for b in 0..self.blocks {
            let gamma = self.bgamma[b];
            for i in 0..m {
                self.bcd[b * m + i] = gamma * self.cd[i];
                self.bcy[b * m + i] = gamma * self.cy[i];
            }
            self.bcg[b] = gamma * cg;
        }
        for idx in (0..self.order.len()).rev() {
            let i = self.order[idx];
            let mut yr = if self.blocks == 1 {
                self.gram.apply(Basis::Y(i), &self.order, &self.bcd[..m], &self.bcy[..m], self.bcg[0])
            } else {
                (0..self.blocks)
                    .map(|b| self.bgram[b].apply(Basis::Y(i), &self.order, &self.bcd[b * m..(b + 1) * m], &self.bcy[b * m..(b + 1) * m], self.bcg[b]))
                    .sum::<f64>()
            };
            if self.pre_ok {
                // Block 0's H0 is gamma_0 P: y_i . P q = y_i . q - sum (B y_i)^T M (B q).
                let nv = m + 1;
                let mut c = self.bcg[0] * self.pc[i * nv + m];
                for &j in &self.order {
                    c += self.bcy[j] * self.pc[i * nv + j];
                }
                yr -= c;
            }
            let beta = self.rho[i] * yr;
            for b in 0..self.blocks {
                self.bcd[b * m + i] += (self.alpha[i] - beta) * self.sigma[i];
            }
        }
    }

    /// Moves a trial point back to the iterate, `x <- x - at d` (the iterate up to rounding,
    /// about one ulp per entry): before a new direction replaces a rejected one, and when the
    /// line search gives up.
    fn restore(&mut self) {
        if self.at != 0.0 {
            let t = self.slot();
            step_into_f32(&mut self.x, -self.at, &self.dirs[t]);
            self.at = 0.0;
        }
    }

    /// Computes the coefficients of `d = -H g`; the next trial forms d from them.
    fn direction_fill(&mut self) -> Fill {
        let t = self.slot();
        self.fill_order();
        if self.len == 0 {
            self.bcg = [-1.0; MAX_BLOCKS];
        } else {
            self.coefficients();
        }
        // The retiring pair (slot t, present when the memory is full) is overwritten in place.
        let mut c_out = [0.0; MAX_BLOCKS];
        if self.len == self.m {
            for (b, c) in c_out.iter_mut().enumerate().take(self.blocks) {
                *c = self.bcd[b * self.m + t];
            }
        }
        Fill::Direction { c_out, cg: self.bcg }
    }
}

/// What the direction pass writes before the objective reads the trial point.
#[derive(Clone, Copy)]
enum Fill {
    /// Forms the new direction `d = B c` in slot t and the trial point `x + a d`;
    /// `c_out` and `cg` are the coefficients of slot t's old d and of g.
    Direction { c_out: [f64; MAX_BLOCKS], cg: [f64; MAX_BLOCKS] },
    /// The trial point `x + a d` from the stored direction.
    Step,
}

/// The solver's two passes, run by the objective range by range inside its own pass over
/// memory (see [`ChunkHooks`]), so each range of the basis is read while the objective has
/// the same range of x and g in cache.
///
/// Every buffer the hooks write is reached through a [`SharedMut`], one range per hook slot.
/// The ranges of different slots never overlap because the objective keeps the contract of
/// [`FusedObjective`] (an `unsafe trait`): `before` once per range of a partition of the
/// variables, each range with its own slot, `after` on a range only once its `before` has
/// returned, and the preconditioner's projection ranges disjoint across slots. Every
/// `// SAFETY:` below relies on that contract.
struct PassHooks<'a> {
    isa: Isa,
    fill: Fill,
    /// The point moves by `a d` (from x for a new direction; from the last trial point else).
    a: f64,
    g: &'a [f64],
    /// The direction's terms other than slot t's d and y, with their coefficient per block.
    terms: &'a [(&'a [f32], [f64; MAX_BLOCKS])],
    /// Coefficients of slot t's old y (retiring; the new y overwrites it range by range).
    c_yout: [f64; MAX_BLOCKS],
    /// `(range, block)` of the objective; a hook's range is split at block boundaries.
    block_ranges: &'a [(std::ops::Range<usize>, usize)],
    blocks: usize,
    /// Slot t's d and y.
    d: SharedMut<'a, f32>,
    y: SharedMut<'a, f32>,
    /// The kept basis vectors the curvature pass takes products with.
    olds: &'a [&'a [f32]],
    /// Per hook slot: the direction pass's share of `d . g`.
    dg: SharedMut<'a, f64>,
    /// Per hook slot and block: the curvature pass's share of its dot products.
    dots: SharedMut<'a, f64>,
    width: usize,
    /// Coefficients of the y's (by slot) and of g (index m) in block 0's `gamma_0 q`, when the
    /// direction gets P's correction.
    pre_coef: Option<[f64; MAX_HISTORY + 1]>,
    /// Projections of the stored y's (by slot) and of g (index m), `pre_total` each.
    proj: SharedMut<'a, f64>,
    /// Scratch: the projections of the vector P's correction is applied to.
    pre_t: SharedMut<'a, f64>,
    pre_total: usize,
    m: usize,
    /// Slot of the new pair.
    t: usize,
    /// The kept y's with their slots.
    old_ys: &'a [(usize, &'a [f32])],
    /// Per hook slot, the P-corrections `pc` of the basis at the trial point.
    pc: SharedMut<'a, f64>,
}

impl PassHooks<'_> {
    /// The pieces of `r` in each block, in order: (sub-range, block).
    fn pieces(&self, r: std::ops::Range<usize>) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> + '_ {
        self.block_ranges.iter().filter_map(move |(br, b)| {
            let (lo, hi) = (r.start.max(br.start), r.end.min(br.end));
            (lo < hi).then_some((lo..hi, *b))
        })
    }
}

impl ChunkHooks for PassHooks<'_> {
    fn before(&self, slot: usize, r: std::ops::Range<usize>, x_r: &mut [f64], pre: Option<&dyn RangePreconditioner>) {
        let mut dg = 0.0;
        for (p, b) in self.pieces(r.clone()) {
            let x_p = &mut x_r[p.start - r.start..p.end - r.start];
            // SAFETY: `p` lies in this slot's range (see the struct's docs).
            let d_p = unsafe { self.d.slice(p.clone()) };
            match self.fill {
                Fill::Direction { c_out, cg } => {
                    let mut local: [(&[f32], f64); MAX_STREAMS] = [(&[], 0.0); MAX_STREAMS];
                    for (l, (v, c)) in local.iter_mut().zip(self.terms) {
                        *l = (&v[p.clone()], c[b]);
                    }
                    let mut used = self.terms.len();
                    if self.c_yout[b] != 0.0 {
                        // SAFETY: as above; y is only read here, and written by this range's
                        // `after`, which runs later.
                        local[used] = (unsafe { self.y.view(p.clone()) }, self.c_yout[b]);
                        used += 1;
                    }
                    dg += combine_range(self.isa, d_p, c_out[b], &local[..used], &self.g[p], cg[b], self.a, x_p);
                }
                Fill::Step => step_range(self.a, d_p, x_p),
            }
        }
        if let (Some(pre), Some(coef)) = (pre, self.pre_coef) {
            // Block 0's part gamma_0 q of the direction becomes gamma_0 P q: add
            // -B_i^T M_i (B gamma_0 q)_i, the projections of q combined from those of the
            // basis, and move x and d.g with it.
            let (pr, tot) = (pre.proj_range(), self.pre_total);
            // SAFETY: `pr` is this slot's projection range (disjoint from every other
            // slot's); the basis projections are only read during the direction pass.
            let t = unsafe { self.pre_t.slice(pr.clone()) };
            let views: [&[f64]; MAX_HISTORY + 1] = std::array::from_fn(|v| {
                // SAFETY: as above.
                if v <= self.m && coef[v] != 0.0 {
                    unsafe { self.proj.view(v * tot + pr.start..v * tot + pr.end) }
                } else {
                    &[]
                }
            });
            for (j, tj) in t.iter_mut().enumerate() {
                *tj = (0..=self.m).filter(|&v| coef[v] != 0.0).map(|v| coef[v] * views[v][j]).sum();
            }
            // SAFETY: `r` is this slot's range; the slices of the loop above have ended.
            let d_r = unsafe { self.d.slice(r.clone()) };
            dg += pre.correct(t, d_r, x_r, &self.g[r.clone()], self.a);
        }
        // SAFETY: entry `slot` belongs to this slot alone.
        unsafe { self.dg.slice(slot..slot + 1)[0] = dg };
    }

    fn after(&self, slot: usize, r: std::ops::Range<usize>, g_r: &[f64], pre: Option<&dyn RangePreconditioner>) {
        let w = self.width;
        // SAFETY: this slot's block of the dot products belongs to it alone.
        unsafe { self.dots.slice(slot * self.blocks * w..(slot + 1) * self.blocks * w) }.iter_mut().for_each(|v| *v = 0.0);
        for (p, b) in self.pieces(r.clone()) {
            let at = (slot * self.blocks + b) * w;
            // SAFETY: `p` lies in this slot's range, whose `before` has returned; the
            // accumulators are this slot's.
            let (d_p, y_p, acc) = unsafe { (self.d.view(p.clone()), self.y.slice(p.clone()), self.dots.slice(at..at + w)) };
            let mut local: [&[f32]; MAX_STREAMS] = [&[]; MAX_STREAMS];
            for (l, v) in local.iter_mut().zip(self.olds) {
                *l = &v[p.clone()];
            }
            curvature_range(self.isa, &g_r[p.start - r.start..p.end - r.start], &self.g[p], d_p, y_p, &local[..self.olds.len()], acc);
        }
        if let Some(pre) = pre {
            // The projections of g_new, the new y and the kept y's at the trial point, and
            // their P-corrections (for the next direction, if this point is accepted).
            let (pr, tot, m, nv) = (pre.proj_range(), self.pre_total, self.m, self.m + 1);
            if pr.is_empty() {
                return;
            }
            let at = |v: usize| v * tot + pr.start..v * tot + pr.end;
            // SAFETY: `pr` is this slot's projection range; y's range `r` was written above
            // by this slot, and those slices have ended.
            unsafe {
                pre.project(g_r, self.proj.slice(at(m)));
                pre.project_f32(self.y.view(r.clone()), self.proj.slice(at(self.t)));
                for &(j, yv) in self.old_ys {
                    pre.project_f32(&yv[r.clone()], self.proj.slice(at(j)));
                }
            }
            let mut vs = [0usize; MAX_HISTORY + 2];
            let mut nvs = 0;
            for v in self.old_ys.iter().map(|o| o.0).chain([self.t, m]) {
                vs[nvs] = v;
                nvs += 1;
            }
            // SAFETY: this slot's block of the corrections belongs to it alone.
            let part = unsafe { self.pc.slice(slot * nv * nv..(slot + 1) * nv * nv) };
            // SAFETY: read-only views of this slot's projections, written above.
            let views: [&[f64]; MAX_HISTORY + 2] = std::array::from_fn(|k| if k < nvs { unsafe { self.proj.view(at(vs[k])) } } else { &[] });
            pre.quads(&views[..nvs], &vs[..nvs], nv, part);
        }
    }
}

impl InPlaceLbfgs {
    /// For benchmarks: the work of an iteration whose unit step is accepted, without
    /// accepting it (the direction's coefficients, then one evaluation with both passes fused
    /// into it); returns phi'(1). Call [`undo_trial`](Self::undo_trial) before the next one.
    /// Run some iterations first so that the memory is full.
    #[doc(hidden)]
    pub fn unit_trial<O: FusedObjective>(&mut self, obj: &mut O) -> f64 {
        let fill = self.direction_fill();
        self.trial(obj, 1.0, fill).2
    }

    /// For benchmarks: moves x back from the trial point of [`unit_trial`](Self::unit_trial).
    #[doc(hidden)]
    pub fn undo_trial(&mut self) {
        self.restore();
    }
}

/// Refreshes a Gram matrix from a curvature pass's dot products `p` (see
/// [`crate::kernels::vecops::curvature_pass`]): the kept pairs' products with the new gradient, and,
/// when the new pair (slot `t`) is stored, its products with everything.
fn refresh(gm: &mut Gram, p: &[f64], kept: &[usize], t: usize, m: usize, stored: bool) {
    let k = kept.len();
    let tail = &p[6 * k..6 * k + 6];
    for (j, &i) in kept.iter().enumerate() {
        gm.dg[i] = p[6 * j + 2];
        gm.yg[i] = p[6 * j + 5];
    }
    gm.gg = tail[5];
    if stored {
        for (j, &i) in kept.iter().enumerate() {
            gm.dd[i * m + t] = p[6 * j];
            gm.dd[t * m + i] = p[6 * j];
            gm.dy[i * m + t] = p[6 * j + 1];
            gm.dy[t * m + i] = p[6 * j + 3];
            gm.yy[i * m + t] = p[6 * j + 4];
            gm.yy[t * m + i] = p[6 * j + 4];
        }
        gm.dd[t * m + t] = tail[0];
        gm.dy[t * m + t] = tail[1];
        gm.dg[t] = tail[2];
        gm.yy[t * m + t] = tail[3];
        gm.yg[t] = tail[4];
    }
}

/// Relative slack of the approximate-Wolfe decrease test, `phi(a) <= phi(0) + EPS_F |phi(0)|`:
/// a few hundred ulps, the level below which f64 cannot see a decrease.
const EPS_F: f64 = 1e-13;

impl InPlaceLbfgs {
    /// Number of stored pairs that survive this iteration (all but a retiring one).
    fn kept(&self) -> usize {
        self.len.min(self.m - 1)
    }

    /// Moves `x` to the trial point `x_k + a d` (from the last trial point, in place; the
    /// iterate itself is not kept, which saves a vector of memory traffic per iteration) and
    /// evaluates phi(a), phi'(a) there, with the gradient into `g_new`, the direction pass
    /// (when `fill` says so) and the curvature pass fused into the evaluation; returns
    /// (d.g, f, phi'(a), |g_new|^2). d.g is meaningful only for [`Fill::Direction`].
    fn trial<O: FusedObjective>(&mut self, obj: &mut O, a: f64, fill: Fill) -> (f64, f64, f64, f64) {
        let (t, kept) = (self.slot(), self.kept());
        let width = 6 * kept + 6;
        let slots = obj.hook_slots();
        self.hook_dg.clear();
        self.hook_dg.resize(slots, 0.0);
        self.hook_dots.clear();
        self.hook_dots.resize(slots * self.blocks * width, 0.0);
        let nv = self.m + 1;
        self.hook_pc.clear();
        self.hook_pc.resize(slots * nv * nv, 0.0);
        // The direction's block-0 coefficients of the y's (by slot) and of g, for P's correction.
        let pre_coef = (self.pre_ok && self.len > 0 && matches!(fill, Fill::Direction { .. })).then(|| {
            let mut c = [0.0; MAX_HISTORY + 1];
            for &j in &self.order[..self.len] {
                c[j] = self.bcy[j];
            }
            c[self.m] = self.bcg[0];
            c
        });
        let mut d = std::mem::take(&mut self.dirs[t]);
        let mut y = std::mem::take(&mut self.ys[t]);
        let f = {
            let mut terms: [(&[f32], [f64; MAX_BLOCKS]); 2 * MAX_HISTORY] = [(&[], [0.0; MAX_BLOCKS]); 2 * MAX_HISTORY];
            let (mut used, mut c_yout) = (0, [0.0; MAX_BLOCKS]);
            let m = self.m;
            let per = |v: &[f64], i: usize| std::array::from_fn(|b| if b < self.blocks { v[b * m + i] } else { 0.0 });
            if let Fill::Direction { .. } = fill {
                for &i in &self.order[..self.len] {
                    if i == t {
                        c_yout = per(&self.bcy, i);
                    } else {
                        terms[used] = (&self.dirs[i], per(&self.bcd, i));
                        terms[used + 1] = (&self.ys[i], per(&self.bcy, i));
                        used += 2;
                    }
                }
            }
            let mut olds: [&[f32]; 2 * MAX_HISTORY] = [&[]; 2 * MAX_HISTORY];
            let mut old_ys: [(usize, &[f32]); MAX_HISTORY] = [(0, &[]); MAX_HISTORY];
            for (j, &i) in self.order[..kept].iter().enumerate() {
                olds[2 * j] = &self.dirs[i];
                olds[2 * j + 1] = &self.ys[i];
                old_ys[j] = (i, &self.ys[i]);
            }
            // A new direction starts from the iterate (see `restore`); a retrial moves the
            // last trial point along the stored direction.
            assert!(matches!(fill, Fill::Step) || self.at == 0.0, "a new direction starts at the iterate");
            let da = a - self.at;
            let hooks = PassHooks {
                isa: self.isa,
                fill,
                a: da,
                g: &self.g,
                terms: &terms[..used],
                c_yout,
                block_ranges: &self.block_ranges,
                blocks: self.blocks,
                d: SharedMut::new(&mut d),
                y: SharedMut::new(&mut y),
                olds: &olds[..2 * kept],
                dg: SharedMut::new(&mut self.hook_dg),
                dots: SharedMut::new(&mut self.hook_dots),
                width,
                pre_coef,
                proj: SharedMut::new(&mut self.proj),
                pre_t: SharedMut::new(&mut self.pre_t),
                pre_total: self.pre_total,
                m: self.m,
                t,
                old_ys: &old_ys[..kept],
                pc: SharedMut::new(&mut self.hook_pc),
            };
            obj.eval_hooked(&mut self.x, &mut self.g_new, &hooks)
        };
        self.dirs[t] = d;
        self.ys[t] = y;
        self.at = a;
        self.evaluations += 1;
        // Slot order: the same sums whatever the thread count.
        let dg = self.hook_dg.iter().sum::<f64>();
        // Per block, in slot order; the total, in block order. Fixed orders: the same sums
        // whatever the thread count.
        let bp = &mut self.bpending[..self.blocks * width];
        bp.iter_mut().for_each(|v| *v = 0.0);
        for part in self.hook_dots.chunks_exact(self.blocks * width) {
            bp.iter_mut().zip(part).for_each(|(p, v)| *p += v);
        }
        let pending = &mut self.pending[..width];
        pending.iter_mut().for_each(|v| *v = 0.0);
        for part in bp.chunks_exact(width) {
            pending.iter_mut().zip(part).for_each(|(p, v)| *p += v);
        }
        let pcp = &mut self.pc_pending;
        pcp.iter_mut().for_each(|v| *v = 0.0);
        for part in self.hook_pc.chunks_exact(nv * nv) {
            pcp.iter_mut().zip(part).for_each(|(p, v)| *p += v);
        }
        let tail = &self.pending[6 * kept..];
        (dg, f, tail[2], tail[5])
    }

    /// Accepts the step (x already holds the trial point): refreshes the Gram matrices from
    /// the last curvature pass, and stores the new pair if it has positive curvature.
    fn accept(&mut self, step: f64, f_new: f64) {
        let (t, m, kept) = (self.slot(), self.m, self.kept());
        let width = 6 * kept + 6;
        let tail = &self.pending[6 * kept..width];
        let (sy, yy, gg) = (step * tail[1], tail[3], tail[5]);
        let stored = sy > f64::EPSILON * yy && yy > 0.0;
        refresh(&mut self.gram, &self.pending[..width], &self.order[..kept], t, m, stored);
        for b in 0..self.blocks {
            let p = &self.bpending[b * width..(b + 1) * width];
            refresh(&mut self.bgram[b], p, &self.order[..kept], t, m, stored);
        }
        if stored {
            self.sigma[t] = step;
            self.rho[t] = 1.0 / sy;
            self.gamma = sy / yy;
            for b in 0..self.blocks {
                let p = &self.bpending[b * width + 6 * kept..(b + 1) * width];
                let (syb, mut yyb) = (step * p[1], p[3]);
                if b == 0 && self.pre_total > 0 {
                    // gamma_0 = s.y / y.P y over block 0.
                    yyb -= self.pc_pending[t * (m + 1) + t];
                }
                self.bgamma[b] = if syb > 0.0 && yyb > 0.0 { syb / yyb } else { self.gamma };
            }
            self.newest = t;
            self.len = (self.len + 1).min(m);
        } else {
            self.len = kept;
        }
        if self.pre_total > 0 {
            self.pc.copy_from_slice(&self.pc_pending);
            self.pre_ok = true;
        }
        self.at = 0.0;
        std::mem::swap(&mut self.g, &mut self.g_new);
        self.f = f_new;
        self.grad_norm = gg.sqrt();
    }

    /// Approximate Wolfe (Hager & Zhang 2005): `0.9 phi'(0) <= phi'(a) <= -0.8 phi'(0)` and
    /// `phi(a) <= phi(0) + EPS_F |phi(0)|`. Valid where f64 can no longer resolve decreases.
    fn approx_wolfe(&self, dg0: f64, f: f64, gd: f64) -> bool {
        f <= self.f + EPS_F * self.f.abs() && gd >= 0.9 * dg0 && gd <= -0.8 * dg0
    }

    /// The nonmonotone test of a line search's first trial (Grippo, Lampariello and Lucidi,
    /// SIAM J. Numer. Anal. 23, 1986): `phi(a) <= max_j f(x_{k-j}) + ftol a phi'(0)` over the
    /// last [`NONMONOTONE_WINDOW`] iterates, `phi(a) <= phi(0) + NONMONOTONE_RISE |phi(0)|`,
    /// and `phi'(a) > phi'(0)`, so that the new pair has `s . y = a (phi'(a) - phi'(0)) > 0`
    /// and is stored. The reference is the largest of the recent values, so it never rises
    /// from one window to the next. A unit step that overshoots the minimum along d a little
    /// (f up by 1e-7 of f, `phi'(1)` between `-phi'(0)` and `-2.5 phi'(0)`, typical of E's
    /// solve), or that lowers f but overshoots the strong-Wolfe curvature bound, is kept
    /// instead of costing a second evaluation, and its pair teaches the model the curvature
    /// it missed.
    fn nonmonotone_accept(&self, dg0: f64, a: f64, f: f64, gd: f64) -> bool {
        let reference = self.recent_f.iter().fold(self.f, |m, &v| m.max(v));
        f.is_finite() && gd > dg0 && f <= reference + self.ls.ftol * a * dg0 && f - self.f <= NONMONOTONE_RISE * self.f.abs()
    }

    /// More-Thuente (strong Wolfe) first; any trial meeting approximate Wolfe is accepted too,
    /// and so is a first trial meeting the nonmonotone test ([`Self::nonmonotone_accept`]).
    /// If More-Thuente stops (rounding), a derivative-only secant/bisection search on
    /// phi'(a) = 0 takes over. If no trial meets a curvature condition, the trial with the
    /// lowest f that meets sufficient decrease is taken (evaluated again, so x, g_new and the
    /// pending pair are its own). Returns (step, f, |g|^2) with x, g_new at that step.
    /// `at_first` is (f, phi', |g|^2) at `first`, evaluated with the direction pass.
    fn line_search<O: FusedObjective>(&mut self, obj: &mut O, dg0: f64, first: f64, at_first: (f64, f64, f64)) -> Option<(f64, f64, f64)> {
        let mut at_first = Some(at_first);
        let (mut ls, mut action) = MoreThuente::start(self.ls, self.f, dg0, first);
        let mut last = f64::NAN;
        let mut evals = 0;
        // The trial with the lowest f that meets the sufficient decrease `f <= f0 + ftol a
        // phi'(0)`: the step taken if no trial meets a curvature condition.
        let mut armijo: Option<(f64, f64)> = None;
        let (f0, ftol) = (self.f, self.ls.ftol);
        let mut note = |a: f64, f: f64| {
            if f.is_finite() && f <= f0 + ftol * a * dg0 && armijo.is_none_or(|(_, fb)| f < fb) {
                armijo = Some((a, f));
            }
        };
        while evals < MAX_LINE_SEARCH_EVALS {
            match action {
                Action::Evaluate(a) if a != last => {
                    let (f, gd, gg) = match at_first.take() {
                        Some(v) if a == first => v,
                        _ => {
                            let (_, f, gd, gg) = self.trial(obj, a, Fill::Step);
                            (f, gd, gg)
                        }
                    };
                    evals += 1;
                    last = a;
                    note(a, f);
                    if self.approx_wolfe(dg0, f, gd) || (evals == 1 && self.nonmonotone_accept(dg0, a, f, gd)) {
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
            let (_, f, gd, gg) = self.trial(obj, a, Fill::Step);
            evals += 1;
            note(a, f);
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
                if sec > lo && sec < hi {
                    sec
                } else {
                    0.5 * (lo + hi)
                }
            } else {
                0.5 * (lo + hi)
            };
            if !(a > 0.0) || (!hi.is_nan() && (hi - lo) <= 1e-15 * hi) {
                break;
            }
        }
        // No curvature condition met (phi' may jump across zero, as on a loss that is
        // piecewise linear in float64 where the softmax saturates): take the best sufficient
        // decrease.
        let (a, _) = armijo?;
        let (_, f, _, gg) = self.trial(obj, a, Fill::Step);
        (f.is_finite() && f <= self.f + self.ls.ftol * a * dg0).then_some((a, f, gg))
    }
}

impl<O: FusedObjective> Solver<O, LbfgsState> for InPlaceLbfgs {
    fn name(&self) -> &str {
        "in-place L-BFGS (More-Thuente)"
    }

    fn init(&mut self, problem: &mut Problem<O>, state: LbfgsState) -> std::result::Result<(LbfgsState, Option<KV>), ArgminError> {
        let obj = problem.problem.as_mut().ok_or_else(|| ArgminError::msg("no objective"))?;
        if obj.dim() != self.x.len() {
            return Err(ArgminError::msg("start vector has the wrong length"));
        }
        self.curvature = obj.curvature_scale();
        self.f = obj.eval(&self.x, &mut self.g);
        self.evaluations += 1;
        self.gram.gg = dot2(&self.g, &self.g, &mut self.parts).1;
        self.block_ranges = obj.block_ranges();
        self.pre_total = obj.pre_total();
        self.proj = vec![0.0; (self.m + 1) * self.pre_total];
        self.pre_t = vec![0.0; self.pre_total];
        self.pre_ok = false;
        self.blocks = self.block_ranges.iter().map(|(_, b)| b + 1).max().unwrap_or(1);
        if self.blocks > MAX_BLOCKS || self.block_ranges.iter().map(|(r, _)| r.len()).sum::<usize>() != self.x.len() {
            return Err(ArgminError::msg("objective's blocks do not cover its variables"));
        }
        for b in 0..self.blocks {
            let sq = |r: &std::ops::Range<usize>| self.g[r.clone()].iter().map(|v| v * v).sum::<f64>();
            self.bgram[b].gg = self.block_ranges.iter().filter(|(_, bb)| *bb == b).map(|(r, _)| sq(r)).sum();
        }
        self.grad_norm = self.gram.gg.sqrt();
        self.record();
        let gmax = self.g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if !(self.f.is_finite() && self.grad_norm.is_finite()) {
            self.exit = Some(Exit::NotFinite);
            self.exit_note = Some(format!("the objective ({:e}) or its gradient is not finite in float64 at the start", self.f));
        } else if gmax > F32_SAFE {
            // The stored pairs are f32: a gradient this large would overflow them.
            self.exit = Some(Exit::NotFinite);
            self.exit_note = Some(format!("the gradient at the start reaches {gmax:.1e}, beyond the float32 range of the solver's stored pairs (the weight decays are too large for a start of this scale)"));
        } else {
            self.cert_period = obj.certificate_period();
            if self.certified_stop(obj) {
                self.exit = Some(Exit::Certified);
            }
        }
        Ok((state.cost(self.f), None))
    }

    fn next_iter(&mut self, problem: &mut Problem<O>, state: LbfgsState) -> std::result::Result<(LbfgsState, Option<KV>), ArgminError> {
        let obj = problem.problem.as_mut().ok_or_else(|| ArgminError::msg("no objective"))?;
        let first = if self.len == 0 && self.iter == 0 { (1.0 / self.grad_norm).min(1.0) } else { 1.0 };
        let fill = self.direction_fill();
        let (mut dg, mut f, mut gd, mut gg) = self.trial(obj, first, fill);
        if !(dg < 0.0) {
            self.restore();
            self.len = 0;
            self.resets += 1;
            let fill = self.direction_fill();
            (dg, f, gd, gg) = self.trial(obj, first, fill);
        }
        let Some((step, f_new, _)) = self.line_search(obj, dg, first, (f, gd, gg)) else {
            self.restore();
            self.exit = Some(Exit::LineSearch);
            let msg = "line search failed: no acceptable step (strong or approximate Wolfe)".to_string();
            return Ok((state.cost(self.f).terminate_with(TerminationReason::SolverExit(msg)), None));
        };
        self.accept(step, f_new);
        self.iter = state.get_iter() + 1;
        self.record();
        if self.certified_stop(obj) {
            self.exit = Some(Exit::Certified);
        }
        Ok((state.cost(self.f), None))
    }

    fn terminate(&mut self, _state: &LbfgsState) -> TerminationStatus {
        if super::interrupted() {
            return TerminationStatus::Terminated(TerminationReason::Interrupt);
        }
        match self.exit {
            Some(Exit::Certified) => {
                let gap = self.certified.map_or(f64::NAN, |c| c.1);
                TerminationStatus::Terminated(TerminationReason::SolverExit(format!("certified: relative suboptimality {gap:.2e} <= {:.1e}", self.cert_target)))
            }
            Some(Exit::NotFinite) => TerminationStatus::Terminated(TerminationReason::SolverExit(
                self.exit_note.clone().unwrap_or_else(|| "the objective or its gradient is not finite in float64".into()),
            )),
            _ if self.grad_norm <= self.threshold(self.f) => TerminationStatus::Terminated(TerminationReason::SolverConverged),
            _ => TerminationStatus::NotTerminated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::UfmConfig;
    use crate::model::loss::Loss;
    use crate::model::objective::{UfmEval, UfmObjective};
    use crate::solver::problem::FusedObjective;
    use argmin::core::Executor;

    /// The same objective without its own hooked evaluation: the trait's default, one range
    /// around a plain evaluation, so the solver's two passes run over the whole vectors,
    /// before and after the objective's pass instead of inside it.
    struct Unfused(UfmEval);

    // SAFETY: the trait's default `eval_hooked` (one range, slot 0) keeps the contract.
    unsafe impl FusedObjective for Unfused {
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn eval(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
            self.0.eval(x, grad)
        }
        fn curvature_scale(&self) -> f64 {
            self.0.curvature_scale()
        }
        fn block_ranges(&self) -> Vec<(std::ops::Range<usize>, usize)> {
            self.0.block_ranges()
        }
    }

    fn run<O: FusedObjective>(obj: O, x0: Vec<f64>, iters: u64, tol: f64) -> (Vec<HistoryPoint>, usize) {
        let solver = InPlaceLbfgs::new(x0, 3, tol, None).unwrap();
        let res = Executor::new(obj, solver).configure(|s| s.max_iters(iters)).ctrlc(false).run().unwrap();
        (res.solver.history.clone(), res.solver.evaluations)
    }

    /// With the preconditioner forced on (see `crate::precond`; several chunks, run in
    /// parallel): the same optimum as without it, and the same bits on one thread or two.
    #[test]
    fn preconditioned_solver_reaches_the_same_optimum_on_any_thread_count() {
        let cfg = UfmConfig { classes: 12, max_labels: 2, dim: 30, per_set: vec![12], lambda_w: 1e-3, lambda_h: 1e-3, lambda_b: 1e-3, loss: Loss::Pal };
        let obj = UfmObjective::new(&cfg.validate().unwrap());
        assert!(obj.hook_slots() > 3, "several chunks");
        let x0 = obj.random_start(5, 0.1);
        let solve_on = |threads: usize, pre: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let solver = InPlaceLbfgs::new(x0.clone(), 3, 1e-9, None).unwrap();
                let res = Executor::new(UfmEval::with_preconditioner(obj.clone(), pre), solver).configure(|s| s.max_iters(2000)).ctrlc(false).run().unwrap();
                assert_eq!(res.solver.pre_ok, pre, "the preconditioner ran");
                (res.solver.history.clone(), res.solver.x().to_vec())
            })
        };
        let (h2, x2) = solve_on(2, true);
        let (h1, x1) = solve_on(1, true);
        assert!(h1.len() == h2.len() && h1.iter().zip(&h2).all(|(a, b)| a.objective.to_bits() == b.objective.to_bits()));
        assert!(x1.iter().zip(&x2).all(|(a, b)| a.to_bits() == b.to_bits()));
        let (plain, _) = solve_on(2, false);
        let (a, b) = (h2.last().unwrap(), plain.last().unwrap());
        assert!(a.iter < 2000 && b.iter < 2000, "both converge");
        assert!(((a.objective - b.objective) / b.objective).abs() < 1e-12, "{} vs {}", a.objective, b.objective);
        // Not vacuous: the two runs took different paths.
        assert!(h2.len() != plain.len() || h2.iter().zip(&plain).any(|(p, q)| p.objective != q.objective));
    }

    /// `1 + sum_i c_i x_i^2 / 2` with a synthetic second-order certificate: the gap is the
    /// square of the relative gradient `||g|| / sqrt(2 |f|)` (curvature scale 1), and each check
    /// predicts the fall of the gradient norm after which the next meets the target. Records
    /// the objective value of every check.
    struct SquareGap {
        c: Vec<f64>,
        checked: Vec<f64>,
    }

    // SAFETY: the trait's default `eval_hooked` (one range, slot 0) keeps the contract.
    unsafe impl FusedObjective for SquareGap {
        fn dim(&self) -> usize {
            self.c.len()
        }
        fn eval(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
            grad.iter_mut().zip(x.iter().zip(&self.c)).for_each(|(g, (x, c))| *g = c * x);
            1.0 + 0.5 * x.iter().zip(&self.c).map(|(x, c)| c * x * x).sum::<f64>()
        }
        fn curvature_scale(&self) -> f64 {
            1.0
        }
        fn certified_gap(&mut self, _x: &[f64], f: f64, grad: &[f64], tol: f64) -> Option<CertifiedGap> {
            self.checked.push(f);
            let gap = grad.iter().map(|g| g * g).sum::<f64>() / (2.0 * f.abs());
            Some(CertifiedGap { gap, target: tol, next: Some((tol / gap).sqrt()) })
        }
        fn certificate_period(&self) -> u64 {
            5
        }
    }

    /// The certificate schedule (`certified_stop`): with a bound whose prediction is exact, the
    /// solve stops at the first iteration whose gap meets the target (computed here from the
    /// recorded gradient norms), not at the next multiple of the period; and the checks stay
    /// within one per period on average plus [`CERT_BURST`].
    #[test]
    fn predicted_checks_stop_at_the_first_iteration_that_meets_the_target() {
        let n = 40;
        let c: Vec<f64> = (0..n).map(|i| 10f64.powf(3.0 * i as f64 / (n - 1) as f64)).collect();
        let tol = 1e-14;
        let solver = InPlaceLbfgs::new(vec![1.0; n], 3, 1e-13, None).unwrap().with_certified_stop(tol);
        let res = Executor::new(SquareGap { c, checked: Vec::new() }, solver).configure(|s| s.max_iters(5000)).ctrlc(false).run().unwrap();
        let (solver, obj) = (&res.solver, res.problem.problem.as_ref().unwrap());
        assert_eq!(solver.exit, Some(Exit::Certified));
        let h = &solver.history;
        let rel2 = |p: &HistoryPoint| p.grad_norm * p.grad_norm / (2.0 * p.objective.abs());
        let crossing = h.iter().find(|p| rel2(p) <= tol).expect("the target is met").iter;
        let (stop, _) = solver.certified.unwrap();
        assert_eq!(stop, crossing, "stopped at {stop}, the gap met the target first at {crossing}");
        // The iterations of the checks, from their objective values.
        let at: Vec<u64> = obj.checked.iter().map(|f| h.iter().find(|p| p.objective.to_bits() == f.to_bits()).unwrap().iter).collect();
        assert_eq!(*at.last().unwrap(), stop);
        assert!(at.len() as u64 <= (stop - at[0]) / 5 + CERT_BURST, "checks at {at:?}");
        // Not vacuous: checks every 5 iterations from the first would have stopped later.
        let periodic = h.iter().find(|p| p.iter >= at[0] && (p.iter - at[0]).is_multiple_of(5) && rel2(p) <= tol);
        assert!(periodic.is_none(), "checks every 5 iterations would have stopped by {stop}");
    }

    /// The nonmonotone first trial (Grippo, Lampariello and Lucidi): every accepted objective
    /// is below the largest of the [`NONMONOTONE_WINDOW`] before it (by `ftol a phi'(0) < 0`,
    /// or by at most `EPS_F |f|` on the approximate-Wolfe route), so that largest value never
    /// rises; no step raises f by more than [`NONMONOTONE_RISE`] of it; and the solve still
    /// reaches the optimum. Not vacuous: on this problem some
    /// accepted steps raise f by more than the approximate-Wolfe slack, which the monotone
    /// search alone never does.
    #[test]
    fn nonmonotone_steps_keep_the_windowed_maximum_falling() {
        let cfg = UfmConfig { classes: 10, max_labels: 2, dim: 16, per_set: vec![2], lambda_w: 2e-4, lambda_h: 2e-4, lambda_b: 2e-4, loss: Loss::Pal }
            .validate()
            .unwrap();
        let obj = UfmObjective::new(&cfg);
        let (h, _) = run(UfmEval::new(obj.clone()), obj.random_start(1, 0.1), 3000, 1e-8);
        let mut ups = 0;
        for k in 1..h.len() {
            let window = &h[k.saturating_sub(NONMONOTONE_WINDOW)..k];
            let top = window.iter().map(|p| p.objective).fold(f64::NEG_INFINITY, f64::max);
            assert!(h[k].objective <= top + EPS_F * top.abs(), "iteration {k}: {} above the window's largest {top}", h[k].objective);
            let (f0, f1) = (h[k - 1].objective, h[k].objective);
            assert!(f1 - f0 <= NONMONOTONE_RISE.max(EPS_F) * f0.abs(), "iteration {k}: f rose from {f0} to {f1}");
            ups += usize::from(f1 > f0 + EPS_F * f0.abs());
        }
        assert!(ups > 0, "no step raised f");
        let (last, best) = (h.last().unwrap(), crate::theory::prediction::predict(&cfg).objective);
        assert!(last.iter < 3000 && (last.objective - best) / best < 1e-10, "{} against the predicted {best}", last.objective);
    }

    /// Fusing the passes into the objective's chunk loop changes only the order in which the
    /// dot products are summed (per chunk instead of per block of the whole vector). So the
    /// iterates agree to rounding at first, and both runs reach the same optimum. (Later
    /// iterates drift apart as the iteration amplifies rounding: measured, relative
    /// differences of the objective stay below 2e-16 for 17 iterations and reach 7e-12 by
    /// iteration 40.)
    #[test]
    fn fused_passes_follow_the_unfused_iterates() {
        let cfg = UfmConfig { classes: 12, max_labels: 3, dim: 20, per_set: vec![4], lambda_w: 1e-3, lambda_h: 1e-3, lambda_b: 1e-3, loss: Loss::Pal };
        let obj = UfmObjective::new(&cfg.validate().unwrap());
        assert!(obj.hook_slots() > 3, "several chunks");
        let x0 = obj.random_start(3, 0.1);
        let (fused, ef) = run(UfmEval::new(obj.clone()), x0.clone(), 10, 1e-300);
        let (plain, ep) = run(Unfused(UfmEval::new(obj.clone())), x0.clone(), 10, 1e-300);
        assert_eq!(fused.len(), 11);
        assert_eq!(ef, ep);
        for (a, b) in fused.iter().zip(&plain) {
            assert!(((a.objective - b.objective) / b.objective).abs() < 1e-14, "iteration {}: {} vs {}", a.iter, a.objective, b.objective);
        }
        // Not a vacuous agreement: the iterates moved.
        assert!(fused[10].objective < 0.9 * fused[0].objective);
        // Solved to a small gradient: the same optimum.
        let (fused, _) = run(UfmEval::new(obj.clone()), x0.clone(), 2000, 1e-9);
        let (plain, _) = run(Unfused(UfmEval::new(obj.clone())), x0, 2000, 1e-9);
        let (a, b) = (fused.last().unwrap(), plain.last().unwrap());
        assert!(a.iter < 2000 && b.iter < 2000, "both converge");
        assert!(((a.objective - b.objective) / b.objective).abs() < 1e-12, "{} vs {}", a.objective, b.objective);
    }

    /// The direction from the coefficient recursion with a block-diagonal initial inverse
    /// Hessian equals the textbook two-loop recursion run on explicit vectors
    /// (Nocedal and Wright, Algorithm 7.4, with `H0 = diag(gamma_b I)`).
    #[test]
    fn block_coefficients_give_the_two_loop_direction() {
        two_loop_case(false);
    }

    /// As above with `H0 = diag(gamma_0 P, gamma_1 I)`, P a dense symmetric positive definite
    /// matrix on block 0 (`(I + U^T U)^-1`, U random 2 x 30): the recursion sees P only
    /// through the corrections `y_u . (I - P) y_v` (and with g), and the direction pass adds
    /// `(P - I)` times block 0's `gamma_0 q`; together they must give the textbook two-loop
    /// direction with this H0 (Nocedal and Wright, Algorithm 7.4).
    #[test]
    fn preconditioned_coefficients_give_the_two_loop_direction() {
        two_loop_case(true);
    }

    fn two_loop_case(with_p: bool) {
        use rand::{Rng, SeedableRng};
        let (n, m, split) = (40, 3, 30);
        let block = |i: usize| usize::from(i >= split);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut vec32 = |scale: f64| (0..n).map(|_| f64::from((scale * (rng.random::<f64>() - 0.5)) as f32)).collect::<Vec<f64>>();
        let g = vec32(2.0);
        let d: Vec<Vec<f64>> = (0..m).map(|_| vec32(1.0)).collect();
        // y_i = A s_i + noise with A positive diagonal: positive curvature s_i . y_i.
        let sigma = [0.8, 1.0, 0.45];
        let y: Vec<Vec<f64>> = (0..m)
            .map(|i| {
                let noise = vec32(0.05);
                (0..n).map(|k| f64::from(((1.0 + 3.0 * block(k) as f64) * sigma[i] * d[i][k] + noise[k]) as f32)).collect()
            })
            .collect();
        let gamma = [0.7, 3.0];
        let mut s = InPlaceLbfgs::new(vec![0.0; n], m, 1e-8, None).unwrap();
        s.blocks = 2;
        s.block_ranges = vec![(0..split, 0), (split..n, 1)];
        s.len = m;
        s.newest = 2;
        let dot = |a: &[f64], b: &[f64], bl: Option<usize>| (0..n).filter(|&k| bl.is_none_or(|x| block(k) == x)).map(|k| a[k] * b[k]).sum::<f64>();
        for (gi, bl) in [(None, None), (Some(0), Some(0)), (Some(1), Some(1))] {
            let gm = match gi {
                None => &mut s.gram,
                Some(b) => &mut s.bgram[b],
            };
            for i in 0..m {
                for j in 0..m {
                    gm.dd[i * m + j] = dot(&d[i], &d[j], bl);
                    gm.dy[i * m + j] = dot(&d[i], &y[j], bl);
                    gm.yy[i * m + j] = dot(&y[i], &y[j], bl);
                }
                gm.dg[i] = dot(&d[i], &g, bl);
                gm.yg[i] = dot(&y[i], &g, bl);
            }
            gm.gg = dot(&g, &g, bl);
        }
        for i in 0..m {
            s.sigma[i] = sigma[i];
            s.rho[i] = 1.0 / (sigma[i] * dot(&d[i], &y[i], None));
        }
        s.bgamma[..2].copy_from_slice(&gamma);
        // P on block 0 (identity when !with_p), and the corrections y_u . (I - P) y_v.
        let mut p = nalgebra::DMatrix::<f64>::identity(split, split);
        if with_p {
            let u = nalgebra::DMatrix::<f64>::from_fn(2, split, |_, _| vec32(1.5)[0]);
            p = (nalgebra::DMatrix::<f64>::identity(split, split) + u.transpose() * u).try_inverse().unwrap();
            let basis: Vec<&Vec<f64>> = y.iter().chain([&g]).collect();
            for (a, va) in basis.iter().enumerate() {
                for (b, vb) in basis.iter().enumerate() {
                    let (xa, xb) = (nalgebra::DVector::from_column_slice(&va[..split]), nalgebra::DVector::from_column_slice(&vb[..split]));
                    s.pc[a * (m + 1) + b] = xa.dot(&xb) - xa.dot(&(&p * &xb));
                }
            }
            s.pre_ok = true;
        }
        let Fill::Direction { cg, .. } = s.direction_fill() else { unreachable!() };
        let mut got: Vec<f64> = (0..n)
            .map(|k| {
                let b = block(k);
                cg[b] * g[k] + (0..m).map(|i| s.bcd[b * m + i] * d[i][k] + s.bcy[b * m + i] * y[i][k]).sum::<f64>()
            })
            .collect();
        // The direction pass's correction: (P - I) (gamma_0 q) on block 0.
        let t = nalgebra::DVector::from_fn(split, |k, _| cg[0] * g[k] + (0..m).map(|i| s.bcy[i] * y[i][k]).sum::<f64>());
        let corr = &p * &t - &t;
        for k in 0..split {
            got[k] += corr[k];
        }
        // Textbook: q = g; newest to oldest; r = H0 q; oldest to newest; direction -r.
        let sv: Vec<Vec<f64>> = (0..m).map(|i| d[i].iter().map(|v| sigma[i] * v).collect()).collect();
        let mut q = g.clone();
        let mut alpha = [0.0; 3];
        for i in [2, 1, 0] {
            let rho = 1.0 / dot(&sv[i], &y[i], None);
            alpha[i] = rho * dot(&sv[i], &q, None);
            q.iter_mut().zip(&y[i]).for_each(|(a, b)| *a -= alpha[i] * b);
        }
        let q0 = nalgebra::DVector::from_column_slice(&q[..split]);
        let pq = &p * q0;
        let mut r: Vec<f64> = (0..n).map(|k| gamma[block(k)] * if k < split { pq[k] } else { q[k] }).collect();
        for i in [0, 1, 2] {
            let rho = 1.0 / dot(&sv[i], &y[i], None);
            let beta = rho * dot(&y[i], &r, None);
            r.iter_mut().zip(&sv[i]).for_each(|(a, b)| *a += (alpha[i] - beta) * b);
        }
        let scale = r.iter().map(|v| v.abs()).fold(0.0, f64::max);
        for k in 0..n {
            assert!((got[k] + r[k]).abs() <= 1e-13 * scale, "entry {k}: {} vs {}", got[k], -r[k]);
        }
        // Not a vacuous check: the two blocks' scales differ, so a scalar gamma would miss;
        // and P is far from the identity.
        assert!(gamma[0] != gamma[1]);
        if with_p {
            assert!((&p - nalgebra::DMatrix::<f64>::identity(split, split)).norm() > 0.5);
        }
    }
}
