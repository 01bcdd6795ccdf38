// Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use mlab_nc::model::config::{UfmConfig, ValidConfig};
use mlab_nc::model::loss::Loss;

pub fn config(k: usize, m: usize, d: usize, per_set: &[usize], lam: (f64, f64, f64), loss: Loss) -> ValidConfig {
    UfmConfig { classes: k, max_labels: m, dim: d, per_set: per_set.to_vec(), lambda_w: lam.0, lambda_h: lam.1, lambda_b: lam.2, loss }
        .validate()
        .expect("valid test configuration")
}

fn binom(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |a, i| a * (n - i) as f64 / (i + 1) as f64)
}

/// The reduced problem solved a second, independent way (docs/theory.md §3): for a given
/// r = sqrt(sum q gamma^2), each gamma_m solves the 1-D stationarity equation
/// p_m c_m sigma_m(gamma) = q_m gamma / r by bisection; then r is the fixed point of
/// r = sqrt(sum q gamma(r)^2), found by bisection in log r. Returns (objective, gammas, alpha).
pub fn reference_prediction(k: usize, per_set: &[usize], loss_pal: bool, lw: f64, lh: f64) -> (f64, Vec<f64>, f64) {
    let kf = k as f64;
    let nm: Vec<f64> = per_set.iter().enumerate().map(|(i, &c)| c as f64 * binom(k, i + 1)).collect();
    let n: f64 = nm.iter().sum();
    let c = |m: usize| if loss_pal { m as f64 } else { 1.0 };
    let active: Vec<usize> = (1..=per_set.len()).filter(|&m| m < k && nm[m - 1] > 0.0).collect();
    let pc = |m: usize| nm[m - 1] / n * c(m);
    let q = |m: usize| lw * lh * (kf - 1.0) / kf * nm[m - 1] * m as f64 * (kf - m as f64);
    let sigma = |m: usize, g: f64| {
        let e = (kf - m as f64) * (-g).exp();
        e / (m as f64 + e)
    };
    let gamma_of = |r: f64| -> Vec<f64> {
        active
            .iter()
            .map(|&m| {
                let (mut lo, mut hi) = (0.0f64, 2000.0f64);
                for _ in 0..200 {
                    let mid = 0.5 * (lo + hi);
                    if pc(m) * sigma(m, mid) > q(m) * mid / r {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                0.5 * (lo + hi)
            })
            .collect()
    };
    let phi = |r: f64| active.iter().zip(gamma_of(r)).map(|(&m, g)| q(m) * g * g).sum::<f64>().sqrt() - r;
    let (mut lo, mut hi) = ((1e-300f64).ln(), (1e6f64).ln());
    for _ in 0..300 {
        let mid = 0.5 * (lo + hi);
        if phi(mid.exp()) > 0.0 {
            lo = mid
        } else {
            hi = mid
        }
    }
    let r = (0.5 * (lo + hi)).exp();
    let g = gamma_of(r);
    let mut obj = 0.0;
    for (i, &m) in active.iter().enumerate() {
        obj += pc(m) * (m as f64 + (kf - m as f64) * (-g[i]).exp()).ln();
    }
    if per_set.len() == k && nm[k - 1] > 0.0 {
        obj += pc(k) * kf.ln();
    }
    obj += active.iter().zip(&g).map(|(&m, g)| q(m) * g * g).sum::<f64>().sqrt();
    let s: f64 = active.iter().zip(&g).map(|(&m, g)| nm[m - 1] * g * g * m as f64 * (kf - m as f64) / kf).sum();
    let alpha = (lh * s / (lw * (kf - 1.0))).sqrt();
    let mut full = vec![f64::NAN; per_set.len()];
    for (i, &m) in active.iter().enumerate() {
        full[m - 1] = g[i];
    }
    (obj, full, alpha)
}
