//! A study: the certified gap against the gradient rule along one solve. Prints, every few
//! iterations, the relative objective gap to the prediction, the relative gradient
//! `||grad|| / sqrt(2 lambda_min |f|)`, and the certified relative gap at the iterate from the
//! scaled dual point (first order) and from the best of it and the aligned one (second order;
//! docs/theory.md §4).
//!
//! `cargo run --release --example cert_trace -- K M d per_set lambda [seed]`

mod study;

use mlab_nc::model::objective::Workspace;
use mlab_nc::theory::certificate::certify_evaluated;
use mlab_nc::theory::certify;

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (obj, pred) = study::problem(&a, [50.0, 3.0, 64.0, 1.0, 2e-4])?;
    let seed = study::number(&a, 5, 0.0)? as u64;
    let (sol, kept) = study::traced_solve(&obj, seed, None, |_| true)?;
    println!("{:>5} {:>10} {:>10} {:>11} {:>11}", "iter", "obj.gap", "grad.rel", "cert.scaled", "cert.best");
    for (it, x, f, g) in &kept {
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
