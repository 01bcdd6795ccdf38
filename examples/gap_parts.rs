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

mod study;

use mlab_nc::model::objective::Workspace;
use mlab_nc::theory::certificate::bound_direct;
use nalgebra::{DMatrix, DVector};

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (obj, pred) = study::problem(&a, [100.0, 2.0, 128.0, 2.0, 2e-4])?;
    let (k, d, lam) = (obj.k, obj.d, obj.lw);
    let (seed, from, to) = (study::number(&a, 5, 0.0)? as u64, study::number(&a, 6, 100.0)? as u64, study::number(&a, 7, 125.0)? as u64);
    let (_, kept) = study::traced_solve(&obj, seed, Some(to + 1), move |it| it >= from && it <= to)?;
    let n = (obj.dim() - k * d - k) / d;
    let rel = |v: f64| v / pred.objective;
    println!("{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", "iter", "obj.gap", "cert.gap", "slack", "fenchel", "nuclear", "bias");
    for (it, x, f, _) in &kept {
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
