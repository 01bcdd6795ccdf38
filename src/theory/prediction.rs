//! The optimum the theorem predicts (docs/theory.md §2 and §3), from a small convex problem.
//!
//! Under the ansatz `W W^T = alpha (I - 11^T/K)`, `h_S = t_m sum_{k in S} w_k`, `b = 0`, with
//! `gamma_m = alpha t_m`, minimising over alpha in closed form leaves
//!
//! `g(gamma) = sum_m p_m c_m log(m + (K-m) e^{-gamma_m}) + sqrt(sum_m q_m gamma_m^2)`,
//! `p_m = N_m / N`, `q_m = lw lh (K-1)/K N_m m (K-m)`,
//!
//! convex in gamma. It is solved by damped Newton to machine precision, then
//! `alpha = sqrt(lh sum_m N_m gamma_m^2 m(K-m)/K / (lw (K-1)))`, `t_m = gamma_m / alpha`,
//! `s_m = m gamma_m / gamma_1`, and the predicted optimum is `g(gamma*)`.
//! Trivial regime (`W = 0, H = 0` optimal) iff `sum_m a_m^2 / q_m <= 1`, `a_m = p_m c_m (K-m)/K`.
//! Multiplicities with no samples get no gamma (`None`); m = K gets gamma = 0 and h_S = 0.

use nalgebra::{DMatrix, DVector};
use serde::Serialize;

use crate::model::config::ValidConfig;
use crate::model::loss::Loss;

/// The theorem's predicted global optimum.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Predicted optimal objective `g(gamma*)` (attained when d >= K-1).
    pub objective: f64,
    /// ETF scale alpha: `W W^T = alpha (I - 11^T/K)`.
    pub alpha: f64,
    /// Logit gap per multiplicity (index m-1); `None` where there are no samples.
    pub gamma: Vec<Option<f64>>,
    /// Feature scale `t_m` with `h_S = t_m sum_{k in S} w_k`.
    pub t: Vec<Option<f64>>,
    /// Tag-wise scale `s_m = m t_m / t_1` (s_1 = 1).
    pub scale: Vec<Option<f64>>,
    /// `W = 0, H = 0` is the global minimiser.
    pub trivial: bool,
    /// The closed-form trivial-regime statistic `sum_m a_m^2 / q_m` (trivial iff <= 1).
    pub trivial_statistic: f64,
    /// d >= K-1, so the simplex ETF fits in the feature space.
    pub etf_possible: bool,
    /// Newton iterations used.
    pub newton_iterations: usize,
    /// Norm of the gradient of g at the returned gamma (0 in the trivial regime).
    pub reduced_gradient_norm: f64,
    /// The theorem covers this loss (PAL, PAL-mean). For BCE nothing is predicted: every
    /// number above is NaN and runs are `outside-theorem`.
    pub loss_covered: bool,
    /// A certified lower bound on the reduced problem's minimum, from its dual
    /// (docs/theory.md §3): the predicted optimum is at least this.
    pub lower_bound: f64,
    /// `(objective - lower_bound) / |objective|`: how far the computed prediction can be above
    /// the exact one.
    pub relative_error_bound: f64,
    /// The prediction passed every check float64 allows: the reduced problem's coefficients
    /// and minimiser in range, relative stationarity, `f* <= f(0)`, and a certified error
    /// below 1e-12.
    pub validated: bool,
    /// Why it did not, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unvalidated_reason: Option<String>,
}

/// Largest logit gap float64 resolves: beyond it `e^{-gamma}` is no longer a normal number.
const MAX_GAMMA: f64 = 700.0;

/// Largest certified relative error of a validated prediction.
const MAX_RELATIVE_ERROR: f64 = 1e-12;

/// Coefficients of the reduced problem for one configuration.
struct Reduced {
    k: f64,
    /// (m, p_m c_m, q_m) for each multiplicity with samples and m < K.
    active: Vec<(usize, f64, f64)>,
    /// Constant loss from multiplicity K (every label): p_K c_K log K.
    constant: f64,
}

impl Reduced {
    fn new(k: usize, n_m: &[usize], loss: Loss, lw: f64, lh: f64) -> Self {
        let n: f64 = n_m.iter().map(|&v| v as f64).sum();
        let kf = k as f64;
        let mut active = Vec::new();
        let mut constant = 0.0;
        for (i, &nm) in n_m.iter().enumerate() {
            let m = i + 1;
            if nm == 0 {
                continue;
            }
            let pc = nm as f64 / n * loss.weight(m);
            if m == k {
                constant += pc * kf.ln();
            } else {
                let q = lw * lh * (kf - 1.0) / kf * nm as f64 * m as f64 * (kf - m as f64);
                active.push((m, pc, q));
            }
        }
        Reduced { k: kf, active, constant }
    }

    /// `log(m + (K-m) e^{-g})`, and sigma = `(K-m)e^{-g} / (m + (K-m)e^{-g})`.
    fn log_term(&self, m: usize, g: f64) -> (f64, f64) {
        let mf = m as f64;
        let r = (self.k - mf) / mf * (-g).exp();
        (mf.ln() + r.ln_1p(), r / (1.0 + r))
    }

    /// `sqrt(sum_m q_m gamma_m^2)`, scaled by the largest gamma so that no square over- or
    /// underflows.
    fn norm(&self, gamma: &[f64]) -> f64 {
        let top = gamma.iter().fold(0.0f64, |a, g| a.max(g.abs()));
        if top == 0.0 {
            return 0.0;
        }
        top * self.active.iter().zip(gamma).map(|(&(_, _, q), &g)| q * (g / top) * (g / top)).sum::<f64>().sqrt()
    }

    fn value(&self, gamma: &[f64]) -> f64 {
        let mut v = self.constant;
        for (&(m, pc, _), &g) in self.active.iter().zip(gamma) {
            v += pc * self.log_term(m, g).0;
        }
        v + self.norm(gamma)
    }

    fn gradient_hessian(&self, gamma: &[f64]) -> (DVector<f64>, DMatrix<f64>) {
        let a = self.active.len();
        let r = self.norm(gamma);
        let mut grad = DVector::zeros(a);
        let mut hess = DMatrix::zeros(a, a);
        // q_m gamma_m / r, computed as (q_m gamma_m / top) / (r / top).
        let top = gamma.iter().fold(0.0f64, |a, g| a.max(g.abs())).max(f64::MIN_POSITIVE);
        let qg: Vec<f64> = self.active.iter().zip(gamma).map(|(&(_, _, q), &g)| q * (g / top) / (r / top)).collect();
        for (i, (&(m, pc, q), &g)) in self.active.iter().zip(gamma).enumerate() {
            let (_, s) = self.log_term(m, g);
            grad[i] = -pc * s + qg[i];
            hess[(i, i)] = pc * s * (1.0 - s) + q / r;
            for j in 0..a {
                hess[(i, j)] -= qg[i] * qg[j] / r;
            }
        }
        (grad, hess)
    }

    /// Start on the ray gamma = t v, `v = (a/q) / max(a/q)` (the direction of the minimiser as
    /// lambda -> lambda_c), with t minimising the convex 1-D function g(t v): bisection on the
    /// sign of its derivative, in log t over [1e-300, MAX_GAMMA], so that it resolves any scale.
    fn ray_start(&self) -> Vec<f64> {
        let v: Vec<f64> = self.active.iter().map(|&(m, pc, q)| pc * (self.k - m as f64) / self.k / q).collect();
        let top = v.iter().copied().fold(0.0, f64::max);
        let v: Vec<f64> = v.iter().map(|x| x / top).collect();
        let dir = |t: f64| -> f64 {
            let g: Vec<f64> = v.iter().map(|x| t * x).collect();
            self.gradient_hessian(&g).0.iter().zip(&v).map(|(a, b)| a * b).sum()
        };
        let (mut lo, mut hi) = (1e-300f64.ln(), MAX_GAMMA.ln());
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if dir(mid.exp()) < 0.0 {
                lo = mid
            } else {
                hi = mid
            }
        }
        let t = (0.5 * (lo + hi)).exp();
        v.iter().map(|x| t * x).collect()
    }

    /// A certified lower bound on min g, from the dual of the reduced problem
    /// (docs/theory.md §3): for shares `sigma_m` in [0, 1] with
    /// `sum_m (pc_m sigma_m)^2 / q_m <= 1`,
    /// `min g >= const + sum_m pc_m [sigma_m log(K-m) + (1-sigma_m) log m - h(sigma_m)]`,
    /// `h(s) = s log s + (1-s) log(1-s)`. The shares are those of `gamma`, scaled into the
    /// ellipsoid.
    fn dual_bound(&self, gamma: &[f64]) -> f64 {
        let mut sigma: Vec<f64> = self.active.iter().zip(gamma).map(|(&(m, _, _), &g)| self.log_term(m, g).1).collect();
        let norm2: f64 = self.active.iter().zip(&sigma).map(|(&(_, pc, q), &s)| (pc * s) * (pc * s) / q).sum();
        if norm2 > 1.0 {
            let shrink = 1.0 / norm2.sqrt();
            sigma.iter_mut().for_each(|s| *s *= shrink);
        }
        let h = |s: f64| (if s > 0.0 { s * s.ln() } else { 0.0 }) + (1.0 - s) * (-s).ln_1p();
        self.constant
            + self
                .active
                .iter()
                .zip(&sigma)
                .map(|(&(m, pc, _), &s)| {
                    let mf = m as f64;
                    pc * (s * (self.k - mf).ln() + (1.0 - s) * mf.ln() - h(s))
                })
                .sum::<f64>()
    }

    /// The checks of a computed minimiser float64 can back (`None`: all pass).
    fn check(&self, gamma: &[f64], trivial: bool) -> Option<String> {
        if let Some(&(m, _, q)) = self.active.iter().find(|a| !(a.2.is_finite() && a.2 >= f64::MIN_POSITIVE)) {
            return Some(format!("the reduced problem's coefficient q_{m} = lambda_w lambda_h (K-1)/K N_m m (K-m) = {q:.3e} is outside what float64 resolves"));
        }
        if trivial {
            return None;
        }
        if let Some((&(m, _, _), &g)) = self.active.iter().zip(gamma).find(|(_, &g)| !(g > 0.0 && g < MAX_GAMMA)) {
            return Some(format!("the predicted logit gap gamma_{m} = {g:.3e} is outside (0, {MAX_GAMMA}), where float64 resolves e^(-gamma)"));
        }
        let r = self.norm(gamma);
        for (&(m, pc, q), &g) in self.active.iter().zip(gamma) {
            let (loss, reg) = (pc * self.log_term(m, g).1, q * g / r);
            if !((loss - reg).abs() <= 1e-10 * (loss + reg)) {
                return Some(format!("the reduced problem is not stationary to 1e-10 relative at m = {m} ({loss:.3e} against {reg:.3e})"));
            }
        }
        let (f, f0) = (self.value(gamma), self.value(&vec![0.0; gamma.len()]));
        if !(f <= f0) {
            return Some(format!("the predicted optimum {f:.6e} is above f(0) = {f0:.6e}, which no optimum can be"));
        }
        None
    }

    /// Damped Newton from the ray start, keeping every gamma_m > 0 (the minimiser is
    /// strictly positive outside the trivial regime). A step is accepted on Armijo decrease of g,
    /// or, once decreases are below what f64 resolves in g (near the trivial threshold gamma*
    /// is tiny and g is flat), on a decrease of ||grad g||. Stops when the step is below
    /// 1e-16 relative to gamma, or nothing decreases.
    fn solve(&self) -> (Vec<f64>, usize, f64) {
        let mut gamma = self.ray_start();
        let mut f = self.value(&gamma);
        let (mut grad, mut hess) = self.gradient_hessian(&gamma);
        let mut iters = 0;
        for it in 0..500 {
            iters = it + 1;
            let step = match hess.clone().cholesky() {
                Some(ch) => -ch.solve(&grad),
                None => -grad.clone(),
            };
            let decrement = -grad.dot(&step);
            let gnorm = grad.norm();
            if !(decrement > 0.0) || step.norm() <= 1e-16 * gamma.iter().map(|g| g * g).sum::<f64>().sqrt() {
                break;
            }
            let mut t = 1.0;
            let mut accepted = false;
            while t > 1e-20 {
                let cand: Vec<f64> = gamma.iter().zip(step.iter()).map(|(g, s)| g + t * s).collect();
                if cand.iter().any(|&g| !(g > 0.0)) {
                    t *= 0.5;
                    continue;
                }
                let fc = self.value(&cand);
                let armijo = fc <= f - 1e-4 * t * decrement;
                let flat = t * decrement <= 64.0 * f64::EPSILON * f.abs();
                let (gc, hc) = self.gradient_hessian(&cand);
                if armijo || (flat && gc.norm() < gnorm) {
                    gamma = cand;
                    f = fc;
                    grad = gc;
                    hess = hc;
                    accepted = true;
                    break;
                }
                t *= 0.5;
            }
            if !accepted {
                break;
            }
        }
        (gamma, iters, grad.norm())
    }
}

/// Predicts the optimum of a validated configuration.
pub fn predict(cfg: &ValidConfig) -> Prediction {
    let c = &cfg.config;
    let n_m = cfg.labels.samples_per_multiplicity();
    predict_counts(c.classes, c.dim, &n_m, c.loss, c.lambda_w, c.lambda_h)
}

/// Predicts the optimum from the per-multiplicity sample counts N_m.
pub fn predict_counts(k: usize, d: usize, n_m: &[usize], loss: Loss, lw: f64, lh: f64) -> Prediction {
    if loss == Loss::Bce {
        let none = vec![None; n_m.len()];
        return Prediction {
            objective: f64::NAN,
            alpha: f64::NAN,
            gamma: none.clone(),
            t: none.clone(),
            scale: none,
            trivial: false,
            trivial_statistic: f64::NAN,
            etf_possible: d + 1 >= k,
            newton_iterations: 0,
            reduced_gradient_norm: f64::NAN,
            loss_covered: false,
            lower_bound: f64::NAN,
            relative_error_bound: f64::NAN,
            validated: false,
            unvalidated_reason: Some("nothing is predicted for the BCE loss".into()),
        };
    }
    let red = Reduced::new(k, n_m, loss, lw, lh);
    let stat = crate::model::loss::trivial_statistic(loss, k, n_m, lw, lh);
    let trivial = red.active.is_empty() || stat <= 1.0;
    let (gamma_active, iters, grad_norm) = if trivial { (vec![0.0; red.active.len()], 0, 0.0) } else { red.solve() };
    let objective = red.value(&gamma_active);
    let kf = k as f64;
    let mut gamma = vec![None; n_m.len()];
    for (&(m, _, _), &g) in red.active.iter().zip(&gamma_active) {
        gamma[m - 1] = Some(g);
    }
    if n_m.len() == k && n_m[k - 1] > 0 {
        gamma[k - 1] = Some(0.0);
    }
    let sum: f64 = red.active.iter().zip(&gamma_active).map(|(&(m, _, _), &g)| n_m[m - 1] as f64 * g * g * m as f64 * (kf - m as f64) / kf).sum();
    // sqrt(lh / lw) through logarithms, so that an extreme ratio does not overflow.
    let alpha = ((lh.ln() - lw.ln()) / 2.0).exp() * (sum / (kf - 1.0)).sqrt();
    let lower_bound = if trivial { objective } else { red.dual_bound(&gamma_active) };
    let relative_error_bound = (objective - lower_bound) / objective.abs();
    let mut unvalidated_reason = red.check(&gamma_active, trivial);
    if unvalidated_reason.is_none() && !trivial {
        if !(alpha.is_finite() && alpha > 0.0) {
            unvalidated_reason = Some(format!("the predicted ETF scale alpha = {alpha:.3e} is outside what float64 resolves"));
        } else if !(relative_error_bound <= MAX_RELATIVE_ERROR) {
            unvalidated_reason = Some(format!("the reduced problem's certified error {relative_error_bound:.1e} is above {MAX_RELATIVE_ERROR:.0e}"));
        }
    }
    let t: Vec<Option<f64>> = gamma.iter().map(|g| g.and_then(|g| if alpha > 0.0 { Some(g / alpha) } else { None })).collect();
    let g1 = gamma.first().copied().flatten().filter(|&g| g > 0.0);
    let scale = gamma
        .iter()
        .enumerate()
        .map(|(i, g)| match (g, g1) {
            (Some(g), Some(g1)) => Some((i + 1) as f64 * g / g1),
            _ => None,
        })
        .collect();
    Prediction {
        objective,
        alpha,
        gamma,
        t,
        scale,
        trivial,
        trivial_statistic: stat,
        etf_possible: d + 1 >= k,
        newton_iterations: iters,
        reduced_gradient_norm: grad_norm,
        loss_covered: true,
        lower_bound,
        relative_error_bound,
        validated: unvalidated_reason.is_none(),
        unvalidated_reason,
    }
}

/// An orthonormal basis of the complement of 1 in R^K, as a K x (K-1) matrix (U U^T = I - 11^T/K).
pub fn simplex_basis(k: usize) -> DMatrix<f64> {
    let p = DMatrix::<f64>::identity(k, k) - DMatrix::from_element(k, k, 1.0 / k as f64);
    let q = p.qr().q();
    q.columns(0, k - 1).into_owned()
}

/// The flat parameter vector `[W, H, b]` of the predicted optimum (docs/theory.md §2), when d >= K-1:
/// `W = sqrt(alpha) U` (padded with zero columns), `h_S = t_m sum_{k in S} w_k`, `b = 0`.
pub fn predicted_point(cfg: &ValidConfig, pred: &Prediction) -> Option<Vec<f64>> {
    let (k, d) = (cfg.config.classes, cfg.config.dim);
    if !pred.etf_possible {
        return None;
    }
    let u = simplex_basis(k);
    let mut w = DMatrix::<f64>::zeros(k, d);
    w.columns_mut(0, k - 1).copy_from(&(u * pred.alpha.sqrt()));
    let n = cfg.labels.samples();
    let mut x = Vec::with_capacity(k * d + d * n + k);
    x.extend_from_slice(w.as_slice());
    for &s in &cfg.labels.set_of {
        let set = &cfg.labels.sets[s as usize];
        let tm = pred.t[set.len() - 1].unwrap_or(0.0);
        for j in 0..d {
            x.push(tm * set.iter().map(|&c| w[(c, j)]).sum::<f64>());
        }
    }
    x.extend(std::iter::repeat_n(0.0, k));
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// M = 1 has a closed form: with r = sqrt(q)/c, gamma = log((K-1)(1-r)/r).
    #[test]
    fn multiclass_matches_closed_form() {
        for (k, n, lam) in [(4usize, 5usize, 5e-3), (10, 3, 1e-2), (3, 20, 1e-3)] {
            let p = predict_counts(k, k, &[n * k], Loss::Pal, lam, lam);
            let kf = k as f64;
            let q = lam * lam * (kf - 1.0) / kf * (n * k) as f64 * (kf - 1.0);
            let r = q.sqrt();
            let gamma = ((kf - 1.0) * (1.0 - r) / r).ln();
            assert!((p.gamma[0].unwrap() - gamma).abs() < 1e-12 * gamma, "{:?} vs {gamma}", p.gamma);
            let f = (1.0 + (kf - 1.0) * (-gamma).exp()).ln() + r * gamma;
            assert!((p.objective - f).abs() < 1e-14 * f);
        }
    }

    /// Linearising the optimality conditions at gamma = 0 gives gamma_m proportional to a_m/q_m
    /// as lambda -> lambda_c, so s_m -> m (a_m/q_m)/(a_1/q_1); with equal n across multiplicities
    /// a_m/q_m is the same for all m and s_m -> m.
    #[test]
    fn scale_tends_to_m_at_the_trivial_threshold() {
        for (k, m) in [(6usize, 3usize), (5, 2), (8, 4)] {
            let n_m: Vec<usize> = (1..=m).map(|j| crate::model::labels::binomial(k, j) as usize).collect();
            let lam_c = predict_counts(k, k, &n_m, Loss::Pal, 1.0, 1.0).trivial_statistic.sqrt();
            for eps in [1e-3, 1e-5] {
                let lam = lam_c * (1.0 - eps);
                let p = predict_counts(k, k, &n_m, Loss::Pal, lam, lam);
                assert!(!p.trivial);
                for j in 2..=m {
                    let s = p.scale[j - 1].unwrap();
                    assert!((s - j as f64).abs() < 10.0 * eps * j as f64, "K={k} eps={eps} s_{j} = {s}");
                }
            }
        }
    }

    /// Over the whole range of lambdas float64 holds: the prediction matches the M = 1 closed
    /// form, never lies above f(0), certifies its own error below 1e-12, and is validated;
    /// where lambda_w lambda_h underflows it is refused with the reason. (The configuration of
    /// the false counterexample: the old Newton stopped at gamma = 2.9e102.)
    #[test]
    fn extreme_lambdas_are_solved_or_refused() {
        for loss in [Loss::Pal, Loss::PalMean] {
            for (lw, lh) in [(6.483e-22, 8.314e-143), (1e-150, 1e-150), (1e-8, 1e-8), (3.0, 1e-200), (1e-300, 1e-5)] {
                let p = predict_counts(2, 2, &[2], loss, lw, lh);
                let c = loss.weight(1);
                let r = (lw * lh * 0.5 * 2.0).sqrt() / c;
                let gamma = ((1.0 - r) / r).ln();
                assert!(p.validated, "lw {lw} lh {lh}: {:?}", p.unvalidated_reason);
                assert!((p.gamma[0].unwrap() - gamma).abs() <= 1e-12 * gamma, "{:?} vs {gamma}", p.gamma);
                assert!(p.objective <= c * 2f64.ln() && p.relative_error_bound <= 1e-12);
                assert!(p.lower_bound <= p.objective * (1.0 + 1e-15));
            }
            let p = predict_counts(3, 3, &[3, 3], loss, 1e-200, 1e-200);
            assert!(!p.validated && p.unvalidated_reason.as_ref().unwrap().contains("float64"), "{:?}", p.unvalidated_reason);
        }
    }

    /// The reduced dual bound is below the minimum, and tight there (to 1e-13 relative).
    #[test]
    fn reduced_dual_bound_is_tight() {
        for (k, n_m, lam) in [(5usize, vec![5usize, 10, 10], 1e-3), (10, vec![10, 45], 1e-4), (6, vec![12, 15, 20, 15], 2e-3)] {
            let p = predict_counts(k, k, &n_m, Loss::Pal, lam, lam);
            assert!(!p.trivial && p.validated, "{:?}", p.unvalidated_reason);
            // A certified bound, up to the rounding of the two sums (a few ulps).
            assert!(p.relative_error_bound > -1e-15 && p.relative_error_bound < 1e-13, "{}", p.relative_error_bound);
        }
    }

    #[test]
    fn trivial_when_lambda_is_large() {
        let p = predict_counts(4, 4, &[4, 6], Loss::Pal, 1.0, 1.0);
        assert!(p.trivial);
        assert_eq!(p.alpha, 0.0);
        // g(0) = sum_m p_m c_m log K.
        assert!((p.objective - (0.4 * 1.0 + 0.6 * 2.0) * 4f64.ln()).abs() < 1e-14);
    }

    #[test]
    fn basis_spans_the_simplex_complement() {
        let u = simplex_basis(5);
        let p = &u * u.transpose();
        let expect = DMatrix::<f64>::identity(5, 5) - DMatrix::from_element(5, 5, 0.2);
        assert!((p - expect).norm() < 1e-14);
    }
}
