//! Command-line interface: argument parsing and printing only; the work is in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::config::{human_bytes, UfmConfig, ValidConfig, MAX_HISTORY};
use crate::error::{Error, Result};
use crate::model::loss::Loss;
use crate::io::report::{prediction_text, table, write_json_atomic};
use crate::solver::{Method, SolveParams};
use crate::theory::prediction::predict;
use crate::analysis::verdict::Tolerances;
use crate::commands::verify::{verify, VerifyOptions};

/// Verifies multi-label neural collapse (pick-all-label UFM) by optimisation.
#[derive(Parser, Debug)]
#[command(name = "mlab-nc", version, about, allow_negative_numbers = true)]
pub struct Cli {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Solve the UFM from random starts, compare with the theorem, and give a verdict.
    Ufm(UfmArgs),
    /// Print the theorem's predicted optimum only (no solve).
    Predict(ProblemArgs),
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
    /// Relative gradient tolerance.
    #[arg(long = "tol-grad", default_value_t = SolveParams::default().tol_grad)]
    pub tol_grad: f64,
    /// L-BFGS iteration cap.
    #[arg(long = "max-iters", default_value_t = SolveParams::default().max_iters)]
    pub max_iters: u64,
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
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Also draw configurations that break a precondition (d < K-1, or counts skewed within
    /// a multiplicity).
    #[arg(long)]
    pub outside: bool,
    /// Shrink at most this many failures.
    #[arg(long, default_value_t = 3)]
    pub shrink: usize,
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

/// Flags of `timing`.
#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// Comma list of presets: A, B, C, D, E, scale.
    #[arg(long, default_value = "A,B,C,D,E")]
    pub preset: String,
    /// Target relative objective gap to the prediction.
    #[arg(long, default_value_t = 1e-10)]
    pub gap: f64,
    /// Repetitions per preset (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// L-BFGS implementation.
    #[arg(long, value_enum, default_value_t = Method::InPlace)]
    pub solver: Method,
    /// Number of stored L-BFGS pairs.
    #[arg(long, default_value_t = SolveParams::default().history)]
    pub history: usize,
    /// Write the timings as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The problem: sizes, counts, weight decays and loss.
#[derive(Args, Debug, Clone)]
pub struct ProblemArgs {
    /// Number of classes K (>= 2).
    #[arg(long = "classes", short = 'K', value_name = "K")]
    pub classes: usize,
    /// Largest label-set size M (1..=K).
    #[arg(long = "max-labels", short = 'M', value_name = "M")]
    pub max_labels: usize,
    /// Feature dimension d (default K).
    #[arg(long = "dim", short = 'd', value_name = "d")]
    pub dim: Option<usize>,
    /// Samples per label set: one count, or one per multiplicity ("3,2,1").
    #[arg(long = "per-set", value_name = "COUNTS", default_value = "1", allow_hyphen_values = true)]
    pub per_set: String,
    /// Weight decay on W.
    #[arg(long = "lambda-w", default_value_t = 5e-3, allow_hyphen_values = true)]
    pub lambda_w: f64,
    /// Weight decay on H.
    #[arg(long = "lambda-h", default_value_t = 5e-3, allow_hyphen_values = true)]
    pub lambda_h: f64,
    /// Weight decay on b (0 leaves b unregularised).
    #[arg(long = "lambda-b", default_value_t = 5e-3, allow_hyphen_values = true)]
    pub lambda_b: f64,
    /// Loss: pal (sum over labels), pal-mean (divided by |S|), or bce (one-vs-all sigmoid).
    #[arg(long, value_enum, default_value_t = Loss::Pal)]
    pub loss: Loss,
    /// Explicit sample counts, one label set per line: "i j k : n" (replaces --per-set).
    #[arg(long, value_name = "FILE")]
    pub counts: Option<PathBuf>,
    /// Skew the counts: class k gets weight RHO^(-k/(K-1)), multiplying the per-set counts.
    #[arg(long = "class-skew", value_name = "RHO", allow_hyphen_values = true)]
    pub class_skew: Option<f64>,
    /// With --class-skew, skew only multiplicity 1.
    #[arg(long = "skew-singletons-only")]
    pub skew_singletons_only: bool,
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
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// L-BFGS iteration cap.
    #[arg(long = "max-iters", default_value_t = SolveParams::default().max_iters)]
    pub max_iters: u64,
    /// Relative gradient tolerance: stop when ||grad|| <= TOL sqrt(2 lambda_min |f|).
    #[arg(long = "tol-grad", default_value_t = SolveParams::default().tol_grad, allow_hyphen_values = true)]
    pub tol_grad: f64,
    /// Standard deviation of the Gaussian start.
    #[arg(long = "init-std", default_value_t = SolveParams::default().init_std, allow_hyphen_values = true)]
    pub init_std: f64,
    /// Number of stored L-BFGS pairs.
    #[arg(long, default_value_t = SolveParams::default().history)]
    pub history: usize,
    /// L-BFGS implementation: in-place (default) or argmin (argmin's own, for comparison).
    #[arg(long, value_enum, default_value_t = Method::InPlace)]
    pub solver: Method,
    /// Write the full JSON report here (atomically).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub tol: TolArgs,
}

/// Verdict thresholds.
#[derive(Args, Debug, Clone)]
pub struct TolArgs {
    /// Max relative objective gap to the prediction for `verified`.
    #[arg(long = "tol-objective", default_value_t = Tolerances::default().objective, allow_hyphen_values = true)]
    pub objective: f64,
    /// Max relative certified (duality) gap for `verified`.
    #[arg(long = "tol-certificate", default_value_t = Tolerances::default().certificate, allow_hyphen_values = true)]
    pub certificate: f64,
    /// Max NC2-W, NC2-H, NC3 and relative errors of alpha and s_m.
    #[arg(long = "tol-geometry", default_value_t = Tolerances::default().geometry, allow_hyphen_values = true)]
    pub geometry: f64,
    /// Max NC1.
    #[arg(long = "tol-nc1", default_value_t = Tolerances::default().nc1, allow_hyphen_values = true)]
    pub nc1: f64,
    /// Max tag-wise angle, degrees.
    #[arg(long = "tol-angle", default_value_t = Tolerances::default().angle_deg, allow_hyphen_values = true)]
    pub angle_deg: f64,
    /// Max bias norm (centred when lambda_b = 0).
    #[arg(long = "tol-bias", default_value_t = Tolerances::default().bias, allow_hyphen_values = true)]
    pub bias: f64,
}

impl TolArgs {
    fn to_tolerances(&self) -> Result<Tolerances> {
        let t = Tolerances {
            objective: self.objective,
            certificate: self.certificate,
            geometry: self.geometry,
            nc1: self.nc1,
            angle_deg: self.angle_deg,
            bias: self.bias,
        };
        for (name, v) in [
            ("--tol-objective", t.objective),
            ("--tol-certificate", t.certificate),
            ("--tol-geometry", t.geometry),
            ("--tol-nc1", t.nc1),
            ("--tol-angle", t.angle_deg),
            ("--tol-bias", t.bias),
        ] {
            positive(name, v)?;
        }
        Ok(t)
    }
}

fn positive(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::new(format!("{name} must be a finite number > 0 (got {v})")))
    }
}

/// Parses "3" or "3,2,1" into counts.
pub fn parse_counts(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|t| t.trim().parse::<usize>().map_err(|_| Error::new(format!("--per-set: '{}' is not a sample count (a whole number >= 0)", t.trim()))))
        .collect()
}

impl ProblemArgs {
    /// Validated configuration.
    pub fn to_config(&self) -> Result<ValidConfig> {
        let base = UfmConfig {
            classes: self.classes,
            max_labels: self.max_labels,
            dim: self.dim.unwrap_or(self.classes),
            per_set: parse_counts(&self.per_set)?,
            lambda_w: self.lambda_w,
            lambda_h: self.lambda_h,
            lambda_b: self.lambda_b,
            loss: self.loss,
        };
        match (&self.counts, self.class_skew) {
            (Some(_), Some(_)) => Err(Error::new("--counts and --class-skew cannot be combined")),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
                let counts = crate::model::config::parse_counts_file(&text, &path.display().to_string())?;
                base.validate_with_counts(counts)
            }
            (None, Some(rho)) => {
                if !(rho.is_finite() && rho > 0.0) {
                    return Err(Error::new(format!("--class-skew must be a finite number > 0 (got {rho})")));
                }
                let v = base.clone().validate()?;
                let counts = crate::model::config::skewed_counts(&v.config, rho, self.skew_singletons_only);
                base.validate_with_counts(counts)
            }
            (None, None) => base.validate(),
        }
    }
}

fn run_ufm(a: &UfmArgs) -> Result<i32> {
    let cfg = a.problem.to_config()?;
    positive("--tol-grad", a.tol_grad)?;
    positive("--init-std", a.init_std)?;
    if a.history == 0 || a.history > MAX_HISTORY {
        return Err(Error::new(format!("--history must be between 1 and {MAX_HISTORY}")));
    }
    if a.seeds == 0 {
        return Err(Error::new("--seeds must be at least 1"));
    }
    let opts = VerifyOptions {
        solve: SolveParams { tol_grad: a.tol_grad, max_iters: a.max_iters, init_std: a.init_std, history: a.history, method: a.solver, target_objective: None },
        tol: a.tol.to_tolerances()?,
    };
    let mem = cfg.config.memory_estimate() * (a.seeds.min(rayon::current_num_threads() as u64)) as f64;
    if mem > 256.0 * 1024.0 * 1024.0 {
        eprintln!("estimated memory: {}", human_bytes(mem));
    }
    let seeds: Vec<u64> = (a.seed..a.seed + a.seeds).collect();
    let report = verify(&cfg, &seeds, &opts)?;
    print!("{}", table(&report));
    if let Some(path) = &a.json {
        write_json_atomic(path, &report)?;
        println!("report written to {}", path.display());
    }
    Ok(0)
}

fn run_timing(a: &TimingArgs) -> Result<i32> {
    positive("--gap", a.gap)?;
    if a.repeat == 0 || a.history == 0 || a.history > MAX_HISTORY {
        return Err(Error::new(format!("--repeat must be at least 1 and --history between 1 and {MAX_HISTORY}")));
    }
    let params = SolveParams { method: a.solver, history: a.history, ..SolveParams::default() };
    let mut all = Vec::new();
    println!("{:>6} {:>10} {:>10} {:>8} {:>8} {:>10}   (median of {}, {} thread(s), gap {:e})", "preset", "median s", "min s", "iters", "evals", "end gap", a.repeat, rayon::current_num_threads(), a.gap);
    for name in a.preset.split(',').map(str::trim) {
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
    positive("--tol-grad", a.tol_grad)?;
    let opts = VerifyOptions { solve: SolveParams { tol_grad: a.tol_grad, max_iters: a.max_iters, ..SolveParams::default() }, ..VerifyOptions::default() };
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
        spec.grid.len(),
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
    if a.seeds == 0 {
        return Err(Error::new("--seeds must be at least 1"));
    }
    let p = crate::commands::hunt::HuntParams { budget: a.budget, seed: a.seed, seeds: a.seeds, outside: a.outside, shrink: a.shrink, progress: true };
    let s = crate::commands::hunt::hunt(&p, &a.out, &VerifyOptions::default())?;
    println!(
        "tried {} configurations: {} verified, {} trivial, {} outside the theorem ({} where its value is not reached), {} unresolved, {} counterexamples",
        s.tried, s.verified, s.trivial, s.outside, s.outside_failures, s.unresolved, s.counterexamples
    );
    println!("worst certified gap among the verified: {:.2e}; wall time {:.1} s", s.worst_verified_certified_gap, s.seconds);
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

fn run_measure(a: &MeasureArgs) -> Result<i32> {
    let r = crate::commands::measure::measure_files(&a.features, &a.labels, a.classifier.as_deref(), a.bias.as_deref())?;
    print!("{}", crate::commands::measure::measure_table(&r));
    if let Some(p) = &a.json {
        write_json_atomic(p, &r)?;
        println!("report written to {}", p.display());
    }
    Ok(0)
}

fn run_predict(p: &ProblemArgs) -> Result<i32> {
    let cfg = p.to_config()?;
    let t0 = std::time::Instant::now();
    let pred = predict(&cfg);
    print!("{}", prediction_text(&cfg.config, cfg.labels.samples(), &pred));
    println!("computed in {:.3} ms ({} Newton iterations, |grad g| = {:.1e})", t0.elapsed().as_secs_f64() * 1e3, pred.newton_iterations, pred.reduced_gradient_norm);
    Ok(0)
}

/// Runs the CLI on the given arguments and returns the process exit code.
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
        if t == 0 {
            eprintln!("error: --threads must be at least 1");
            return 2;
        }
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t).build_global();
    }
    let result = match &cli.command {
        Command::Ufm(a) => run_ufm(a),
        Command::Predict(p) => run_predict(p),
        Command::Timing(a) => run_timing(a),
        Command::Measure(a) => run_measure(a),
        Command::Sweep(a) => run_sweep_cmd(a),
        Command::Figures(a) => run_figures(a),
        Command::Hunt(a) => run_hunt(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
