//! Why L-BFGS needs ~12 iterations per decade of gap on presets D and E: the Hessian of the
//! UFM objective at the predicted optimum, on a small problem, with the eigenvalues grouped
//! into clusters and each cluster's eigenvectors split into W, b and H by multiplicity.
//!
//! ```text
//! cargo run --release --example hessian_spectrum -- K M d PER_SET LAMBDA [C0]
//! cargo run --release --example hessian_spectrum -- 10 2 16 2 2e-4
//! ```
//!
//! The Hessian is dense, by central differences of the analytic gradient (step
//! `1e-5 (1 + |x_j|)`), so keep `K d + d N + K` below a few thousand. With `C0 > 0` it prints
//! instead the spectrum of `L^-1 Hess L^-T`, where `L L^T = P^-1` is the per-sample
//! preconditioner of `examples/precond_lbfgs.rs` with `c0 = C0 lambda_h`.
//!
//! Measured (lambda = 2e-4; see docs/performance.md, "Where E's iterations go"): besides the zero
//! eigenvalues of the rotations, a bulk from `lambda` to about `14 lambda`, and exactly
//! `sum_i (|S_i| - 1)` eigenvalues 100 to 2,000 times larger, one per direction that moves
//! the logits of a sample's own labels apart (the softmax curvature `p_a p_b` is largest
//! there, as the labels of a set share the probability). K = 10, M = 2, d = 16, two per set:
//! 90 stiff eigenvalues in [0.27, 0.47] against a bulk up to 2.8e-3.
use mlab_nc::model::config::UfmConfig;
use mlab_nc::model::loss::Loss;
use mlab_nc::model::objective::{UfmEval, UfmObjective};
use mlab_nc::solver::problem::FusedObjective;
use mlab_nc::theory::prediction::{predict, predicted_point};
use nalgebra::DMatrix;

const USAGE: &str = "usage: hessian_spectrum K M d PER_SET LAMBDA [C0]";

fn arg<T: std::str::FromStr>(a: &[String], i: usize, name: &str) -> Result<T, String> {
    let s = a.get(i).ok_or_else(|| format!("missing {name}; {USAGE}"))?;
    s.parse().map_err(|_| format!("{name}: cannot parse '{s}'; {USAGE}"))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().collect();
    let (k, m, d, per, lam): (usize, usize, usize, usize, f64) =
        (arg(&a, 1, "K")?, arg(&a, 2, "M")?, arg(&a, 3, "d")?, arg(&a, 4, "PER_SET")?, arg(&a, 5, "LAMBDA")?);
    let c0: f64 = if a.len() > 6 { arg(&a, 6, "C0")? } else { 0.0 };
    let cfg = UfmConfig { classes: k, max_labels: m, dim: d, per_set: vec![per], lambda_w: lam, lambda_h: lam, lambda_b: lam, loss: Loss::Pal }
        .validate()
        .map_err(|e| e.to_string())?;
    let x0 = predicted_point(&cfg, &predict(&cfg)).ok_or("the predicted point needs d >= K - 1")?;
    let n = x0.len();
    if n > 6000 {
        return Err(format!("{n} variables: too many for a dense Hessian (at most 6000)"));
    }
    let obj = UfmObjective::new(&cfg);
    let mut ev = UfmEval::new(obj.clone());
    let (mut gp, mut gm) = (vec![0.0; n], vec![0.0; n]);
    let mut hess = DMatrix::<f64>::zeros(n, n);
    for j in 0..n {
        let e = 1e-5 * (1.0 + x0[j].abs());
        let mut x = x0.clone();
        x[j] += e;
        ev.eval(&x, &mut gp);
        x[j] -= 2.0 * e;
        ev.eval(&x, &mut gm);
        for i in 0..n {
            hess[(i, j)] = (gp[i] - gm[i]) / (2.0 * e);
        }
    }
    let mut hess = (&hess + hess.transpose()) * 0.5;
    if c0 > 0.0 {
        let l = precond_inverse(&obj, &x0, c0 * lam).cholesky().ok_or("P^-1 is not positive definite")?.l();
        let li = l.try_inverse().ok_or("singular Cholesky factor")?;
        hess = &li * hess * li.transpose();
        hess = (&hess + hess.transpose()) * 0.5;
    }
    let eig = hess.symmetric_eigen();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&p, &q| eig.eigenvalues[p].total_cmp(&eig.eigenvalues[q]));
    let (kd, nn) = (k * d, cfg.labels.samples());
    println!("{n} variables; clusters of eigenvalues (within 2%), with the mean share of W, b and H by |S|:");
    println!("{:>6} {:>12} {:>6} {:>6}  H by |S| = 1..{m}", "count", "eigenvalue", "W", "b");
    let mut i = 0;
    while i < n {
        let v0 = eig.eigenvalues[order[i]];
        let mut j = i;
        let mut share = vec![0.0; 2 + m];
        while j < n && (eig.eigenvalues[order[j]] - v0).abs() <= 2e-2 * v0.abs() + 1e-10 {
            let v = eig.eigenvectors.column(order[j]);
            share[0] += v.rows(0, kd).norm_squared();
            share[1] += v.rows(kd + d * nn, k).norm_squared();
            for (s, &set) in cfg.labels.set_of.iter().enumerate() {
                share[1 + cfg.labels.sets[set as usize].len()] += v.rows(kd + d * s, d).norm_squared();
            }
            j += 1;
        }
        let c = (j - i) as f64;
        let hs: Vec<String> = share[2..].iter().map(|s| format!("{:.2}", s / c)).collect();
        println!("{:>6} {:>12.4e} {:>6.2} {:>6.2}  {}", j - i, v0, share[0] / c, share[1] / c, hs.join(" "));
        i = j;
    }
    let within: usize = cfg.labels.set_of.iter().map(|&s| cfg.labels.sets[s as usize].len() - 1).sum();
    println!("sum_i (|S_i| - 1) = {within}");
    Ok(())
}

/// `P^-1` as a dense matrix: the identity, plus `tau B_i^T A_i B_i` on the features of each
/// sample with `|S_i| >= 2` (`B_i` the rows of W of its labels, `A_i` the PAL softmax
/// Hessian restricted to its labels, `tau = 1 / (N c0)`).
fn precond_inverse(obj: &UfmObjective, x: &[f64], c0: f64) -> DMatrix<f64> {
    let (k, d, n) = (obj.k, obj.d, obj.n);
    let mut z = vec![0.0; k * n];
    obj.logits(x, &mut z);
    let tau = 1.0 / (n as f64 * c0);
    let mut p_inv = DMatrix::<f64>::identity(x.len(), x.len());
    for i in 0..n {
        let set = &obj.labels.sets[obj.labels.set_of[i] as usize];
        if set.len() < 2 {
            continue;
        }
        let (a, b) = restricted_hessian(&z[i * k..(i + 1) * k], set, x, k, d);
        let blk = b.transpose() * a * b * tau;
        let o = k * d + i * d;
        for r in 0..d {
            for q in 0..d {
                p_inv[(o + r, o + q)] += blk[(r, q)];
            }
        }
    }
    p_inv
}

/// `(A_S, B_S)`: the PAL softmax Hessian of logits `z` restricted to `set`
/// (`|S| (diag p_S - p_S p_S^T)`), and the rows of W (stored K x d, column-major, at the start
/// of `x`) of the labels in `set`.
pub fn restricted_hessian(z: &[f64], set: &[usize], x: &[f64], k: usize, d: usize) -> (DMatrix<f64>, DMatrix<f64>) {
    let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| (v - mx).exp()).sum();
    let p: Vec<f64> = set.iter().map(|&c| (z[c] - mx).exp() / sum).collect();
    let m = set.len();
    let a = DMatrix::from_fn(m, m, |r, q| m as f64 * (if r == q { p[r] } else { 0.0 } - p[r] * p[q]));
    let b = DMatrix::from_fn(m, d, |r, j| x[set[r] + k * j]);
    (a, b)
}
