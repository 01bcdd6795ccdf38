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
    assert_eq!(spec.points(), 12);
    // The grid in the documented order (classes, max_labels, dim, per_set, lambda_w,
    // lambda_h, lambda_b, loss; the last varying fastest), written out by nested loops.
    let mut want = Vec::new();
    for k in [3, 4] {
        for per in [vec![1, 1], vec![2, 1]] {
            for lw in [5e-3, 1e-2, 1.0] {
                want.push((k, per.clone(), lw));
            }
        }
    }
    for (i, (k, per, lw)) in want.into_iter().enumerate() {
        let c = spec.config(i as u64);
        assert_eq!((c.classes, c.max_labels, c.dim, c.per_set.clone(), c.lambda_w, c.lambda_h), (k, 2, k, per, lw, 5e-3), "point {i}");
        assert_eq!(spec.point(i as u64).unwrap().config, c);
    }
    // A list of counts is one configuration, a scalar is expanded to every multiplicity.
    let one = parse_spec("classes = 4\nmax_labels = 3\nper_set = [3, 2, 1]\n", "x").unwrap();
    assert_eq!(one.points(), 1);
    assert_eq!(one.config(0).per_set, vec![3, 2, 1]);
    assert_eq!(parse_spec("classes = 4\nmax_labels = 3\nper_set = 2\n", "x").unwrap().config(0).per_set, vec![2, 2, 2]);
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
    assert_eq!(spec.points(), 3);
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
        let got: Vec<(u64, u64)> = spec.runs((i, n)).unwrap().iter().map(|r| (r.grid, r.seed)).collect();
        let want: Vec<(u64, u64)> = (0..21u64).filter(|r| r % n == i - 1).map(|r| (r / 7, r % 7)).collect();
        assert_eq!(got, want, "shard {i}/{n}");
    }
    let huge = parse_spec("classes = 4\nmax_labels = 2\nseeds = 1000000000000\n", "h").unwrap();
    let t0 = std::time::Instant::now();
    let err = huge.runs((1, 1)).unwrap_err().0;
    assert!(err.contains("1000000000000 runs") && err.contains("would need about"), "{err}");
    assert!(huge.runs((1, 1_000_000)).is_ok(), "a shard of 10^6 runs fits");
    // TOML's integers are signed 64-bit: 3 points x (2^63 - 1) seeds pass 2^64.
    let wrap = parse_spec("classes = [3, 4, 5]\nmax_labels = 2\nseeds = 9223372036854775807\n", "w").unwrap();
    assert!(wrap.runs((1, 1)).unwrap_err().0.contains("more than 2^64"));
    assert!(t0.elapsed().as_secs_f64() < 60.0, "listed without enumerating every run of the sweep");
}

/// A grid is kept as its lists: 300 values of each weight decay are 27 million points, which
/// used to be built (and predicted) one by one when the file was read (5.7 GB and still
/// running after two minutes); now a point is decoded when its run needs it, and every point
/// is still checked up front (each weight decay once, each problem shape once).
#[test]
fn a_large_grid_is_decoded_not_built() {
    let lambdas = |n: usize| (0..n).map(|i| format!("{:e}", 1e-3 * (1.0 + i as f64 / 1000.0))).collect::<Vec<_>>().join(", ");
    let text = format!("classes = [3, 4]\nmax_labels = 2\nlambda_w = [{0}]\nlambda_h = [{0}]\nlambda_b = [{0}]\nloss = [\"pal\", \"bce\"]\n", lambdas(300));
    let spec = parse_spec(&text, "big").unwrap();
    assert_eq!(spec.points(), 2 * 300 * 300 * 300 * 2);
    // Point i in mixed radix: loss fastest, then lambda_b, lambda_h, lambda_w, classes.
    for i in [0u64, 1, 599, 600, 180_001, 53_999_999, 54_000_000, 107_999_999] {
        let c = spec.config(i);
        let (loss, rest) = (i % 2, i / 2);
        let (lb, rest) = (rest % 300, rest / 300);
        let (lh, rest) = (rest % 300, rest / 300);
        let (lw, k) = (rest % 300, rest / 300);
        let lam = |j: u64| format!("{:e}", 1e-3 * (1.0 + j as f64 / 1000.0)).parse::<f64>().unwrap();
        assert_eq!(c.classes, [3, 4][k as usize], "point {i}");
        assert_eq!((c.lambda_w, c.lambda_h, c.lambda_b), (lam(lw), lam(lh), lam(lb)), "point {i}");
        assert_eq!(c.loss.name(), ["pal", "bce"][loss as usize], "point {i}");
    }
    let runs = spec.runs((1, 10_000_000)).unwrap();
    assert_eq!(runs.iter().map(|r| r.grid).collect::<Vec<_>>(), (0..11).map(|j| j * 10_000_000).collect::<Vec<_>>());
    // A bad value anywhere in a list is found when the file is read, naming the point.
    let bad = text.replace("lambda_h = [1e-3,", "lambda_h = [1e-3, -2.0,");
    let e = parse_spec(&bad, "big").unwrap_err().0;
    assert!(e.contains("--lambda-h") && e.contains("grid point"), "{e}");
}

/// What a sweep file can get wrong is one line naming the key (untyped values used to say
/// "data did not match any variant of untagged enum OneOrMany"), and an empty list, which
/// ran nothing and said so as a success, is refused.
#[test]
fn a_bad_sweep_file_names_its_key() {
    for (text, want) in [
        ("classes = 3.5\nmax_labels = 2\n", "classes: expected a whole number >= 0 or a list of them, got 3.5"),
        ("classes = -3\nmax_labels = 2\n", "classes: expected a whole number"),
        ("classes = 3\nmax_labels = [2, \"x\"]\n", "max_labels: expected a whole number"),
        ("classes = []\nmax_labels = 2\n", "classes: an empty list sweeps nothing"),
        ("classes = 3\nmax_labels = 2\nlambda_w = \"x\"\n", "lambda_w: expected a number"),
        ("classes = 3\nmax_labels = 2\nlambda_b = []\n", "lambda_b: an empty list"),
        ("classes = 3\nmax_labels = 2\nper_set = [[1, 1], 2]\n", "per_set: expected a count"),
        ("classes = 3\nmax_labels = 2\nper_set = 1.5\n", "per_set: expected a count"),
        ("classes = 3\nmax_labels = 2\nseeds = 0\n", "'seeds' must be"),
        ("classes = 3\nmax_labels = 2\nseeds = 2.5\n", "'seeds' must be"),
        ("classes = 3\nmax_labels = 2\nloss = 1\n", "loss: expected a loss name"),
        ("max_labels = 2\n", "missing key `classes`"),
        ("classes = 3\nmax_labels = 2\n[x]\n", "unknown key `x`"),
        ("classes = 3\nmax_labels = [2, 5]\n", "grid point 1: --max-labels"),
        // TOML's own errors, with where: its integers are signed 64-bit (the number starts
        // at column 9 of line 3), and an array left open on line 3.
        ("classes = 3\nmax_labels = 2\nseeds = 9223372036854775808\n", "line 3, column 9: "),
        ("classes = 3\nmax_labels = 2\nseeds = [1, \n", "s.toml: line 3, column "),
    ] {
        let e = parse_spec(text, "s.toml").unwrap_err().0;
        assert!(e.starts_with("s.toml: ") && e.contains(want), "{text:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let many = format!(
        "classes = [{}]\nmax_labels = 1\ndim = [{}]\n",
        (2..402).map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
        (1..301).map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
    );
    assert!(parse_spec(&many, "s").unwrap_err().0.contains("120000 problem shapes"));
}
