//! What the certificate studies (`cert_trace`, `gap_parts`) share: the problem from the
//! command line, and a solve with the certified stop off that keeps every fifth iterate.

use std::sync::{Arc, Mutex};

use mlab_nc::model::{UfmConfig, UfmObjective};
use mlab_nc::solver::{SolveParams, SolveResult};
use mlab_nc::theory::{predict, Prediction};

/// Argument `i` as a number, or `default` when it is absent.
pub fn number(a: &[String], i: usize, default: f64) -> Result<f64, String> {
    a.get(i).map_or(Ok(default), |s| s.parse::<f64>().map_err(|e| format!("argument {}: {e}", i + 1)))
}

/// The problem of arguments 1 to 5, `K M d per_set lambda` (every weight decay lambda), with
/// `defaults` for those absent, and the theorem's prediction for it.
pub fn problem(a: &[String], defaults: [f64; 5]) -> Result<(UfmObjective, Prediction), String> {
    let v = |i: usize| number(a, i, defaults[i]);
    let (k, m, d, per, lam) = (v(0)? as usize, v(1)? as usize, v(2)? as usize, v(3)? as usize, v(4)?);
    let cfg =
        UfmConfig { dim: d, per_set: vec![per], lambda_w: lam, lambda_h: lam, lambda_b: lam, ..UfmConfig::new(k, m) }.validate().map_err(|e| e.to_string())?;
    Ok((UfmObjective::new(&cfg), predict(&cfg)))
}

/// One kept iterate: iteration, point, objective and gradient norm.
pub type Kept = (u64, Vec<f64>, f64, f64);

/// Solves from `seed` with the certified stop off (the gradient rule, or `max_iters`),
/// keeping every fifth iterate whose iteration `keep` accepts.
pub fn traced_solve(
    obj: &UfmObjective,
    seed: u64,
    max_iters: Option<u64>,
    keep: impl Fn(u64) -> bool + Send + 'static,
) -> Result<(SolveResult, Vec<Kept>), String> {
    let trace = Arc::new(Mutex::new(Vec::new()));
    let t2 = trace.clone();
    let cb = Box::new(move |it: u64, x: &[f64], f: f64, g: f64| {
        if it.is_multiple_of(5) && keep(it) {
            t2.lock().unwrap().push((it, x.to_vec(), f, g));
        }
    });
    let defaults = SolveParams::default();
    let params = SolveParams { tol_stop: 0.0, max_iters: max_iters.unwrap_or(defaults.max_iters), ..defaults };
    let sol = obj.solve(seed, &params, Some(cb)).map_err(|e| e.to_string())?;
    let kept = std::mem::take(&mut *trace.lock().unwrap());
    Ok((sol, kept))
}
