//! `measure` against geometry known by construction, against a direct implementation of the
//! metrics written here, and against `ufm`; and every malformed input rejected.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mlab_nc::commands::measure::measure_files;
use mlab_nc::model::labels::LabelSets;
use mlab_nc::theory::prediction::simplex_basis;
use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Writes a version-1.0 .npy file (header padded to 64 bytes), independently of the reader.
fn write_npy(path: &Path, descr: &str, shape: &[usize], fortran: bool, data: &[u8]) {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_s}, }}", if fortran { "True" } else { "False" });
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlab-nc-measure-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Samples: every label set of size 1..=m over k classes, `per` copies each; labels N x K.
fn layout(k: usize, m: usize, per: usize) -> (LabelSets, Vec<f64>) {
    let l = LabelSets::balanced(k, m, &vec![per; m]).unwrap();
    let mut y = vec![0.0; l.samples() * k];
    for (i, &s) in l.set_of.iter().enumerate() {
        for &c in &l.sets[s as usize] {
            y[i * k + c] = 1.0;
        }
    }
    (l, y)
}

struct Files {
    f: PathBuf,
    y: PathBuf,
    w: PathBuf,
    b: PathBuf,
}

#[allow(clippy::too_many_arguments)] // the four arrays with their shapes, as the files hold them
fn write_all(d: &Path, feats: &[f64], n: usize, dim: usize, y: &[f64], k: usize, w_rowmajor: &[f64], b: &[f64], f32_feats: bool) -> Files {
    let files = Files { f: d.join("f.npy"), y: d.join("y.npy"), w: d.join("w.npy"), b: d.join("b.npy") };
    if f32_feats {
        write_npy(&files.f, "<f4", &[n, dim], false, &f32_bytes(feats));
    } else {
        write_npy(&files.f, "<f8", &[n, dim], false, &f64_bytes(feats));
    }
    let yb: Vec<u8> = y.iter().map(|&v| v as u8).collect();
    write_npy(&files.y, "|u1", &[n, k], false, &yb);
    write_npy(&files.w, "<f8", &[k, dim], false, &f64_bytes(w_rowmajor));
    write_npy(&files.b, "<f8", &[k], false, &f64_bytes(b));
    files
}

#[test]
fn exact_etf_and_tag_wise_average_measure_as_zero_with_the_right_scale() {
    let (k, m, d, per) = (5, 3, 6, 2);
    let (l, y) = layout(k, m, per);
    let n = l.samples();
    let u = simplex_basis(k) * 1.7; // K x (K-1)
    let mut w = DMatrix::<f64>::zeros(k, d);
    w.columns_mut(0, k - 1).copy_from(&u);
    let t = [0.8, 0.55, 0.41];
    let mut feats = vec![0.0; n * d];
    for (i, &s) in l.set_of.iter().enumerate() {
        let set = &l.sets[s as usize];
        for j in 0..d {
            feats[i * d + j] = t[set.len() - 1] * set.iter().map(|&c| w[(c, j)]).sum::<f64>();
        }
    }
    let w_row: Vec<f64> = (0..k).flat_map(|r| (0..d).map(move |c| (r, c))).map(|(r, c)| w[(r, c)]).collect();
    for f32_input in [false, true] {
        let dd = dir(if f32_input { "etf32" } else { "etf64" });
        let files = write_all(&dd, &feats, n, d, &y, k, &w_row, &vec![0.0; k], f32_input);
        let r = measure_files(&files.f, &files.y, Some(&files.w), Some(&files.b)).unwrap();
        let tol = if f32_input { 1e-5 } else { 1e-12 };
        let mt = &r.metrics;
        assert!(mt.nc1.unwrap() < tol * tol, "nc1 {:?}", mt.nc1);
        for v in [mt.nc2_w, mt.nc2_h, mt.nc3] {
            assert!(v.unwrap() < tol, "{v:?}");
        }
        for tag in &mt.tag {
            let mm = tag.multiplicity;
            let expect = mm as f64 * t[mm - 1] / t[0];
            assert!((tag.scale_mean.unwrap() - expect).abs() < 10.0 * tol * expect, "m={mm}: {:?} vs {expect}", tag.scale_mean);
            assert!(tag.max_angle_deg.unwrap() < 1e3 * tol);
        }
        for s in &r.synthesis {
            let c = t[s.set.len() - 1] / t[0];
            assert!(s.weights.iter().all(|&x| (x - c).abs() < 10.0 * tol), "{:?} vs {c}", s.weights);
            assert!(s.residual < 10.0 * tol);
        }
        assert!(r.balanced_within_multiplicity);
        std::fs::remove_dir_all(&dd).ok();
    }
}

/// Every metric written out directly with nalgebra (dense Sigma_W, SVD pseudo-inverse of
/// rank K-1, acos angles, normal-equation least squares).
struct Direct {
    nc1: f64,
    nc2_w: f64,
    nc2_h: f64,
    nc3: f64,
    angles: Vec<f64>,
    scales: Vec<f64>,
    weights: Vec<Vec<f64>>,
}

fn direct(feats: &[f64], n: usize, d: usize, l: &LabelSets, w: &DMatrix<f64>) -> Direct {
    let k = l.classes;
    let h = DMatrix::from_row_slice(n, d, feats).transpose(); // d x N
    let mut mu = vec![DVector::<f64>::zeros(d); l.sets.len()];
    for i in 0..n {
        mu[l.set_of[i] as usize] += h.column(i);
    }
    for (j, c) in l.counts.iter().enumerate() {
        mu[j] /= *c as f64;
    }
    let single = |c: usize| l.sets.iter().position(|s| s == &vec![c]).unwrap();
    let h1 = DMatrix::from_columns(&(0..k).map(|c| mu[single(c)].clone()).collect::<Vec<_>>());
    let mg = h1.column_mean();
    let cm = DMatrix::from_columns(&(0..k).map(|c| h1.column(c) - &mg).collect::<Vec<_>>());
    let mut sw = DMatrix::<f64>::zeros(d, d);
    for i in 0..n {
        let dev = h.column(i) - &mu[l.set_of[i] as usize];
        sw += &dev * dev.transpose();
    }
    sw /= n as f64;
    let sb = &cm * cm.transpose() / k as f64;
    let svd = sb.svd(true, true);
    let (u, v) = (svd.u.unwrap(), svd.v_t.unwrap());
    let mut pinv = DMatrix::<f64>::zeros(d, d);
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|a, b| svd.singular_values[*b].total_cmp(&svd.singular_values[*a]));
    for &r in order.iter().take(k - 1) {
        pinv += v.row(r).transpose() * u.column(r).transpose() / svd.singular_values[r];
    }
    let nc1 = (&sw * &pinv).trace() / k as f64;
    let e = (DMatrix::<f64>::identity(k, k) - DMatrix::from_element(k, k, 1.0 / k as f64)) / ((k - 1) as f64).sqrt();
    let dist = |g: DMatrix<f64>| (&g / g.norm() - &e).norm();
    let mut angles = Vec::new();
    let mut scales = Vec::new();
    let mut weights = Vec::new();
    for (j, s) in l.sets.iter().enumerate() {
        if s.len() < 2 {
            continue;
        }
        let sum: DVector<f64> = s.iter().map(|&c| mu[single(c)].clone()).fold(DVector::zeros(d), |a, b| a + b);
        let cos = mu[j].dot(&sum) / (mu[j].norm() * sum.norm());
        angles.push(cos.clamp(-1.0, 1.0).acos().to_degrees());
        scales.push(mu[j].norm() / (sum.norm() / s.len() as f64));
        let a = DMatrix::from_columns(&s.iter().map(|&c| mu[single(c)].clone()).collect::<Vec<_>>());
        let c = (a.transpose() * &a).try_inverse().unwrap() * a.transpose() * &mu[j];
        weights.push(c.iter().copied().collect());
    }
    Direct { nc1, nc2_w: dist(w * w.transpose()), nc2_h: dist(cm.transpose() * &cm), nc3: dist(w * &cm), angles, scales, weights }
}

/// At 3 samples per set (42 samples) and at 200 (2,800: NC1's deviations are taken in blocks
/// of 2,048 samples, so two blocks, the second partial).
#[test]
fn noisy_features_agree_with_a_direct_computation() {
    for per in [3, 200] {
        noisy_features_agree_at(per);
    }
}

fn noisy_features_agree_at(per: usize) {
    let (k, m, d) = (4, 3, 7);
    let (l, y) = layout(k, m, per);
    let n = l.samples();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let w = DMatrix::<f64>::from_fn(k, d, |_, _| rng.random::<f64>() - 0.5);
    let mut feats = vec![0.0; n * d];
    for (i, &s) in l.set_of.iter().enumerate() {
        let set = &l.sets[s as usize];
        for j in 0..d {
            feats[i * d + j] = 0.6 * set.iter().map(|&c| w[(c, j)]).sum::<f64>() + 0.3 * (rng.random::<f64>() - 0.5);
        }
    }
    let w_row: Vec<f64> = (0..k).flat_map(|r| (0..d).map(move |c| (r, c))).map(|(r, c)| w[(r, c)]).collect();
    let dref = direct(&feats, n, d, &l, &w);
    for (f32_input, tol) in [(false, 1e-9), (true, 1e-4)] {
        let dd = dir(if f32_input { "noisy32" } else { "noisy64" });
        let files = write_all(&dd, &feats, n, d, &y, k, &w_row, &vec![0.1; k], f32_input);
        let r = measure_files(&files.f, &files.y, Some(&files.w), Some(&files.b)).unwrap();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        let mt = &r.metrics;
        assert!(rel(mt.nc1.unwrap(), dref.nc1) < tol, "nc1 {} vs {}", mt.nc1.unwrap(), dref.nc1);
        assert!(rel(mt.nc2_w.unwrap(), dref.nc2_w) < tol);
        assert!(rel(mt.nc2_h.unwrap(), dref.nc2_h) < tol, "nc2_h {} vs {}", mt.nc2_h.unwrap(), dref.nc2_h);
        assert!(rel(mt.nc3.unwrap(), dref.nc3) < tol);
        assert!(rel(mt.bias_norm.unwrap(), 0.2) < 1e-12);
        let max_angle =
            |mm: usize| l.sets.iter().filter(|s| s.len() >= 2).zip(&dref.angles).filter(|(s, _)| s.len() == mm).map(|(_, a)| *a).fold(0.0, f64::max);
        let mean_scale = |mm: usize| {
            let v: Vec<f64> = l.sets.iter().filter(|s| s.len() >= 2).zip(&dref.scales).filter(|(s, _)| s.len() == mm).map(|(_, a)| *a).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        for tag in &mt.tag {
            assert!(rel(tag.max_angle_deg.unwrap(), max_angle(tag.multiplicity)) < tol);
            assert!(rel(tag.scale_mean.unwrap(), mean_scale(tag.multiplicity)) < tol);
        }
        for (s, wd) in r.synthesis.iter().zip(&dref.weights) {
            for (a, b) in s.weights.iter().zip(wd) {
                assert!((a - b).abs() < tol * b.abs().max(1.0), "{a} vs {b}");
            }
        }
        std::fs::remove_dir_all(&dd).ok();
    }
    // float32 files, C and Fortran order, kept in float32 and widened a row at a time: the
    // report of the float64 file holding the same rounded values, bit for bit.
    let rounded: Vec<f64> = feats.iter().map(|&v| f64::from(v as f32)).collect();
    let dd = dir(&format!("noisy32exact{per}"));
    let files = write_all(&dd, &rounded, n, d, &y, k, &w_row, &vec![0.1; k], false);
    let report = |f: &Path| serde_json::to_string(&measure_files(f, &files.y, Some(&files.w), Some(&files.b)).unwrap()).unwrap();
    let want = report(&files.f);
    let (c32, f32_) = (dd.join("c32.npy"), dd.join("f32.npy"));
    write_npy(&c32, "<f4", &[n, d], false, &f32_bytes(&rounded));
    let col_major: Vec<f64> = (0..d).flat_map(|j| (0..n).map(move |i| (i, j))).map(|(i, j)| rounded[i * d + j]).collect();
    write_npy(&f32_, "<f4", &[n, d], true, &f32_bytes(&col_major));
    assert_eq!(report(&c32), want, "float32, C order");
    assert_eq!(report(&f32_), want, "float32, Fortran order");
    std::fs::remove_dir_all(&dd).ok();
    // The same features in a Fortran-order file (placed row-major as they are read).
    let dd = dir(&format!("noisyF{per}"));
    let files = write_all(&dd, &feats, n, d, &y, k, &w_row, &vec![0.1; k], false);
    let col_major: Vec<f64> = (0..d).flat_map(|j| (0..n).map(move |i| (i, j))).map(|(i, j)| feats[i * d + j]).collect();
    write_npy(&files.f, "<f8", &[n, d], true, &f64_bytes(&col_major));
    let r = measure_files(&files.f, &files.y, Some(&files.w), Some(&files.b)).unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    assert!(rel(r.metrics.nc1.unwrap(), dref.nc1) < 1e-9, "Fortran order: nc1 {} vs {}", r.metrics.nc1.unwrap(), dref.nc1);
    assert!(rel(r.metrics.nc2_h.unwrap(), dref.nc2_h) < 1e-9 && rel(r.metrics.nc3.unwrap(), dref.nc3) < 1e-9);
    std::fs::remove_dir_all(&dd).ok();
}

/// Labels in every dtype a user may save them in, in C and Fortran order, give the same report
/// bit for bit; a value other than 0 or 1 is refused with that value, in float64 too (a
/// float64 label of 1 + 2^-30 would read as 1 in float32).
#[test]
fn labels_in_any_dtype_and_order_give_the_same_report() {
    let (k, m, per, d) = (4, 2, 3, 5);
    let (l, y) = layout(k, m, per);
    let n = l.samples();
    let feats: Vec<f64> = (0..n * d).map(|i| ((i * 37 % 101) as f64 / 101.0).sin()).collect();
    let dd = dir("labeldtypes");
    write_npy(&dd.join("f.npy"), "<f4", &[n, d], false, &f32_bytes(&feats));
    let col_major: Vec<f64> = (0..k).flat_map(|j| (0..n).map(move |i| (i, j))).map(|(i, j)| y[i * k + j]).collect();
    let encode = |descr: &str, v: &[f64]| -> Vec<u8> {
        match descr {
            "|u1" | "|b1" => v.iter().map(|&x| x as u8).collect(),
            "<i2" => v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect(),
            "<i8" => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
            "<u4" => v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
            "<f4" => f32_bytes(v),
            _ => f64_bytes(v),
        }
    };
    let report = |y_path: &Path| serde_json::to_string(&measure_files(&dd.join("f.npy"), y_path, None, None).unwrap()).unwrap();
    write_npy(&dd.join("y.npy"), "<f8", &[n, k], false, &f64_bytes(&y));
    let want = report(&dd.join("y.npy"));
    for descr in ["|u1", "|b1", "<i2", "<i8", "<u4", "<f4", "<f8"] {
        for fortran in [false, true] {
            let path = dd.join(format!("y{}{}.npy", descr.replace(['<', '|'], ""), fortran));
            write_npy(&path, descr, &[n, k], fortran, &encode(descr, if fortran { &col_major } else { &y }));
            assert_eq!(report(&path), want, "{descr}, fortran {fortran}");
        }
    }
    for (descr, bad, shown) in [("<i2", 2.0, "is 2;"), ("<f4", 0.5, "is 0.5;"), ("<f8", 1.0 + 2f64.powi(-30), "is 1.0000000009313226;")] {
        let mut yb = y.clone();
        yb[k + 1] = bad;
        let path = dd.join("bad.npy");
        write_npy(&path, descr, &[n, k], false, &encode(descr, &yb));
        let err = measure_files(&dd.join("f.npy"), &path, None, None).unwrap_err().to_string();
        assert!(err.contains("label (1, 1)") && err.contains(shown), "{descr}: {err}");
    }
    std::fs::remove_dir_all(&dd).ok();
}

#[test]
fn ufm_and_measure_agree_on_the_same_features() {
    use mlab_nc::commands::verify::{verify, VerifyOptions};
    let cfg = common::config(4, 2, 5, &[2, 1], (5e-3, 5e-3, 5e-3), mlab_nc::model::loss::Loss::Pal);
    let (k, d) = (4, 5);
    let rep = verify(&cfg, &[0], &VerifyOptions::default()).unwrap();
    let obj = mlab_nc::model::objective::UfmObjective::new(&cfg);
    // The solve verify runs (certified stop; this configuration is verified at it).
    let sol = mlab_nc::theory::solve(&obj, 0, &VerifyOptions::default().solve, None).unwrap();
    let p = obj.split(&sol.x);
    let w_row: Vec<f64> = (0..k).flat_map(|r| (0..d).map(move |c| (r, c))).map(|(r, c)| p.w.data[r + c * k]).collect();
    let (_, y) = layout(k, 2, 1);
    let mut y = y;
    // layout(.., 1) has one sample per set; the config has 2 per singleton: rebuild from cfg.
    y.clear();
    for &s in &cfg.labels.set_of {
        let mut row = vec![0.0; k];
        cfg.labels.sets[s as usize].iter().for_each(|&c| row[c] = 1.0);
        y.extend(row);
    }
    let dd = dir("agree");
    let files = write_all(&dd, p.h.data, obj.n, d, &y, k, &w_row, p.b, false);
    let r = measure_files(&files.f, &files.y, Some(&files.w), Some(&files.b)).unwrap();
    let a = &rep.runs[0].metrics;
    let b = &r.metrics;
    let close = |x: Option<f64>, y: Option<f64>| (x.unwrap() - y.unwrap()).abs() <= 1e-12 * x.unwrap().abs().max(1e-300);
    assert!(close(a.nc2_w, b.nc2_w) && close(a.nc2_h, b.nc2_h) && close(a.nc3, b.nc3) && close(a.bias_norm, b.bias_norm));
    assert!((a.nc1.unwrap() - b.nc1.unwrap()).abs() <= 1e-12 * a.nc1.unwrap().abs() + 1e-30);
    assert!(close(a.tag[0].scale_mean, b.tag[0].scale_mean));
    std::fs::remove_dir_all(&dd).ok();
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlab-nc")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn malformed_inputs_are_rejected_with_one_line() {
    let dd = dir("bad");
    let p = |n: &str| dd.join(n).to_string_lossy().into_owned();
    let (l, y) = layout(3, 2, 1);
    let n = l.samples();
    let feats: Vec<f64> = (0..n * 4).map(|i| (i as f64).sin()).collect();
    write_npy(&dd.join("f.npy"), "<f8", &[n, 4], false, &f64_bytes(&feats));
    write_npy(&dd.join("y.npy"), "<f8", &[n, 3], false, &f64_bytes(&y));
    std::fs::write(dd.join("text.npy"), b"hello, not numpy").unwrap();
    let full = std::fs::read(dd.join("f.npy")).unwrap();
    std::fs::write(dd.join("trunc.npy"), &full[..full.len() - 40]).unwrap();
    write_npy(&dd.join("c16.npy"), "<c16", &[n, 4], false, &vec![0u8; n * 4 * 16]);
    write_npy(&dd.join("short.npy"), "<f8", &[n - 1, 4], false, &f64_bytes(&feats[..(n - 1) * 4]));
    write_npy(&dd.join("int.npy"), "<i4", &[n, 4], false, &vec![0u8; n * 4 * 4]);
    let f32_full: Vec<u8> = f32_bytes(&feats);
    write_npy(&dd.join("trunc32.npy"), "<f4", &[n, 4], false, &f32_full[..f32_full.len() - 6]);
    write_npy(&dd.join("w_bad.npy"), "<f8", &[3, 5], false, &f64_bytes(&[0.5; 15]));
    let mut nan = feats.clone();
    nan[5] = f64::NAN;
    write_npy(&dd.join("nan.npy"), "<f8", &[n, 4], false, &f64_bytes(&nan));
    let mut inf = feats.clone();
    inf[2] = f64::INFINITY;
    write_npy(&dd.join("inf.npy"), "<f8", &[n, 4], false, &f64_bytes(&inf));
    let mut nolab = y.clone();
    nolab[0] = 0.0;
    write_npy(&dd.join("nolab.npy"), "<f8", &[n, 3], false, &f64_bytes(&nolab));
    let mut two = y.clone();
    two[1] = 2.0;
    write_npy(&dd.join("two.npy"), "<f8", &[n, 3], false, &f64_bytes(&two));
    write_npy(&dd.join("k1.npy"), "<f8", &[n, 1], false, &f64_bytes(&vec![1.0; n]));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![p("missing.npy"), p("y.npy")], "missing.npy: cannot open"),
        (vec![p("text.npy"), p("y.npy")], "not a .npy file"),
        (vec![p("trunc.npy"), p("y.npy")], "trunc.npy"),
        (vec![p("c16.npy"), p("y.npy")], "unsupported dtype"),
        (vec![p("int.npy"), p("y.npy")], "unsupported dtype <i4 (expected float32 or float64)"),
        (vec![p("trunc32.npy"), p("y.npy")], "trunc32.npy"),
        (vec![p("short.npy"), p("y.npy")], "rows"),
        (vec![p("nan.npy"), p("y.npy")], "NaN"),
        (vec![p("inf.npy"), p("y.npy")], "infinite"),
        (vec![p("f.npy"), p("nolab.npy")], "has no label"),
        (vec![p("f.npy"), p("two.npy")], "must be 0 or 1"),
        (vec![p("f.npy"), p("k1.npy")], "at least 2"),
    ];
    for (files, expect) in &cases {
        let (code, err) = run(&["measure", "--features", &files[0], "--labels", &files[1]]);
        assert_eq!(code, 2, "{files:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(err.contains(expect), "{files:?}: {err:?} should contain {expect:?}");
        assert!(!err.contains("panicked"));
    }
    let (code, err) = run(&["measure", "--features", &p("f.npy"), "--labels", &p("y.npy"), "--classifier", &p("w_bad.npy")]);
    assert_eq!(code, 2);
    assert!(err.contains("w_bad.npy") && err.contains("expected K x d"), "{err}");
    std::fs::remove_dir_all(&dd).ok();
}

#[test]
fn missing_singletons_still_get_nc1_free_metrics_and_a_note() {
    let dd = dir("nosingle");
    // Sets {0}, {1}, {0,2}: class 2 has no multiplicity-1 mean.
    let y: Vec<f64> = vec![1., 0., 0., 1., 0., 0., 0., 1., 0., 0., 1., 0., 1., 0., 1., 1., 0., 1.];
    let n = 6;
    let feats: Vec<f64> = (0..n * 3).map(|i| (i as f64 * 0.7).cos()).collect();
    write_npy(&dd.join("f.npy"), "<f8", &[n, 3], false, &f64_bytes(&feats));
    write_npy(&dd.join("y.npy"), "<f8", &[n, 3], false, &f64_bytes(&y));
    let r = measure_files(&dd.join("f.npy"), &dd.join("y.npy"), None, None).unwrap();
    assert!(!r.balanced_within_multiplicity);
    assert!(r.precondition.contains("fails"));
    assert!(r.metrics.note.as_deref().unwrap_or("").contains("no multiplicity-1 mean for class 2"));
    assert!(r.metrics.nc1.is_some_and(|v| v.is_finite() && v > 0.0), "{:?}", r.metrics.nc1);
    assert!(r.metrics.nc2_h.is_none() && r.metrics.nc3.is_none());
    assert!(r.metrics.tag[0].note.as_deref().unwrap_or("").contains("class 2"));
    std::fs::remove_dir_all(&dd).ok();
}

/// The ETF distance does not depend on the scale (it compares G / ||G||_F), so features of
/// 1e300 or 1e-300 must give the distance they give at 1. Their Gram matrix formed directly
/// overflows (or underflows) and the distance comes out NaN; `etf_distance_of` scales both
/// factors by powers of two first.
#[test]
fn the_etf_distance_survives_extreme_scales() {
    use mlab_nc::analysis::metrics::{etf_distance, etf_distance_of};
    let cm = DMatrix::from_row_slice(3, 3, &[1.0, 0.2, -0.5, 0.1, 1.0, 0.3, 0.0, -0.4, 1.0]);
    let at_one = etf_distance(&(cm.transpose() * &cm));
    assert!(at_one.is_finite() && at_one > 0.1, "{at_one}");
    for c in [1e300, 1e-300, 3e-310] {
        let m = &cm * c;
        let d = etf_distance_of(&m.transpose(), &m);
        assert!((d - at_one).abs() <= 1e-13 * at_one, "scale {c:e}: {d} against {at_one}");
    }
    let big = &cm * 1e300;
    assert!(etf_distance(&(big.transpose() * &big)).is_nan(), "the direct Gram overflows");
}

/// Every metric but alpha is invariant to the scale of the features and the classifier (NC1 a
/// ratio of variabilities, NC2/NC3 normalised Gram matrices, the tag-wise angles and scale
/// ratios), so features and a classifier of 1e300 or 1e-300 must give what they give at 1.
/// alpha = ||W||_F^2 / (K - 1) is then 1e600 or 1e-600, outside float64: reported as absent.
#[test]
fn metrics_do_not_depend_on_the_scale_even_at_the_ends_of_float64() {
    use mlab_nc::analysis::metrics::Metrics;
    use mlab_nc::linalg::Mat;
    let labels = LabelSets::balanced(3, 2, &[20, 20]).unwrap();
    let (k, d, n) = (3, 8, labels.samples());
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let means: Vec<f64> = (0..k * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let w: Vec<f64> = (0..k * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut h = vec![0.0; d * n];
    for (i, &s) in labels.set_of.iter().enumerate() {
        for &c in &labels.sets[s as usize] {
            for r in 0..d {
                h[i * d + r] += means[c * d + r];
            }
        }
        for r in 0..d {
            h[i * d + r] += 0.01 * rng.random_range(-1.0..1.0);
        }
    }
    let at = |c: f64| {
        let (hs, ws): (Vec<f64>, Vec<f64>) = (h.iter().map(|v| v * c).collect(), w.iter().map(|v| v * c).collect());
        Metrics::compute(Mat::new(&hs, d, n), &labels, Some(Mat::new(&ws, k, d)), None)
    };
    let one = at(1.0);
    let tag = |m: &Metrics| (m.tag[0].max_angle_deg.unwrap(), m.tag[0].scale_mean.unwrap());
    assert!(one.alpha.is_some_and(|a| a > 0.0));
    for c in [1e300, 1e-300] {
        let m = at(c);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * b.abs();
        for (name, a, b) in [
            ("nc1", m.nc1.unwrap(), one.nc1.unwrap()),
            ("nc2_w", m.nc2_w.unwrap(), one.nc2_w.unwrap()),
            ("nc2_h", m.nc2_h.unwrap(), one.nc2_h.unwrap()),
            ("nc3", m.nc3.unwrap(), one.nc3.unwrap()),
            ("angle", tag(&m).0, tag(&one).0),
            ("scale", tag(&m).1, tag(&one).1),
        ] {
            assert!(close(a, b), "scale {c:e}: {name} {a} against {b}");
        }
        assert_eq!(m.alpha, None, "scale {c:e}");
    }
}
