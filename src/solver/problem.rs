//! What the in-place solver needs from a problem, and its limits.
//!
//! The solver defines the interface; a problem implements it (the UFM objective does, in
//! `model::objective`). The in-place L-BFGS writes its own buffers from several threads at
//! once while the objective evaluates, trusting the objective to call it on disjoint ranges:
//! that promise is the safety contract of the `unsafe trait` [`FusedObjective`].

use std::ops::Range;

/// Largest accepted L-BFGS history (the direction pass combines at most `2m + 1` vectors).
pub const MAX_HISTORY: usize = 64;

/// Most blocks of [`FusedObjective::block_ranges`].
pub const MAX_BLOCKS: usize = 3;

/// Most projections [`RangePreconditioner::quads`] pairs up: the solver's stored `y`'s, a new
/// `y`, and the gradient.
pub const QUAD_MAX: usize = MAX_HISTORY + 2;

/// What a certificate check found ([`FusedObjective::certified_gap`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CertifiedGap {
    /// A certified upper bound on the relative suboptimality `(f - min f) / |f|`.
    pub gap: f64,
    /// The tolerance `gap` must meet for the solve to stop there.
    pub target: f64,
    /// How far the gradient norm should fall (a factor below 1) before another check can meet
    /// the target, when the bound's order predicts it; `None`: no prediction.
    pub next: Option<f64>,
}

/// A preconditioner of block 0 of the form `P = I - sum_i B_i^T M_i B_i`, seen over the
/// variables of one hook range: each term acts on a few variables of that range (for the
/// UFM, the features of one sample), through a few projections `B_i v`.
///
/// Every vector's projections are laid out in one vector of
/// [`FusedObjective::pre_total`] numbers; a range owns the sub-range
/// [`proj_range`](Self::proj_range) of it. All slices below are that range's part of their
/// vector (variables, or projections).
pub trait RangePreconditioner {
    /// This range's projections, as indices into a vector of `pre_total` numbers.
    fn proj_range(&self) -> Range<usize>;
    /// `out = (B_i v)_i`, from a vector stored in f64.
    fn project(&self, v: &[f64], out: &mut [f64]);
    /// `out = (B_i v)_i`, from a vector stored in f32.
    fn project_f32(&self, v: &[f32], out: &mut [f64]);
    /// `out[idx[u] stride + idx[v]] = sum_i a_u,i^T M_i a_v,i` for every pair of the
    /// projections `a` (at most [`QUAD_MAX`]).
    fn quads(&self, a: &[&[f64]], idx: &[usize], stride: usize, out: &mut [f64]);
    /// Adds `-B_i^T M_i t_i` to `dir` (stored in f32: each changed entry is rounded again),
    /// moves `x` by `a` times each entry's change, and returns the change of `dir . g`. `t`
    /// holds the projections of the vector being preconditioned (`P v = v - B^T M (B v)`).
    fn correct(&self, t: &[f64], dir: &mut [f32], x: &mut [f64], g: &[f64], a: f64) -> f64;
}

/// Work the solver runs inside an evaluation's pass over memory, range by range, while the
/// range is in cache (the solver's direction and curvature passes; see `solver::lbfgs`).
///
/// The objective calls it as [`FusedObjective`]'s contract says. Implementing this trait
/// cannot cause undefined behaviour in the objective: it only ever sees the slices it is
/// handed.
pub trait ChunkHooks: Sync {
    /// Fills `x_r = x[r]`. `pre`: the preconditioner over `r` at the previous evaluation's
    /// point, when the objective has one.
    fn before(&self, slot: usize, r: Range<usize>, x_r: &mut [f64], pre: Option<&dyn RangePreconditioner>);
    /// Sees `g_r = grad[r]`, final. `pre`: the preconditioner over `r` at this evaluation's
    /// point.
    fn after(&self, slot: usize, r: Range<usize>, g_r: &[f64], pre: Option<&dyn RangePreconditioner>);
}

/// A smooth objective for the in-place solver: value and gradient in one call, optionally
/// with the solver's passes fused into the evaluation.
///
/// # Safety
/// The solver's hooks write their own buffers through shared raw views, one range per slot,
/// from whatever threads the objective runs them on. An implementation must therefore keep
/// this contract in [`eval_hooked`](Self::eval_hooked):
/// - `hooks.before` is called exactly once for each range of a partition of `0..dim()`,
///   each range with its own slot below [`hook_slots`](Self::hook_slots), before anything
///   reads `x[r]`;
/// - `hooks.after` is called exactly once for each range of the same partition, with the
///   same slot as that range's `before`, only after that `before` has returned, and once
///   `grad[r]` is final;
/// - the [`RangePreconditioner`]s passed with different slots have disjoint
///   [`proj_range`](RangePreconditioner::proj_range)s inside `0..pre_total()`, and lie in
///   block 0.
///
/// Calls on different slots may run concurrently. The default `eval_hooked` keeps the
/// contract (one range, slot 0).
pub unsafe trait FusedObjective {
    /// Number of variables.
    fn dim(&self) -> usize;
    /// Writes the gradient at `x` into `grad` and returns the value.
    fn eval(&mut self, x: &[f64], grad: &mut [f64]) -> f64;
    /// Curvature scale `lambda_min` of the relative stopping rule
    /// `||grad f|| <= tol sqrt(2 lambda_min |f|)`.
    fn curvature_scale(&self) -> f64;
    /// Number of slots [`eval_hooked`](Self::eval_hooked) uses.
    fn hook_slots(&self) -> usize {
        1
    }
    /// Length of the preconditioner's projections of one vector; 0 when
    /// [`eval_hooked`](Self::eval_hooked) passes no preconditioner.
    fn pre_total(&self) -> usize {
        0
    }
    /// Blocks of variables for the solver's block-diagonal initial inverse Hessian:
    /// `(range, block)` pairs partitioning `0..dim`, blocks numbered from 0 (at most
    /// [`MAX_BLOCKS`]). A hook's range may span blocks (the solver splits it). The default is
    /// one block.
    fn block_ranges(&self) -> Vec<(Range<usize>, usize)> {
        vec![(0..self.dim(), 0)]
    }
    /// A certified upper bound on the relative suboptimality `(f - min f) / |f|` of the point
    /// the last evaluation was at (`x`, with value `f` and gradient `grad`), when the objective
    /// has one, the tolerance it must meet for the solve to stop there (derived from the
    /// stop tolerance `tol`: an objective may ask for less, or accept more from a bound it
    /// knows to be pessimistic, and may spend more on a tighter bound near it), and when the
    /// next check could succeed. The default has none.
    fn certified_gap(&mut self, _x: &[f64], _f: f64, _grad: &[f64], _tol: f64) -> Option<CertifiedGap> {
        None
    }
    /// Take [`certified_gap`](Self::certified_gap) on average at most once every this many
    /// iterations (0: never), so that it costs at most a tenth of the solve.
    fn certificate_period(&self) -> u64 {
        0
    }
    /// Lets `hooks` fill `x`, evaluates there into `grad`, and shows `hooks` the gradient,
    /// range by range (see the trait's safety contract). The default is one range, around
    /// [`eval`](Self::eval).
    fn eval_hooked(&mut self, x: &mut [f64], grad: &mut [f64], hooks: &dyn ChunkHooks) -> f64 {
        let n = x.len();
        hooks.before(0, 0..n, x, None);
        let f = self.eval(x, grad);
        hooks.after(0, 0..n, grad, None);
        f
    }
}
