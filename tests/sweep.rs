//! Sweeps: a 12-run grid completes; shards partition the grid; reruns add nothing; a torn
//! last line is repaired.

use std::collections::HashSet;
use std::path::PathBuf;

use mlab_nc::commands::sweep::{parse_shard, parse_spec, run_sweep, SweepKey};
use mlab_nc::commands::verify::VerifyOptions;
use mlab_nc::io::jsonl::read_finished;

const GRID: &str = r#"
classes = [3, 4]
max_labels = 2
per_set = [[1, 1], [2, 1]]
lambda_w = [5e-3, 1e-2, 1.0]
seeds = 1
"#;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mlab-nc-sweep-{}-{name}.jsonl", std::process::id()));
    std::fs::remove_file(&p).ok();
    p
}

fn keys(p: &PathBuf) -> HashSet<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{}#{}", v["config"], v["seed"])
        })
        .collect()
}

#[test]
fn grid_expands_as_the_cartesian_product() {
    let spec = parse_spec(GRID, "grid").unwrap();
    assert_eq!(spec.grid.len(), 12);
    assert_eq!(spec.grid[0].config.per_set, vec![1, 1]);
    assert_eq!(spec.grid[3].config.per_set, vec![2, 1]);
    // A list of counts is one configuration, a scalar is expanded to every multiplicity.
    let one = parse_spec("classes = 4\nmax_labels = 3\nper_set = [3, 2, 1]\n", "x").unwrap();
    assert_eq!(one.grid.len(), 1);
    assert_eq!(one.grid[0].config.per_set, vec![3, 2, 1]);
    let unknown = parse_spec("classes = 4\nmax_labels = 2\nbogus = 1\n", "x").unwrap_err().0;
    assert!(unknown.contains("bogus") && unknown.starts_with("x: "), "{unknown}");
    assert!(parse_spec("classes = 4\nmax_labels = 2\nlambda_h = -1.0\n", "x").unwrap_err().0.contains("--lambda-h"));
    assert!(parse_shard("3/2").is_err() && parse_shard("0/2").is_err() && parse_shard("1/2").is_ok());
}

#[test]
fn full_run_shards_rerun_and_torn_line() {
    let spec = parse_spec(GRID, "grid").unwrap();
    let opts = VerifyOptions::default();
    let whole = tmp("whole");
    let s = run_sweep(&spec, &whole, (1, 1), &opts, false).unwrap();
    assert_eq!((s.solved, s.skipped), (12, 0));
    let all = keys(&whole);
    assert_eq!(all.len(), 12);
    for l in std::fs::read_to_string(&whole).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for k in ["config", "seed", "objective", "predicted", "metrics", "certificate", "verdict"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
    // Rerunning adds nothing.
    let again = run_sweep(&spec, &whole, (1, 1), &opts, false).unwrap();
    assert_eq!((again.solved, again.skipped), (0, 12));
    assert_eq!(std::fs::read_to_string(&whole).unwrap().lines().count(), 12);
    // Two shards are disjoint and together are the grid.
    let (a, b) = (tmp("s1"), tmp("s2"));
    run_sweep(&spec, &a, (1, 2), &opts, false).unwrap();
    run_sweep(&spec, &b, (2, 2), &opts, false).unwrap();
    let (ka, kb) = (keys(&a), keys(&b));
    assert!(ka.is_disjoint(&kb));
    assert_eq!(ka.union(&kb).cloned().collect::<HashSet<_>>(), all);
    // A torn last line is cut off and the run redone; every line ends valid.
    let text = std::fs::read(&whole).unwrap();
    let torn = tmp("torn");
    std::fs::write(&torn, &text[..text.len() - 100]).unwrap();
    let finished = read_finished::<SweepKey>(&torn).unwrap();
    assert!(finished.repaired);
    assert_eq!(finished.records.len(), 11);
    let s = run_sweep(&spec, &torn, (1, 1), &opts, false).unwrap();
    assert_eq!(s.solved, 1);
    assert_eq!(keys(&torn), all);
    for p in [whole, a, b, torn] {
        std::fs::remove_file(p).ok();
    }
}

/// Every loss the CLI accepts is a sweep value, and a list of losses sweeps them all.
#[test]
fn a_list_of_losses_runs_every_loss() {
    let spec = parse_spec("classes = 3\nmax_labels = 2\nloss = [\"pal\", \"pal-mean\", \"bce\"]\n", "losses").unwrap();
    assert_eq!(spec.grid.len(), 3);
    let out = tmp("losses");
    let s = run_sweep(&spec, &out, (1, 1), &VerifyOptions::default(), false).unwrap();
    assert_eq!(s.solved, 3);
    let losses: HashSet<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["config"]["loss"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(losses, ["pal", "pal-mean", "bce"].iter().map(|s| s.to_string()).collect());
    // BCE is outside the theorem; the two softmax losses are verified.
    assert_eq!(s.verdicts.get("outside-theorem"), Some(&1));
    assert_eq!(s.verdicts.get("verified"), Some(&2));
    let bad = parse_spec("classes = 3\nmax_labels = 2\nloss = \"mse\"\n", "x").unwrap_err().0;
    assert!(bad.starts_with("x: "), "{bad}");
    std::fs::remove_file(out).ok();
}

/// A shard's runs are the runs r = grid_index x seeds + seed with r mod n = i - 1, in order
/// (checked against that definition run by run), and a sweep too large for its run list, or
/// beyond 2^64 runs, is refused before anything is listed (10^12 seeds used to be enumerated
/// one by one, and grid points x seeds could wrap around).
#[test]
fn shards_list_their_runs_and_huge_sweeps_are_refused() {
    let spec = parse_spec("classes = [3, 4, 5]\nmax_labels = 2\nseeds = 7\n", "s").unwrap();
    for (i, n) in [(1, 1), (1, 4), (4, 4), (2, 5), (3, 30)] {
        let got: Vec<(usize, u64)> = spec.runs((i, n)).unwrap().iter().map(|r| (r.grid, r.seed)).collect();
        let want: Vec<(usize, u64)> = (0..21u64).filter(|r| r % n == i - 1).map(|r| ((r / 7) as usize, r % 7)).collect();
        assert_eq!(got, want, "shard {i}/{n}");
    }
    let huge = parse_spec("classes = 4\nmax_labels = 2\nseeds = 1000000000000\n", "h").unwrap();
    let t0 = std::time::Instant::now();
    let err = huge.runs((1, 1)).unwrap_err().0;
    assert!(err.contains("1000000000000 runs") && err.contains("would need about"), "{err}");
    assert!(huge.runs((1, 1_000_000)).is_ok(), "a shard of 10^6 runs fits");
    let wrap = parse_spec("classes = [3, 4]\nmax_labels = 2\nseeds = 18446744073709551615\n", "w").unwrap();
    assert!(wrap.runs((1, 1)).unwrap_err().0.contains("more than 2^64"));
    assert!(t0.elapsed().as_secs_f64() < 60.0, "listed without enumerating every run of the sweep");
}
