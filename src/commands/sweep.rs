//! Sweeps: a TOML grid of `ufm` configurations, solved in parallel, one JSON line per run,
//! resumable and shardable.
//!
//! Keys are the `ufm` flags with underscores (classes, max_labels, dim, per_set, lambda_w,
//! lambda_h, lambda_b, loss) plus `seeds` (starts per grid point, seeds 0..R-1). A key holds a
//! value or a list; lists are swept and the grid is their Cartesian product, in that key
//! order. `per_set` is a count, a list of counts (one configuration), or a list of lists
//! (swept). Run r = grid_index * seeds + seed; shard i/n takes the runs with r mod n = i-1,
//! so the n shards partition the grid exactly.
//!
//! Output: one line per finished run, appended with a single write under a lock. On resume
//! every run whose (config, seed) is already in the file is skipped; a torn last line (the
//! process was killed mid-write) is cut off first.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use toml::Value;

use crate::bail;
use crate::model::config::{UfmConfig, ValidConfig};
use crate::error::{Error, Result};
use crate::model::loss::Loss;
use crate::io::report::RunReport;
use crate::theory::prediction::{predict, Prediction};
use crate::model::objective::UfmObjective;
use crate::commands::verify::{assess, VerifyOptions};

/// A parsed sweep file.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    /// Grid points, in order.
    pub grid: Vec<ValidConfig>,
    /// Starts per grid point.
    pub seeds: u64,
}

/// One run of the sweep: grid point and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId {
    /// Index into the grid.
    pub grid: usize,
    /// Seed.
    pub seed: u64,
}

const KEYS: [&str; 9] = ["classes", "max_labels", "dim", "per_set", "lambda_w", "lambda_h", "lambda_b", "loss", "seeds"];

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn as_usize(key: &str, v: &Value) -> Result<usize> {
    match v {
        Value::Integer(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(Error::new(format!("sweep key '{key}': expected a whole number >= 0, got {v}"))),
    }
}

fn as_f64(key: &str, v: &Value) -> Result<f64> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Integer(i) => Ok(*i as f64),
        _ => Err(Error::new(format!("sweep key '{key}': expected a number, got {v}"))),
    }
}

fn per_set_options(v: &Value) -> Result<Vec<Vec<usize>>> {
    match v {
        Value::Integer(_) => Ok(vec![vec![as_usize("per_set", v)?]]),
        Value::Array(a) if a.iter().all(|x| matches!(x, Value::Array(_))) && !a.is_empty() => {
            a.iter().map(|x| list(x).iter().map(|c| as_usize("per_set", c)).collect()).collect()
        }
        Value::Array(a) => Ok(vec![a.iter().map(|c| as_usize("per_set", c)).collect::<Result<_>>()?]),
        _ => bail!("sweep key 'per_set': expected a count, a list of counts, or a list of lists"),
    }
}

/// Parses a sweep file's text; `name` prefixes errors.
pub fn parse_spec(text: &str, name: &str) -> Result<SweepSpec> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::new(format!("{name}: not valid TOML: {}", e.message())))?;
    for k in table.keys() {
        if !KEYS.contains(&k.as_str()) {
            bail!("{name}: unknown key '{k}' (allowed: {})", KEYS.join(", "));
        }
    }
    let get = |k: &str| table.get(k).map(list);
    let classes = get("classes").ok_or_else(|| Error::new(format!("{name}: 'classes' is required")))?;
    let max_labels = get("max_labels").ok_or_else(|| Error::new(format!("{name}: 'max_labels' is required")))?;
    let dims = get("dim");
    let per_sets = match table.get("per_set") {
        Some(v) => per_set_options(v)?,
        None => vec![vec![1]],
    };
    let lam = |k: &str| -> Result<Vec<f64>> {
        match get(k) {
            Some(v) => v.iter().map(|x| as_f64(k, x)).collect(),
            None => Ok(vec![5e-3]),
        }
    };
    let (lws, lhs, lbs) = (lam("lambda_w")?, lam("lambda_h")?, lam("lambda_b")?);
    let losses: Vec<Loss> = match get("loss") {
        Some(v) => v
            .iter()
            .map(|x| match x.as_str() {
                Some("pal") => Ok(Loss::Pal),
                Some("pal-mean") => Ok(Loss::PalMean),
                _ => Err(Error::new(format!("{name}: sweep key 'loss': expected \"pal\" or \"pal-mean\", got {x}"))),
            })
            .collect::<Result<_>>()?,
        None => vec![Loss::Pal],
    };
    let seeds = match table.get("seeds") {
        Some(v) => as_usize("seeds", v)? as u64,
        None => 1,
    };
    if seeds == 0 {
        bail!("{name}: 'seeds' must be at least 1");
    }
    let mut grid = Vec::new();
    for k in &classes {
        let k = as_usize("classes", k)?;
        for m in &max_labels {
            let m = as_usize("max_labels", m)?;
            let ds: Vec<usize> = match &dims {
                Some(v) => v.iter().map(|x| as_usize("dim", x)).collect::<Result<_>>()?,
                None => vec![k],
            };
            for &d in &ds {
                for per in &per_sets {
                    for &lw in &lws {
                        for &lh in &lhs {
                            for &lb in &lbs {
                                for &loss in &losses {
                                    let cfg = UfmConfig { classes: k, max_labels: m, dim: d, per_set: per.clone(), lambda_w: lw, lambda_h: lh, lambda_b: lb, loss };
                                    let v = cfg.validate().map_err(|e| Error::new(format!("{name}: grid point {}: {e}", grid.len())))?;
                                    grid.push(v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(SweepSpec { grid, seeds })
}

/// Parses `i/n` (1 <= i <= n).
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let bad = || Error::new(format!("--shard: expected i/n with 1 <= i <= n, got '{s}'"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

impl SweepSpec {
    /// All runs of shard `i/n`, in order.
    pub fn runs(&self, shard: (u64, u64)) -> Vec<RunId> {
        let total = self.grid.len() as u64 * self.seeds;
        (0..total)
            .filter(|r| r % shard.1 == shard.0 - 1)
            .map(|r| RunId { grid: (r / self.seeds) as usize, seed: r % self.seeds })
            .collect()
    }
}

/// One line of the output file.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRecord<'a> {
    /// The configuration.
    pub config: &'a UfmConfig,
    /// The prediction.
    pub predicted: &'a Prediction,
    /// The run (its `seed`, objective, metrics, certificate, verdict, ...).
    #[serde(flatten)]
    pub run: &'a RunReport,
}

/// The identity of a line: canonical JSON of its config, and its seed.
fn key_of(config: &serde_json::Value, seed: u64) -> String {
    format!("{}#{seed}", config)
}

/// Reads the finished runs of an output file, cutting off a torn last line.
/// Returns the keys present, how many lines were kept, and whether a line was cut.
pub fn load_finished(path: &Path) -> Result<(HashSet<String>, usize, bool)> {
    let (kept, _, repaired) = load_finished_with(path, "config")?;
    let mut keys = HashSet::new();
    if kept > 0 {
        let text = std::fs::read_to_string(path).map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::new(format!("{}: line {}: {e}", path.display(), i + 1)))?;
            match (v.get("config"), v.get("seed").and_then(|s| s.as_u64())) {
                (Some(c), Some(seed)) => {
                    keys.insert(key_of(c, seed));
                }
                _ => bail!("{}: line {} is not a sweep record", path.display(), i + 1),
            }
        }
    }
    Ok((keys, kept, repaired))
}

/// Cuts off a torn last line of a JSON-lines file (any record type); returns
/// (lines kept, bytes kept, repaired). `field` must be present in every record.
pub fn load_finished_with(path: &Path, field: &str) -> Result<(usize, usize, bool)> {
    let Ok(bytes) = std::fs::read(path) else { return Ok((0, 0, false)) };
    let (mut start, mut kept, mut good_end) = (0usize, 0usize, 0usize);
    let mut repaired = false;
    while start < bytes.len() {
        let end = bytes[start..].iter().position(|&b| b == b'\n').map(|p| start + p);
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes[start..end.unwrap_or(bytes.len())]).ok();
        match (parsed, end) {
            (Some(v), Some(e)) if v.get(field).is_some() => {
                kept += 1;
                good_end = e + 1;
                start = e + 1;
            }
            (_, None) => {
                repaired = true;
                break;
            }
            _ => bail!("{}: line {} is not a valid record (and is not the last line)", path.display(), kept + 1),
        }
    }
    if repaired {
        let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::new(format!("{}: cannot repair: {e}", path.display())))?;
        f.set_len(good_end as u64).map_err(|e| Error::new(format!("{}: cannot repair: {e}", path.display())))?;
    }
    Ok((kept, good_end, repaired))
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepSummary {
    /// Runs in this shard.
    pub shard_runs: usize,
    /// Already in the file.
    pub skipped: usize,
    /// Solved now.
    pub solved: usize,
    /// A torn last line was cut off.
    pub repaired: bool,
    /// Verdict counts of the runs solved now.
    pub verdicts: std::collections::BTreeMap<String, usize>,
}

/// Runs (the unfinished part of) shard `shard` of `spec`, appending to `out`.
pub fn run_sweep(spec: &SweepSpec, out: &Path, shard: (u64, u64), opts: &VerifyOptions, progress: bool) -> Result<SweepSummary> {
    let (done, _, repaired) = load_finished(out)?;
    let cfg_json: Vec<serde_json::Value> =
        spec.grid.iter().map(|g| serde_json::to_value(&g.config).map_err(|e| Error::new(e.to_string()))).collect::<Result<_>>()?;
    let runs = spec.runs(shard);
    let todo: Vec<RunId> = runs.iter().copied().filter(|r| !done.contains(&key_of(&cfg_json[r.grid], r.seed))).collect();
    let file = OpenOptions::new().create(true).append(true).open(out).map_err(|e| Error::new(format!("{}: cannot open for writing: {e}", out.display())))?;
    let file = Mutex::new(file);
    let preds: Vec<Prediction> = spec.grid.iter().map(predict).collect();
    let pb = if progress && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(todo.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {per_sec}  ETA {eta}  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let verdicts = Mutex::new(std::collections::BTreeMap::new());
    todo.par_iter().try_for_each(|r| -> Result<()> {
        let cfg = &spec.grid[r.grid];
        let obj = UfmObjective::new(cfg);
        let sol = obj.solve(r.seed, &opts.solve, None)?;
        let mut run = assess(cfg, &obj, &preds[r.grid], r.seed, sol, &opts.tol);
        run.history.clear();
        let rec = SweepRecord { config: &cfg.config, predicted: &preds[r.grid], run: &run };
        let mut line = serde_json::to_string(&rec).map_err(|e| Error::new(e.to_string()))?;
        line.push('\n');
        {
            let mut f = file.lock().map_err(|_| Error::new("output lock poisoned"))?;
            f.write_all(line.as_bytes()).map_err(|e| Error::new(format!("{}: write failed: {e}", out.display())))?;
        }
        if let Ok(mut v) = verdicts.lock() {
            *v.entry(run.verdict.name().to_string()).or_insert(0) += 1;
        }
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(SweepSummary {
        shard_runs: runs.len(),
        skipped: runs.len() - todo.len(),
        solved: todo.len(),
        repaired,
        verdicts: verdicts.into_inner().unwrap_or_default(),
    })
}
