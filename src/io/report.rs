//! Writing reports: JSON files written atomically, and the terminal tables of `ufm`,
//! `predict` and `measure`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::analysis::measure::MeasureReport;
use crate::analysis::report::UfmReport;
use crate::error::{Error, Result};
use crate::model::config::UfmConfig;
use crate::theory::prediction::Prediction;

/// Writes `value` as pretty JSON to `path` atomically (temporary file, then rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::new(format!("{}: cannot serialise: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// The temporary sibling that [`write_atomic`] writes before renaming it to `path`.
fn temporary(path: &Path) -> std::path::PathBuf {
    path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("out")))
}

/// Writes bytes to `path` atomically: a temporary sibling, then a rename. A failed write
/// (a full disk, say) removes the temporary file instead of leaving it behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary(path);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::new(format!("{}: cannot write: {e}", path.display())));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::new(format!("{}: cannot write: {e}", path.display()))
    })
}

/// Checks, before any work, that [`write_atomic`] can write `path` later: it is not a
/// directory, and its temporary sibling can be created in its directory (which exists and
/// lets us write). A long run then does not end on an unwritable output after the work is
/// done. Nothing is left behind.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::new(format!("{}: cannot write: it is a directory", path.display())));
    }
    let tmp = temporary(path);
    let existed = tmp.exists();
    match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&tmp) {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(&tmp);
            }
            Ok(())
        }
        Err(e) => Err(Error::new(format!("{}: cannot write: {e}", path.display()))),
    }
}

fn fixed(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.10}")).unwrap_or_else(|| "-".into())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
}

/// The prediction as a short block of text.
pub fn prediction_text(c: &UfmConfig, n: usize, p: &Prediction) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "UFM  K={} M={} d={} N={} per-set={:?} loss={} lambda_w={:e} lambda_h={:e} lambda_b={:e}",
        c.classes,
        c.max_labels,
        c.dim,
        n,
        c.per_set,
        c.loss.name(),
        c.lambda_w,
        c.lambda_h,
        c.lambda_b
    );
    let _ = writeln!(
        s,
        "predicted  f* = {:.15e}   alpha = {:.10e}   trivial = {} (statistic {:.4})   etf_possible = {}",
        p.objective, p.alpha, p.trivial, p.trivial_statistic, p.etf_possible
    );
    for (i, g) in p.gamma.iter().enumerate() {
        if let Some(g) = g {
            let _ = writeln!(s, "  m={}  gamma = {:.12e}   s_m = {}", i + 1, g, fixed(p.scale[i]));
        }
    }
    s
}

/// The terminal table of a `ufm` report.
pub fn table(r: &UfmReport) -> String {
    let mut s = prediction_text(&r.config, r.samples, &r.predicted);
    let _ = writeln!(
        s,
        "\n{:>5} {:>22} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7}  verdict",
        "seed", "objective", "rel.gap", "cert.gap", "NC1", "NC2-W", "NC2-H", "NC3", "bias", "alpha.err", "iters", "secs"
    );
    for run in &r.runs {
        let m = &run.metrics;
        let _ = writeln!(
            s,
            "{:>5} {:>22.15e} {:>10.2e} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7.3}  {}",
            run.seed,
            run.objective,
            run.relative_objective_gap,
            opt(run.certificate.relative_gap),
            opt(m.nc1),
            opt(m.nc2_w),
            opt(m.nc2_h),
            opt(m.nc3),
            opt(m.bias_norm),
            opt(run.alpha_rel_error),
            run.iterations,
            run.seconds,
            run.verdict.name()
        );
    }
    if r.runs.iter().any(|run| !run.metrics.tag.is_empty()) {
        let _ = writeln!(s, "\ntag-wise average (seed, m: max angle deg | scale measured [min..max] vs predicted s_m)");
        for run in &r.runs {
            for t in &run.metrics.tag {
                let _ = writeln!(
                    s,
                    "{:>5}  m={}: {:>9} deg | {} [{}..{}] vs {}{}",
                    run.seed,
                    t.multiplicity,
                    opt(t.max_angle_deg),
                    fixed(t.scale_mean),
                    fixed(t.scale_min),
                    fixed(t.scale_max),
                    fixed(t.scale_pred),
                    t.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default()
                );
            }
        }
    }
    for run in &r.runs {
        let _ = writeln!(
            s,
            "seed {}: termination: {}; |grad| = {:.2e}; certificate: D = {}, spectral ratio {:.12}",
            run.seed,
            run.termination,
            run.grad_norm,
            opt(run.certificate.lower_bound),
            run.certificate.spectral_ratio
        );
        for reason in &run.reasons {
            let _ = writeln!(s, "seed {}: {}", run.seed, reason);
        }
    }
    if let Some(c) = &r.certified_prediction {
        let _ = writeln!(s, "certified: {}", c.statement);
    }
    let _ = writeln!(
        s,
        "\n{}/{} starts reached the predicted optimum; {} verified.  VERDICT: {}",
        r.summary.reached_prediction,
        r.summary.starts,
        r.summary.verified,
        r.verdict.name()
    );
    s
}

fn opt4(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4e}")).unwrap_or_else(|| "-".into())
}

/// The terminal table of a `measure` report.
pub fn measure_table(r: &MeasureReport) -> String {
    let mut s = String::new();
    let m = &r.metrics;
    let _ = writeln!(s, "features: N = {}, d = {}, K = {}", r.samples, r.dim, r.classes);
    for c in &r.counts {
        let _ = writeln!(s, "  m={}: {} samples in {} label sets (counts {}..{})", c.multiplicity, c.samples, c.sets, c.min_count, c.max_count);
    }
    let _ = writeln!(s, "  {}", r.precondition);
    let _ = writeln!(s, "NC1   = {}   (within-set / between-class variability)", opt4(m.nc1));
    let _ = writeln!(s, "NC2-W = {}   (classifier vs simplex ETF)", opt4(m.nc2_w));
    let _ = writeln!(s, "NC2-H = {}   (centred multiplicity-1 means vs simplex ETF)", opt4(m.nc2_h));
    let _ = writeln!(s, "NC3   = {}   (W C vs simplex ETF)", opt4(m.nc3));
    let _ = writeln!(s, "bias  = {}", opt4(m.bias_norm));
    if let Some(n) = &m.note {
        let _ = writeln!(s, "note: {n}");
    }
    for t in &m.tag {
        let _ = writeln!(
            s,
            "tag m={}: {} sets, angle max {} / mean {} deg, scale mean {} [{}..{}]{}",
            t.multiplicity,
            t.sets,
            opt4(t.max_angle_deg),
            opt4(t.mean_angle_deg),
            opt4(t.scale_mean),
            opt4(t.scale_min),
            opt4(t.scale_max),
            t.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    let _ = writeln!(s, "angle ratio (paper-style, direction only) = {}", opt4(m.angle_ratio));
    if !r.synthesis.is_empty() {
        let worst = r.synthesis.iter().map(|x| x.residual).fold(0.0, f64::max);
        let _ = writeln!(s, "synthesis mu_S ~ sum c_k mu_k over {} multi-label sets: largest off-span residual {:.3e}", r.synthesis.len(), worst);
        for x in r.synthesis.iter().take(5) {
            let w: Vec<String> = x.weights.iter().map(|v| format!("{v:.6}")).collect();
            let _ = writeln!(s, "  S={:?}: c = [{}], residual {:.3e}", x.set, w.join(", "), x.residual);
        }
        if r.synthesis.len() > 5 {
            let _ = writeln!(s, "  ... ({} more in the JSON report)", r.synthesis.len() - 5);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mlab-nc-report-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A write whose rename fails (the target is a directory that is not empty) is an error
    /// naming the target, and the temporary file it wrote is gone.
    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let d = scratch("failed");
        let target = d.join("out.json");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        let e = write_atomic(&target, b"{}").unwrap_err().to_string();
        assert!(e.contains(&target.display().to_string()), "{e}");
        assert!(!temporary(&target).exists());
        let mut names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["out.json"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The check before the work creates nothing and removes nothing it did not create; the
    /// write after it lands.
    #[test]
    fn the_check_before_the_work_leaves_the_directory_as_it_was() {
        let d = scratch("check");
        let target = d.join("r.json");
        check_writable(&target).unwrap();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        std::fs::write(temporary(&target), b"stale").unwrap();
        check_writable(&target).unwrap();
        assert_eq!(std::fs::read(temporary(&target)).unwrap(), b"stale");
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!temporary(&target).exists());
        assert!(check_writable(&d).unwrap_err().to_string().contains("it is a directory"));
        assert!(check_writable(&d.join("missing").join("r.json")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
