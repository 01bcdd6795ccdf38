//! The fuzz harness of `commands::fuzz` over many draws: every run must end in time, exit 0
//! with a verdict or 2 with a one-line error, write JSON that parses, and never be `violated`
//! inside the theorem's preconditions. Prints a summary and every problem found.
//!
//! `cargo build --release && cargo run --release --example fuzz -- N [seed] [time-limit]`

use std::path::PathBuf;
use std::time::Duration;

use mlab_nc::commands::fuzz::{draw, run_case};

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = a.first().map_or(Ok(100), |s| s.parse()).map_err(|e| format!("N: {e}"))?;
    let seed: u64 = a.get(1).map_or(Ok(1), |s| s.parse()).map_err(|e| format!("seed: {e}"))?;
    let limit: f64 = a.get(2).map_or(Ok(10.0), |s| s.parse()).map_err(|e| format!("time limit: {e}"))?;
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/mlab-nc");
    let dir = std::env::temp_dir();
    let (mut worst, mut bad, mut codes, mut verdicts) = (0.0f64, 0, std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    for i in 0..n {
        let case = draw(seed, i);
        let out = run_case(&binary, &case, limit, Duration::from_secs_f64(limit + 20.0), &dir);
        worst = worst.max(out.seconds);
        *codes.entry(format!("{:?}", out.code)).or_insert(0) += 1;
        *verdicts.entry(format!("{}{}", if case.inside { "inside " } else { "outside " }, out.verdict.unwrap_or_else(|| "-".into()))).or_insert(0) += 1;
        if !out.problems.is_empty() {
            bad += 1;
            println!("draw {i}: mlab-nc {}: {:?}", case.args.join(" "), out.problems);
        }
    }
    println!("{n} runs, {bad} with problems; slowest {worst:.1} s; exit codes {codes:?}");
    println!("verdicts {verdicts:?}");
    if bad > 0 {
        return Err(format!("{bad} runs with problems"));
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
