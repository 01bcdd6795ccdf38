//! The UFM objective (docs/theory.md §1):
//! `f(W, H, b) = (1/N) sum_i L(W h_i + b, S_i) + lw/2 ||W||_F^2 + lh/2 ||H||_F^2 + lb/2 ||b||^2`,
//! with gradient `G = dL/dZ / N`, `dW = G H^T + lw W`, `dH = W^T G + lh H`, `db = G 1 + lb b`.
//!
//! Parameters are one flat vector `x = [W (K x d), H (d x N), b (K)]`, column-major.
//! The evaluation is fused: one GEMM for Z, one pass over Z for loss and G, two GEMMs.
//! The objective implements the solver's interface ([`FusedObjective`]) through [`UfmEval`];
//! it knows nothing else about the optimiser.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;
use crate::model::config::ValidConfig;
use crate::model::labels::LabelSets;
use rayon::prelude::*;

use crate::kernels::cpu::Isa;
use crate::kernels::exp::ExpKernel;
use crate::kernels::products::ChunkProducts;
use crate::kernels::shared::SharedMut;
use crate::linalg::{gemm, Mat};
use crate::model::loss::{loss_and_grad_in_place, loss_grad_bias_in_place, loss_grad_entropy_in_place, Loss};
use crate::model::precond::{sample_m, PreFactors, PreLayout, SamplePre, PRE_C0};
use crate::solver::problem::{CertifiedGap, ChunkHooks, FusedObjective, RangePreconditioner};
use crate::solver::{IterCallback, Method, SolveParams, SolveResult};

/// The regularised UFM objective for one configuration.
#[derive(Debug, Clone)]
pub struct UfmObjective {
    /// Classes K.
    pub k: usize,
    /// Feature dimension d.
    pub d: usize,
    /// Samples N.
    pub n: usize,
    /// Weight decays.
    pub lw: f64,
    /// Weight decay on H.
    pub lh: f64,
    /// Weight decay on b.
    pub lb: f64,
    /// Loss.
    pub loss: Loss,
    /// Label sets and per-sample set index.
    pub labels: LabelSets,
    /// Which samples' features the solver's preconditioner acts on (see [`crate::model::precond`]).
    pub pre: PreLayout,
}

/// Borrowed (W, H, b) blocks of a flat parameter vector.
#[derive(Clone, Copy)]
pub struct Point<'a> {
    /// Classifier, K x d.
    pub w: Mat<'a>,
    /// Features, d x N.
    pub h: Mat<'a>,
    /// Bias, K.
    pub b: &'a [f64],
}

impl UfmObjective {
    /// Builds the objective of a validated configuration.
    pub fn new(cfg: &ValidConfig) -> Self {
        let c = &cfg.config;
        UfmObjective {
            k: c.classes,
            d: c.dim,
            n: cfg.labels.samples(),
            lw: c.lambda_w,
            lh: c.lambda_h,
            lb: c.lambda_b,
            loss: c.loss,
            labels: cfg.labels.clone(),
            pre: PreLayout::new(&cfg.labels, c.loss),
        }
    }

    /// Number of free variables `Kd + dN + K`.
    pub fn dim(&self) -> usize {
        self.k * self.d + self.d * self.n + self.k
    }

    /// Splits a flat vector into W, H and b.
    pub fn split<'a>(&self, x: &'a [f64]) -> Point<'a> {
        let (kd, dn) = (self.k * self.d, self.d * self.n);
        Point { w: Mat::new(&x[..kd], self.k, self.d), h: Mat::new(&x[kd..kd + dn], self.d, self.n), b: &x[kd + dn..] }
    }

    /// Seeded start with every entry drawn from N(0, std^2).
    ///
    /// For the softmax losses the bias is then centred: adding `c 1` to b changes no softmax,
    /// so along that direction f has curvature `lb` alone and L-BFGS would take a long time
    /// (at small `lb`) to bring the mean of b to its optimum, 0; the start puts it there.
    pub fn random_start(&self, seed: u64, std: f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x: Vec<f64> = (0..self.dim()).map(|_| std * Distribution::<f64>::sample(&StandardNormal, &mut rng)).collect();
        if self.loss != Loss::Bce {
            let b = &mut x[self.k * self.d + self.d * self.n..];
            let mean = b.iter().sum::<f64>() / b.len() as f64;
            b.iter_mut().for_each(|v| *v -= mean);
        }
        x
    }

    /// The seeded start ([`random_start`](Self::random_start)), with each block's scale capped
    /// so that the regulariser's gradient there, about `lw std` on W, `lh std` on H and
    /// `lb std` on b, stays below [`START_GRADIENT`](Self::START_GRADIENT): the solver stores
    /// its pairs in f32. W and H (whose weight decays are equal on the balanced twin the
    /// solver runs on) are scaled by one factor, b by its own. Only weight decays beyond 1e29
    /// (at `init_std` 0.1) are affected; for W and H that is far inside the trivial regime,
    /// whose optimum is the origin.
    pub fn start(&self, seed: u64, std: f64) -> Vec<f64> {
        let mut x = self.random_start(seed, std);
        let cap = |lam: f64| if lam * std > Self::START_GRADIENT { Self::START_GRADIENT / (lam * std) } else { 1.0 };
        let (wh, b) = (cap(self.lw.max(self.lh)), cap(self.lb));
        let kdn = self.k * self.d + self.d * self.n;
        if wh < 1.0 {
            x[..kdn].iter_mut().for_each(|v| *v *= wh);
        }
        if b < 1.0 {
            x[kdn..].iter_mut().for_each(|v| *v *= b);
        }
        x
    }

    /// See [`start`](Self::start).
    pub const START_GRADIENT: f64 = 1e30;

    /// Solves from the seeded start `N(0, init_std^2)` with the method of `params`, stopping on
    /// the gradient rule (`theory::solve` adds the certified stop).
    pub fn solve(&self, seed: u64, params: &SolveParams, callback: Option<IterCallback>) -> Result<SolveResult> {
        self.solve_with(seed, params, callback, None)
    }

    /// [`solve`](Self::solve), also stopping once `certifier` proves the relative
    /// suboptimality at most `params.tol_stop` (in-place solver only).
    ///
    /// When `lw != lh` the solve runs on the balanced twin of the problem
    /// ([`balanced`](Self::balanced)), from a start drawn for it, and the result is mapped
    /// back: the same problem, with W and H on the same scale.
    pub fn solve_with(&self, seed: u64, params: &SolveParams, callback: Option<IterCallback>, certifier: Option<Certifier>) -> Result<SolveResult> {
        params.validate()?;
        let mut r = match self.balanced() {
            None => self.solve_path(seed, params, callback, certifier)?,
            Some((c, twin)) => {
                let mut r = twin.solve_path(seed, params, callback, certifier)?;
                self.unbalance(&mut r.x, c);
                r
            }
        };
        self.polish(&mut r);
        Ok(r)
    }

    /// Ends a solve with the best logit-preserving translation ([`translate`](Self::translate)):
    /// kept when the objective, evaluated anew at the moved point, is not higher. The point,
    /// its objective and gradient norm, the evaluation count and the time are updated; what
    /// stopped the solve is not (the stopping rule held at a point whose objective is at least
    /// this one's, and the certificate's lower bound depends on the logits alone).
    fn polish(&self, r: &mut SolveResult) {
        if !r.objective.is_finite() {
            return;
        }
        let start = std::time::Instant::now();
        let mut y = r.x.clone();
        if !self.translate(&mut y) {
            return;
        }
        let mut grad = vec![0.0; y.len()];
        let f = self.value_and_gradient(&y, &mut grad, &mut Workspace::new(self));
        r.evaluations += 1;
        if f.is_finite() && f <= r.objective {
            r.x = y;
            r.objective = f;
            r.grad_norm = crate::linalg::norm(&grad);
        }
        r.seconds += start.elapsed().as_secs_f64();
    }

    /// Weight decays below which the solve follows a path (docs/theory.md §6): at
    /// `sqrt(lw lh) < PATH_BELOW`, L-BFGS's iterations grow like `lambda^(-1/2)` (the
    /// Hessian's condition number grows like `1/lambda`).
    pub const PATH_BELOW: f64 = 1e-4;
    /// The path's first problem has `sqrt(lw lh) = PATH_START`, or
    /// [`trivial_threshold`](Self::trivial_threshold)` / PATH_MARGIN` if that is lower...
    pub const PATH_START: f64 = 1e-3;
    /// ...so that no problem of the path has W = H = 0 as its optimum, or one close to it: from
    /// there the next problem would start near a saddle point.
    pub const PATH_MARGIN: f64 = 2.0;
    /// ...and each next one divides every weight decay by `PATH_FACTOR`, down to this problem.
    pub const PATH_FACTOR: f64 = 3.0;
    /// Each problem before the last is solved to the gradient rule at this tolerance (an
    /// estimated relative objective error of 1e-8): a warm start for the next.
    pub const PATH_TOL_GRAD: f64 = 1e-4;

    /// The solve from the seeded start; below [`PATH_BELOW`](Self::PATH_BELOW), along a path
    /// of problems with every weight decay scaled down by [`PATH_FACTOR`](Self::PATH_FACTOR)
    /// from `sqrt(lw lh) = PATH_START` to this problem, each started where the previous one
    /// stopped (continuation, as glmnet computes regularisation paths). Only the last problem
    /// is solved with `params`' stopping rules and callback; the iterations, evaluations and
    /// history of all of them are counted.
    fn solve_path(&self, seed: u64, params: &SolveParams, callback: Option<IterCallback>, certifier: Option<Certifier>) -> Result<SolveResult> {
        let mu = self.lw.sqrt() * self.lh.sqrt();
        if !(mu < Self::PATH_BELOW) || params.method != Method::InPlace {
            return self.solve_raw(self.start(seed, params.init_std), params, callback, certifier);
        }
        let start = std::time::Instant::now();
        let first = self.trivial_threshold().map_or(Self::PATH_START, |c| Self::PATH_START.min(c / Self::PATH_MARGIN));
        let mut scale = first / mu;
        let mut x = self.start(seed, params.init_std);
        let (mut iterations, mut evaluations, mut stages) = (0u64, 0usize, 0usize);
        let mut history: Vec<crate::solver::HistoryPoint> = Vec::new();
        while scale > 1.0 {
            let stage = UfmObjective { lw: self.lw * scale, lh: self.lh * scale, lb: self.lb * scale, ..self.clone() };
            let left = params.max_iters.saturating_sub(iterations);
            let time_left = params.time_limit.map(|t| t - start.elapsed().as_secs_f64());
            if left == 0 || time_left.is_some_and(|t| t <= 0.0) {
                break;
            }
            let p = SolveParams { tol_grad: Self::PATH_TOL_GRAD, tol_stop: 0.0, target_objective: None, max_iters: left, time_limit: time_left, ..*params };
            let r = stage.solve_raw(x, &p, None, None)?;
            history.extend(r.history.iter().skip(usize::from(stages > 0)).map(|h| crate::solver::HistoryPoint { iter: h.iter + iterations, ..*h }));
            iterations += r.iterations;
            evaluations += r.evaluations;
            stages += 1;
            x = r.x;
            if !r.objective.is_finite() {
                break;
            }
            scale /= Self::PATH_FACTOR;
        }
        let p = SolveParams {
            max_iters: params.max_iters.saturating_sub(iterations),
            // What the path left of the limit (a limit must be positive: at the smallest one
            // the solver stops after its first iteration, with the limit as its reason).
            time_limit: params.time_limit.map(|t| (t - start.elapsed().as_secs_f64()).max(f64::MIN_POSITIVE)),
            ..*params
        };
        let mut r = self.solve_raw(x, &p, callback, certifier)?;
        history.extend(r.history.iter().skip(usize::from(stages > 0)).map(|h| crate::solver::HistoryPoint { iter: h.iter + iterations, ..*h }));
        r.iterations += iterations;
        r.evaluations += evaluations;
        r.certified = r.certified.map(|(it, g)| (it + iterations, g));
        r.seconds = start.elapsed().as_secs_f64();
        r.termination = format!(
            "path of {stages} easier problem(s) (weight decays {:.1e} times larger, down by {}), then: {}",
            first / mu,
            Self::PATH_FACTOR,
            r.termination
        );
        r.history = history;
        Ok(r)
    }

    /// The weight decay `sqrt(lw lh)` at and above which W = H = 0 is the global minimum,
    /// for the softmax losses (docs/theory.md §3): the trivial statistic `sum_m a_m^2 / q_m`,
    /// `a_m = p_m c_m (K-m)/K`, `q_m = lw lh (K-1)/K N_m m (K-m)`, is 1 there and scales like
    /// `1 / (lw lh)`. `None` for BCE, and when no multiplicity below K has samples.
    pub fn trivial_threshold(&self) -> Option<f64> {
        if self.loss == Loss::Bce {
            return None;
        }
        let sq = crate::model::loss::trivial_statistic(self.loss, self.k, &self.labels.samples_per_multiplicity(), 1.0, 1.0);
        (sq > 0.0 && sq.is_finite()).then(|| sq.sqrt())
    }

    /// Solves from a given start (in this objective's coordinates), stopping on the gradient
    /// rule.
    pub fn solve_from(&self, x0: Vec<f64>, params: &SolveParams, callback: Option<IterCallback>) -> Result<SolveResult> {
        params.validate()?;
        let mut r = match self.balanced() {
            None => self.solve_raw(x0, params, callback, None)?,
            Some((c, twin)) => {
                let mut x0 = x0;
                self.unbalance(&mut x0, 1.0 / c);
                let mut r = twin.solve_raw(x0, params, callback, None)?;
                self.unbalance(&mut r.x, c);
                r
            }
        };
        self.polish(&mut r);
        Ok(r)
    }

    fn solve_raw(&self, x0: Vec<f64>, params: &SolveParams, callback: Option<IterCallback>, certifier: Option<Certifier>) -> Result<SolveResult> {
        let (result, _) = match params.method {
            Method::InPlace => crate::solver::minimize(UfmEval::new(self.clone()).with_certifier(certifier), x0, params, callback)?,
            Method::Argmin => crate::solver::argmin_lbfgs::minimize_argmin(UfmEval::with_preconditioner(self.clone(), false), x0, params, callback)?,
        };
        Ok(result)
    }

    /// The balanced twin of this objective when `lw != lh`: the same problem in
    /// `W' = W / c`, `H' = c H` with `c = (lh / lw)^(1/4)`, whose weight decays on W and H are
    /// both `sqrt(lw lh)` (`lw ||W||^2 = sqrt(lw lh) ||W'||^2`, and likewise for H; `W H` and
    /// so the data term are unchanged). Returns `(c, twin)`.
    pub fn balanced(&self) -> Option<(f64, UfmObjective)> {
        if self.lw == self.lh {
            return None;
        }
        let c = ((self.lh.ln() - self.lw.ln()) / 4.0).exp();
        let mu = self.lw.sqrt() * self.lh.sqrt();
        Some((c, UfmObjective { lw: mu, lh: mu, ..self.clone() }))
    }

    /// Maps a point of the balanced twin back: `W <- c W'`, `H <- H' / c` (with `1 / c`, the
    /// other way).
    fn unbalance(&self, x: &mut [f64], c: f64) {
        let (kd, dn) = (self.k * self.d, self.d * self.n);
        x[..kd].iter_mut().for_each(|v| *v *= c);
        x[kd..kd + dn].iter_mut().for_each(|v| *v /= c);
    }

    /// The best logit-preserving translation (docs/theory.md §6): moves every feature by the
    /// same `u` and the bias by `-W u - c 1`, which moves every logit `W h_i + b` by the same
    /// `-c` (no softmax sees it; `c = 0` for BCE), so only the regulariser changes:
    /// `lb/2 ||b - W u - c 1||^2 + lh/2 sum_i ||h_i + u||^2`. Its minimiser solves the
    /// `(d + 1) x (d + 1)` normal equations
    /// `[lb W^T W + lh N I, lb W^T 1; lb 1^T W, lb K] [u; c] = [lb W^T b - lh sum_i h_i; lb 1^T b]`
    /// (`c = 0` for BCE, whose loss sees `c 1`, and when `lb = 0`).
    ///
    /// Along these `d + 1` directions the curvature of f is only `lh N` and `lb`, so L-BFGS
    /// takes them last at small weight decays; this step takes them exactly. Returns `false`
    /// (and leaves `x` as it was) when the system cannot be solved in float64.
    pub fn translate(&self, x: &mut [f64]) -> bool {
        let (k, d, n) = (self.k, self.d, self.n);
        let with_c = self.loss != Loss::Bce && self.lb > 0.0;
        let m = d + usize::from(with_c);
        let (kd, dn) = (k * d, d * n);
        let (lb, lh) = (self.lb, self.lh);
        let mut sys = nalgebra::DMatrix::<f64>::zeros(m, m);
        let mut rhs = nalgebra::DVector::<f64>::zeros(m);
        {
            let p = self.split(x);
            let wcol = |j: usize| &p.w.data[j * k..(j + 1) * k];
            let mut hsum = vec![0.0; d];
            for col in p.h.data.chunks_exact(d) {
                hsum.iter_mut().zip(col).for_each(|(s, v)| *s += v);
            }
            for i in 0..d {
                for j in 0..=i {
                    let v = lb * wcol(i).iter().zip(wcol(j)).map(|(a, b)| a * b).sum::<f64>();
                    sys[(i, j)] = v;
                    sys[(j, i)] = v;
                }
                sys[(i, i)] += lh * n as f64;
                rhs[i] = lb * wcol(i).iter().zip(p.b).map(|(a, b)| a * b).sum::<f64>() - lh * hsum[i];
                if with_c {
                    let v = lb * wcol(i).iter().sum::<f64>();
                    sys[(i, d)] = v;
                    sys[(d, i)] = v;
                }
            }
            if with_c {
                sys[(d, d)] = lb * k as f64;
                rhs[d] = lb * p.b.iter().sum::<f64>();
            }
        }
        if sys.iter().chain(rhs.iter()).any(|v| !v.is_finite()) {
            return false;
        }
        let Some(chol) = sys.cholesky() else {
            return false;
        };
        let v = chol.solve(&rhs);
        if v.iter().any(|a| !a.is_finite()) {
            return false;
        }
        let (u, c) = (&v.as_slice()[..d], if with_c { v[d] } else { 0.0 });
        let mut wu = vec![c; k];
        for (j, uj) in u.iter().enumerate() {
            wu.iter_mut().zip(&x[j * k..(j + 1) * k]).for_each(|(o, w)| *o += w * uj);
        }
        for col in x[kd..kd + dn].chunks_exact_mut(d) {
            col.iter_mut().zip(u).for_each(|(h, uj)| *h += uj);
        }
        x[kd + dn..].iter_mut().zip(&wu).for_each(|(b, s)| *b -= s);
        true
    }

    /// `Z = W H + b 1^T` into `z` (K x N).
    pub fn logits(&self, x: &[f64], z: &mut [f64]) {
        let p = self.split(x);
        gemm(1.0, p.w, false, p.h, false, 0.0, z);
        for col in z.chunks_exact_mut(self.k) {
            col.iter_mut().zip(p.b).for_each(|(v, bj)| *v += bj);
        }
    }

    /// Overwrites `z` (logits on entry) with `G = dL/dZ / N` and returns `(1/N) sum_i L_i`.
    pub fn data_term_and_dual(&self, z: &mut [f64]) -> f64 {
        let inv_n = 1.0 / self.n as f64;
        let mut total = 0.0;
        for (col, &s) in z.chunks_exact_mut(self.k).zip(&self.labels.set_of) {
            total += loss_and_grad_in_place(self.loss, col, &self.labels.sets[s as usize], inv_n);
        }
        total * inv_n
    }

    /// The regulariser `lw/2 ||W||^2 + lh/2 ||H||^2 + lb/2 ||b||^2`.
    pub fn regulariser(&self, x: &[f64]) -> f64 {
        let p = self.split(x);
        let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
        0.5 * (self.lw * sq(p.w.data) + self.lh * sq(p.h.data) + self.lb * sq(p.b))
    }

    /// Objective value alone.
    pub fn value(&self, x: &[f64]) -> f64 {
        let mut z = vec![0.0; self.k * self.n];
        self.logits(x, &mut z);
        self.data_term_and_dual(&mut z) + self.regulariser(x)
    }

    /// Objective and gradient, fused and chunked over samples (see [`Workspace`]).
    ///
    /// Per chunk of [`SAMPLE_CHUNK`] samples: `Z_c = W H_c + b 1^T`; one pass turns it into
    /// `G_c` and the loss; then `dH_c = W^T G_c + lh H_c`, and the partials `G_c H_c^T`,
    /// `G_c 1` and `||H_c||^2`. Partials are summed in chunk order, so the result is
    /// bit-identical whether chunks run on one thread or many.
    pub fn value_and_gradient(&self, x: &[f64], grad: &mut [f64], ws: &mut Workspace) -> f64 {
        let p = self.split(x);
        self.eval_chunks(p.w.data, p.b, Features::Read(p.h.data), grad, ws, None)
    }

    /// [`value_and_gradient`](Self::value_and_gradient) with the caller's hooks run inside
    /// the chunk loop (see [`ChunkHooks`]): `before` fills W and b first, then each chunk's
    /// `H_c` just before that chunk is evaluated; `after` sees each `dH_c` as soon as it is
    /// written, and dW, db once they are reduced. Slots: 0 = W, 1 = b, 2 + c = chunk c.
    pub fn value_and_gradient_hooked(&self, x: &mut [f64], grad: &mut [f64], ws: &mut Workspace, hooks: &dyn ChunkHooks) -> f64 {
        let (kd, dn) = (self.k * self.d, self.d * self.n);
        let (w, rest) = x.split_at_mut(kd);
        let (h, b) = rest.split_at_mut(dn);
        hooks.before(0, 0..kd, w, None);
        hooks.before(1, kd + dn..kd + dn + self.k, b, None);
        self.eval_chunks(w, b, Features::Fill(SharedMut::new(h)), grad, ws, Some(hooks))
    }

    fn pre_view<'a>(&'a self, first: usize, count: usize, wt: &'a [f64], m: &'a [f64], isa: Isa) -> SamplePre<'a> {
        SamplePre { first, count, d: self.d, k: self.k, layout: &self.pre, labels: &self.labels, wt, m, isa }
    }

    /// Number of hook slots of [`value_and_gradient_hooked`](Self::value_and_gradient_hooked).
    pub fn hook_slots(&self) -> usize {
        2 + self.chunks()
    }

    /// Number of chunks of the samples (see [`chunk_len`]).
    pub fn chunks(&self) -> usize {
        self.n.div_ceil(self.chunk_len())
    }

    fn chunk_len(&self) -> usize {
        chunk_len(self.n, self.k * self.d * self.n)
    }

    /// The samples of chunk `c`.
    pub fn chunk_range(&self, c: usize) -> std::ops::Range<usize> {
        let len = self.chunk_len();
        c * len..((c + 1) * len).min(self.n)
    }

    fn eval_chunks(&self, w: &[f64], b: &[f64], h: Features<'_>, grad: &mut [f64], ws: &mut Workspace, hooks: Option<&dyn ChunkHooks>) -> f64 {
        let (k, d, n) = (self.k, self.d, self.n);
        let (kd, dn) = (k * d, d * n);
        let w = Mat::new(w, k, d);
        let (gw, rest) = grad.split_at_mut(kd);
        let (gh, gb) = rest.split_at_mut(dn);
        let chunks = self.chunks();
        ws.products.prepare(w);
        // The preconditioner's factors: `cur` holds the previous evaluation's (the point the
        // solver's direction starts from), `nxt` receives this one's.
        let pre_on = ws.pre_on;
        if pre_on {
            ws.pre_cur ^= 1;
            let nxt = &mut ws.pre[ws.pre_cur ^ 1];
            for a in 0..k {
                for j in 0..d {
                    nxt.wt[a * d + j] = w.data[a + k * j];
                }
            }
            gemm(1.0, w, false, w, true, 0.0, &mut ws.wwt);
        }
        let (pa, pb) = ws.pre.split_at_mut(1);
        let (cur_f, nxt_f) = if ws.pre_cur == 0 { (&pa[0], &mut pb[0]) } else { (&pb[0], &mut pa[0]) };
        let (nxt_wt, nxt_m) = (&nxt_f.wt[..], SharedMut::new(&mut nxt_f.m));
        let wwt = &ws.wwt[..];
        let tau = 1.0 / (n as f64 * PRE_C0 * self.lh);
        let layout = &self.pre;
        let products = &ws.products;
        let (isa, exp) = (ws.isa, ws.exp);
        let (zs, ghs, dws, dbs) = (SharedMut::new(&mut ws.z), SharedMut::new(gh), SharedMut::new(&mut ws.dw), SharedMut::new(&mut ws.db));
        let inv_n = 1.0 / n as f64;
        let body = |c: usize| -> [f64; 2] {
            let r = self.chunk_range(c);
            let m = r.len();
            let hr = d * r.start..d * r.end;
            // SAFETY: chunk c owns columns r of Z, H and dH, and block c of the partials.
            let (z, ghc, dwc, dbc) =
                unsafe { (zs.slice(k * r.start..k * r.end), ghs.slice(hr.clone()), dws.slice(kd * c..kd * (c + 1)), dbs.slice(k * c..k * (c + 1))) };
            let hd: &[f64] = match &h {
                Features::Read(all) => &all[hr.clone()],
                Features::Fill(hs) => {
                    // SAFETY: as above; nothing else reads or writes these columns meanwhile.
                    let hc = unsafe { hs.slice(hr.clone()) };
                    if let Some(hk) = hooks {
                        let pre = pre_on.then(|| self.pre_view(r.start, m, &cur_f.wt, &cur_f.m[layout.moff[r.start]..layout.moff[r.end]], isa));
                        hk.before(2 + c, kd + hr.start..kd + hr.end, hc, pre.as_ref().map(|p| p as &dyn RangePreconditioner));
                    }
                    hc
                }
            };
            let hc = Mat::new(hd, d, m);
            products.logits(w, hc, z);
            dbc.iter_mut().for_each(|v| *v = 0.0);
            let loss = isa.run(
                #[inline(always)]
                || {
                    let mut loss = 0.0;
                    for (col, &s) in z.chunks_exact_mut(k).zip(&self.labels.set_of[r.clone()]) {
                        loss += loss_grad_bias_in_place(self.loss, col, b, &self.labels.sets[s as usize], inv_n, dbc, exp);
                    }
                    loss
                },
            );
            let mc: &[f64] = if pre_on {
                let mr = layout.moff[r.start]..layout.moff[r.end];
                // SAFETY: chunk c owns its samples' entries of M.
                let mc = unsafe { nxt_m.slice(mr.clone()) };
                for (s, (col, &set)) in z.chunks_exact(k).zip(&self.labels.set_of[r.clone()]).enumerate() {
                    let i = r.start + s;
                    if layout.rank[i] > 0 {
                        let labels = &self.labels.sets[set as usize];
                        let o = layout.moff[i] - mr.start;
                        sample_m(col, labels, wwt, k, self.loss.weight(labels.len()), inv_n, tau, &mut mc[o..layout.moff[i + 1] - mr.start]);
                    }
                }
                mc
            } else {
                &[]
            };
            let gc = Mat::new(z, k, m);
            products.grad_w(gc, hc, dwc);
            let hsq = products.grad_h(w, gc, hc, self.lh, ghc);
            if let Some(hk) = hooks {
                let pre = pre_on.then(|| self.pre_view(r.start, m, nxt_wt, mc, isa));
                hk.after(2 + c, kd + hr.start..kd + hr.end, ghc, pre.as_ref().map(|p| p as &dyn RangePreconditioner));
            }
            [loss, hsq]
        };
        let parts = &mut ws.parts[..chunks];
        if chunks > 1 && k * d * n >= PARALLEL_FLOPS {
            parts.par_iter_mut().enumerate().for_each(|(c, out)| *out = body(c));
        } else {
            parts.iter_mut().enumerate().for_each(|(c, out)| *out = body(c));
        }
        let (mut loss, mut hsq) = (0.0, 0.0);
        for pt in parts.iter() {
            loss += pt[0];
            hsq += pt[1];
        }
        gw.iter_mut().zip(w.data).for_each(|(o, w)| *o = self.lw * w);
        gb.iter_mut().zip(b).for_each(|(o, b)| *o = self.lb * b);
        for c in 0..chunks {
            gw.iter_mut().zip(&ws.dw[kd * c..kd * (c + 1)]).for_each(|(o, v)| *o += v);
            gb.iter_mut().zip(&ws.db[k * c..k * (c + 1)]).for_each(|(o, v)| *o += v);
        }
        if let Some(hk) = hooks {
            hk.after(0, 0..kd, gw, None);
            hk.after(1, kd + dn..kd + dn + k, gb, None);
        }
        let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
        ws.data_term = loss * inv_n;
        loss * inv_n + 0.5 * (self.lw * sq(w.data) + self.lh * hsq + self.lb * sq(b))
    }

    /// `G G^T` (K x K) of the dual matrix `G = dL/dZ / N` that the last evaluation left in the
    /// workspace, chunked and parallel like the evaluation, summed in chunk order.
    pub fn dual_gram(&self, ws: &mut Workspace) -> Vec<f64> {
        let (k, n) = (self.k, self.n);
        let chunks = self.chunks();
        ws.gram.resize(chunks * k * k, 0.0);
        let z = &ws.z;
        let body = |(c, gr): (usize, &mut [f64])| {
            let r = self.chunk_range(c);
            let gc = Mat::new(&z[k * r.start..k * r.end], k, r.len());
            gemm(1.0, gc, false, gc, true, 0.0, gr);
        };
        if chunks > 1 && k * k * n >= PARALLEL_FLOPS {
            ws.gram.par_chunks_mut(k * k).enumerate().for_each(body);
        } else {
            ws.gram.chunks_mut(k * k).enumerate().for_each(body);
        }
        let mut gram = vec![0.0; k * k];
        for part in ws.gram.chunks(k * k) {
            gram.iter_mut().zip(part).for_each(|(o, v)| *o += v);
        }
        gram
    }

    /// The certificate's pass, chunked and parallel like the objective: writes
    /// `G = dL/dZ / N` into the workspace, each column's softmax negative entropy
    /// `sum_j sigma_j log sigma_j = sum_j sigma_j u_j - LSE(u)`, and returns `(G G^T, G 1)`.
    pub fn dual_pass(&self, x: &[f64], ws: &mut Workspace) -> (Vec<f64>, Vec<f64>) {
        let (k, d, n) = (self.k, self.d, self.n);
        let p = self.split(x);
        let chunks = self.chunks();
        ws.gram.resize(chunks * k * k, 0.0);
        ws.neg_entropy.resize(n, 0.0);
        let products = &ws.products;
        let isa = ws.isa;
        let (zs, grs, dbs, es) = (SharedMut::new(&mut ws.z), SharedMut::new(&mut ws.gram), SharedMut::new(&mut ws.db), SharedMut::new(&mut ws.neg_entropy));
        let inv_n = 1.0 / n as f64;
        let body = |c: usize| {
            let r = self.chunk_range(c);
            let m = r.len();
            // SAFETY: chunk c owns columns r of Z, entries r of the entropies, and block c of the partials.
            let (z, gr, dbc, ec) =
                unsafe { (zs.slice(k * r.start..k * r.end), grs.slice(k * k * c..k * k * (c + 1)), dbs.slice(k * c..k * (c + 1)), es.slice(r.clone())) };
            let hc = Mat::new(&p.h.data[d * r.start..d * r.end], d, m);
            products.logits(p.w, hc, z);
            dbc.iter_mut().for_each(|v| *v = 0.0);
            isa.run(
                #[inline(always)]
                || {
                    for ((col, &s), e) in z.chunks_exact_mut(k).zip(&self.labels.set_of[r.clone()]).zip(ec.iter_mut()) {
                        col.iter_mut().zip(p.b).for_each(|(v, bj)| *v += bj);
                        *e = loss_grad_entropy_in_place::<true>(self.loss, col, &self.labels.sets[s as usize], inv_n).1;
                        dbc.iter_mut().zip(col.iter()).for_each(|(o, v)| *o += v);
                    }
                },
            );
            let gc = Mat::new(z, k, m);
            gemm(1.0, gc, false, gc, true, 0.0, gr);
        };
        if chunks > 1 && k * d * n >= PARALLEL_FLOPS {
            (0..chunks).into_par_iter().for_each(body);
        } else {
            (0..chunks).for_each(body);
        }
        let (mut gram, mut g1) = (vec![0.0; k * k], vec![0.0; k]);
        for c in 0..chunks {
            gram.iter_mut().zip(&ws.gram[k * k * c..k * k * (c + 1)]).for_each(|(o, v)| *o += v);
            g1.iter_mut().zip(&ws.db[k * c..k * (c + 1)]).for_each(|(o, v)| *o += v);
        }
        (gram, g1)
    }

    /// A bound on the rounding error of `f` at `x` in float64, relative to `|f|`
    /// (docs/theory.md §7). A sample's loss is formed from logits as large as `max_j |z_j|`,
    /// which carry rounding errors of `sqrt(d) eps ||w_j|| ||h_i||` themselves; both move the
    /// loss by up to its sensitivity to the logits times those errors: `c` in general, but only
    /// `c tail / sum` (the probability off the label) for a single label at the maximum logit,
    /// whose loss is computed as `c log1p(tail)` (`model::loss`). So each sample is off by
    /// about `4 eps c (max |z| + sqrt(d) max ||w|| ||h_i||) rho_i + 4 eps L_i`,
    /// `rho_i = tail / sum` or 1; the regulariser by a few ulps.
    pub fn rounding_bound(&self, x: &[f64], f: f64) -> f64 {
        let (k, n) = (self.k, self.n);
        let p = self.split(x);
        let mut z = vec![0.0; k * n];
        self.logits(x, &mut z);
        let wmax = (0..k).map(|a| (0..self.d).map(|j| p.w.data[a + k * j].powi(2)).sum::<f64>().sqrt()).fold(0.0, f64::max);
        let sqrt_d = (self.d as f64).sqrt();
        let mut total = 0.0;
        for (i, col) in z.chunks_exact(k).enumerate() {
            let set = &self.labels.sets[self.labels.set_of[i] as usize];
            let c = self.loss.weight(set.len());
            let mx = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let big = col.iter().fold(0.0f64, |a, v| a.max(v.abs())) + sqrt_d * wmax * p.h.col(i).iter().map(|v| v * v).sum::<f64>().sqrt();
            let (rho, loss) = match set.as_slice() {
                [lab] if col[*lab] == mx && self.loss != Loss::Bce => {
                    let tail: f64 = col.iter().enumerate().filter(|&(j, _)| j != *lab).map(|(_, v)| (v - mx).exp()).sum();
                    (tail / (1.0 + tail), c * tail.ln_1p())
                }
                _ => (1.0, 0.0),
            };
            total += c * big * rho + loss;
        }
        4.0 * f64::EPSILON * (total / n as f64 + self.regulariser(x)) / f.abs()
    }

    /// The smallest weight decay among the regularised blocks: the curvature scale used by the
    /// stopping rule `||grad|| <= tol sqrt(2 lambda_min |f|)` (estimated gap <= tol^2 |f|).
    /// An unregularised bias (`lb = 0`) has only the loss's curvature, which does not grow
    /// with the weight decays (a softmax Hessian times `c`, eigenvalues at most `c / 2`), so
    /// the scale is then capped at 1: weight decays above 1 on W and H alone must not let the
    /// rule stop before the bias has converged (`ufm -K 4 -M 2 --lambda-h 1e300 --lambda-b 0`
    /// stopped at its start, unresolved, before the cap).
    pub fn curvature_scale(&self) -> f64 {
        let mut m = self.lw.min(self.lh);
        if self.lb > 0.0 {
            m = m.min(self.lb);
        } else {
            m = m.min(1.0);
        }
        m
    }
}

/// The most samples in a chunk of the fused objective.
pub const SAMPLE_CHUNK: usize = 512;

/// Samples per chunk of `n` samples whose products take `work` = K d N multiply-adds each:
/// the fewest chunks of at most [`SAMPLE_CHUNK`], at least two where the work is enough to
/// share ([`PARALLEL_FLOPS`]; B's 350 samples were one chunk, on one thread), made an even
/// number (two workers then take equal shares: C's 2,700 samples were five chunks of 512 and
/// one of 140, so one worker took 1,536 samples and the other 1,164), all of one length but
/// the last, rounded up to a multiple of 8 (the products' column tiles are 12, 8 and 4 wide,
/// so no chunk ends in 1-wide ones; past 60 chunks the rounding may leave one chunk fewer,
/// where the imbalance is small anyway). It depends on the problem's shape alone, so results
/// do not depend on the thread count.
pub fn chunk_len(n: usize, work: usize) -> usize {
    let mut count = n.div_ceil(SAMPLE_CHUNK);
    // Eight samples or fewer stay one chunk (a chunk's length is a multiple of 8).
    if work >= PARALLEL_FLOPS && n > 8 {
        count = count.max(2);
    }
    if count <= 1 {
        return n.max(1);
    }
    n.div_ceil(count + count % 2).next_multiple_of(8)
}

/// Below this many multiply-adds per product the objective runs on one thread, in one chunk
/// if its samples fit in one. Measured with the command on a pool worker (`crate::on_pool`),
/// per evaluation, one chunk on one thread against two chunks on two (two runs): 45 -> 31
/// and 36 us at K d N = 56,000 (preset B), 41.8 -> 36.4 and 40.5 -> 38.6 us at 34,560
/// (K = 8, M = 2, d = 12, 10 per set).
pub const PARALLEL_FLOPS: usize = 1 << 15;

/// Scratch of the fused objective: logits/G (K x N), per-chunk partials of `G H^T`, `G 1`,
/// and (loss, ||H||^2). Allocated once per solve.
pub struct Workspace {
    z: Vec<f64>,
    /// Preconditioner factors of the last two evaluations (see [`crate::model::precond`]).
    pre: [PreFactors; 2],
    pre_cur: usize,
    pre_on: bool,
    wwt: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
    parts: Vec<[f64; 2]>,
    gram: Vec<f64>,
    neg_entropy: Vec<f64>,
    products: ChunkProducts,
    /// The softmax's exponentials for `isa`.
    exp: ExpKernel,
    isa: Isa,
    /// `(1/N) sum_i L_i` of the last evaluation.
    data_term: f64,
}

impl Workspace {
    /// Scratch sized for `obj`.
    pub fn new(obj: &UfmObjective) -> Self {
        let chunks = obj.chunks().max(1);
        let isa = Isa::detect();
        Workspace {
            z: vec![0.0; obj.k * obj.n],
            pre: [PreFactors::default(), PreFactors::default()],
            pre_cur: 0,
            pre_on: false,
            wwt: Vec::new(),
            dw: vec![0.0; chunks * obj.k * obj.d],
            db: vec![0.0; chunks * obj.k],
            parts: vec![[0.0; 2]; chunks],
            gram: Vec::new(),
            neg_entropy: Vec::new(),
            products: ChunkProducts::new(isa),
            exp: ExpKernel::for_isa(isa),
            isa,
            data_term: f64::NAN,
        }
    }

    /// The same scratch with every kernel compiled for `isa` (the same bits on every
    /// instruction set; tests and benchmarks compare them).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.set_isa(isa);
        self
    }

    fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
        self.products = ChunkProducts::new(isa);
        self.exp = ExpKernel::for_isa(isa);
    }

    /// The K x N matrix G = dL/dZ / N after an evaluation or a [`UfmObjective::dual_pass`].
    pub fn dual(&self) -> &[f64] {
        &self.z
    }

    /// `sum_j sigma_ij log sigma_ij` of every column's softmax after a dual pass.
    pub fn softmax_neg_entropy(&self) -> &[f64] {
        &self.neg_entropy
    }

    /// `(1/N) sum_i L(z_i, S_i)` of the last evaluation.
    pub fn data_term(&self) -> f64 {
        self.data_term
    }
}

/// Where the features of a chunk come from: read from x, or filled by a hook first.
#[derive(Clone, Copy)]
enum Features<'a> {
    Read(&'a [f64]),
    Fill(SharedMut<'a, f64>),
}

/// A certified relative suboptimality of the last evaluated point, from the objective, the
/// point, its value, its gradient and the workspace of that evaluation (docs/theory.md §4;
/// the solves use `theory::certificate::evaluated_gap`), for the stop tolerance `tol`. When
/// `deep` is true it may take a costlier, tighter bound. Returns the gap, the tolerance it must
/// meet (derived from `tol`) and the prediction of the next check ([`CertifiedGap`]), and
/// whether the costlier bound was taken.
pub type Certifier = fn(&UfmObjective, &[f64], f64, &[f64], &mut Workspace, f64, bool) -> Option<(CertifiedGap, bool)>;

/// The share of a solve each of the two certificates may cost (so at most a tenth together).
const CERT_SHARE: f64 = 0.05;

/// The UFM objective with its scratch, as a [`FusedObjective`].
pub struct UfmEval {
    /// The objective.
    pub objective: UfmObjective,
    ws: Workspace,
    certifier: Option<Certifier>,
    /// Evaluations so far, and aligned certificates taken (their cost is budgeted).
    evals: u64,
    deep_runs: u64,
}

impl UfmEval {
    /// Wraps an objective with fresh scratch, with the preconditioner's factors when they are
    /// worth their cost ([`crate::model::precond::PreLayout::worth_it`]).
    pub fn new(objective: UfmObjective) -> Self {
        let on = objective.pre.worth_it(objective.k, objective.d);
        Self::with_preconditioner(objective, on)
    }

    /// As [`new`](Self::new), with the preconditioner on or off (on needs samples with 2 to
    /// [`crate::model::precond::MAX_RANK`] labels and a softmax loss).
    pub fn with_preconditioner(objective: UfmObjective, on: bool) -> Self {
        let mut ws = Workspace::new(&objective);
        if on && objective.pre.active() {
            ws.pre_on = true;
            for f in &mut ws.pre {
                f.wt = vec![0.0; objective.d * objective.k];
                f.m = vec![0.0; objective.pre.moff[objective.n]];
            }
            ws.wwt = vec![0.0; objective.k * objective.k];
        }
        UfmEval { objective, ws, certifier: None, evals: 0, deep_runs: 0 }
    }

    /// The same objective, offering the solver `certifier` as its certificate.
    pub fn with_certifier(mut self, certifier: Option<Certifier>) -> Self {
        self.certifier = certifier;
        self
    }

    /// The same objective with every kernel compiled for `isa` (the same bits on every
    /// instruction set).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.ws.set_isa(isa);
        self
    }
}

// SAFETY: `value_and_gradient_hooked` keeps the contract: `before` and `after` once for each
// of W (slot 0), b (slot 1) and each chunk of H's columns (slot 2 + c), which partition the
// variables; a chunk's `after` runs in the same closure as its `before`, after it; the
// preconditioner views of chunk c cover the projections of its own samples,
// `layout.off[first]..layout.off[first + count]`, disjoint across chunks, and act on H (block 0).
unsafe impl FusedObjective for UfmEval {
    fn dim(&self) -> usize {
        self.objective.dim()
    }
    fn eval(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
        self.evals += 1;
        self.objective.value_and_gradient(x, grad, &mut self.ws)
    }
    fn curvature_scale(&self) -> f64 {
        self.objective.curvature_scale()
    }
    fn hook_slots(&self) -> usize {
        self.objective.hook_slots()
    }
    fn pre_total(&self) -> usize {
        if self.ws.pre_on {
            self.objective.pre.total()
        } else {
            0
        }
    }
    /// Two blocks: (W, H) and b. W and H enter the data term only through their product, so
    /// their scales are tied (rescaling W -> aW, H -> H/a leaves it unchanged, and every
    /// stationary point has `lw ||W||^2 = lh ||H||^2`); the bias enters alone, with curvature
    /// `(1/N) sum_i A_i + lb` (`A_i` the softmax Hessian of sample i), so it gets its own
    /// initial scale. Measured (`timing`, seeds 0 to 5, iterations to the 1e-10 gap): D 170
    /// to 112 (median), E 163 to 142; splitting W from H as well made D and E worse.
    fn block_ranges(&self) -> Vec<(std::ops::Range<usize>, usize)> {
        let o = &self.objective;
        let wh = o.k * o.d + o.d * o.n;
        vec![(0..wh, 0), (wh..wh + o.k, 1)]
    }
    fn eval_hooked(&mut self, x: &mut [f64], grad: &mut [f64], hooks: &dyn ChunkHooks) -> f64 {
        self.evals += 1;
        self.objective.value_and_gradient_hooked(x, grad, &mut self.ws, hooks)
    }
    /// The scaled certificate, and the aligned one while its cost so far (about
    /// `K^2 N + 20 K N + 15 K^3` against an evaluation's `3 K d N` each time) stays within
    /// `CERT_SHARE` of the evaluations'.
    fn certified_gap(&mut self, x: &[f64], f: f64, grad: &[f64], tol: f64) -> Option<CertifiedGap> {
        let c = self.certifier?;
        let o = &self.objective;
        let (k, d, n) = (o.k as f64, o.d as f64, o.n as f64);
        let deep_cost = (k * k * n + 20.0 * k * n + 15.0 * k * k * k) / (3.0 * k * d * n);
        let deep = (self.deep_runs + 1) as f64 * deep_cost <= CERT_SHARE * self.evals as f64;
        let (checked, took) = c(&self.objective, x, f, grad, &mut self.ws, tol, deep)?;
        self.deep_runs += u64::from(took);
        Some(checked)
    }
    /// The scaled certificate costs the Gram matrix `G G^T` (K^2 N multiply-adds) and a K x K
    /// eigenvalue bound (about 10 K^3); an iteration about 1.3 evaluations of 3 K d N. Taken
    /// on average at most once every `ceil(ratio / CERT_SHARE)` iterations, it costs at most
    /// `CERT_SHARE` of the solve.
    fn certificate_period(&self) -> u64 {
        if self.certifier.is_none() {
            return 0;
        }
        let o = &self.objective;
        let (k, d, n) = (o.k as f64, o.d as f64, o.n as f64);
        let ratio = (k * k * n + 10.0 * k * k * k) / (1.3 * 3.0 * k * d * n);
        (ratio / CERT_SHARE).ceil().clamp(1.0, 1000.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::UfmConfig;
    use std::sync::Mutex;

    fn objective(loss: Loss, lb: f64) -> UfmObjective {
        let cfg = UfmConfig { classes: 4, max_labels: 3, dim: 3, per_set: vec![2, 1, 1], lambda_w: 0.01, lambda_h: 0.02, lambda_b: lb, loss };
        UfmObjective::new(&cfg.validate().unwrap())
    }

    /// Central finite differences of the whole objective against the analytic gradient.
    #[test]
    fn gradient_matches_finite_differences_for_both_losses() {
        for loss in [Loss::Pal, Loss::PalMean, Loss::Bce] {
            for lb in [0.0, 0.03] {
                let obj = objective(loss, lb);
                let x = obj.random_start(7, 0.5);
                let mut g = vec![0.0; obj.dim()];
                let mut ws = Workspace::new(&obj);
                let f = obj.value_and_gradient(&x, &mut g, &mut ws);
                assert!((f - obj.value(&x)).abs() < 1e-14);
                for j in 0..obj.dim() {
                    let h = 1e-6;
                    let (mut up, mut dn) = (x.clone(), x.clone());
                    up[j] += h;
                    dn[j] -= h;
                    let fd = (obj.value(&up) - obj.value(&dn)) / (2.0 * h);
                    assert!((fd - g[j]).abs() < 1e-8 * (1.0 + g[j].abs()), "{loss:?} lb={lb} coord {j}: {fd} vs {}", g[j]);
                }
            }
        }
    }

    /// The translation keeps every logit, lowers f by exactly the regulariser's drop, and
    /// leaves f stationary along the directions it moves in: with the analytic gradient
    /// (checked against finite differences above), `sum_i dH_i - W^T db = 0` and, for the
    /// softmax losses with `lb > 0`, `1^T db = 0`.
    #[test]
    fn translation_keeps_the_logits_and_is_stationary_along_its_directions() {
        for loss in [Loss::Pal, Loss::PalMean, Loss::Bce] {
            for lb in [0.0, 0.03] {
                let obj = objective(loss, lb);
                let (k, d, n) = (obj.k, obj.d, obj.n);
                let mut x = obj.random_start(3, 0.7);
                // Off-centre features and bias, so the step has something to do.
                x[k * d..k * d + d * n].iter_mut().enumerate().for_each(|(i, v)| *v += 0.3 * ((i % d) as f64 + 1.0));
                x[k * d + d * n..].iter_mut().enumerate().for_each(|(j, v)| *v += 0.5 + 0.1 * j as f64);
                let (mut z0, mut z1) = (vec![0.0; k * n], vec![0.0; k * n]);
                obj.logits(&x, &mut z0);
                let (f0, r0) = (obj.value(&x), obj.regulariser(&x));
                let mut y = x.clone();
                assert!(obj.translate(&mut y));
                obj.logits(&y, &mut z1);
                // Every logit moves by the same -c (c = 0 for BCE and when lb = 0): no softmax sees it.
                let shift = z1[0] - z0[0];
                if loss == Loss::Bce || lb == 0.0 {
                    assert!(shift.abs() <= 1e-13, "{loss:?} lb={lb}: shift {shift}");
                }
                for (a, b) in z0.iter().zip(&z1) {
                    assert!((b - a - shift).abs() <= 1e-13 * (1.0 + a.abs()), "{loss:?} lb={lb}: logit {a} -> {b}, shift {shift}");
                }
                let (f1, r1) = (obj.value(&y), obj.regulariser(&y));
                assert!(r1 < r0 - 1e-3, "{loss:?} lb={lb}: regulariser {r0} -> {r1}");
                assert!(((f0 - f1) - (r0 - r1)).abs() <= 1e-13, "{loss:?} lb={lb}: f drop {} vs regulariser drop {}", f0 - f1, r0 - r1);
                let mut g = vec![0.0; obj.dim()];
                obj.value_and_gradient(&y, &mut g, &mut Workspace::new(&obj));
                let (gh, gb) = (&g[k * d..k * d + d * n], &g[k * d + d * n..]);
                for j in 0..d {
                    let along: f64 = gh.chunks_exact(d).map(|c| c[j]).sum::<f64>() - (0..k).map(|a| y[a + k * j] * gb[a]).sum::<f64>();
                    assert!(along.abs() <= 1e-12, "{loss:?} lb={lb}: derivative along u_{j} is {along}");
                }
                if loss != Loss::Bce && lb > 0.0 {
                    assert!(gb.iter().sum::<f64>().abs() <= 1e-12, "{loss:?}: derivative along c is {}", gb.iter().sum::<f64>());
                }
            }
        }
    }

    /// At W = 0, H = 0, b = 0 every logit is 0: f = (1/N) sum_i c_i log K.
    #[test]
    fn value_at_origin_is_log_k_weighted() {
        let obj = objective(Loss::Pal, 0.01);
        let x = vec![0.0; obj.dim()];
        let expect: f64 = obj.labels.set_of.iter().map(|&s| obj.labels.sets[s as usize].len() as f64).sum::<f64>() * (4f64).ln() / obj.n as f64;
        assert!((obj.value(&x) - expect).abs() < 1e-14);
    }

    /// One recorded hook call: (is `before`, slot, range, the gradient `after` saw).
    type Call = (bool, usize, std::ops::Range<usize>, Vec<f64>);

    /// Hooks that fill x with a known function of the index, and record every call.
    struct Recorder {
        dim: usize,
        calls: Mutex<Vec<Call>>,
    }

    fn filled(i: usize, dim: usize) -> f64 {
        ((i * 7919) % 1013) as f64 / 1013.0 - 0.5 + 1e-3 * (i as f64 / dim as f64)
    }

    impl ChunkHooks for Recorder {
        fn before(&self, slot: usize, r: std::ops::Range<usize>, x_r: &mut [f64], _pre: Option<&dyn RangePreconditioner>) {
            assert_eq!(x_r.len(), r.len());
            for (v, i) in x_r.iter_mut().zip(r.clone()) {
                *v = filled(i, self.dim);
            }
            self.calls.lock().unwrap().push((true, slot, r, Vec::new()));
        }
        fn after(&self, slot: usize, r: std::ops::Range<usize>, g_r: &[f64], _pre: Option<&dyn RangePreconditioner>) {
            self.calls.lock().unwrap().push((false, slot, r, g_r.to_vec()));
        }
    }

    /// The chunks: as few as hold at most 512 samples, at least two where the products are
    /// large enough to share, an even number of them when there are several (up to 60;
    /// beyond, rounding the length up to 8 may leave one fewer), all of one length (a multiple
    /// of 8) but the last, covering the samples once.
    #[test]
    fn chunks_are_few_even_and_equal() {
        for n in (0..40_000).chain([166_750, 1 << 20]) {
            for work in [0, PARALLEL_FLOPS - 1, PARALLEL_FLOPS] {
                let len = chunk_len(n, work);
                let count = n.div_ceil(len);
                let fewest = n.div_ceil(SAMPLE_CHUNK).max(if work >= PARALLEL_FLOPS && n > 8 { 2 } else { 1 });
                assert!(len <= SAMPLE_CHUNK, "n = {n}: {len}");
                if fewest <= 1 {
                    assert_eq!((len, count), (n.max(1), n.min(1)), "n = {n}");
                    continue;
                }
                assert_eq!(len % 8, 0, "n = {n}");
                let even = fewest + fewest % 2;
                assert!(count <= even && count >= fewest, "n = {n}, work {work}: {count} of {len}");
                assert!(count == even || even > 60, "n = {n}, work {work}: {count} of {len}");
            }
        }
        // C's 2,700 samples: five chunks of 456 and one of 420 (three for each of two
        // workers), where they were five of 512 and one of 140; B's 350: two of 176 and 174.
        assert_eq!((chunk_len(2700, 1 << 30), 2700usize.div_ceil(chunk_len(2700, 1 << 30))), (456, 6));
        assert_eq!(chunk_len(350, 10 * 16 * 350), 176);
        assert_eq!(chunk_len(350, PARALLEL_FLOPS - 1), 350);
    }

    /// The hooked evaluation keeps the contract of `ChunkHooks` (one `before` and one `after`
    /// per range of a partition, distinct slots, `after` after its `before` and showing the
    /// final gradient) and computes exactly the plain evaluation at the point the hooks filled,
    /// on one thread or several.
    #[test]
    fn hooked_evaluation_keeps_the_contract_and_matches_the_plain_one() {
        // 4 chunks: K = 12, M = 3 has 298 label sets, 4 samples each, and 1,192 samples need
        // 3 chunks of at most 512, made even; K d N is above the threshold of the parallel
        // chunk loop.
        let cfg = UfmConfig { classes: 12, max_labels: 3, dim: 20, per_set: vec![4], lambda_w: 0.01, lambda_h: 0.02, lambda_b: 0.03, loss: Loss::Pal };
        let obj = UfmObjective::new(&cfg.validate().unwrap());
        let dim = obj.dim();
        assert_eq!(obj.chunks(), 4);
        assert!(obj.k * obj.d * obj.n >= PARALLEL_FLOPS);
        let want_x: Vec<f64> = (0..dim).map(|i| filled(i, dim)).collect();
        let mut want_g = vec![0.0; dim];
        let want_f = obj.value_and_gradient(&want_x, &mut want_g, &mut Workspace::new(&obj));
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let hooks = Recorder { dim, calls: Mutex::new(Vec::new()) };
            let (mut x, mut g) = (vec![f64::NAN; dim], vec![f64::NAN; dim]);
            let f = pool.install(|| obj.value_and_gradient_hooked(&mut x, &mut g, &mut Workspace::new(&obj), &hooks));
            assert_eq!(f.to_bits(), want_f.to_bits());
            assert!(x.iter().zip(&want_x).all(|(a, b)| a.to_bits() == b.to_bits()));
            assert!(g.iter().zip(&want_g).all(|(a, b)| a.to_bits() == b.to_bits()));
            let calls = hooks.calls.into_inner().unwrap();
            for phase in [true, false] {
                let mut seen: Vec<(usize, std::ops::Range<usize>)> = calls.iter().filter(|c| c.0 == phase).map(|c| (c.1, c.2.clone())).collect();
                assert_eq!(seen.len(), obj.hook_slots());
                seen.sort_by_key(|c| c.1.start);
                let mut slots: Vec<usize> = seen.iter().map(|c| c.0).collect();
                slots.sort_unstable();
                assert_eq!(slots, (0..obj.hook_slots()).collect::<Vec<_>>());
                assert_eq!(seen[0].1.start, 0);
                assert_eq!(seen.last().unwrap().1.end, dim);
                assert!(seen.windows(2).all(|w| w[0].1.end == w[1].1.start));
            }
            for (pos, c) in calls.iter().enumerate().filter(|c| !c.1 .0) {
                let before = calls.iter().position(|b| b.0 && b.1 == c.1 && b.2 == c.2).expect("a before for every after");
                assert!(before < pos);
                assert!(c.3.iter().zip(&g[c.2.clone()]).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
}
