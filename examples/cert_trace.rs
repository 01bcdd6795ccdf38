//! A study: the certified gap against the gradient rule along one solve. Prints, every few
//! iterations, the relative objective gap to the prediction, the relative gradient
//! `||grad|| / sqrt(2 lambda_min |f|)`, and the certified relative gap at the iterate from the
//! scaled dual point (first order) and from the best of it and the aligned one (second order;
//! docs/theory.md §4).
//!
//! `cargo run --release --example cert_trace -- K M d per_set lambda [seed]`

use std::sync::{Arc, Mutex};

use mlab_nc::model::objective::Workspace;
use mlab_nc::model::{UfmConfig, UfmObjective};
use mlab_nc::solver::SolveParams;
use mlab_nc::theory::certificate::certify_evaluated;
use mlab_nc::theory::{certify, predict};

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: f64| a.get(i).map_or(Ok(d), |s| s.parse::<f64>().map_err(|e| format!("argument {}: {e}", i + 1)));
    let (k, m, d, per, lam, seed) =
        (num(0, 50.0)? as usize, num(1, 3.0)? as usize, num(2, 64.0)? as usize, num(3, 1.0)? as usize, num(4, 2e-4)?, num(5, 0.0)? as u64);
    let cfg =
        UfmConfig { dim: d, per_set: vec![per], lambda_w: lam, lambda_h: lam, lambda_b: lam, ..UfmConfig::new(k, m) }.validate().map_err(|e| e.to_string())?;
    let pred = predict(&cfg);
    let obj = UfmObjective::new(&cfg);
    let trace = Arc::new(Mutex::new(Vec::new()));
    let t2 = trace.clone();
    let cb = Box::new(move |it: u64, x: &[f64], f: f64, g: f64| {
        if it.is_multiple_of(5) {
            t2.lock().unwrap().push((it, x.to_vec(), f, g));
        }
    });
    let params = SolveParams { tol_stop: 0.0, ..SolveParams::default() };
    let sol = obj.solve(seed, &params, Some(cb)).map_err(|e| e.to_string())?;
    println!("{:>5} {:>10} {:>10} {:>11} {:>11}", "iter", "obj.gap", "grad.rel", "cert.scaled", "cert.best");
    for (it, x, f, g) in trace.lock().unwrap().iter() {
        let c = certify(&obj, x, *f);
        let mut ws = Workspace::new(&obj);
        let mut grad = vec![0.0; obj.dim()];
        let fx = obj.value_and_gradient(x, &mut grad, &mut ws);
        let scaled = certify_evaluated(&obj, x, fx, &grad, &mut ws);
        let grad_rel = g / (2.0 * obj.curvature_scale() * f.abs()).sqrt();
        let show = |v: Option<f64>| v.unwrap_or(f64::NAN);
        println!(
            "{it:>5} {:>10.2e} {grad_rel:>10.2e} {:>11.2e} {:>11.2e}",
            (f - pred.objective) / pred.objective,
            show(scaled.relative_gap),
            show(c.relative_gap)
        );
    }
    println!("stopped after {} iterations ({:?})", sol.iterations, sol.stopped_by);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
