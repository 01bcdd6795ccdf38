//! A bounded fuzz of the command line (`commands::fuzz`): random `ufm` invocations over
//! everything it accepts, each as its own process with a deadline. Every run ends in time,
//! exits 0 with a verdict or 2 with a one-line error, writes JSON that parses, and is never
//! `violated` inside the theorem's preconditions. (`cargo run --release --example fuzz -- N`
//! runs more.)

use std::path::PathBuf;
use std::time::Duration;

use mlab_nc::commands::fuzz::{draw, run_case};

#[test]
fn random_invocations_end_cleanly() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_mlab-nc"));
    let dir = std::env::temp_dir();
    let (mut inside, mut errors, mut verdicts) = (0, 0, 0);
    for i in 0..48 {
        let case = draw(2026, i);
        let out = run_case(&binary, &case, 3.0, Duration::from_secs(30), &dir);
        assert!(out.problems.is_empty(), "mlab-nc {}: {:?}", case.args.join(" "), out.problems);
        inside += usize::from(case.inside);
        errors += usize::from(out.code == Some(2));
        verdicts += usize::from(out.verdict.is_some());
    }
    // Not vacuous: both kinds of outcome, and draws inside the preconditions, were seen.
    assert!(inside >= 10 && errors >= 1 && verdicts >= 30, "inside {inside}, errors {errors}, verdicts {verdicts}");
}
