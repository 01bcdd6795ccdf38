#![allow(clippy::neg_cmp_op_on_partial_ord)] // `!(x < 0.0)` also rejects NaN
//! A study, not the solver: plain L-BFGS (whole f64 vectors, two-loop recursion, history 3,
//! the solver's block scaling of H0 over (W, H) and b, More-Thuente line search) with an
//! optional per-sample preconditioner in H0, counting iterations and evaluations to a
//! 1e-10 relative gap on a benchmark preset.
//!
//! ```text
//! cargo run --release --example precond_lbfgs -- PRESET SEED [C0 [BIAS [GAP [CW [EVERY [split]]]]]]
//! cargo run --release --example precond_lbfgs -- E 0 10
//! cargo run --release --example precond_lbfgs -- C 0 0 approx 4e-12
//! cargo run --release --example precond_lbfgs -- E 0 10 approx cert
//! cargo run --release --example precond_lbfgs -- E 0 10 none cert 0.3 10
//! ```
//!
//! With `C0 > 0`, `H0 = diag(gamma_b) P` where `P` is the identity except on the features of
//! each sample with `|S_i| >= 2`, where `P_i = (I + tau B_i^T A_i B_i)^-1`: `B_i` the rows of W
//! of its labels, `A_i` the PAL softmax Hessian restricted to its labels, `tau = 1 / (N c0)`,
//! `c0 = C0 lambda_h`, all at the current iterate. It takes out the stiff directions that
//! `examples/hessian_spectrum.rs` finds, in H only (by Woodbury: `P_i v = v - B_i^T M_i B_i v`,
//! `M_i = tau (I + tau A_i B_i B_i^T)^-1 A_i`). `gamma_b = s.y / y.P y` on each block.
//!
//! With `BIAS` (`exact`, `approx` or `rows`), the bias block's `gamma_1 I` becomes
//! `gamma_1 P_b`, `P_b = (lb I + A_b)^-1` with `A_b` the loss's Hessian in b at the iterate:
//! `exact`, `(1/N) sum_i c_i (diag p_i - p_i p_i^T)` (K^2 N work); `approx`, its diagonal
//! `(1/N) sum_i c_i p_ik (1 - p_ik)` plus, per sample, only the products `p_a p_b` of its own
//! labels, centred (`Pi A Pi` with `Pi = I - 1 1^T / K`, so that the direction 1, along which
//! the softmax is flat, keeps the curvature lb); `rows`, as `approx` but with `c p_ik` on the
//! diagonal outside the sample's labels (the row sums of the dual matrix G, which every
//! evaluation has, plus a constant; only `sum_i |S_i|^2` more numbers per evaluation); `diag`,
//! as `rows` without the off-diagonal products of the sample's own labels; `plain`, that
//! diagonal without the centring. `GAP` replaces the 1e-10 target (the
//! certified stop ends E near 4e-12); `cert` instead stops where the certificate (the better of
//! the scaled and aligned bounds, `theory::certificate::certify`, taken at every iteration and
//! not counted) proves the solver's default 2e-11. `gamma_1 = s.y / y.P_b y` over b.
//!
//! Measured (docs/performance.md, "Where E's iterations go"): evaluations to the gap, seeds 0 to 5,
//! E: median 146.5 without, 122 with C0 = 10; D: 124 and 115.5. The stiff directions then
//! show up in W and b (`hessian_spectrum ... C0`). The solver now has this preconditioner,
//! fused into its passes (`src/model/precond.rs`), where it is cheap enough to pay. The bias
//! block's metric, to a 4e-12 gap, seeds 0 to 5, evaluations (medians; docs/performance.md,
//! "Where E stands"): B 123.5 without, 104 `approx`, 104 `rows`; C 91.5, 79.5, 81; D 115.5,
//! 117 `approx`; E (C0 = 10) 125, 121.5, 128. To the certified stop (`cert`; C0 = 10 on E, 0
//! elsewhere), without and `approx`: B 123, 104; C 92.5, 78.5; D 118, 117.5; E 127, 124 (`rows` 128);
//! B and C with `rows`, `diag` and `plain`: 104, 105, 130 and 79, 80.5, 120.5.
//!
//! With `CW > 0`, W's block gets the classifier metric too: `P_W = (I + (S kron A) / cw)^-1`,
//! `cw = CW lambda_w`, `S = H H^T / N`, `A = (1/N) sum_i c_i (diag p_i - p_i p_i^T)`, a
//! Kronecker-factored (K-FAC-like) stand-in for the inverse of the loss's curvature in W,
//! recomputed every `EVERY` iterations (default 1). `CW = const=KAPPA` puts `P_W = KAPPA I`
//! instead (W rescaled against H), `CW = proj=CW` the projector form ([`WForm::Proj`]), and
//! `split` gives W and H separate `gamma`s (three blocks). Measured (docs/performance.md, "The classifier block's metric"), to the certified
//! stop, E with C0 = 10, seeds 0 to 5, median evaluations: 127 without; CW = 0.3: 104, every
//! 10th iteration 107.5, every 20th 114.5, every 40th 117.5; CW = 0.1: 104.5; CW = 1: 114.5;
//! `const=0.3` (seeds 0 to 3): 124.5; `split`: 156.5; `proj=0.3`: 118; `proj=1`, `proj=3`,
//! `proj=10` (seeds 0 to 3): 113, 123.5, 127. Without C0 it hurts: B 123 -> 210.5 at
//! 0.3, C 92.5 -> 112, D (seeds 0 to 3) 118 -> 138; with C0 = 10 (seeds 0 to 3) it
//! helps: C 88.5 -> 79.5, D 105.5 -> 99.
use mlab_nc::commands::timing::preset;
use mlab_nc::model::objective::{UfmEval, UfmObjective};
use mlab_nc::solver::linesearch::{Action, MoreThuente, MoreThuenteParams};
use mlab_nc::solver::problem::FusedObjective;
use mlab_nc::solver::TOL_STOP;
use mlab_nc::theory::certificate::certify;
use mlab_nc::theory::prediction::predict;
use nalgebra::{DMatrix, DVector};

const USAGE: &str = "usage: precond_lbfgs PRESET SEED [C0 [BIAS [GAP [CW [EVERY [split]]]]]] (BIAS: none, exact, approx, rows, diag or plain; GAP: a number > 0, or cert; CW: a number >= 0, const=KAPPA or proj=CW; EVERY: an integer >= 1)";

/// The bias block's metric in H0.
#[derive(Clone, Copy, PartialEq)]
enum BiasMetric {
    None,
    Exact,
    Approx,
    Rows,
    Diag,
    Plain,
}

/// The BIAS argument's names.
const BIAS_NAMES: [(&str, BiasMetric); 6] = [
    ("none", BiasMetric::None),
    ("exact", BiasMetric::Exact),
    ("approx", BiasMetric::Approx),
    ("rows", BiasMetric::Rows),
    ("diag", BiasMetric::Diag),
    ("plain", BiasMetric::Plain),
];

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The preconditioner at one iterate: per sample with `|S| >= 2`, its labels and `M_i`.
struct Precond {
    k: usize,
    d: usize,
    w: Vec<f64>,
    samples: Vec<Option<(Vec<usize>, DMatrix<f64>)>>,
    /// `P_b`, when the bias block has one.
    pb: Option<DMatrix<f64>>,
    /// W's block: `(U, V, scale)`, `P_W X = U ((U^T X V) .* scale) V^T`.
    pw: Option<WMetric>,
}

type WMetric = (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>);

impl Precond {
    fn at(obj: &UfmObjective, x: &[f64], c0: f64, bias: BiasMetric, (cw, form): (f64, WForm), old: Option<WMetric>) -> Precond {
        let (k, d, n) = (obj.k, obj.d, obj.n);
        let mut z = vec![0.0; k * n];
        obj.logits(x, &mut z);
        let pw = old.or_else(|| (cw > 0.0).then(|| w_metric(obj, x, &z, cw * obj.lw, form)));
        let pb = (bias != BiasMetric::None).then(|| bias_metric(obj, &z, bias));
        let tau = 1.0 / (n as f64 * c0);
        let samples = (0..n)
            .map(|i| {
                if c0 <= 0.0 {
                    return None;
                }
                let set = &obj.labels.sets[obj.labels.set_of[i] as usize];
                if set.len() < 2 {
                    return None;
                }
                let all = softmax(&z[i * k..(i + 1) * k]);
                let p: Vec<f64> = set.iter().map(|&c| all[c]).collect();
                let m = set.len();
                let a = DMatrix::from_fn(m, m, |r, q| m as f64 * (if r == q { p[r] } else { 0.0 } - p[r] * p[q]));
                let g = DMatrix::from_fn(m, m, |r, q| (0..d).map(|j| x[set[r] + k * j] * x[set[q] + k * j]).sum::<f64>());
                let lhs = DMatrix::identity(m, m) + &a * &g * tau;
                lhs.lu().solve(&(&a * tau)).map(|mm| (set.clone(), mm))
            })
            .collect();
        Precond { k, d, w: x[..k * d].to_vec(), samples, pb, pw }
    }

    /// `v <- P v`.
    fn apply(&self, v: &mut [f64]) {
        let (k, d) = (self.k, self.d);
        if let Some((u, vv, sc)) = &self.pw {
            let xw = DMatrix::from_column_slice(k, d, &v[..k * d]);
            let t = (u.transpose() * xw * vv).component_mul(sc);
            let out = u * t * vv.transpose();
            v[..k * d].copy_from_slice(out.as_slice());
        }
        if let Some(pb) = &self.pb {
            let at = v.len() - k;
            let t = pb * DVector::from_column_slice(&v[at..]);
            v[at..].copy_from_slice(t.as_slice());
        }
        for (i, s) in self.samples.iter().enumerate() {
            let Some((set, mm)) = s else { continue };
            let h = &mut v[k * d + i * d..k * d + (i + 1) * d];
            let bv = DVector::from_iterator(set.len(), set.iter().map(|&c| (0..d).map(|j| self.w[c + k * j] * h[j]).sum::<f64>()));
            let t = mm * bv;
            for (j, hj) in h.iter_mut().enumerate() {
                *hj -= set.iter().enumerate().map(|(r, &c)| self.w[c + k * j] * t[r]).sum::<f64>();
            }
        }
    }
}

/// The softmax of one column of logits.
fn softmax(z: &[f64]) -> Vec<f64> {
    let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// The form of W's metric (the CW argument).
#[derive(Clone, Copy, PartialEq)]
enum WForm {
    /// `P_W = (I + (S_h kron A) / cw)^-1`.
    Kfac,
    /// `P_W = KAPPA I`.
    Const(f64),
    /// The K-FAC form with A and S_h replaced by multiples of projectors: `a Pi` (`Pi = I -
    /// 1 1^T / K`, `a = tr A / (K - 1)`) and `s R` (`R` the projector on W's row space, `s =
    /// tr(R S_h R) / tr R`), the shape both take late in a solve.
    Proj,
}

/// W's metric: `P_W = (I + (S_h kron A) / cw)^-1`, `S_h = H H^T / N`,
/// `A = (1/N) sum_i c_i (diag p_i - p_i p_i^T)`, through the eigendecompositions of both
/// (`P_W X = U (sc .* (U^T X V)) V^T`), or one of the other forms of [`WForm`].
fn w_metric(obj: &UfmObjective, x: &[f64], z: &[f64], cw: f64, form: WForm) -> (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>) {
    let (k, d, n) = (obj.k, obj.d, obj.n);
    let mut a = mean_loss_hessian(obj, z, |_| true);
    let h = DMatrix::from_column_slice(d, n, &x[k * d..k * d + d * n]);
    let mut sh = (&h * h.transpose()) / n as f64;
    if form == WForm::Proj {
        let pi = DMatrix::<f64>::identity(k, k) - DMatrix::<f64>::from_element(k, k, 1.0 / k as f64);
        a = pi * (a.trace() / (k - 1) as f64);
        let w = DMatrix::from_column_slice(k, d, &x[..k * d]);
        let r = w.transpose() * (&w * w.transpose()).pseudo_inverse(1e-12).expect("a pseudo-inverse") * &w;
        let s = (&r * &sh * &r).trace() / r.trace();
        sh = r * s;
    }
    let ea = a.symmetric_eigen();
    let es = sh.symmetric_eigen();
    let sc = DMatrix::from_fn(k, d, |i, j| match form {
        WForm::Const(kappa) => kappa,
        _ => 1.0 / (1.0 + ea.eigenvalues[i].max(0.0) * es.eigenvalues[j].max(0.0) / cw),
    });
    (ea.eigenvectors, es.eigenvectors, sc)
}

/// `(1/N) sum_i c_i (diag p_i - p_i p_i^T)` from the logits `z` (K x N), keeping of each
/// `p_i p_i^T` only the entries `(r, q)` that `keep(i, r, q)` allows.
fn mean_loss_hessian(obj: &UfmObjective, z: &[f64], keep: impl Fn((usize, usize, usize)) -> bool) -> DMatrix<f64> {
    let (k, n) = (obj.k, obj.n);
    let mut a = DMatrix::<f64>::zeros(k, k);
    for i in 0..n {
        let set = &obj.labels.sets[obj.labels.set_of[i] as usize];
        let c = obj.loss.weight(set.len()) / n as f64;
        let p = softmax(&z[i * k..(i + 1) * k]);
        for r in 0..k {
            a[(r, r)] += c * p[r];
        }
        for r in 0..k {
            for q in 0..k {
                if keep((i, r, q)) {
                    a[(r, q)] -= c * p[r] * p[q];
                }
            }
        }
    }
    a
}

/// `P_b = (lb I + A_b)^-1` from the logits `z` (K x N, bias included).
fn bias_metric(obj: &UfmObjective, z: &[f64], bias: BiasMetric) -> DMatrix<f64> {
    let k = obj.k;
    let set = |i: usize| &obj.labels.sets[obj.labels.set_of[i] as usize];
    let mut a = mean_loss_hessian(obj, z, |(i, r, q)| match bias {
        BiasMetric::Exact => true,
        // `approx`: every diagonal entry c p (1 - p); `rows`, `diag` and `plain`: that only
        // for the sample's own labels (c p elsewhere: the row sums of G, which the evaluation
        // has, plus a constant). `approx` and `rows` also keep the products of the sample's
        // own labels off the diagonal.
        _ if r == q => bias == BiasMetric::Approx || set(i).contains(&r),
        BiasMetric::Diag | BiasMetric::Plain => false,
        _ => set(i).contains(&r) && set(i).contains(&q),
    });
    if !matches!(bias, BiasMetric::Exact | BiasMetric::Plain) {
        let pi = DMatrix::<f64>::identity(k, k) - DMatrix::<f64>::from_element(k, k, 1.0 / k as f64);
        a = &pi * a * &pi;
    }
    (a + DMatrix::<f64>::identity(k, k) * obj.lb).try_inverse().expect("lb I + A_b is positive definite")
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().collect();
    let name = a.get(1).ok_or(USAGE)?;
    let seed: u64 = a.get(2).ok_or(USAGE)?.parse().map_err(|_| format!("SEED: not an integer; {USAGE}"))?;
    let c0f: f64 = match a.get(3) {
        Some(s) => s.parse().map_err(|_| format!("C0: not a number; {USAGE}"))?,
        None => 0.0,
    };
    let label = a.get(4).map_or("none", String::as_str);
    let Some(&(_, bias)) = BIAS_NAMES.iter().find(|(n, _)| *n == label) else {
        return Err(format!("BIAS: {label:?} is not none, exact, approx, rows, diag or plain; {USAGE}"));
    };
    let (gap, cert): (f64, bool) = match a.get(5).map(String::as_str) {
        Some("cert") => (0.0, true),
        Some(s) => (s.parse().ok().filter(|g: &f64| *g > 0.0).ok_or_else(|| format!("GAP: not a positive number or cert; {USAGE}"))?, false),
        None => (1e-10, false),
    };
    // CW: the classifier metric's cw / lambda_w, `const=KAPPA` for P_W = KAPPA I, or
    // `proj=CW` for the projector form.
    let number = |s: &str| s.parse().ok().filter(|c: &f64| *c >= 0.0).ok_or_else(|| format!("CW: not a number >= 0; {USAGE}"));
    let (cw, form): (f64, WForm) = match a.get(6).map(String::as_str) {
        Some(s) => match (s.strip_prefix("const="), s.strip_prefix("proj=")) {
            (Some(k), _) => (1.0, WForm::Const(number(k).ok().filter(|k| *k > 0.0).ok_or_else(|| format!("CW: const= needs a positive number; {USAGE}"))?)),
            (_, Some(c)) => (number(c)?, WForm::Proj),
            _ => (number(s)?, WForm::Kfac),
        },
        None => (0.0, WForm::Kfac),
    };
    let every: usize = match a.get(7) {
        Some(s) => s.parse().ok().filter(|e: &usize| *e >= 1).ok_or_else(|| format!("EVERY: not an integer >= 1; {USAGE}"))?,
        None => 1,
    };
    let split = match a.get(8).map(String::as_str) {
        Some("split") => true,
        Some(other) => return Err(format!("{other:?}: the last argument can only be split; {USAGE}")),
        None => false,
    };
    if bias != BiasMetric::None && !(c0f >= 0.0) {
        return Err(format!("C0: must be >= 0 with BIAS; {USAGE}"));
    }
    let cfg = preset(name).map_err(|e| e.to_string())?.validate().map_err(|e| e.to_string())?;
    let pred = predict(&cfg);
    let target = pred.objective * (1.0 + gap);
    let obj = UfmObjective::new(&cfg);
    let mut ev = UfmEval::new(obj.clone());
    let mut blocks = ev.block_ranges();
    if split {
        let kd = obj.k * obj.d;
        let b0 = blocks[0].0.clone();
        blocks = vec![(0..kd, 0), (kd..b0.end, 1), (b0.end..b0.end + obj.k, 2)];
    }
    let nb = blocks.iter().map(|r| r.1 + 1).max().unwrap_or(1);
    let mut x = obj.random_start(seed, 0.1);
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut f = ev.eval(&x, &mut g);
    let (mut evals, mut iters) = (1usize, 0usize);
    let mut wm: Option<WMetric> = None;
    let mut pairs: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let done = |x: &[f64], f: f64| if cert { certify(&obj, x, f).relative_gap.is_some_and(|g| g <= TOL_STOP) } else { f <= target };
    while !done(&x, f) && iters < 3000 {
        let old = if iters % every == 0 { None } else { wm.clone() };
        let pre = (c0f > 0.0 || bias != BiasMetric::None || cw > 0.0).then(|| Precond::at(&obj, &x, c0f * cfg.config.lambda_h, bias, (cw, form), old));
        wm = pre.as_ref().and_then(|p| p.pw.clone());
        let apply = |v: &mut [f64]| {
            if let Some(p) = &pre {
                p.apply(v);
            }
        };
        let mut q = g.clone();
        let mut alpha = vec![0.0; pairs.len()];
        for (i, (s, y, rho)) in pairs.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qv, yv)| *qv -= alpha[i] * yv);
        }
        let mut r = q;
        apply(&mut r);
        match pairs.last() {
            Some((s, y, _)) => {
                let mut py = y.clone();
                apply(&mut py);
                for b in 0..nb {
                    let (mut sy, mut ypy) = (0.0, 0.0);
                    for (rg, _) in blocks.iter().filter(|(_, bb)| *bb == b) {
                        sy += dot(&s[rg.clone()], &y[rg.clone()]);
                        ypy += dot(&y[rg.clone()], &py[rg.clone()]);
                    }
                    let gamma = if sy > 0.0 && ypy > 0.0 { sy / ypy } else { 1.0 };
                    for (rg, _) in blocks.iter().filter(|(_, bb)| *bb == b) {
                        r[rg.clone()].iter_mut().for_each(|v| *v *= gamma);
                    }
                }
            }
            None => {
                let scale = (1.0 / dot(&g, &g).sqrt()).min(1.0);
                r.iter_mut().for_each(|v| *v *= scale);
            }
        }
        for (i, (s, y, rho)) in pairs.iter().enumerate() {
            let beta = rho * dot(y, &r);
            r.iter_mut().zip(s).for_each(|(rv, sv)| *rv += (alpha[i] - beta) * sv);
        }
        let dir: Vec<f64> = r.iter().map(|v| -v).collect();
        let dg0 = dot(&g, &dir);
        if !(dg0 < 0.0) {
            return Err(format!("not a descent direction at iteration {iters}"));
        }
        let (mut ls, mut action) = MoreThuente::start(MoreThuenteParams::default(), f, dg0, 1.0);
        let (mut xn, mut gn) = (x.clone(), vec![0.0; n]);
        let (step, f_new) = loop {
            let Action::Evaluate(a) = action else { return Err(format!("line search stopped at iteration {iters}")) };
            xn.iter_mut().zip(&x).zip(&dir).for_each(|((o, xv), dv)| *o = xv + a * dv);
            let fv = ev.eval(&xn, &mut gn);
            evals += 1;
            let gd = dot(&gn, &dir);
            if fv <= f + 1e-4 * a * dg0 && gd.abs() <= 0.9 * dg0.abs() {
                break (a, fv);
            }
            action = ls.next(fv, gd);
        };
        let s: Vec<f64> = dir.iter().map(|v| v * step).collect();
        let y: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 0.0 {
            pairs.push((s, y, 1.0 / sy));
            if pairs.len() > 3 {
                pairs.remove(0);
            }
        }
        (x, g, f) = (xn, gn, f_new);
        iters += 1;
    }
    let cws = match form {
        WForm::Kfac => cw.to_string(),
        WForm::Const(k) => format!("const={k}"),
        WForm::Proj => format!("proj={cw}"),
    };
    println!(
        "{name} seed {seed} C0 {c0f} bias {label} CW {cws} every {every}{}: {iters} iterations, {evals} evaluations, gap {:.2e}",
        if split { " split" } else { "" },
        (f - pred.objective) / pred.objective
    );
    Ok(())
}
