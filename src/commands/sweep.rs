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

/// A parsed sweep file: the listed values of each key. The grid is their Cartesian product,
/// kept as the lists: grid point i is decoded from i when a run needs it (mixed radix, the
/// loss varying fastest), so a grid of 10^9 points takes no more memory than its file.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    classes: Vec<usize>,
    max_labels: Vec<usize>,
    /// `None`: d = K at every point.
    dims: Option<Vec<usize>>,
    per_sets: Vec<Vec<usize>>,
    lambda_w: Vec<f64>,
    lambda_h: Vec<f64>,
    lambda_b: Vec<f64>,
    losses: Vec<Loss>,
    points: u64,
    /// Starts per grid point.
    pub seeds: u64,
}

/// One run of the sweep: grid point and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId {
    /// Index into the grid.
    pub grid: u64,
    /// Seed.
    pub seed: u64,
}

/// The most distinct problem shapes (classes x max_labels x dim x per_set) a sweep file may
/// list: each is checked, its label sets built, when the file is read.
pub const MAX_SHAPES: u64 = 100_000;

/// The keys of a sweep file, in the grid's order.
const KEYS: [&str; 9] = ["classes", "max_labels", "dim", "per_set", "lambda_w", "lambda_h", "lambda_b", "loss", "seeds"];

/// A key's value as a list: a scalar is a list of one; `what` names one element in errors.
fn list<T>(key: &str, v: &toml::Value, what: &str, one: impl Fn(&toml::Value) -> Option<T>) -> Result<Vec<T>> {
    let bad = || Error::new(format!("{key}: expected {what} or a list of them, got {v}"));
    let out = match v {
        toml::Value::Array(items) => items.iter().map(|x| one(x).ok_or_else(bad)).collect::<Result<Vec<T>>>()?,
        x => vec![one(x).ok_or_else(bad)?],
    };
    if out.is_empty() {
        bail!("{key}: an empty list sweeps nothing");
    }
    Ok(out)
}

fn whole(v: &toml::Value) -> Option<usize> {
    v.as_integer().and_then(|i| usize::try_from(i).ok())
}

fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// `per_set`: a count, a list of counts (one configuration), or a list of such lists (swept).
fn per_sets(v: Option<&toml::Value>) -> Result<Vec<Vec<usize>>> {
    let what = "a count, a list of counts (one configuration), or a list of such lists";
    let counts = |x: &toml::Value| x.as_array()?.iter().map(whole).collect::<Option<Vec<usize>>>();
    let bad = |v: &toml::Value| Error::new(format!("per_set: expected {what}, got {v}"));
    match v {
        None => Ok(vec![vec![1]]),
        Some(all @ toml::Value::Array(items)) if items.iter().any(toml::Value::is_array) => list("per_set", all, what, counts),
        Some(a @ toml::Value::Array(_)) => Ok(vec![counts(a).ok_or_else(|| bad(a))?]),
        Some(x) => Ok(vec![vec![whole(x).ok_or_else(|| bad(x))?]]),
    }
}

/// Parses a sweep file's text; `name` prefixes errors. Every grid point is checked here, not
/// when it runs: each listed weight decay on its own and each problem shape once (the two
/// checks are independent, [`crate::model::config::check_lambdas`]).
pub fn parse_spec(text: &str, name: &str) -> Result<SweepSpec> {
    parse(text).map_err(|e| Error::new(format!("{name}: {}", e.0)))
}

fn parse(text: &str) -> Result<SweepSpec> {
    let table: toml::Table = toml::from_str(text).map_err(|e| Error::new(crate::io::toml_message(text, &e)))?;
    if let Some(k) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        bail!("unknown key `{k}`, expected one of {}", KEYS.map(|k| format!("`{k}`")).join(", "));
    }
    let get = |key: &str| table.get(key);
    let need = |key: &str| get(key).ok_or_else(|| Error::new(format!("missing key `{key}`")));
    let counts = "a whole number >= 0";
    let classes = list("classes", need("classes")?, counts, whole)?;
    let max_labels = list("max_labels", need("max_labels")?, counts, whole)?;
    let dims = get("dim").map(|v| list("dim", v, counts, whole)).transpose()?;
    let per_sets = per_sets(get("per_set"))?;
    let lam = |key: &str| get(key).map_or(Ok(vec![5e-3]), |v| list(key, v, "a number", number));
    let (lambda_w, lambda_h, lambda_b) = (lam("lambda_w")?, lam("lambda_h")?, lam("lambda_b")?);
    let losses = match get("loss") {
        None => vec![Loss::Pal],
        Some(v) => list("loss", v, "a loss name", |x| x.as_str().map(str::to_string))?.iter().map(|n| Loss::from_name(n)).collect::<Result<_>>()?,
    };
    let seeds = match get("seeds") {
        None => 1,
        Some(v) => v
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .filter(|&s| s >= 1)
            .ok_or_else(|| Error::new(format!("'seeds' must be a whole number, at least 1 (got {v})")))?,
    };
    let mut spec = SweepSpec { classes, max_labels, dims, per_sets, lambda_w, lambda_h, lambda_b, losses, points: 0, seeds };
    let lens = spec.lens();
    let Some(points) = lens.iter().try_fold(1u64, |a, &l| a.checked_mul(l as u64)) else {
        bail!("the grid has more than 2^64 points; split the sweep");
    };
    spec.points = points;
    // Each weight decay once, at the first value of every other list.
    for axis in 4..7 {
        for i in 0..lens[axis] {
            let mut at = [0; 8];
            at[axis] = i;
            let c = spec.raw(spec.index(at));
            crate::model::config::check_lambdas(c.lambda_w, c.lambda_h, c.lambda_b).map_err(|e| spec.at(spec.index(at), e))?;
        }
    }
    let shapes = lens[..4].iter().map(|&l| l as u64).product::<u64>();
    if shapes > MAX_SHAPES {
        bail!("{shapes} problem shapes (classes x max_labels x dim x per_set), more than {MAX_SHAPES} in one file; split the sweep");
    }
    for shape in 0..shapes {
        let i = shape * (points / shapes);
        spec.point(i)?;
    }
    Ok(spec)
}

impl SweepSpec {
    /// Number of grid points.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// The lists' lengths, in the grid's order (d: one when it follows K).
    fn lens(&self) -> [usize; 8] {
        let d = self.dims.as_ref().map_or(1, Vec::len);
        [self.classes.len(), self.max_labels.len(), d, self.per_sets.len(), self.lambda_w.len(), self.lambda_h.len(), self.lambda_b.len(), self.losses.len()]
    }

    /// The grid index of one position on each list.
    fn index(&self, at: [usize; 8]) -> u64 {
        self.lens().iter().zip(at).fold(0u64, |i, (&l, a)| i * l as u64 + a as u64)
    }

    fn at(&self, i: u64, e: Error) -> Error {
        Error::new(format!("grid point {i}: {}", e.0))
    }

    /// Grid point `i` as written (`per_set` as listed).
    fn raw(&self, i: u64) -> UfmConfig {
        let mut at = [0usize; 8];
        let mut r = i;
        for (slot, &l) in at.iter_mut().zip(self.lens().iter()).rev() {
            *slot = (r % l as u64) as usize;
            r /= l as u64;
        }
        let classes = self.classes[at[0]];
        UfmConfig {
            classes,
            max_labels: self.max_labels[at[1]],
            dim: self.dims.as_ref().map_or(classes, |d| d[at[2]]),
            per_set: self.per_sets[at[3]].clone(),
            lambda_w: self.lambda_w[at[4]],
            lambda_h: self.lambda_h[at[5]],
            lambda_b: self.lambda_b[at[6]],
            loss: self.losses[at[7]],
        }
    }

    /// Grid point `i`'s configuration as checked (`per_set` one count per multiplicity):
    /// what its output lines hold.
    pub fn config(&self, i: u64) -> UfmConfig {
        self.raw(i).normalised()
    }

    /// Grid point `i`, checked, with its label sets (every point passed when the file was read).
    pub fn point(&self, i: u64) -> Result<ValidConfig> {
        self.raw(i).validate().map_err(|e| self.at(i, e))
    }
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
        let Some(total) = self.points.checked_mul(self.seeds) else {
            bail!("the sweep's {} grid point(s) x {} seed(s) are more than 2^64 runs; split the sweep", self.points, self.seeds);
        };
        let count = total.saturating_sub(shard.0 - 1).div_ceil(shard.1);
        if let Some(short) = crate::model::config::beyond_memory(count as f64 * RUN_BYTES) {
            bail!(
                "the sweep's {} grid point(s) x {} seed(s) give {count} runs to this shard, whose list alone would need {short}; split the sweep (fewer seeds or grid points per file, or --shard)",
                self.points,
                self.seeds
            );
        }
        let step = usize::try_from(shard.1).unwrap_or(usize::MAX);
        Ok((shard.0 - 1..total).step_by(step).map(|r| RunId { grid: r / self.seeds, seed: r % self.seeds }).collect())
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
        if !done.contains(&key_of(&spec.config(r.grid), r.seed)?) {
            todo.push(*r);
        }
    }
    let file = Appender::open(out)?;
    let pb = progress(todo.len(), "runs", show_progress);
    let verdicts = Mutex::new(BTreeMap::new());
    // The runs of one grid point are consecutive; each point's label sets, objective and
    // prediction are built once, when its first run starts, and its seeds run in parallel.
    let points: Vec<&[RunId]> = todo.chunk_by(|a, b| a.grid == b.grid).collect();
    points.par_iter().try_for_each(|runs| -> Result<()> {
        let cfg = spec.point(runs[0].grid)?;
        let (obj, pred) = (UfmObjective::new(&cfg), predict(&cfg));
        runs.par_iter().try_for_each(|r| -> Result<()> {
            let mut run = run_start(&cfg, &obj, &pred, r.seed, opts)?;
            run.history.clear();
            file.write(&SweepRecord { config: &cfg.config, predicted: &pred, run: &run })?;
            if let Ok(mut v) = verdicts.lock() {
                *v.entry(run.verdict.name().to_string()).or_insert(0) += 1;
            }
            pb.inc(1);
            Ok(())
        })
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
