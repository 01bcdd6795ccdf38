//! `hunt`: attack the theorem with random configurations across its stated range, certify
//! every one, and shrink any failure to the smallest configuration that still fails.
//!
//! Draw i uses its own generator seeded by (seed, i), so the same `--seed` draws the same
//! configurations in any order, and a resumed hunt skips the indices already in the file.
//! Inside the preconditions: K in 2..=12, M in 1..=min(K, 4), d in K-1..=2K, counts 1..=5
//! per multiplicity (independent, so unequal across multiplicities), PAL or PAL-mean, and
//! lambda_w lambda_h = (t lambda_c)^2 with t log-uniform in [0.05, 3] (so draws straddle the
//! trivial threshold lambda_c), lambda_w / lambda_h log-uniform in [1/3, 3], lambda_b
//! log-uniform in [1e-4, 1e-1] or 0 (one draw in ten). `--outside` makes half the draws
//! break a precondition: odd draws take d in 1..=K-2; draws 2 mod 4 skew the counts within
//! each multiplicity by class frequency (`--class-skew` with rho log-uniform in [2, 8]).
//!
//! Classes: `verified` (best start at the prediction, geometry as predicted, certified gap),
//! `trivial`, `counterexample` (a start's verdict is a COUNTEREXAMPLE: an attained objective
//! below the prediction's certified lower bound), `outside` (precondition broken; a
//! *failure* when the best start stays above the ETF value by more than 1e-6 relative),
//! `unresolved` (anything else: no start verified, with the reasons in the verdicts).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::verdict::Verdict;
use crate::bail;
use crate::commands::verify::{ufm, VerifyOptions};
use crate::error::{Error, Result};
use crate::io::jsonl::{progress, read_finished, Appender};
use crate::model::config::{UfmConfig, ValidConfig};
use crate::model::loss::Loss;
use crate::theory::prediction::predict;

/// How one configuration came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// At the prediction, certified, geometry as predicted.
    Verified,
    /// Trivial optimum, and the solve agrees.
    Trivial,
    /// The theorem fails inside its preconditions.
    Counterexample,
    /// A precondition is broken and the theorem's value is not reached.
    OutsideFailure,
    /// A precondition is broken, yet the theorem's value is reached.
    OutsideHolds,
    /// No certified optimum was reached.
    Unresolved,
}

impl Class {
    /// A failure worth shrinking.
    pub fn is_failure(self) -> bool {
        matches!(self, Class::Counterexample | Class::OutsideFailure)
    }
}

/// The settings that decide what a hunt's lines mean: a file is resumed only with the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntKey {
    /// Wide draws: weight decays over [1e-8, 1e4] and extreme starts.
    #[serde(default)]
    pub wide: bool,
    /// Master seed.
    pub seed: u64,
    /// Starts per configuration.
    pub seeds: u64,
    /// Outside draws enabled.
    pub outside: bool,
}

/// One line of the hunt's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HuntRecord {
    /// Draw index.
    pub index: u64,
    /// The hunt's settings.
    pub hunt: HuntKey,
    /// The configuration.
    pub config: UfmConfig,
    /// Class-frequency skew of the counts, when drawn outside the theorem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_skew: Option<f64>,
    /// Inside the theorem's preconditions.
    pub inside: bool,
    /// Outcome.
    pub class: Class,
    /// Relative objective gap of the best start to the prediction.
    pub best_gap: f64,
    /// Certified relative gap of the best start.
    pub certified_gap: Option<f64>,
    /// Verdict of every start.
    pub verdicts: Vec<Verdict>,
    /// Wall time.
    pub seconds: f64,
    /// The start's standard deviation, when the draw chose it (`--wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_std: Option<f64>,
    /// The best start's reasons, when it is not verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// Draw `index` of the hunt with master seed `seed`, and the class skew it applies (if any).
pub fn draw_skewed(seed: u64, index: u64, outside: bool) -> Result<(ValidConfig, Option<f64>)> {
    let cfg = draw(seed, index, outside)?;
    if !(outside && index % 4 == 2 && cfg.config.classes >= 3) {
        return Ok((cfg, None));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ index);
    let rho = log_uniform(&mut rng, 2.0, 8.0);
    Ok((with_skew(&cfg.config, rho)?, Some(rho)))
}

/// The configuration with its counts skewed by class frequency.
pub fn with_skew(c: &UfmConfig, rho: f64) -> Result<ValidConfig> {
    c.clone().validate_with_counts(crate::model::config::skewed_counts(c, rho, false))
}

/// Draw `index` of the hunt with master seed `seed` (balanced counts).
pub fn draw(seed: u64, index: u64, outside: bool) -> Result<ValidConfig> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    let k = rng.random_range(2..=12usize);
    let m = rng.random_range(1..=k.min(4));
    let break_dim = outside && index % 2 == 1 && k >= 3;
    let d = if break_dim { rng.random_range(1..=k - 2) } else { rng.random_range(k - 1..=2 * k) };
    let per_set: Vec<usize> = (0..m).map(|_| rng.random_range(1..=5usize)).collect();
    let loss = if rng.random::<bool>() { Loss::Pal } else { Loss::PalMean };
    let base = UfmConfig { classes: k, max_labels: m, dim: d, per_set, lambda_w: 1.0, lambda_h: 1.0, lambda_b: 1e-3, loss };
    let lam_c = predict(&base.clone().validate()?).trivial_statistic.sqrt();
    let t = log_uniform(&mut rng, 0.05, 3.0);
    let rho = log_uniform(&mut rng, 1.0 / 3.0, 3.0);
    let lb = if rng.random_range(0..10) == 0 { 0.0 } else { log_uniform(&mut rng, 1e-4, 1e-1) };
    UfmConfig { lambda_w: t * lam_c * rho, lambda_h: t * lam_c / rho, lambda_b: lb, ..base }.validate()
}

/// Draw `index` of a wide hunt with master seed `seed`: the sizes and counts of [`draw`]
/// (inside the preconditions), with lambda_w and lambda_h log-uniform over [1e-8, 1e4] each,
/// lambda_b too (or 0, one draw in ten), and the start's standard deviation log-uniform over
/// [1e-3, 10]. Returns the configuration and that standard deviation.
pub fn draw_wide(seed: u64, index: u64) -> Result<(ValidConfig, f64)> {
    let base = draw(seed, index, false)?.config;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ index);
    let lw = log_uniform(&mut rng, 1e-8, 1e4);
    let lh = log_uniform(&mut rng, 1e-8, 1e4);
    let lb = if rng.random_range(0..10) == 0 { 0.0 } else { log_uniform(&mut rng, 1e-8, 1e4) };
    let init_std = log_uniform(&mut rng, 1e-3, 10.0);
    Ok((UfmConfig { lambda_w: lw, lambda_h: lh, lambda_b: lb, ..base }.validate()?, init_std))
}

/// One configuration's classification.
#[derive(Debug, Clone)]
pub struct Classified {
    /// The hunt's class.
    pub class: Class,
    /// The best start's relative objective gap to the prediction.
    pub gap: f64,
    /// The best start's certified relative gap, if a certificate was computed.
    pub certified_gap: Option<f64>,
    /// Every start's verdict.
    pub verdicts: Vec<Verdict>,
    /// The best start's reasons (empty when verified).
    pub reasons: Vec<String>,
}

/// Solves and classifies one configuration.
pub fn classify(cfg: &ValidConfig, seeds: u64, opts: &VerifyOptions) -> Result<Classified> {
    let r = ufm(cfg, 0, seeds, opts, false)?;
    let best = r.best_run().ok_or_else(|| Error::new("no runs"))?;
    let gap = best.relative_objective_gap;
    let cert = best.certificate.relative_gap;
    let verdicts: Vec<Verdict> = r.runs.iter().map(|x| x.verdict).collect();
    let certified = cert.is_some_and(|g| g <= opts.tol.certificate);
    let counterexample = r.runs.iter().any(|x| x.reasons.iter().any(|s| s.starts_with("COUNTEREXAMPLE")));
    let class = if !r.predicted.etf_possible || !cfg.labels.balanced_within_multiplicity() {
        if gap.abs() > 1e-6 {
            Class::OutsideFailure
        } else {
            Class::OutsideHolds
        }
    } else if counterexample {
        Class::Counterexample
    } else if best.verdict == Verdict::Verified {
        Class::Verified
    } else if best.verdict == Verdict::Trivial && certified {
        Class::Trivial
    } else {
        Class::Unresolved
    };
    let reasons = if class == Class::Verified { Vec::new() } else { best.reasons.clone() };
    Ok(Classified { class, gap, certified_gap: cert, verdicts, reasons })
}

/// The `mlab-nc ufm` command that reproduces a configuration.
pub fn command(c: &UfmConfig, skew: Option<f64>, seeds: u64) -> String {
    let per: Vec<String> = c.per_set.iter().map(|v| v.to_string()).collect();
    let skew = skew.map(|r| format!(" --class-skew {r}")).unwrap_or_default();
    format!(
        "mlab-nc ufm --classes {} --max-labels {} --dim {} --per-set {}{skew} --lambda-w {:e} --lambda-h {:e} --lambda-b {:e} --loss {} --seeds {}",
        c.classes,
        c.max_labels,
        c.dim,
        per.join(","),
        c.lambda_w,
        c.lambda_h,
        c.lambda_b,
        c.loss.name(),
        seeds
    )
}

/// Candidate simplifications of a failing configuration, in the order: smaller K, smaller M,
/// smaller counts, smaller d, simpler lambdas.
fn shrink_candidates(c: &UfmConfig) -> Vec<UfmConfig> {
    let mut out = Vec::new();
    let inside_dim = c.dim + 1 >= c.classes;
    if c.classes > 2 {
        let k = c.classes - 1;
        let m = c.max_labels.min(k);
        let d = if inside_dim { c.dim.max(k - 1).min(2 * k) } else { c.dim.min(k.saturating_sub(2)).max(1) };
        out.push(UfmConfig { classes: k, max_labels: m, dim: d, per_set: c.per_set[..m].to_vec(), ..c.clone() });
    }
    if c.max_labels > 1 {
        out.push(UfmConfig { max_labels: c.max_labels - 1, per_set: c.per_set[..c.max_labels - 1].to_vec(), ..c.clone() });
    }
    for i in 0..c.per_set.len() {
        if c.per_set[i] > 1 {
            let mut p = c.per_set.clone();
            p[i] = 1;
            out.push(UfmConfig { per_set: p, ..c.clone() });
        }
    }
    let dmin = if inside_dim { c.classes - 1 } else { 1 };
    if c.dim > dmin {
        out.push(UfmConfig { dim: dmin, ..c.clone() });
        out.push(UfmConfig { dim: c.dim - 1, ..c.clone() });
    }
    let round1 = |x: f64| if x == 0.0 { 0.0 } else { format!("{x:.0e}").parse().unwrap_or(x) };
    let lam = round1((c.lambda_w * c.lambda_h).sqrt());
    let simple = UfmConfig { lambda_w: lam, lambda_h: lam, lambda_b: round1(c.lambda_b), ..c.clone() };
    if simple != *c {
        out.push(simple);
    }
    out
}

/// Greedy shrinking: take the first candidate that still fails, until none does. A skewed
/// configuration keeps its skew.
pub fn shrink(cfg: &UfmConfig, skew: Option<f64>, seeds: u64, opts: &VerifyOptions) -> Result<(UfmConfig, usize)> {
    let mut cur = cfg.clone();
    let mut steps = 0;
    'outer: loop {
        for cand in shrink_candidates(&cur) {
            let built = match skew {
                Some(rho) => with_skew(&cand, rho),
                None => cand.clone().validate(),
            };
            let Ok(v) = built else { continue };
            if classify(&v, seeds, opts)?.class.is_failure() {
                cur = cand;
                steps += 1;
                continue 'outer;
            }
        }
        return Ok((cur, steps));
    }
}

/// A reason without its numbers, to count reasons of one kind together.
fn reason_kind(r: &str) -> String {
    let words: Vec<&str> = r.split_whitespace().filter(|w| !w.chars().any(|c| c.is_ascii_digit())).collect();
    words.join(" ").chars().take(120).collect()
}

/// The summary counted record by record, and the failures to shrink.
#[derive(Default)]
struct Tally {
    summary: HuntSummary,
    failures: Vec<HuntRecord>,
}

impl Tally {
    fn add(&mut self, r: HuntRecord) {
        let s = &mut self.summary;
        s.tried += 1;
        match r.class {
            Class::Verified => {
                s.verified += 1;
                s.worst_verified_certified_gap = s.worst_verified_certified_gap.max(r.certified_gap.unwrap_or(f64::NAN));
            }
            Class::Trivial => s.trivial += 1,
            Class::Counterexample => {
                s.counterexamples += 1;
                self.failures.push(r);
            }
            Class::OutsideFailure => {
                s.outside += 1;
                s.outside_failures += 1;
                self.failures.push(r);
            }
            Class::OutsideHolds => s.outside += 1,
            Class::Unresolved => {
                s.unresolved += 1;
                let why = r.reasons.first().map_or("no reason recorded".to_string(), |w| reason_kind(w));
                *s.unresolved_reasons.entry(why).or_insert(0) += 1;
            }
        }
    }
}

/// The closing summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HuntSummary {
    /// Configurations in the file after this run.
    pub tried: usize,
    /// By class.
    pub verified: usize,
    /// Trivial regime.
    pub trivial: usize,
    /// Outside the preconditions (failures and holds).
    pub outside: usize,
    /// Outside, and the theorem's value was not reached.
    pub outside_failures: usize,
    /// No certified optimum.
    pub unresolved: usize,
    /// Counterexamples.
    pub counterexamples: usize,
    /// Worst certified gap among the verified.
    pub worst_verified_certified_gap: f64,
    /// Smallest failing configurations found by shrinking, as commands.
    pub shrunk: Vec<String>,
    /// The unresolved configurations by kind of reason.
    pub unresolved_reasons: std::collections::BTreeMap<String, usize>,
    /// Wall time of this invocation.
    pub seconds: f64,
}

/// Settings of a hunt.
pub struct HuntParams {
    /// Configurations to draw.
    pub budget: u64,
    /// Master seed.
    pub seed: u64,
    /// Starts per configuration.
    pub seeds: u64,
    /// Also draw configurations outside the preconditions.
    pub outside: bool,
    /// Wide draws ([`draw_wide`]).
    pub wide: bool,
    /// Failures to shrink at most.
    pub shrink: usize,
    /// Show a progress bar (stderr, only on a terminal).
    pub progress: bool,
}

/// A line of a hunt file as far as resuming needs it: its settings (lines of another hunt, or
/// of an older version, are refused with a message rather than misread).
#[derive(Debug, Clone, Deserialize)]
struct HuntLine {
    hunt: Option<HuntKey>,
}

fn settings(k: &HuntKey) -> String {
    format!("--seed {} --seeds {}{}{}", k.seed, k.seeds, if k.outside { " --outside" } else { "" }, if k.wide { " --wide" } else { "" })
}

/// Runs (or resumes) a hunt, appending one JSON line per configuration to `out`.
pub fn hunt(p: &HuntParams, out: &Path, opts: &VerifyOptions) -> Result<HuntSummary> {
    let t0 = std::time::Instant::now();
    if p.wide && p.outside {
        bail!("--wide draws inside the preconditions: it cannot be combined with --outside");
    }
    let key = HuntKey { wide: p.wide, seed: p.seed, seeds: p.seeds, outside: p.outside };
    let lines = read_finished::<HuntLine>(out)?.records;
    if let Some(other) = lines.iter().find(|l| l.hunt != Some(key)) {
        let was = other.hunt.as_ref().map_or("an unknown or older version".to_string(), settings);
        bail!("{} holds a hunt run with {was}, not {}; resume with those settings or choose another --out", out.display(), settings(&key));
    }
    let records: Vec<HuntRecord> = read_finished::<HuntRecord>(out)?.records.into_iter().filter(|r| r.index < p.budget).collect();
    let done: std::collections::HashSet<u64> = records.iter().map(|r| r.index).collect();
    // Counted as they finish, nothing kept but the failures: a hunt's memory does not grow with
    // its budget (10^15 configurations listed up front were 8 PB; every record kept, about
    // 500 bytes a configuration).
    let mut tally = Tally::default();
    for r in records {
        tally.add(r);
    }
    let file = Appender::open(out)?;
    let left = usize::try_from(p.budget - done.len() as u64).unwrap_or(usize::MAX);
    let pb = progress(left, "configurations", p.progress);
    let tally = std::sync::Mutex::new(tally);
    (0..p.budget).into_par_iter().filter(|i| !done.contains(i)).try_for_each(|i| -> Result<()> {
        let t = std::time::Instant::now();
        let (cfg, class_skew, init_std) = if p.wide {
            let (cfg, std) = draw_wide(p.seed, i)?;
            (cfg, None, Some(std))
        } else {
            let (cfg, skew) = draw_skewed(p.seed, i, p.outside)?;
            (cfg, skew, None)
        };
        let o = VerifyOptions { solve: crate::solver::SolveParams { init_std: init_std.unwrap_or(opts.solve.init_std), ..opts.solve }, ..*opts };
        let Classified { class, gap: best_gap, certified_gap, verdicts, reasons } = classify(&cfg, p.seeds, &o)?;
        let inside = cfg.config.dim + 1 >= cfg.config.classes && cfg.labels.balanced_within_multiplicity();
        let rec = HuntRecord {
            index: i,
            hunt: key,
            inside,
            config: cfg.config,
            class_skew,
            class,
            best_gap,
            certified_gap,
            verdicts,
            seconds: t.elapsed().as_secs_f64(),
            init_std,
            reasons,
        };
        file.write(&rec)?;
        pb.inc(1);
        tally.lock().map_err(|_| Error::new("hunt: a worker panicked"))?.add(rec);
        Ok(())
    })?;
    pb.finish_and_clear();
    let Tally { summary: mut s, mut failures } = tally.into_inner().map_err(|_| Error::new("hunt: a worker panicked"))?;
    // The smallest first; the same order whatever order the runs finished in.
    failures.sort_by_key(|r| (r.config.classes, r.index));
    for f in failures.iter().take(p.shrink) {
        let (small, _) = shrink(&f.config, f.class_skew, p.seeds, opts)?;
        s.shrunk.push(command(&small, f.class_skew, p.seeds));
    }
    s.seconds = t0.elapsed().as_secs_f64();
    Ok(s)
}
