//! Command-line interface: argument parsing (clap does the validation it can) and printing.
//! The work is in the library; each command is one call.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::analysis::report::{PredictionReport, UfmReport};
use crate::analysis::verdict::{Tolerances, Verdict};
use crate::commands::verify::{ufm_with_progress, Progress, VerifyOptions};
use crate::error::{Error, Result};
use crate::io::report::{check_writable, prediction_text, table, write_json_atomic};
use crate::model::config::{human_bytes, UfmConfig, ValidConfig};
use crate::model::loss::Loss;
use crate::solver::problem::MAX_HISTORY;
use crate::solver::{Method, SolveParams};

/// Verifies multi-label neural collapse (pick-all-label UFM) by optimisation.
#[derive(Parser, Debug)]
#[command(name = "mlab-nc", version, about, allow_negative_numbers = true)]
pub struct Cli {
    /// Worker threads, 1 to 1024 (default: all cores). Results do not depend on it.
    #[arg(long, global = true, value_parser = thread_count)]
    pub threads: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Solve the UFM from random starts, compare with the theorem, and give a verdict.
    Ufm(UfmArgs),
    /// Print the theorem's predicted optimum only (no solve).
    Predict(PredictArgs),
    /// Run a TOML grid of ufm configurations, one JSON line per run (resumable, shardable).
    Sweep(SweepArgs),
    /// Search for counterexamples with random certified solves; shrink any failure.
    Hunt(HuntArgs),
    /// Regenerate every figure (PNG and SVG) from real solves.
    Figures(FiguresArgs),
    /// Measure the neural-collapse metrics of exported features (.npy).
    Measure(MeasureArgs),
    /// Time solves of the benchmark presets (A..E, scale) to a relative gap; prints medians.
    Timing(TimingArgs),
    /// Train a network on multi-label images (Fashion-MNIST) and measure its collapse, with
    /// the UFM prediction beside it.
    #[cfg(feature = "train")]
    Train(TrainArgs),
}

/// A finite number >= 0.
fn non_negative(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a finite number >= 0")),
    }
}

/// A whole number >= 1.
fn at_least_1(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("'{s}' is not a whole number >= 1")),
    }
}

/// The most worker threads `--threads` starts (4096 took 10 s to start on two cores, before
/// any work).
const MAX_THREADS: u64 = 1024;

/// The least time between two partial reports of `ufm --seeds N --json` (each rewrites the
/// whole report).
const PARTIAL_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A thread count, 1 to [`MAX_THREADS`].
fn thread_count(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if (1..=MAX_THREADS).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a whole number from 1 to {MAX_THREADS}")),
    }
}

/// A whole number >= 2.
fn at_least_2(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if v >= 2 => Ok(v),
        _ => Err(format!("'{s}' is not a whole number >= 2")),
    }
}

/// A finite number > 0.
fn positive(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a finite number > 0")),
    }
}

/// The solver's settings, shared by `ufm`, `sweep`, `hunt` and `timing`.
#[derive(Args, Debug, Clone)]
pub struct SolverArgs {
    /// L-BFGS iteration cap.
    #[arg(long = "max-iters", default_value_t = SolveParams::default().max_iters)]
    pub max_iters: u64,
    /// Relative gradient tolerance: stop when ||grad|| <= TOL sqrt(2 lambda_min |f|).
    #[arg(long = "tol-grad", default_value = "1e-8", value_parser = positive, allow_hyphen_values = true)]
    pub tol_grad: f64,
    /// Standard deviation of the seeded Gaussian start.
    #[arg(long = "init-std", default_value_t = SolveParams::default().init_std, value_parser = positive, allow_hyphen_values = true)]
    pub init_std: f64,
    /// Number of stored L-BFGS pairs.
    #[arg(long, default_value_t = SolveParams::default().history as u32, value_parser = clap::value_parser!(u32).range(1..=MAX_HISTORY as i64))]
    pub history: u32,
    /// L-BFGS implementation: in-place (default) or argmin (argmin's own, for comparison).
    #[arg(long, value_enum, default_value_t = Method::InPlace)]
    pub solver: Method,
    /// Stop as soon as the duality certificate proves the relative suboptimality at most this
    /// (0 turns the certified stop off; the gradient rule always applies).
    #[arg(long = "tol-stop", default_value = "2e-11", value_parser = non_negative, allow_hyphen_values = true)]
    pub tol_stop: f64,
    /// Wall-time limit per solve, in seconds, checked after each iteration: a solve that
    /// reaches it stops, not converged, and its results are kept.
    #[arg(long = "time-limit", value_name = "SECONDS", value_parser = positive, allow_hyphen_values = true)]
    pub time_limit: Option<f64>,
}

impl SolverArgs {
    /// The solver's settings.
    pub fn params(&self) -> SolveParams {
        SolveParams {
            tol_grad: self.tol_grad,
            max_iters: self.max_iters,
            init_std: self.init_std,
            history: self.history as usize,
            method: self.solver,
            target_objective: None,
            tol_stop: self.tol_stop,
            time_limit: self.time_limit,
        }
    }
}

/// Flags of `sweep`.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// The sweep file (TOML).
    pub file: PathBuf,
    /// Output, one JSON line per run; rerunning skips the runs already in it.
    #[arg(long)]
    pub out: PathBuf,
    /// Run only shard i of n ("i/n"); the n shards together are the whole grid.
    #[arg(long, default_value = "1/1")]
    pub shard: String,
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub tol: TolArgs,
}

/// Flags of `hunt`.
#[derive(Args, Debug, Clone)]
pub struct HuntArgs {
    /// Number of configurations to draw.
    #[arg(long)]
    pub budget: u64,
    /// Master seed (the same seed draws the same configurations).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output, one JSON line per configuration (resumable).
    #[arg(long, default_value = "hunt.jsonl")]
    pub out: PathBuf,
    /// Random starts per configuration.
    #[arg(long, default_value_t = 3, value_parser = at_least_1)]
    pub seeds: u64,
    /// Also draw configurations that break a precondition (d < K-1, or counts skewed within
    /// a multiplicity).
    #[arg(long)]
    pub outside: bool,
    /// Shrink at most this many failures.
    #[arg(long, default_value_t = 3)]
    pub shrink: usize,
    /// Wide draws: lambda_w, lambda_h and lambda_b log-uniform over [1e-8, 1e4], and start
    /// scales from 1e-3 to 10 (inside the preconditions).
    #[arg(long, conflicts_with = "outside")]
    pub wide: bool,
    #[command(flatten)]
    pub solver: SolverArgs,
}

/// Flags of `figures`.
#[derive(Args, Debug, Clone)]
pub struct FiguresArgs {
    /// Output folder.
    #[arg(long, default_value = "figures")]
    pub out: PathBuf,
}

/// Flags of `measure`.
#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    /// Features, N x d, float32 or float64 (.npy).
    #[arg(long)]
    pub features: PathBuf,
    /// Multi-hot labels, N x K, 0/1 (uint8, bool, int or float .npy).
    #[arg(long)]
    pub labels: PathBuf,
    /// Classifier, K x d (nn.Linear.weight layout).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Bias, length K.
    #[arg(long)]
    pub bias: Option<PathBuf>,
    /// Write the full report as JSON here (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Flags of `train`.
#[cfg(feature = "train")]
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// IDX directory (train-/t10k- images and labels, gzipped or not).
    #[arg(long, default_value = crate::data::DEFAULT_DIR)]
    pub data: PathBuf,
    /// Classes K (the first K of the data).
    #[arg(long, short = 'K', default_value_t = 10, value_parser = at_least_2)]
    pub classes: u64,
    /// Largest multiplicity M (1 to 4); the default counts are the first M of 100,10,5,2.
    #[arg(long = "max-labels", short = 'M', value_parser = clap::value_parser!(u64).range(1..=4))]
    pub max_labels: Option<u64>,
    /// Training samples per label set, one count per multiplicity (default 100,10).
    #[arg(long = "per-set", value_delimiter = ',')]
    pub per_set: Option<Vec<usize>>,
    /// Test samples per label set, per multiplicity (default: the first M of 20,2,1,1).
    #[arg(long = "test-per-set", value_delimiter = ',')]
    pub test_per_set: Option<Vec<usize>>,
    /// Architecture.
    #[arg(long, value_enum, default_value = "mlp")]
    pub model: crate::network::model::Arch,
    /// Hidden width.
    #[arg(long, default_value_t = 512, value_parser = at_least_1)]
    pub width: u64,
    /// Hidden layers.
    #[arg(long, default_value_t = 2)]
    pub depth: u64,
    /// Feature dimension d (the classifier is K x d).
    #[arg(long, default_value_t = 256, value_parser = at_least_1)]
    pub dim: u64,
    /// Learned classifier, or a fixed simplex ETF (needs d >= K-1).
    #[arg(long, value_enum, default_value = "learned")]
    pub classifier: crate::network::model::ClassifierKind,
    /// Loss (the UFM's).
    #[arg(long, value_enum, default_value = "pal")]
    pub loss: Loss,
    /// Epochs.
    #[arg(long, default_value_t = 2000, value_parser = at_least_1)]
    pub epochs: u64,
    /// Batch size.
    #[arg(long, default_value_t = 32, value_parser = at_least_2)]
    pub batch: u64,
    /// Initial learning rate (cosine decay to 0).
    #[arg(long, default_value = "0.02", value_parser = positive, allow_hyphen_values = true)]
    pub lr: f64,
    /// SGD momentum, in [0, 1).
    #[arg(long, default_value = "0.9", value_parser = non_negative, allow_hyphen_values = true)]
    pub momentum: f64,
    /// Weight decay on every trainable parameter (the UFM's lambda_w and lambda_b).
    #[arg(long = "weight-decay", default_value = "5e-3", value_parser = non_negative, allow_hyphen_values = true)]
    pub weight_decay: f64,
    /// Feature decay: (fd/2) mean ||h||^2 per batch (the UFM's lambda_h is fd/N).
    #[arg(long = "feature-decay", default_value = "1e-2", value_parser = non_negative, allow_hyphen_values = true)]
    pub feature_decay: f64,
    /// Evaluate (and checkpoint) every k epochs, and at the start and the end.
    #[arg(long = "eval-every", default_value_t = 25, value_parser = at_least_1)]
    pub eval_every: u64,
    /// Seed of the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON line per evaluation; checkpoints go to OUT.ckpt/.
    #[arg(long, default_value = "train.jsonl")]
    pub out: PathBuf,
    /// Write the final features, labels, classifier and bias as .npy files here.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Continue from the last checkpoint of --out.
    #[arg(long)]
    pub resume: bool,
    /// Stop after the checkpoint of this epoch (a multiple of --eval-every); --resume continues.
    #[arg(long = "pause-at")]
    pub pause_at: Option<usize>,
}

/// Flags of `timing`.
#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// Presets: A, B, C, D, E, scale.
    #[arg(long, value_delimiter = ',', default_value = "A,B,C,D,E", value_parser = clap::builder::PossibleValuesParser::new(["A", "B", "C", "D", "E", "scale"]))]
    pub preset: Vec<String>,
    /// Target relative objective gap to the prediction.
    #[arg(long, default_value = "1e-10", value_parser = positive, allow_hyphen_values = true)]
    pub gap: f64,
    /// Repetitions per preset (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = at_least_1)]
    pub repeat: u64,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Write the timings as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The problem: sizes, counts, weight decays and loss.
#[derive(Args, Debug, Clone)]
pub struct ProblemArgs {
    /// Number of classes K (>= 2).
    #[arg(long = "classes", short = 'K', value_name = "K", value_parser = at_least_2)]
    pub classes: u64,
    /// Largest label-set size M (1..=K).
    #[arg(long = "max-labels", short = 'M', value_name = "M", value_parser = at_least_1)]
    pub max_labels: u64,
    /// Feature dimension d (default K).
    #[arg(long = "dim", short = 'd', value_name = "d", value_parser = at_least_1)]
    pub dim: Option<u64>,
    /// Samples per label set: one count, or one per multiplicity ("3,2,1").
    #[arg(long = "per-set", value_name = "COUNTS", value_delimiter = ',', default_value = "1", allow_hyphen_values = true)]
    pub per_set: Vec<usize>,
    /// Weight decay on W.
    #[arg(long = "lambda-w", default_value = "5e-3", value_parser = non_negative, allow_hyphen_values = true)]
    pub lambda_w: f64,
    /// Weight decay on H.
    #[arg(long = "lambda-h", default_value = "5e-3", value_parser = non_negative, allow_hyphen_values = true)]
    pub lambda_h: f64,
    /// Weight decay on b (0 leaves b unregularised).
    #[arg(long = "lambda-b", default_value = "5e-3", value_parser = non_negative, allow_hyphen_values = true)]
    pub lambda_b: f64,
    /// Loss: pal (sum over labels), pal-mean (divided by |S|), or bce (one-vs-all sigmoid).
    #[arg(long, value_enum, default_value_t = Loss::Pal)]
    pub loss: Loss,
    /// Explicit sample counts, one label set per line: "i j k : n" (replaces --per-set).
    #[arg(long, value_name = "FILE", conflicts_with = "class_skew")]
    pub counts: Option<PathBuf>,
    /// Skew the counts: class k gets weight RHO^(-k/(K-1)), multiplying the per-set counts.
    #[arg(long = "class-skew", value_name = "RHO", value_parser = positive, allow_hyphen_values = true)]
    pub class_skew: Option<f64>,
    /// With --class-skew, skew only multiplicity 1.
    #[arg(long = "skew-singletons-only", requires = "class_skew")]
    pub skew_singletons_only: bool,
}

/// Flags of `predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    /// Write the prediction as JSON here (atomically).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Flags of `ufm`.
#[derive(Args, Debug, Clone)]
pub struct UfmArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of random starts (seeds s, s+1, ...), solved in parallel.
    #[arg(long, default_value_t = 1, value_parser = at_least_1)]
    pub seeds: u64,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Write the full JSON report here (atomically).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Also write every iteration's objective and gradient norm into the JSON report.
    #[arg(long)]
    pub trace: bool,
    /// Exit with code 1 unless the verdict is this one (verified, violated, not-converged,
    /// trivial, outside-theorem, unresolved): the theorem as a test in a script or CI.
    #[arg(long, value_name = "VERDICT", value_parser = verdict_name)]
    pub expect: Option<Verdict>,
    #[command(flatten)]
    pub tol: TolArgs,
}

fn verdict_name(s: &str) -> std::result::Result<Verdict, String> {
    Verdict::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.name()).collect();
        format!("'{s}' is not a verdict (one of {})", names.join(", "))
    })
}

/// Verdict thresholds.
#[derive(Args, Debug, Clone)]
pub struct TolArgs {
    /// Max relative objective gap to the prediction for `verified`.
    #[arg(long = "tol-objective", default_value = "1e-9", value_parser = positive, allow_hyphen_values = true)]
    pub objective: f64,
    /// Max relative certified (duality) gap for `verified`.
    #[arg(long = "tol-certificate", default_value = "1e-7", value_parser = positive, allow_hyphen_values = true)]
    pub certificate: f64,
    /// Max NC2-W, NC2-H, NC3 and relative errors of alpha and s_m.
    #[arg(long = "tol-geometry", default_value = "1e-4", value_parser = positive, allow_hyphen_values = true)]
    pub geometry: f64,
    /// Max NC1.
    #[arg(long = "tol-nc1", default_value = "1e-8", value_parser = positive, allow_hyphen_values = true)]
    pub nc1: f64,
    /// Max tag-wise angle, degrees.
    #[arg(long = "tol-angle", default_value = "0.01", value_parser = positive, allow_hyphen_values = true)]
    pub angle_deg: f64,
    /// Max bias norm (centred when lambda_b = 0).
    #[arg(long = "tol-bias", default_value = "1e-4", value_parser = positive, allow_hyphen_values = true)]
    pub bias: f64,
}

impl TolArgs {
    /// The thresholds.
    pub fn tolerances(&self) -> Tolerances {
        Tolerances {
            objective: self.objective,
            certificate: self.certificate,
            geometry: self.geometry,
            nc1: self.nc1,
            angle_deg: self.angle_deg,
            bias: self.bias,
        }
    }
}

/// A count that fits this machine's `usize` (clap parses counts as u64).
fn size(name: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::new(format!("{name} is too large ({v})")))
}

impl ProblemArgs {
    /// Validated configuration.
    pub fn to_config(&self) -> Result<ValidConfig> {
        let classes = size("--classes", self.classes)?;
        let base = UfmConfig {
            classes,
            max_labels: size("--max-labels", self.max_labels)?,
            dim: self.dim.map_or(Ok(classes), |d| size("--dim", d))?,
            per_set: self.per_set.clone(),
            lambda_w: self.lambda_w,
            lambda_h: self.lambda_h,
            lambda_b: self.lambda_b,
            loss: self.loss,
        };
        match (&self.counts, self.class_skew) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
                let counts = crate::model::config::parse_counts_file(&text, &path.display().to_string())?;
                base.validate_with_counts(counts)
            }
            (None, Some(rho)) => {
                let v = base.clone().validate()?;
                let counts = crate::model::config::skewed_counts(&v.config, rho, self.skew_singletons_only);
                if let Some(note) = crate::model::config::skew_note(rho, &counts) {
                    eprintln!("note: {note}");
                }
                base.validate_with_counts(counts)
            }
            (None, None) => base.validate(),
        }
    }
}

fn run_ufm(a: &UfmArgs) -> Result<i32> {
    let cfg = a.problem.to_config()?;
    let opts = VerifyOptions { solve: a.solver.params(), tol: a.tol.tolerances() };
    a.json.as_deref().map(check_writable).transpose()?;
    let mem = cfg.config.memory_estimate() * (a.seeds.min(rayon::current_num_threads() as u64)) as f64;
    if mem > 256.0 * 1024.0 * 1024.0 {
        eprintln!("estimated memory: {}", human_bytes(mem));
    }
    // With several starts and --json, the finished starts are written as they come (at most
    // every 10 s), so that a run stopped part way keeps them.
    let write_partial = |r: &UfmReport| {
        if let Some(path) = &a.json {
            if let Err(e) = write_json_atomic(path, r) {
                eprintln!("note: the partial report was not written: {e}");
            }
        }
    };
    let progress = (a.json.is_some() && a.seeds > 1).then_some(Progress { every: PARTIAL_EVERY, show: &write_partial });
    let report = ufm_with_progress(&cfg, a.seed, a.seeds, &opts, a.trace, progress)?;
    print!("{}", table(&report));
    if let Some(path) = &a.json {
        write_json_atomic(path, &report)?;
        println!("report written to {}", path.display());
    }
    match a.expect {
        Some(want) if want != report.verdict => {
            eprintln!("expected VERDICT: {}, got {}", want.name(), report.verdict.name());
            Ok(1)
        }
        _ => Ok(0),
    }
}

fn run_timing(a: &TimingArgs) -> Result<i32> {
    let params = a.solver.params();
    params.validate()?;
    a.json.as_deref().map(check_writable).transpose()?;
    let mut all = Vec::new();
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>8} {:>10}   (median of {}, {} thread(s), gap {:e})",
        "preset",
        "median s",
        "min s",
        "iters",
        "evals",
        "end gap",
        a.repeat,
        rayon::current_num_threads(),
        a.gap
    );
    for name in a.preset.iter().map(|s| s.trim()) {
        let cfg = crate::commands::timing::preset(name)?.validate()?;
        eprintln!("estimated memory for {name}: {}", human_bytes(cfg.config.memory_estimate()));
        let mut runs = (0..a.repeat).map(|_| crate::commands::timing::time_to_gap(name, &cfg, a.gap, &params)).collect::<Result<Vec<_>>>()?;
        runs.sort_by(|x, y| x.seconds.total_cmp(&y.seconds));
        let med = runs[runs.len() / 2].clone();
        println!("{:>6} {:>10.4} {:>10.4} {:>8} {:>8} {:>10.2e}", name, med.seconds, runs[0].seconds, med.iterations, med.evaluations, med.gap);
        all.push(med);
    }
    if let Some(p) = &a.json {
        write_json_atomic(p, &all)?;
    }
    Ok(0)
}

fn run_sweep_cmd(a: &SweepArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| Error::new(format!("{}: cannot read: {e}", a.file.display())))?;
    let spec = crate::commands::sweep::parse_spec(&text, &a.file.display().to_string())?;
    let shard = crate::commands::sweep::parse_shard(&a.shard)?;
    let opts = VerifyOptions { solve: a.solver.params(), tol: a.tol.tolerances() };
    let t0 = std::time::Instant::now();
    let s = crate::commands::sweep::run_sweep(&spec, &a.out, shard, &opts, true)?;
    if s.repaired {
        eprintln!("{}: a torn last line was cut off before resuming", a.out.display());
    }
    let v: Vec<String> = s.verdicts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "shard {}/{}: {} runs ({} grid points x {} seeds in all); {} already done, {} solved in {:.1} s{}{}",
        shard.0,
        shard.1,
        s.shard_runs,
        spec.points(),
        spec.seeds,
        s.skipped,
        s.solved,
        t0.elapsed().as_secs_f64(),
        if v.is_empty() { "" } else { ": " },
        v.join(", ")
    );
    Ok(0)
}

fn run_hunt(a: &HuntArgs) -> Result<i32> {
    let p = crate::commands::hunt::HuntParams {
        budget: a.budget,
        seed: a.seed,
        seeds: a.seeds,
        outside: a.outside,
        wide: a.wide,
        shrink: a.shrink,
        progress: true,
    };
    let s = crate::commands::hunt::hunt(&p, &a.out, &VerifyOptions { solve: a.solver.params(), ..VerifyOptions::default() })?;
    println!(
        "tried {} configurations: {} verified, {} trivial, {} outside the theorem ({} where its value is not reached), {} unresolved, {} counterexamples",
        s.tried, s.verified, s.trivial, s.outside, s.outside_failures, s.unresolved, s.counterexamples
    );
    let worst = if s.verified > 0 { format!("{:.2e}", s.worst_verified_certified_gap) } else { "- (none verified)".to_string() };
    println!("worst certified gap among the verified: {worst}; wall time {:.1} s", s.seconds);
    for (why, n) in &s.unresolved_reasons {
        println!("unresolved ({n}): {why}");
    }
    for c in &s.shrunk {
        println!("smallest failing configuration: {c}");
    }
    Ok(if s.counterexamples > 0 { 1 } else { 0 })
}

fn run_figures(a: &FiguresArgs) -> Result<i32> {
    let t0 = std::time::Instant::now();
    let files = crate::commands::figures::render_all(&a.out)?;
    for f in &files {
        println!("{}", f.display());
    }
    println!("{} files in {:.1} s", files.len(), t0.elapsed().as_secs_f64());
    Ok(0)
}

#[cfg(feature = "train")]
fn run_train(a: &TrainArgs) -> Result<i32> {
    let m = a.max_labels.map(|m| m as usize).or(a.per_set.as_ref().map(Vec::len)).unwrap_or(2);
    let per_set = a.per_set.clone().unwrap_or_else(|| [100, 10, 5, 2][..m].to_vec());
    if per_set.len() != m {
        return Err(Error::new(format!("--per-set has {} counts but --max-labels is {m} (one count per multiplicity)", per_set.len())));
    }
    let test_per_set = a.test_per_set.clone().unwrap_or_else(|| [20, 2, 1, 1][..m].to_vec());
    let o = crate::network::train::TrainOptions {
        data: a.data.clone(),
        classes: a.classes as usize,
        per_set,
        test_per_set,
        model: a.model,
        width: a.width as usize,
        depth: a.depth as usize,
        dim: a.dim as usize,
        classifier: a.classifier,
        loss: a.loss,
        epochs: a.epochs as usize,
        batch: a.batch as usize,
        lr: a.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        feature_decay: a.feature_decay,
        eval_every: a.eval_every as usize,
        seed: a.seed,
    };
    crate::commands::train::run(
        &o,
        &crate::network::train::Outputs { out: Some(a.out.clone()), export: a.export.clone(), resume: a.resume, pause_at: a.pause_at },
    )
}

fn run_measure(a: &MeasureArgs) -> Result<i32> {
    a.json.as_deref().map(check_writable).transpose()?;
    let r = crate::commands::measure::measure_files(&a.features, &a.labels, a.classifier.as_deref(), a.bias.as_deref())?;
    print!("{}", crate::io::report::measure_table(&r));
    if let Some(p) = &a.json {
        write_json_atomic(p, &r)?;
        println!("report written to {}", p.display());
    }
    Ok(0)
}

fn run_predict(a: &PredictArgs) -> Result<i32> {
    let cfg = a.problem.to_config()?;
    a.json.as_deref().map(check_writable).transpose()?;
    let t0 = std::time::Instant::now();
    let report = PredictionReport::new(&cfg);
    let pred = &report.predicted;
    print!("{}", prediction_text(&cfg.config, cfg.labels.samples(), pred));
    println!(
        "computed in {:.3} ms ({} Newton iterations, |grad g| = {:.1e})",
        t0.elapsed().as_secs_f64() * 1e3,
        pred.newton_iterations,
        pred.reduced_gradient_norm
    );
    if let Some(path) = &a.json {
        write_json_atomic(path, &report)?;
        println!("report written to {}", path.display());
    }
    Ok(0)
}

/// Makes glibc's allocator keep and reuse freed memory, for `ufm` (one configuration, a few
/// large buffers); not for `hunt`, `sweep` or `figures`, whose thousands of small solves on
/// every thread ran 8% slower with one arena (`hunt --budget 2000`: medians 7.41 against 6.88
/// s), nor in the Python module, which leaves its host process's allocator alone.
///
/// By default glibc gives every thread its own arena and returns large blocks (128 KB and
/// up, the threshold rising with use) to the kernel on `free`, so the next allocation of that
/// size is mapped and zeroed again page by page. On this machine's VM a first touch costs
/// 1.6 to 3.4 us a page, and E's whole process took 41,000 page faults: the solve's buffers,
/// then the certificate's and the metrics' again, on the other thread's arena. One arena, and
/// blocks below 32 MB (glibc's largest threshold) kept in it, take that to about 25,000 and
/// E's whole process from 1.88 to 1.75 s (docs/performance.md). Nothing here changes a number
/// the program computes.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's `mallopt` parameters (malloc.h).
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: `mallopt` is glibc's documented interface, declared with its C signature
        // (int, int) -> int. It takes the allocator's lock and only changes tuning parameters
        // (the arena limit applies to arenas created later), so it is sound at any time and on
        // any thread. A refused value (it returns 0) leaves the default, equally correct.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
        }
    }
}

/// Runs the CLI on the given arguments and returns the process exit code: 0 on success, 2
/// with a one-line error on bad input (1 from `hunt` when it finds a counterexample).
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 };
            }
            let text = e.render().to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{}", line.join(" "));
            return 2;
        }
    };
    if let Some(t) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(t as usize).build_global() {
            eprintln!("error: --threads {t}: cannot start the threads: {e}");
            return 2;
        }
    }
    if let Command::Ufm(_) = cli.command {
        keep_freed_memory();
    }
    let result = crate::on_pool(|| match &cli.command {
        Command::Ufm(a) => run_ufm(a),
        Command::Predict(p) => run_predict(p),
        Command::Timing(a) => run_timing(a),
        Command::Measure(a) => run_measure(a),
        Command::Sweep(a) => run_sweep_cmd(a),
        Command::Figures(a) => run_figures(a),
        Command::Hunt(a) => run_hunt(a),
        #[cfg(feature = "train")]
        Command::Train(a) => run_train(a),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults written as text in the flags are the library's defaults.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["mlab-nc", "ufm", "-K", "4", "-M", "2"]).unwrap();
        let Command::Ufm(a) = cli.command else { panic!("ufm") };
        let (p, d) = (a.solver.params(), SolveParams::default());
        assert_eq!((p.tol_grad, p.max_iters, p.init_std, p.history, p.tol_stop), (d.tol_grad, d.max_iters, d.init_std, d.history, d.tol_stop));
        assert_eq!(a.tol.tolerances(), Tolerances::default());
        let c = UfmConfig::new(4, 2);
        assert_eq!((a.problem.lambda_w, a.problem.lambda_h, a.problem.lambda_b), (c.lambda_w, c.lambda_h, c.lambda_b));
    }
}
