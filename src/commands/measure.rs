//! `measure`: the neural-collapse metrics of features exported from a real network.
//!
//! Features are N x d (one row per sample, PyTorch layout), labels N x K multi-hot, the
//! classifier K x d (`nn.Linear.weight`), the bias K. Row-major N x d is exactly the
//! column-major d x N layout that [`Metrics::compute`] takes, so features are used as read;
//! the classifier is transposed into column-major K x d. The metrics come from the same code
//! as `ufm`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::bail;
use crate::error::{Error, Result};
use crate::model::labels::LabelSets;
use crate::linalg::Mat;
use crate::analysis::metrics::{set_means, synthesis, Metrics, Synthesis};
use crate::io::npy;

/// Counts of one multiplicity.
#[derive(Debug, Clone, Serialize)]
pub struct MultiplicityCount {
    /// m.
    pub multiplicity: usize,
    /// Samples with m labels.
    pub samples: usize,
    /// Distinct label sets of size m present.
    pub sets: usize,
    /// Smallest and largest count of a present set.
    pub min_count: usize,
    /// Largest count.
    pub max_count: usize,
}

/// The report of `measure`.
#[derive(Debug, Clone, Serialize)]
pub struct MeasureReport {
    /// Samples N.
    pub samples: usize,
    /// Feature dimension d.
    pub dim: usize,
    /// Classes K.
    pub classes: usize,
    /// Per-multiplicity counts.
    pub counts: Vec<MultiplicityCount>,
    /// Every set of a present multiplicity appears, all with equal counts.
    pub balanced_within_multiplicity: bool,
    /// Plain statement about the theorem's data precondition.
    pub precondition: String,
    /// The metrics (same object as in `ufm`).
    pub metrics: Metrics,
    /// Least-squares synthesis of every multi-label mean from its tags' means.
    pub synthesis: Vec<Synthesis>,
}

/// In-memory inputs: features d x N column-major (= N x d row-major), multi-hot labels
/// N x K row-major, optional classifier K x d row-major and bias K.
pub struct Inputs<'a> {
    /// N x d row-major features.
    pub features: &'a [f64],
    /// Feature dimension d.
    pub dim: usize,
    /// N x K row-major multi-hot labels (0 or 1).
    pub labels: &'a [f64],
    /// Classes K.
    pub classes: usize,
    /// K x d row-major classifier.
    pub classifier: Option<&'a [f64]>,
    /// Bias, length K.
    pub bias: Option<&'a [f64]>,
}

/// Label sets of multi-hot rows; `name` prefixes errors.
pub fn label_sets(labels: &[f64], classes: usize, name: &str) -> Result<LabelSets> {
    if classes < 2 {
        bail!("{name}: K = {classes} classes; at least 2 are needed");
    }
    let mut samples = Vec::with_capacity(labels.len() / classes);
    for (i, row) in labels.chunks_exact(classes).enumerate() {
        let mut set = Vec::new();
        for (k, &v) in row.iter().enumerate() {
            if v == 1.0 {
                set.push(k);
            } else if v != 0.0 {
                bail!("{name}: label ({i}, {k}) is {v}; labels must be 0 or 1");
            }
        }
        if set.is_empty() {
            bail!("{name}: sample {i} has no label");
        }
        samples.push(set);
    }
    LabelSets::from_samples(classes, &samples)
}

fn finite(data: &[f64], name: &str) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::new(format!("{name}: value {i} is {} (NaN or infinite values are not allowed)", data[i]))),
        None => Ok(()),
    }
}

/// Measures in-memory arrays (already validated for shape).
pub fn measure_inputs(inp: &Inputs, names: [&str; 4]) -> Result<MeasureReport> {
    finite(inp.features, names[0])?;
    let labels = label_sets(inp.labels, inp.classes, names[1])?;
    let (n, d, k) = (labels.samples(), inp.dim, inp.classes);
    let w_col = inp.classifier.map(|w| {
        finite(w, names[2])?;
        let mut t = vec![0.0; k * d];
        for r in 0..k {
            for c in 0..d {
                t[r + c * k] = w[r * d + c];
            }
        }
        Ok::<_, Error>(t)
    });
    let w_col = w_col.transpose()?;
    if let Some(b) = inp.bias {
        finite(b, names[3])?;
    }
    let h = Mat::new(inp.features, d, n);
    let mu = set_means(h, &labels);
    let metrics = Metrics::compute_from_means(h, &mu, &labels, w_col.as_deref().map(|w| Mat::new(w, k, d)), inp.bias);
    let mut counts = Vec::new();
    for m in 1..=labels.max_labels {
        let c: Vec<usize> = labels.sets.iter().zip(&labels.counts).filter(|(s, _)| s.len() == m).map(|(_, &c)| c).collect();
        counts.push(MultiplicityCount {
            multiplicity: m,
            samples: c.iter().sum(),
            sets: c.len(),
            min_count: c.iter().copied().min().unwrap_or(0),
            max_count: c.iter().copied().max().unwrap_or(0),
        });
    }
    let balanced = labels.balanced_within_multiplicity();
    let precondition = if balanced {
        "balanced within each multiplicity: the theorem's data precondition holds".to_string()
    } else {
        "NOT balanced within each multiplicity (missing label sets or unequal counts): the theorem's data precondition fails".to_string()
    };
    Ok(MeasureReport { samples: n, dim: d, classes: k, counts, balanced_within_multiplicity: balanced, precondition, metrics, synthesis: synthesis(&mu, &labels) })
}

/// Reads the `.npy` files and measures them.
pub fn measure_files(features: &Path, labels: &Path, classifier: Option<&Path>, bias: Option<&Path>) -> Result<MeasureReport> {
    let f = npy::read(features, 2, false)?;
    let y = npy::read(labels, 2, true)?;
    if f.rows != y.rows {
        bail!("{}: {} rows, but {} has {} rows (one row per sample in both)", labels.display(), y.rows, features.display(), f.rows);
    }
    if f.cols == 0 || f.rows == 0 {
        bail!("{}: empty feature matrix", features.display());
    }
    let w = classifier.map(|p| npy::read(p, 2, false)).transpose()?;
    if let (Some(w), Some(p)) = (&w, classifier) {
        if w.rows != y.cols || w.cols != f.cols {
            bail!("{}: classifier is {} x {}, expected K x d = {} x {} (nn.Linear.weight layout)", p.display(), w.rows, w.cols, y.cols, f.cols);
        }
    }
    let b = bias.map(|p| npy::read(p, 1, false)).transpose()?;
    if let (Some(b), Some(p)) = (&b, bias) {
        if b.rows != y.cols {
            bail!("{}: bias has length {}, expected K = {}", p.display(), b.rows, y.cols);
        }
    }
    let names = [
        features.display().to_string(),
        labels.display().to_string(),
        classifier.map(|p| p.display().to_string()).unwrap_or_default(),
        bias.map(|p| p.display().to_string()).unwrap_or_default(),
    ];
    let inp = Inputs {
        features: &f.data,
        dim: f.cols,
        labels: &y.data,
        classes: y.cols,
        classifier: w.as_ref().map(|w| w.data.as_slice()),
        bias: b.as_ref().map(|b| b.data.as_slice()),
    };
    measure_inputs(&inp, [&names[0], &names[1], &names[2], &names[3]])
}

fn opt(v: Option<f64>) -> String {
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
    let _ = writeln!(s, "NC1   = {}   (within-set / between-class variability)", opt(m.nc1));
    let _ = writeln!(s, "NC2-W = {}   (classifier vs simplex ETF)", opt(m.nc2_w));
    let _ = writeln!(s, "NC2-H = {}   (centred multiplicity-1 means vs simplex ETF)", opt(m.nc2_h));
    let _ = writeln!(s, "NC3   = {}   (W C vs simplex ETF)", opt(m.nc3));
    let _ = writeln!(s, "bias  = {}", opt(m.bias_norm));
    if let Some(n) = &m.note {
        let _ = writeln!(s, "note: {n}");
    }
    for t in &m.tag {
        let _ = writeln!(
            s,
            "tag m={}: {} sets, angle max {} / mean {} deg, scale mean {} [{}..{}]{}",
            t.multiplicity,
            t.sets,
            opt(t.max_angle_deg),
            opt(t.mean_angle_deg),
            opt(t.scale_mean),
            opt(t.scale_min),
            opt(t.scale_max),
            t.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    let _ = writeln!(s, "angle ratio (paper-style, direction only) = {}", opt(m.angle_ratio));
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
