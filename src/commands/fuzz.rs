//! Fuzzing the command line: random `mlab-nc ufm` invocations over everything it accepts
//! (sizes, counts including 0, weight decays from 1e-300 to 1e300 and 0 for the bias, every
//! loss, extreme start scales), each run as its own process with a deadline. A run must end
//! in time, exit 0 with a verdict or 2 with a one-line error, write JSON that parses, and never
//! be `violated` inside the theorem's preconditions. `tests/fuzz.rs` runs a bounded sample in
//! CI; `cargo run --release --example fuzz -- N` runs N.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One drawn invocation.
#[derive(Debug, Clone)]
pub struct FuzzCase {
    /// Draw index.
    pub index: u64,
    /// The arguments after `mlab-nc`.
    pub args: Vec<String>,
    /// Inside the theorem's preconditions (d >= K-1, a softmax loss, counts balanced; the
    /// per-set layout always is), and with at least one sample.
    pub inside: bool,
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// Draw `index` of the fuzz with master seed `seed` (the same pair, the same invocation).
pub fn draw(seed: u64, index: u64) -> FuzzCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0xA076_1D64_78BD_642F) ^ index);
    let k = rng.random_range(2..=12usize);
    let m = rng.random_range(1..=k.min(5));
    let d = rng.random_range(1..=2 * k);
    let per: Vec<usize> = (0..m).map(|_| if rng.random_range(0..6) == 0 { 0 } else { rng.random_range(1..=4) }).collect();
    let lam = |rng: &mut ChaCha8Rng| log_uniform(rng, 1e-300, 1e300);
    let (lw, lh) = (lam(&mut rng), lam(&mut rng));
    let lb = if rng.random_range(0..5) == 0 { 0.0 } else { lam(&mut rng) };
    let loss = ["pal", "pal-mean", "bce"][rng.random_range(0..3)];
    let init_std = log_uniform(&mut rng, 1e-6, 1e6);
    let seeds = rng.random_range(1..=2u64);
    let args: Vec<String> = [
        "ufm".to_string(),
        "-K".into(),
        k.to_string(),
        "-M".into(),
        m.to_string(),
        "-d".into(),
        d.to_string(),
        "--per-set".into(),
        per.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
        "--lambda-w".into(),
        format!("{lw:e}"),
        "--lambda-h".into(),
        format!("{lh:e}"),
        "--lambda-b".into(),
        format!("{lb:e}"),
        "--loss".into(),
        loss.into(),
        "--init-std".into(),
        format!("{init_std:e}"),
        "--seed".into(),
        index.to_string(),
        "--seeds".into(),
        seeds.to_string(),
    ]
    .into();
    let inside = d + 1 >= k && loss != "bce" && per.iter().any(|&c| c > 0);
    FuzzCase { index, args, inside }
}

/// How one run ended.
#[derive(Debug, Clone)]
pub struct FuzzOutcome {
    /// Exit code (None: killed at the deadline).
    pub code: Option<i32>,
    /// Wall time.
    pub seconds: f64,
    /// The overall verdict from the JSON report, when there is one.
    pub verdict: Option<String>,
    /// What is wrong with this run (an empty list: nothing).
    pub problems: Vec<String>,
}

/// Runs `binary` on `case` with `--time-limit time_limit --json <dir>/fuzz-<pid>-<index>.json`
/// (the process id keeps harnesses that run at the same time in one folder apart), killing it
/// after `deadline`, and checks the outcome.
pub fn run_case(binary: &Path, case: &FuzzCase, time_limit: f64, deadline: Duration, dir: &Path) -> FuzzOutcome {
    let json = dir.join(format!("fuzz-{}-{}.json", std::process::id(), case.index));
    std::fs::remove_file(&json).ok();
    let mut args = case.args.clone();
    args.extend([
        "--time-limit".to_string(),
        time_limit.to_string(),
        "--json".to_string(),
        json.display().to_string(),
        "--threads".to_string(),
        "1".to_string(),
    ]);
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let mut child = match Command::new(binary).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return FuzzOutcome { code: None, seconds: 0.0, verdict: None, problems: vec![format!("cannot start {}: {e}", binary.display())] },
    };
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if t0.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                problems.push(format!("still running after {:.0} s", deadline.as_secs_f64()));
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                problems.push(format!("wait failed: {e}"));
                break None;
            }
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    if stderr.contains("panicked") {
        problems.push(format!("panicked: {}", stderr.lines().find(|l| l.contains("panicked")).unwrap_or("")));
    }
    let mut verdict = None;
    match code {
        Some(0) => match std::fs::read_to_string(&json).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) {
            Some(v) => {
                verdict = v["verdict"].as_str().map(str::to_string);
                if verdict.is_none() {
                    problems.push("the JSON report has no verdict".into());
                }
                if case.inside && verdict.as_deref() == Some("violated") {
                    problems.push(format!("violated inside the preconditions: {:?}", v["runs"][0]["reasons"]));
                }
            }
            None => problems.push("exit 0 but no JSON report that parses".into()),
        },
        Some(2) => {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() != 1 {
                problems.push(format!("exit 2 with {} lines of error: {stderr:?}", lines.len()));
            }
        }
        Some(c) => problems.push(format!("exit code {c}: {}", stderr.trim())),
        None => {}
    }
    std::fs::remove_file(&json).ok();
    FuzzOutcome { code, seconds, verdict, problems }
}
