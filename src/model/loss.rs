//! Multi-label losses on one logit column (docs/theory.md §1), with a stable log-sum-exp (the exponentials of
//! the shifted logits come from `kernels::exp`, within 2 ulp of libm).
//!
//! The softmax losses are `L(u, S) = c_S (LSE(u) - t_S . u)` with target `t_S = 1_S / m`:
//! - PAL (pick-all-label): `c_S = m`, i.e. `m LSE(u) - sum_{k in S} u_k`;
//! - PAL-mean: `c_S = 1`, i.e. PAL divided by m.
//!
//! Gradient: `dL/du = c_S (softmax(u) - t_S)`.
//! Conjugate (used by the certificate): `L*(v) = c_S sum_j p_j log p_j` with
//! `p = v / c_S + t_S` in the probability simplex, `+inf` otherwise.
//!
//! One-vs-all binary cross-entropy (BCE): `L(u, S) = sum_j softplus(u_j) - y_j u_j`,
//! `y = 1_S`, softplus(x) = max(x, 0) + log(1 + e^{-|x|}); gradient `sigmoid(u) - y`;
//! conjugate `L*(v) = sum_j h(v_j + y_j)`, `h(p) = p log p + (1-p) log(1-p)` on [0, 1].

use serde::{Deserialize, Serialize};

use crate::kernels::exp::{exp_nonpos_in_place, exp_shifted_sum, ExpKernel};

/// Which multi-label loss the UFM is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Pick-all-label cross-entropy: sum over the labels of the cross-entropy.
    Pal,
    /// Pick-all-label divided by the number of labels (multi-hot targets normalised to sum 1).
    PalMean,
    /// One-vs-all binary cross-entropy (a sigmoid per class).
    Bce,
}

impl Loss {
    /// The weight c_m of a sample with m labels.
    pub fn weight(self, m: usize) -> f64 {
        match self {
            Loss::Pal => m as f64,
            Loss::PalMean | Loss::Bce => 1.0,
        }
    }

    /// Every loss.
    pub const ALL: [Loss; 3] = [Loss::Pal, Loss::PalMean, Loss::Bce];

    /// The loss of a command-line name (`pal`, `pal-mean` or `bce`).
    pub fn from_name(name: &str) -> crate::error::Result<Loss> {
        Self::ALL.into_iter().find(|l| l.name() == name).ok_or_else(|| crate::error::Error::new(format!("loss: unknown loss '{name}' (pal, pal-mean or bce)")))
    }

    /// Name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Pal => "pal",
            Loss::PalMean => "pal-mean",
            Loss::Bce => "bce",
        }
    }
}

/// Evaluates `L(u, S)` and overwrites `u` with `scale * dL/du`.
///
/// `u` holds the logits on entry. Uses `LSE(u) = max + log sum exp(u - max)`.
#[inline(always)]
pub fn loss_and_grad_in_place(loss: Loss, u: &mut [f64], set: &[usize], scale: f64) -> f64 {
    loss_grad_entropy_in_place::<false>(loss, u, set, scale).0
}

/// As [`loss_and_grad_in_place`]; with `ENTROPY` also returns the softmax's negative entropy
/// `sum_j sigma_j log sigma_j = sum_j sigma_j (u_j - max) - log sum_j exp(u_j - max)`,
/// from the same exponentials.
#[inline(always)]
pub fn loss_grad_entropy_in_place<const ENTROPY: bool>(loss: Loss, u: &mut [f64], set: &[usize], scale: f64) -> (f64, f64) {
    if loss == Loss::Bce {
        return (bce_and_grad_in_place(u, set, scale), 0.0);
    }
    let m = set.len();
    let c = loss.weight(m);
    let mx = lane_max(u);
    let in_set: f64 = set.iter().map(|&k| u[k]).sum();
    let mut su = 0.0;
    let sum = if ENTROPY {
        // Keep the shifted logits of each block for sum_j e_j shifted_j; the exponentials
        // come from the same vectorised kernel (same bits).
        let mut shifted = [0.0f64; 64];
        for block in u.chunks_mut(64) {
            let sh = &mut shifted[..block.len()];
            for (s, v) in sh.iter_mut().zip(block.iter_mut()) {
                *v -= mx;
                *s = *v;
            }
            exp_nonpos_in_place(block);
            su += block.iter().zip(sh.iter()).map(|(e, s)| e * s).sum::<f64>();
        }
        lane_sum(u)
    } else {
        // Same bits as the shift, exp and lane_sum above.
        exp_shifted_sum(u, mx)
    };
    let tail = single_label_tail(u, set);
    let ln_sum = tail.map_or_else(|| sum.ln(), f64::ln_1p);
    let neg_entropy = if ENTROPY { su / sum - ln_sum } else { 0.0 };
    let a = c * scale / sum;
    let value = match tail {
        Some(t) => {
            u[set[0]] = 0.0;
            for v in u.iter_mut() {
                *v *= a;
            }
            u[set[0]] = -(c * scale) * (t / sum);
            c * ln_sum
        }
        None => {
            for v in u.iter_mut() {
                *v *= a;
            }
            let t = c * scale / m as f64;
            for &k in set {
                u[k] -= t;
            }
            c * ((mx + ln_sum) - in_set / m as f64)
        }
    };
    (value, neg_entropy)
}

/// For a single label at the maximum logit (its exponential, shifted by the maximum, is
/// exactly 1), the rest of the softmax's sum, `sum_{j != k} e^{u_j - max}`, added up apart
/// from the 1. Then the loss is `c log1p(tail)` and the label's gradient entry
/// `-c scale tail / sum`, both to full relative precision however small the loss: formed
/// as `LSE - u_k` and `1/sum - 1`, they would keep only the digits that survive next to the
/// logits and next to 1 (docs/theory.md §1). `e` holds the shifted exponentials.
#[inline(always)]
fn single_label_tail(e: &[f64], set: &[usize]) -> Option<f64> {
    match set {
        [k] if e[*k] == 1.0 => Some(e.iter().enumerate().filter(|&(j, _)| j != *k).map(|(_, v)| v).sum()),
        _ => None,
    }
}

/// The objective's per-sample step, fused into three passes over the column: adds the bias
/// to the logits `u` (finding their maximum), evaluates the loss, overwrites `u` with
/// `scale dL/du`, and adds that into `db`. The value and `u` are bit-identical to `u += bias`
/// then [`loss_and_grad_in_place`]; `db` gets the same sum up to rounding. `exp` computes the
/// exponentials (every kernel gives the same bits).
#[inline(always)]
pub fn loss_grad_bias_in_place(loss: Loss, u: &mut [f64], bias: &[f64], set: &[usize], scale: f64, db: &mut [f64], exp: ExpKernel) -> f64 {
    if loss == Loss::Bce {
        u.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        let value = bce_and_grad_in_place(u, set, scale);
        db.iter_mut().zip(u.iter()).for_each(|(d, v)| *d += v);
        return value;
    }
    let mut l = [f64::NEG_INFINITY; 4];
    let n4 = u.len() / 4 * 4;
    for (q, bq) in u[..n4].chunks_exact_mut(4).zip(bias[..n4].chunks_exact(4)) {
        for k in 0..4 {
            q[k] += bq[k];
            l[k] = if q[k] > l[k] { q[k] } else { l[k] };
        }
    }
    let mut mx = l[0].max(l[1]).max(l[2]).max(l[3]);
    for (v, b) in u[n4..].iter_mut().zip(&bias[n4..]) {
        *v += b;
        mx = mx.max(*v);
    }
    let m = set.len();
    let c = loss.weight(m);
    let in_set: f64 = set.iter().map(|&k| u[k]).sum();
    let sum = exp.shifted_sum(u, mx);
    let a = c * scale / sum;
    match single_label_tail(u, set) {
        Some(t) => {
            let k = set[0];
            u[k] = 0.0;
            for (v, d) in u.iter_mut().zip(db.iter_mut()) {
                *v *= a;
                *d += *v;
            }
            u[k] = -(c * scale) * (t / sum);
            db[k] += u[k];
            c * t.ln_1p()
        }
        None => {
            for (v, d) in u.iter_mut().zip(db.iter_mut()) {
                *v *= a;
                *d += *v;
            }
            let t = c * scale / m as f64;
            for &k in set {
                u[k] -= t;
                db[k] -= t;
            }
            c * ((mx + sum.ln()) - in_set / m as f64)
        }
    }
}

/// The trivial statistic of a softmax loss (docs/theory.md §3): `sum_m a_m^2 / q_m` over the
/// multiplicities `m < K` with samples (`n_m[m - 1] > 0`), with `a_m = p_m c_m (K-m)/K` (minus
/// the loss gradient at the origin of the reduced problem; `p_m = N_m / N`, `c_m` the loss
/// weight) and `q_m = lw lh (K-1)/K N_m m (K-m)`. W = H = 0 is the global minimum exactly when
/// it is at most 1; it scales like `1 / (lw lh)`. The prediction decides the trivial regime on
/// it, and the solver's path starts below its threshold.
pub fn trivial_statistic(loss: Loss, k: usize, n_m: &[usize], lw: f64, lh: f64) -> f64 {
    let n: f64 = n_m.iter().map(|&v| v as f64).sum();
    let kf = k as f64;
    n_m.iter()
        .enumerate()
        .filter(|&(i, &nm)| nm > 0 && i + 1 < k)
        .map(|(i, &nm)| {
            let m = (i + 1) as f64;
            let pc = nm as f64 / n * loss.weight(i + 1);
            let q = lw * lh * (kf - 1.0) / kf * nm as f64 * m * (kf - m);
            (pc * (kf - m) / kf).powi(2) / q
        })
        .sum()
}

/// Sum in four interleaved lanes, combined in a fixed order (no serial dependency chain).
#[inline(always)]
pub fn lane_sum(v: &[f64]) -> f64 {
    let mut l = [0.0f64; 4];
    let c = v.chunks_exact(4);
    let tail: f64 = c.remainder().iter().sum();
    for q in c {
        for k in 0..4 {
            l[k] += q[k];
        }
    }
    ((l[0] + l[2]) + (l[1] + l[3])) + tail
}

/// Largest entry (NaN-propagating is not needed: a NaN logit makes the loss NaN anyway).
#[inline(always)]
fn lane_max(v: &[f64]) -> f64 {
    let mut l = [f64::NEG_INFINITY; 4];
    let c = v.chunks_exact(4);
    let tail = c.remainder().iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for q in c {
        for k in 0..4 {
            l[k] = if q[k] > l[k] { q[k] } else { l[k] };
        }
    }
    l[0].max(l[1]).max(l[2]).max(l[3]).max(tail)
}

/// `log(1 + e^x)`, stably.
#[inline]
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^{-x})`, stably.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// BCE value; overwrites `u` with `scale * (sigmoid(u) - y)`.
fn bce_and_grad_in_place(u: &mut [f64], set: &[usize], scale: f64) -> f64 {
    let mut value = -set.iter().map(|&k| u[k]).sum::<f64>();
    for v in u.iter_mut() {
        value += softplus(*v);
        *v = scale * sigmoid(*v);
    }
    for &k in set {
        u[k] -= scale;
    }
    value
}

/// `h(p) = p log p + (1-p) log(1-p)` with `0 log 0 = 0`.
pub fn binary_neg_entropy(p: f64) -> f64 {
    let xl = |x: f64| if x > 0.0 { x * x.ln() } else { 0.0 };
    xl(p) + xl(1.0 - p)
}

/// Evaluates `L(u, S)` alone.
pub fn loss_value(loss: Loss, u: &[f64], set: &[usize]) -> f64 {
    if loss == Loss::Bce {
        return u.iter().map(|&v| softplus(v)).sum::<f64>() - set.iter().map(|&k| u[k]).sum::<f64>();
    }
    let m = set.len();
    let mx = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if let [k] = set {
        if u[*k] == mx {
            // log1p of the rest of the sum: full precision however small the loss.
            let tail: f64 = u.iter().enumerate().filter(|&(j, _)| j != *k).map(|(_, v)| (v - mx).exp()).sum();
            return loss.weight(1) * tail.ln_1p();
        }
    }
    let lse = mx + u.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
    let in_set: f64 = set.iter().map(|&k| u[k]).sum();
    loss.weight(m) * (lse - in_set / m as f64)
}

/// `sum_j p_j log p_j` with `0 log 0 = 0`.
pub fn neg_entropy(p: &[f64]) -> f64 {
    p.iter().filter(|&&x| x > 0.0).map(|&x| x * x.ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused per-sample step gives the same bits as its three unfused steps.
    #[test]
    fn fused_bias_step_matches_the_unfused_steps() {
        for loss in [Loss::Pal, Loss::PalMean, Loss::Bce] {
            for k in [3usize, 4, 7, 50] {
                let z: Vec<f64> = (0..k).map(|i| ((i * 13) % 7) as f64 * 0.9 - 2.0).collect();
                let b: Vec<f64> = (0..k).map(|i| ((i * 5) % 3) as f64 * 0.3 - 0.2).collect();
                let set = [0usize, k - 1];
                let (mut u1, mut db1) = (z.clone(), vec![0.1; k]);
                let v1 = loss_grad_bias_in_place(loss, &mut u1, &b, &set, 0.25, &mut db1, ExpKernel::Lanes);
                let mut u2: Vec<f64> = z.iter().zip(&b).map(|(x, y)| x + y).collect();
                let v2 = loss_and_grad_in_place(loss, &mut u2, &set, 0.25);
                let db2: Vec<f64> = u2.iter().map(|g| 0.1 + g).collect();
                assert_eq!(v1.to_bits(), v2.to_bits(), "{loss:?} K={k}");
                assert!(u1.iter().zip(&u2).all(|(a, b)| a.to_bits() == b.to_bits()));
                assert!(db1.iter().zip(&db2).all(|(a, b)| (a - b).abs() <= 1e-16));
            }
        }
    }

    fn fd_check(loss: Loss) {
        let u0 = vec![0.3, -1.2, 2.5, 0.0, -0.7];
        let set = [1, 3];
        let mut g = u0.clone();
        let v = loss_and_grad_in_place(loss, &mut g, &set, 1.0);
        assert!((v - loss_value(loss, &u0, &set)).abs() < 1e-14);
        for j in 0..u0.len() {
            let h = 1e-6;
            let (mut up, mut dn) = (u0.clone(), u0.clone());
            up[j] += h;
            dn[j] -= h;
            let fd = (loss_value(loss, &up, &set) - loss_value(loss, &dn, &set)) / (2.0 * h);
            assert!((fd - g[j]).abs() < 1e-8, "{loss:?} coord {j}: fd {fd} vs {}", g[j]);
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        fd_check(Loss::Pal);
        fd_check(Loss::PalMean);
        fd_check(Loss::Bce);
    }

    #[test]
    fn bce_matches_its_definition() {
        let u = [0.5, -2.0, 30.0];
        let set = [1];
        let sp = |x: f64| (1.0 + x.exp()).ln();
        let expect = (sp(0.5)) + (sp(-2.0) - (-2.0)) + sp(30.0);
        assert!((loss_value(Loss::Bce, &u, &set) - expect).abs() < 1e-12);
    }

    #[test]
    fn pal_is_m_times_pal_mean_and_matches_definition() {
        let u = [1.0, 2.0, 3.0];
        let set = [0, 2];
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let pal = (lse - 1.0) + (lse - 3.0);
        assert!((loss_value(Loss::Pal, &u, &set) - pal).abs() < 1e-14);
        assert!((loss_value(Loss::PalMean, &u, &set) - pal / 2.0).abs() < 1e-14);
    }

    /// A single label far ahead of the others: the loss is log(1 + sum_j e^{-gap_j}), tiny, and
    /// must keep its relative precision (formed as LSE - u_k it would be 0 or noise); so must
    /// the label's gradient entry, -sum_j e^{-gap_j} / (1 + sum_j e^{-gap_j}).
    #[test]
    fn tiny_single_label_losses_keep_their_digits() {
        for gap in [20.0f64, 35.0, 300.0] {
            let u = [40.0, 40.0 - gap, 40.0 - gap - 1.0];
            let tail = (-gap).exp() + (-gap - 1.0).exp();
            let want = tail.ln_1p();
            for loss in [Loss::Pal, Loss::PalMean] {
                assert!((loss_value(loss, &u, &[0]) - want).abs() <= 1e-15 * want, "gap {gap}");
                let mut g = u.to_vec();
                let v = loss_and_grad_in_place(loss, &mut g, &[0], 1.0);
                assert!((v - want).abs() <= 4e-15 * want, "gap {gap}: {v} vs {want}");
                let want_g0 = -tail / (1.0 + tail);
                assert!((g[0] - want_g0).abs() <= 4e-15 * want_g0.abs(), "gap {gap}: {} vs {want_g0}", g[0]);
                let (mut g2, mut db) = (u.to_vec(), vec![0.0; 3]);
                let v2 = loss_grad_bias_in_place(loss, &mut g2, &[0.0; 3], &[0], 1.0, &mut db, ExpKernel::Lanes);
                assert_eq!((v2.to_bits(), g2[0].to_bits(), db[0].to_bits()), (v.to_bits(), g[0].to_bits(), g[0].to_bits()));
            }
        }
    }

    #[test]
    fn stable_for_huge_logits() {
        let u = [1000.0, -1000.0, 999.0];
        let v = loss_value(Loss::Pal, &u, &[0]);
        assert!(v.is_finite() && (v - (1.0 + (-1f64).exp()).ln()).abs() < 1e-12);
    }
}
