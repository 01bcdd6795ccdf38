//! A study: the certified gap of the aligned dual point (docs/theory.md §4) split into its
//! four terms along one solve, to see which one keeps it above the objective's true error:
//!
//! ```text
//! f - D(Lambda) = [lw/2 ||W||^2 + lh/2 ||H||^2 - mu ||Z||_*]        factorisation slack
//!               + [l(U) + l*(Lambda) - <Lambda, U>]                  Fenchel-Young
//!               + [mu ||Z||_* + <Lambda, Z>]                          nuclear
//!               + ||lb b + Lambda 1||^2 / (2 lb)                      bias
//! ```
//!
//! Lambda is built from an SVD of G (singular values at or above 0.9 mu set to mu), as the
//! certificate's test does; every number is relative to the predicted optimum.
//!
//! `cargo run --release --example gap_parts -- K M d per_set lambda [seed] [from] [to]`
//! (every 5 iterations from `from` to `to`; lambda_b > 0; it takes two SVDs of K x N per row).

use std::sync::{Arc, Mutex};

use mlab_nc::model::objective::Workspace;
use mlab_nc::model::{UfmConfig, UfmObjective};
use mlab_nc::solver::SolveParams;
use mlab_nc::theory::certificate::bound_direct;
use mlab_nc::theory::predict;
use nalgebra::{DMatrix, DVector};

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: f64| a.get(i).map_or(Ok(d), |s| s.parse::<f64>().map_err(|e| format!("argument {}: {e}", i + 1)));
    let (k, m, d, per, lam) = (num(0, 100.0)? as usize, num(1, 2.0)? as usize, num(2, 128.0)? as usize, num(3, 2.0)? as usize, num(4, 2e-4)?);
    let (seed, from, to) = (num(5, 0.0)? as u64, num(6, 100.0)? as u64, num(7, 125.0)? as u64);
    let cfg =
        UfmConfig { dim: d, per_set: vec![per], lambda_w: lam, lambda_h: lam, lambda_b: lam, ..UfmConfig::new(k, m) }.validate().map_err(|e| e.to_string())?;
    let pred = predict(&cfg);
    let obj = UfmObjective::new(&cfg);
    let trace = Arc::new(Mutex::new(Vec::new()));
    let t2 = trace.clone();
    let cb = Box::new(move |it: u64, x: &[f64], f: f64, _g: f64| {
        if it >= from && it <= to && it.is_multiple_of(5) {
            t2.lock().unwrap().push((it, x.to_vec(), f));
        }
    });
    let params = SolveParams { tol_stop: 0.0, max_iters: to + 1, ..SolveParams::default() };
    obj.solve(seed, &params, Some(cb)).map_err(|e| e.to_string())?;
    let n = (obj.dim() - k * d - k) / d;
    let rel = |v: f64| v / pred.objective;
    println!("{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", "iter", "obj.gap", "cert.gap", "slack", "fenchel", "nuclear", "bias");
    for (it, x, f) in trace.lock().unwrap().iter() {
        let mut ws = Workspace::new(&obj);
        let mut grad = vec![0.0; obj.dim()];
        obj.value_and_gradient(x, &mut grad, &mut ws);
        let lu = ws.data_term();
        obj.dual_pass(x, &mut ws);
        let svd = DMatrix::from_column_slice(k, n, ws.dual()).svd(true, true);
        let lifted: Vec<f64> = svd.singular_values.iter().map(|&s| if s >= 0.9 * lam { lam } else { s }).collect();
        let (u, vt) = (svd.u.ok_or("no SVD")?, svd.v_t.ok_or("no SVD")?);
        let dual = &u * DMatrix::from_diagonal(&DVector::from_vec(lifted)) * &vt;
        let dval = bound_direct(&obj, dual.as_slice(), &vec![0.0; k], 1.0).ok_or("the lifted point left the dual's domain")?;
        let w = DMatrix::from_column_slice(k, d, &x[..k * d]);
        let h = DMatrix::from_column_slice(d, n, &x[k * d..k * d + d * n]);
        let b = DVector::from_column_slice(&x[k * d + d * n..]);
        let z = &w * &h;
        let nuclear: f64 = z.clone().svd(false, false).singular_values.iter().sum();
        let row = dual.column_sum();
        let conj = -dval - row.norm_squared() / (2.0 * lam);
        let mut logits = z.clone();
        logits.column_iter_mut().for_each(|mut c| c += &b);
        let slack = 0.5 * lam * (w.norm_squared() + h.norm_squared()) - lam * nuclear;
        let fenchel = lu + conj - dual.component_mul(&logits).sum();
        let nuc = lam * nuclear + dual.component_mul(&z).sum();
        let bias = (lam * &b + &row).norm_squared() / (2.0 * lam);
        println!(
            "{it:>5} {:>10.2e} {:>10.2e} {:>10.2e} {:>10.2e} {:>10.2e} {:>10.2e}",
            rel(f - pred.objective),
            rel(f - dval),
            rel(slack),
            rel(fenchel),
            rel(nuc),
            rel(bias)
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
