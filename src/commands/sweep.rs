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
//! Output: one line per finished run (`io::jsonl`). On resume every run whose (config, seed)
//! is already in the file is skipped; a torn last line is cut off first.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::report::RunReport;
use crate::bail;
use crate::commands::verify::{run_start, VerifyOptions};
use crate::error::{Error, Result};
use crate::io::jsonl::{progress, read_finished, Appender};
use crate::model::config::{UfmConfig, ValidConfig};
use crate::model::loss::Loss;
use crate::model::objective::UfmObjective;
use crate::theory::prediction::{predict, Prediction};

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

/// A key that holds one value or a list of values.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `per_set`: a count, a list of counts (one configuration), or a list of lists (swept).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PerSet {
    Count(usize),
    Counts(Vec<usize>),
    Grid(Vec<Vec<usize>>),
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    classes: OneOrMany<usize>,
    max_labels: OneOrMany<usize>,
    dim: Option<OneOrMany<usize>>,
    per_set: Option<PerSet>,
    lambda_w: Option<OneOrMany<f64>>,
    lambda_h: Option<OneOrMany<f64>>,
    lambda_b: Option<OneOrMany<f64>>,
    loss: Option<OneOrMany<Loss>>,
    seeds: Option<u64>,
}

/// Parses a sweep file's text; `name` prefixes errors.
pub fn parse_spec(text: &str, name: &str) -> Result<SweepSpec> {
    let f: SweepFile = toml::from_str(text).map_err(|e| Error::new(format!("{name}: {}", e.message())))?;
    let per_sets = match &f.per_set {
        None => vec![vec![1]],
        Some(PerSet::Count(n)) => vec![vec![*n]],
        Some(PerSet::Counts(v)) => vec![v.clone()],
        Some(PerSet::Grid(v)) => v.clone(),
    };
    let lam = |v: &Option<OneOrMany<f64>>| v.as_ref().map_or(vec![5e-3], OneOrMany::values);
    let (lws, lhs, lbs) = (lam(&f.lambda_w), lam(&f.lambda_h), lam(&f.lambda_b));
    let losses = f.loss.as_ref().map_or(vec![Loss::Pal], OneOrMany::values);
    let seeds = f.seeds.unwrap_or(1);
    if seeds == 0 {
        bail!("{name}: 'seeds' must be at least 1");
    }
    let mut grid = Vec::new();
    for k in f.classes.values() {
        for m in f.max_labels.values() {
            let ds = f.dim.as_ref().map_or(vec![k], OneOrMany::values);
            for &d in &ds {
                for per in &per_sets {
                    for &lw in &lws {
                        for &lh in &lhs {
                            for &lb in &lbs {
                                for &loss in &losses {
                                    let cfg =
                                        UfmConfig { classes: k, max_labels: m, dim: d, per_set: per.clone(), lambda_w: lw, lambda_h: lh, lambda_b: lb, loss };
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

/// Memory a run of a sweep takes while the sweep runs, at most: its id in the shard's list and
/// in the list still to do (16 bytes each), and its key once finished (a configuration's
/// JSON, about 200 bytes).
pub const RUN_BYTES: f64 = 256.0;

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
    /// All runs of shard `i/n`, in order; an error (before anything is allocated) when their
    /// list would not fit in memory, about [`RUN_BYTES`] a run.
    pub fn runs(&self, shard: (u64, u64)) -> Result<Vec<RunId>> {
        let Some(total) = (self.grid.len() as u64).checked_mul(self.seeds) else {
            bail!("the sweep's {} grid point(s) x {} seed(s) are more than 2^64 runs; split the sweep", self.grid.len(), self.seeds);
        };
        let count = total.saturating_sub(shard.0 - 1).div_ceil(shard.1);
        if let Some(short) = crate::model::config::beyond_memory(count as f64 * RUN_BYTES) {
            bail!(
                "the sweep's {} grid point(s) x {} seed(s) give {count} runs to this shard, whose list alone would need {short}; split the sweep (fewer seeds or grid points per file, or --shard)",
                self.grid.len(),
                self.seeds
            );
        }
        let step = usize::try_from(shard.1).unwrap_or(usize::MAX);
        Ok((shard.0 - 1..total).step_by(step).map(|r| RunId { grid: (r / self.seeds) as usize, seed: r % self.seeds }).collect())
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

/// What identifies a line on resume: its configuration and seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SweepKey {
    /// The configuration.
    pub config: UfmConfig,
    /// Seed.
    pub seed: u64,
}

/// The identity of a line: canonical JSON of its config, and its seed.
fn key_of(config: &UfmConfig, seed: u64) -> Result<String> {
    Ok(format!("{}#{seed}", serde_json::to_string(config).map_err(|e| Error::new(e.to_string()))?))
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
    pub verdicts: BTreeMap<String, usize>,
}

/// Runs (the unfinished part of) shard `shard` of `spec`, appending to `out`.
pub fn run_sweep(spec: &SweepSpec, out: &Path, shard: (u64, u64), opts: &VerifyOptions, show_progress: bool) -> Result<SweepSummary> {
    let finished = read_finished::<SweepKey>(out)?;
    let done: HashSet<String> = finished.records.iter().map(|k| key_of(&k.config, k.seed)).collect::<Result<_>>()?;
    let runs = spec.runs(shard)?;
    let mut todo = Vec::new();
    for r in &runs {
        if !done.contains(&key_of(&spec.grid[r.grid].config, r.seed)?) {
            todo.push(*r);
        }
    }
    let file = Appender::open(out)?;
    let preds: Vec<Prediction> = spec.grid.iter().map(predict).collect();
    let pb = progress(todo.len(), "runs", show_progress);
    let verdicts = Mutex::new(BTreeMap::new());
    todo.par_iter().try_for_each(|r| -> Result<()> {
        let cfg = &spec.grid[r.grid];
        let obj = UfmObjective::new(cfg);
        let mut run = run_start(cfg, &obj, &preds[r.grid], r.seed, opts)?;
        run.history.clear();
        file.write(&SweepRecord { config: &cfg.config, predicted: &preds[r.grid], run: &run })?;
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
        repaired: finished.repaired,
        verdicts: verdicts.into_inner().unwrap_or_default(),
    })
}
