//! The binary as a user runs it: bad input gives one line and exit code 2, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlab-nc")).args(args).output().expect("binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// An empty folder of this test process's own, named `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mlab-nc-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the binary and waits, at most 120 s, until `ready` (it must still be running then).
fn spawn_until(args: &[&str], ready: impl Fn() -> bool) -> std::process::Child {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_mlab-nc")).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended before it was ready");
        assert!(t0.elapsed().as_secs() < 120, "{args:?} not ready in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child
}

#[test]
fn bad_input_is_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["ufm", "--classes", "1", "--max-labels", "1"], "--classes"),
        (&["ufm", "--classes", "4", "--max-labels", "0"], "--max-labels"),
        (&["ufm", "--classes", "4", "--max-labels", "5"], "--max-labels"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--dim", "0"], "--dim"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--lambda-w", "-1"], "--lambda-w"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--lambda-h", "nan"], "--lambda-h"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--lambda-b", "inf"], "--lambda-b"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--per-set", "1,2,3"], "--per-set"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--per-set", "x"], "--per-set"),
        (&["ufm", "--classes", "100000", "--max-labels", "5"], "too large"),
        (&["ufm", "--classes", "abc", "--max-labels", "2"], "--classes"),
        (&["ufm", "--classes", "4"], "--max-labels"),
        (&["predict", "--classes", "4", "--max-labels", "2", "--loss", "mse"], "--loss"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--seeds", "0"], "--seeds"),
        // Checked before anything per seed is allocated (a list of 10^12 seeds aborted).
        (&["ufm", "--classes", "4", "--max-labels", "2", "--seeds", "1000000000000"], "--seeds"),
        (&["ufm", "--classes", "20", "--max-labels", "3", "--seeds", "100000000"], "alone would need"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--seed", "18446744073709551615", "--seeds", "2"], "--seed"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--tol-geometry", "-1"], "--tol-geometry"),
        (&["--threads", "0", "ufm", "--classes", "4", "--max-labels", "2"], "--threads"),
        // Not silently capped (4096 threads took 10 s to start, before any work).
        (&["--threads", "100000", "ufm", "--classes", "4", "--max-labels", "2"], "--threads"),
        (&["ufm", "--classes", "4", "--max-labels", "2", "--expect", "proved"], "--expect"),
    ];
    for (args, flag) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?} exits 2, stderr: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.contains(flag), "{args:?}: {err:?} names {flag}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn ufm_prints_a_verdict_and_writes_the_json_keys() {
    let dir = scratch("report");
    let path = dir.join("r.json");
    let (code, out, err) = run(&["ufm", "--classes", "4", "--max-labels", "2", "--seeds", "2", "--json", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("VERDICT: verified"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in ["config", "predicted", "runs", "verdict", "summary"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in ["objective", "alpha", "gamma", "scale", "trivial", "etf_possible"] {
        assert!(v["predicted"].get(key).is_some(), "missing predicted.{key}");
    }
    let run0 = &v["runs"][0];
    for key in ["seed", "objective", "converged", "iterations", "seconds", "termination", "verdict", "metrics", "certificate"] {
        assert!(run0.get(key).is_some(), "missing runs[0].{key}");
    }
    for key in ["nc1", "nc2_w", "nc2_h", "nc3", "bias_norm", "tag"] {
        assert!(run0["metrics"].get(key).is_some(), "missing metrics.{key}");
    }
    for key in ["multiplicity", "max_angle_deg", "scale_mean", "scale_pred"] {
        assert!(run0["metrics"]["tag"][0].get(key).is_some(), "missing tag.{key}");
    }
    for key in ["lower_bound", "gap", "relative_gap", "spectral_ratio"] {
        assert!(run0["certificate"].get(key).is_some(), "missing certificate.{key}");
    }
    assert_eq!(v["predicted"]["scale"][0], 1.0);
    assert_eq!(v["verdict"], "verified");
    assert_eq!(v["summary"]["reached_prediction"], 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn predict_prints_the_optimum() {
    let (code, out, _) = run(&["predict", "--classes", "50", "--max-labels", "3", "--per-set", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("predicted  f* ="));
    assert!(out.contains("etf_possible = true"));
}

/// A solve that reaches --time-limit stops there, not converged, and the report is written.
/// The problem takes 3.8 s to a verdict on two cores without the limit (1,232 iterations along
/// the path of docs/theory.md §6), 13 times the limit: K = 30 at 1e-5, used before, took 0.29
/// to 0.47 s, and on a quiet machine finished inside the limit.
#[test]
fn time_limit_stops_a_long_solve_and_keeps_its_report() {
    let path = std::env::temp_dir().join(format!("mlab-nc-time-limit-{}.json", std::process::id()));
    let t0 = std::time::Instant::now();
    let (code, out, err) = run(&[
        "ufm",
        "-K",
        "40",
        "-M",
        "3",
        "-d",
        "48",
        "--lambda-w",
        "1e-6",
        "--lambda-h",
        "1e-6",
        "--lambda-b",
        "1e-6",
        "--time-limit",
        "0.3",
        "--json",
        path.to_str().unwrap(),
    ]);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("VERDICT: not-converged"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["runs"][0]["stopped_by"], "time-limit");
    assert!(v["runs"][0]["seconds"].as_f64().unwrap() < 1.0);
    assert!(secs < 10.0, "{secs} s");
    std::fs::remove_file(&path).ok();
}

/// A limit shorter than one iteration stops the solve after its first, with the limit as the
/// reason, directly and after a path (lambda = 1e-6; the path's easier problems get no time):
/// no solve runs past its limit to a verdict (a floor of 1 ms once let A's whole solve, about
/// 0.5 ms, finish verified under a limit of 1e-5 s).
#[test]
fn a_limit_shorter_than_an_iteration_stops_after_the_first() {
    for lambda in ["5e-3", "1e-6"] {
        let path = std::env::temp_dir().join(format!("mlab-nc-short-limit-{}-{lambda}.json", std::process::id()));
        let args = ["ufm", "-K", "4", "-M", "2", "--lambda-w", lambda, "--lambda-h", lambda, "--lambda-b", lambda, "--time-limit", "1e-9", "--json"];
        let (code, out, err) = run(&[&args[..], &[path.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("VERDICT: not-converged"), "lambda {lambda}: {out}");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["runs"][0]["stopped_by"], "time-limit", "lambda {lambda}");
        assert_eq!(v["runs"][0]["iterations"], 1, "lambda {lambda}");
        std::fs::remove_file(&path).ok();
    }
}

/// An error before anything is measured is the only output: `train` without its data prints
/// no table header, and `hunt` with nothing verified reports no worst gap (it printed 0.00e0).
#[test]
fn nothing_is_printed_for_what_did_not_happen() {
    let (code, out, err) = run(&["train", "--epochs", "1", "--data", "/nonexistent-mlab-nc-data"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "", "stdout stays empty");
    assert!(err.trim_end().lines().count() == 1 && err.contains("--data"), "{err}");
    let path = std::env::temp_dir().join(format!("mlab-nc-hunt-none-{}.jsonl", std::process::id()));
    let (code, out, err) = run(&["hunt", "--budget", "0", "--out", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("worst certified gap among the verified: - (none verified)"), "{out}");
    std::fs::remove_file(&path).ok();
}

/// A class skew that rounds away (one sample per set: every count is max(1, round(w)) = 1) is
/// said on stderr, and the run goes on with the balanced problem; a skew that bites is not.
#[test]
fn a_skew_that_changes_nothing_is_said() {
    let (code, out, err) = run(&["predict", "-K", "4", "-M", "2", "--class-skew", "1e300"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("note: the class skew leaves every multiplicity's counts equal"), "{err}");
    assert!(out.contains("per-set=[1, 1]") || out.contains("N=10"), "{out}");
    let (code, _, err) = run(&["predict", "-K", "4", "-M", "2", "--per-set", "100", "--class-skew", "4"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("note:"), "{err}");
}

/// An output that cannot be written is found before the work, not after it: `ufm`, `predict`,
/// `timing` and `measure` refuse a `--json` in a missing directory, or naming a directory, with
/// one line and nothing on stdout (the solve's table would come first), and leave nothing behind.
#[test]
fn an_unwritable_output_is_refused_before_the_work() {
    let dir = scratch("out");
    let missing = dir.join("no-such-dir").join("r.json");
    let (missing, here) = (missing.to_str().unwrap(), dir.to_str().unwrap());
    let ufm = ["ufm", "--classes", "4", "--max-labels", "2", "--json"];
    let predict = ["predict", "--classes", "4", "--max-labels", "2", "--json"];
    let timing = ["timing", "--preset", "A", "--repeat", "1", "--json"];
    let measure = ["measure", "--features", "f.npy", "--labels", "l.npy", "--json"];
    for head in [&ufm[..], &predict, &timing, &measure] {
        for (target, want) in [(missing, "No such file or directory"), (here, "it is a directory")] {
            let args: Vec<&str> = head.iter().copied().chain([target]).collect();
            let (code, out, err) = run(&args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert_eq!(out, "", "{args:?}: nothing is computed first");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains(target) && err.contains(want), "{args:?}: {err}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A hunt's memory does not grow with its budget: 10^15 configurations were listed up front
/// (an 8 PB allocation: the process died before its first run). Now it runs, writes records,
/// and stays small until it is stopped; what it wrote is resumable.
#[test]
fn a_huge_hunt_budget_runs_in_little_memory() {
    let dir = scratch("hunt");
    let out = dir.join("h.jsonl");
    let lines = || std::fs::read_to_string(&out).map(|t| t.matches('\n').count()).unwrap_or(0);
    let mut child = spawn_until(&["hunt", "--budget", "1000000000000000", "--seed", "5", "--out", out.to_str().unwrap()], || lines() >= 20);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(rss_kb < 200 * 1024, "resident {rss_kb} kB");
    // Its records are a valid hunt file: a small budget resumes it.
    let (code, stdout, err) = run(&["hunt", "--budget", "3", "--seed", "5", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.starts_with("tried 3 configurations"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Counts too large for memory are refused like every other size, naming the machine's memory.
#[test]
fn counts_too_large_for_memory_are_one_line() {
    let path = std::env::temp_dir().join(format!("mlab-nc-cli-counts-{}.txt", std::process::id()));
    std::fs::write(&path, "0 1 : 1000000000000000000\n").unwrap();
    let (code, out, err) = run(&["ufm", "-K", "4", "-M", "2", "--counts", path.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("problem too large") && err.contains("N=1.000e18") && err.contains("but the machine has"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

/// `ufm --seeds N --json` writes the finished starts as it goes (at most every 10 s), so a run
/// killed part way keeps them: a valid report that says how many of how many it holds.
#[test]
fn a_killed_run_keeps_its_finished_starts() {
    let dir = scratch("partial");
    let json = dir.join("r.json");
    let d = ["ufm", "-K", "50", "-M", "3", "-d", "64", "--lambda-w", "2e-4", "--lambda-h", "2e-4", "--lambda-b", "2e-4", "--seeds", "200", "--json"];
    let args: Vec<&str> = d.iter().copied().chain([json.to_str().unwrap()]).collect();
    let mut child = spawn_until(&args, || json.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (finished, starts) = (v["partial"]["finished"].as_u64().unwrap(), v["partial"]["starts"].as_u64().unwrap());
    assert!((1..200).contains(&finished) && starts == 200, "{}", v["partial"]);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len() as u64, finished);
    assert_eq!(v["summary"]["starts"].as_u64(), Some(finished));
    assert!(runs.iter().all(|r| r["verdict"] == "verified"), "D's starts are verified");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--expect`: exit code 0 when the verdict is the expected one and 1, with one line naming
/// both, when it is not. K = 4, M = 2 at the default weight decays is verified; at weight
/// decays of 10 the trivial statistic (docs/theory.md §3) is far below 1, so W = H = 0 is the
/// optimum and the verdict is trivial.
#[test]
fn expect_sets_the_exit_code() {
    let (code, _, err) = run(&["ufm", "--classes", "4", "--max-labels", "2", "--expect", "verified"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, out, err) = run(&["ufm", "--classes", "4", "--max-labels", "2", "--expect", "trivial"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(err, "expected VERDICT: trivial, got verified\n");
    let big = ["--lambda-w", "10", "--lambda-h", "10"];
    let (code, out, _) = run(&[&["ufm", "--classes", "4", "--max-labels", "2", "--expect", "trivial"][..], &big].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("VERDICT: trivial"), "{out}");
}
