//! `mlab-nc train` end to end, on Fashion-MNIST from Debian's `dataset-fashion-mnist`, and its
//! bad inputs. With `CI=true` a missing dataset fails the real-data tests instead of skipping
//! them (`.ci/run` installs it).
#![cfg(feature = "train")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DATA: &str = "/usr/share/datasets/fashion-mnist";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlab-nc"))
}

/// True when the real data is there; false (a skip, said on stderr) only outside CI.
fn have_data() -> bool {
    let ok = Path::new(DATA).join("train-images-idx3-ubyte.gz").is_file();
    if !ok {
        assert!(std::env::var("CI").is_err(), "CI: {DATA} is missing; .ci/run installs it with `apt-get install dataset-fashion-mnist`");
        eprintln!("skipped: {DATA} is missing (sudo apt-get install dataset-fashion-mnist)");
    }
    ok
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlab-nc-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = bin().args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn records(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Strips the wall-clock fields, which are the only ones allowed to differ between runs.
fn numbers(mut r: Value) -> Value {
    let o = r.as_object_mut().unwrap();
    o.remove("train_seconds");
    o.remove("eval_seconds");
    r
}

const SMALL: [&str; 14] = ["--threads", "2", "train", "-K", "4", "-M", "2", "--per-set", "100,10", "--test-per-set", "20,2", "--eval-every", "10", "--seed"];

/// The CI run: K = 4, M = 2 on Fashion-MNIST reaches 100% exact-set training accuracy and NC1
/// falls at least 10x; `--export` then `measure` gives the last record's metrics exactly; and
/// the predicted scale is the one `predict` gives for lambda_w = wd, lambda_h = fd / N.
#[test]
fn small_real_run_collapses_and_exports_what_it_measured() {
    if !have_data() {
        return;
    }
    let d = tmp("small");
    let out = d.join("run.jsonl");
    let exp = d.join("exp");
    let t0 = std::time::Instant::now();
    let mut args: Vec<&str> = SMALL.to_vec();
    let (o, e) = (out.to_str().unwrap(), exp.to_str().unwrap());
    args.extend(["0", "--epochs", "30", "--out", o, "--export", e]);
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(t0.elapsed().as_secs() <= 60, "the CI run must stay within a minute");
    let r = records(&out);
    assert_eq!(r.iter().map(|x| x["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 10, 20, 30]);
    let (first, last) = (&r[0], &r[r.len() - 1]);
    assert_eq!(last["train"]["exact"].as_f64().unwrap(), 1.0, "{stdout}");
    let (nc1_0, nc1_1) = (first["metrics"]["nc1"].as_f64().unwrap(), last["metrics"]["nc1"].as_f64().unwrap());
    assert!(nc1_1 * 10.0 <= nc1_0, "NC1 {nc1_0} -> {nc1_1}");
    // Balanced counts: 100 per class, 10 per pair.
    assert_eq!(last["params"].as_u64().unwrap(), last["trainable_params"].as_u64().unwrap());

    // measure on the exported arrays: the same metrics, to the bit.
    let f = |n: &str| exp.join(n).to_str().unwrap().to_string();
    let mj = d.join("m.json");
    let (code, so, se) = run(&[
        "measure",
        "--features",
        &f("features.npy"),
        "--labels",
        &f("labels.npy"),
        "--classifier",
        &f("classifier.npy"),
        "--bias",
        &f("bias.npy"),
        "--json",
        mj.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{so}{se}");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&mj).unwrap()).unwrap();
    assert_eq!(m["samples"].as_u64().unwrap(), 4 * 100 + 6 * 10);
    assert!(m["balanced_within_multiplicity"].as_bool().unwrap());
    for key in ["nc1", "nc2_w", "nc2_h", "nc3", "alpha", "bias_norm"] {
        assert_eq!(m["metrics"][key], last["metrics"][key], "{key}");
    }
    assert_eq!(m["metrics"]["tag"][0]["scale_mean"], last["metrics"]["tag"][0]["scale_mean"]);
    assert_eq!(m["metrics"]["tag"][0]["mean_angle_deg"], last["metrics"]["tag"][0]["mean_angle_deg"]);

    // The UFM side: predict with lambda_w = 5e-3 and lambda_h = 1e-2 / 460.
    let pj = d.join("p.json");
    let (code, so, se) = run(&[
        "predict",
        "-K",
        "4",
        "-M",
        "2",
        "-d",
        "256",
        "--per-set",
        "100,10",
        "--lambda-w",
        "5e-3",
        "--lambda-h",
        &format!("{:e}", 1e-2 / 460.0),
        "--json",
        pj.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{so}{se}");
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pj).unwrap()).unwrap();
    let want = p["predicted"]["scale"][1].as_f64().unwrap();
    let got = last["ufm"]["scale"][1].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    assert_eq!(last["metrics"]["tag"][0]["scale_pred"].as_f64().unwrap(), got);
    // The network's last layer is a point of the UFM: its objective is at least the minimum.
    assert!(last["ufm"]["objective_at_network"].as_f64().unwrap() >= last["ufm"]["objective"].as_f64().unwrap());
}

/// A run paused at a checkpoint and resumed gives the same records, to the bit, as the same
/// run uninterrupted; and the same seed gives the same numbers again.
#[test]
fn resume_continues_exactly_and_seeds_repeat() {
    if !have_data() {
        return;
    }
    let d = tmp("resume");
    let (a, b) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let base = |out: &Path, extra: &[&str]| {
        let mut args: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
        args.extend(["1", "--epochs", "20", "--out", out.to_str().unwrap()].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, so, se) = run(&args);
        assert_eq!(code, 0, "{so}{se}");
        so
    };
    base(&a, &[]);
    let so = base(&b, &["--pause-at", "10"]);
    assert!(so.contains("paused after the checkpoint of epoch 10"), "{so}");
    assert_eq!(records(&b).len(), 2);
    // Without --resume an existing run is refused, not overwritten.
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["1", "--epochs", "20", "--out", b.to_str().unwrap()]);
    let (code, _, err) = run(&args);
    assert_eq!(code, 2);
    assert!(err.contains("pass --resume"), "{err}");
    let so = base(&b, &["--resume"]);
    assert!(so.contains("resumed from the checkpoint of epoch 10"), "{so}");
    let (ra, rb) = (records(&a), records(&b));
    assert_eq!(ra.len(), 3);
    assert_eq!(ra.into_iter().map(numbers).collect::<Vec<_>>(), rb.into_iter().map(numbers).collect::<Vec<_>>());
    // Other options than the checkpoint's are refused.
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["1", "--epochs", "20", "--lr", "0.03", "--out", b.to_str().unwrap(), "--resume"]);
    let (code, _, err) = run(&args);
    assert_eq!(code, 2);
    assert!(err.contains("other options"), "{err}");
}

/// The fixed ETF classifier is an exact simplex ETF of the predicted scale before training and
/// the same bits after it; the feature layer is d = K.
#[test]
fn etf_classifier_never_changes() {
    if !have_data() {
        return;
    }
    let d = tmp("etf");
    let read_w = |dir: &Path| {
        let bytes = std::fs::read(dir.join("classifier.npy")).unwrap();
        let a = mlab_nc::io::npy::parse(&bytes, "classifier.npy", 2, false).unwrap();
        (a.rows, a.cols, a.data)
    };
    let mut ws = Vec::new();
    for epochs in ["1", "15"] {
        let exp = d.join(format!("exp{epochs}"));
        let out = d.join(format!("r{epochs}.jsonl"));
        let mut args: Vec<&str> = SMALL.to_vec();
        args.extend(["2", "--epochs", epochs, "--classifier", "etf", "--dim", "4", "--out", out.to_str().unwrap(), "--export", exp.to_str().unwrap()]);
        let (code, so, se) = run(&args);
        assert_eq!(code, 0, "{so}{se}");
        let r = records(&out);
        let last = &r[r.len() - 1];
        assert_eq!(last["params"].as_u64().unwrap() - last["trainable_params"].as_u64().unwrap(), 16);
        ws.push((read_w(&exp), last["ufm"]["alpha"].as_f64().unwrap()));
    }
    assert_eq!(ws[0].0, ws[1].0, "the ETF classifier changed in training");
    let ((k, dd, w), alpha) = (&ws[0].0, ws[0].1);
    assert_eq!((*k, *dd), (4, 4));
    for i in 0..4 {
        for j in 0..4 {
            let g: f64 = (0..4).map(|c| w[i * 4 + c] * w[j * 4 + c]).sum();
            let want = alpha * (if i == j { 1.0 } else { 0.0 } - 0.25);
            // Stored in float32: a few ulp of alpha.
            assert!((g - want).abs() <= 1e-6 * alpha, "({i},{j}): {g} vs {want}");
        }
    }
}

/// Every bad input is one line and exit 2, never a panic.
#[test]
fn bad_inputs_are_one_line_errors() {
    let d = tmp("bad");
    let dir = d.to_str().unwrap().to_string();
    let check = |args: &[&str], want: &str| {
        let (code, so, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {so}{err}");
        assert!(err.contains(want), "{args:?}: {err} (want {want})");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let missing = d.join("none");
    check(&["train", "--data", missing.to_str().unwrap(), "--out", &format!("{dir}/x.jsonl")], "apt-get install dataset-fashion-mnist");
    // Malformed IDX files in a directory of their own.
    let write = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
    let img = |n: u32| {
        let mut v = vec![0u8, 0, 8, 3];
        for x in [n, 28, 28] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend(std::iter::repeat_n(9u8, n as usize * 784));
        v
    };
    let lab = |n: u32| {
        let mut v = vec![0u8, 0, 8, 1];
        v.extend_from_slice(&n.to_be_bytes());
        v.extend((0..n).map(|i| (i % 10) as u8));
        v
    };
    let out = format!("{dir}/y.jsonl");
    for (name, bytes, want) in [
        ("train-images-idx3-ubyte", [&[0u8, 1, 8, 3][..], &img(20)[4..]].concat(), "not an IDX file"),
        ("train-images-idx3-ubyte", img(20)[..1000].to_vec(), "truncated IDX file"),
        ("train-images-idx3-ubyte", img(30), "20 labels, but"),
    ] {
        write(name, &bytes);
        write("train-labels-idx1-ubyte", &lab(20));
        write("t10k-images-idx3-ubyte", &img(20));
        write("t10k-labels-idx1-ubyte", &lab(20));
        check(&["train", "--data", &dir, "--out", &out], want);
    }
    write("train-images-idx3-ubyte", &img(20));
    check(&["train", "--data", &dir, "--out", &out, "-K", "4", "--per-set", "3"], "need 3 distinct images of class 0, but it has 2");
    if have_data() {
        let o = format!("{dir}/z.jsonl");
        check(&["train", "--out", &o, "-K", "11"], "only 10 classes");
        check(&["train", "--out", &o, "--per-set", "7000,1"], "lower the counts");
        check(&["train", "--out", &o, "-K", "4", "--classifier", "etf", "--dim", "2"], "needs d >= K-1 = 3");
        // A network too large for the machine is refused before it is built (width 10^8
        // aborted on a 313 GB allocation).
        check(&["train", "--out", &o, "-K", "4", "--width", "100000000"], "parameters would need about");
        check(&["train", "--out", &o, "-K", "4", "--dim", "100000000"], "--dim 100000000");
        check(&["train", "--out", &o, "-K", "4", "--model", "cnn", "--depth", "100000", "--width", "4096"], "--depth 100000");
    }
    let o = format!("{dir}/w.jsonl");
    if have_data() {
        // Found before the training, not after it: an export directory that cannot be made.
        let blocker = d.join("a-file");
        std::fs::write(&blocker, b"").unwrap();
        let e = blocker.join("export");
        check(&["train", "--out", &o, "-K", "4", "--epochs", "20", "--export", e.to_str().unwrap()], "--export");
        assert!(!Path::new(&o).exists() || std::fs::read_to_string(&o).unwrap().is_empty(), "nothing trained");
    }
    check(&["train", "--out", &o, "--epochs", "0"], "--epochs");
    check(&["train", "--out", &o, "--batch", "0"], "--batch");
    check(&["train", "--out", &o, "--lr", "0"], "--lr");
    check(&["train", "--out", &o, "--lr", "-0.1"], "--lr");
    check(&["train", "--out", &o, "--momentum", "1"], "--momentum");
    check(&["train", "--out", &o, "--per-set", "1,2,3", "-M", "2"], "--max-labels is 2");
}

/// `--model cnn` trains and measures (a smoke run: two epochs, K = 4).
#[test]
fn cnn_trains_and_measures() {
    if !have_data() {
        return;
    }
    let d = tmp("cnn");
    let out = d.join("c.jsonl");
    let args = [
        "--threads",
        "2",
        "train",
        "-K",
        "4",
        "--per-set",
        "100,10",
        "--test-per-set",
        "20,2",
        "--epochs",
        "2",
        "--eval-every",
        "2",
        "--model",
        "cnn",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, so, se) = run(&args);
    assert_eq!(code, 0, "{so}{se}");
    let r = records(&out);
    assert_eq!(r.len(), 2);
    // Training moves it: the loss falls and the features are measured at both ends.
    assert!(r[1]["train_loss"].as_f64().unwrap() < r[0]["train_loss"].as_f64().unwrap());
    assert!(r.iter().all(|x| x["metrics"]["nc1"].as_f64().is_some_and(f64::is_finite)));
}
