//! The neural-collapse metrics (docs/theory.md §5) of features from a real network, in
//! memory.
//!
//! Features are N x d (one row per sample, PyTorch layout), labels N x K multi-hot, the
//! classifier K x d (`nn.Linear.weight`), the bias K. The features are read a row at a time
//! in the caller's layout and precision (float32 rows widened exactly), never copied whole;
//! the classifier is transposed into column-major K x d. The metrics come from the same code
//! as `ufm`.

use serde::Serialize;

use nalgebra::DMatrix;

use crate::analysis::arrays::Array2;
use crate::analysis::metrics::{set_means, synthesis, Metrics, Spread, Synthesis};
use crate::bail;
use crate::error::{Error, Result};
use crate::linalg::Mat;
use crate::model::labels::LabelSets;

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

/// In-memory inputs, as the caller holds them: features N x d, multi-hot labels N x K,
/// optionally the classifier K x d (`nn.Linear.weight`) and the bias K.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// N x d features.
    pub features: Array2<'a>,
    /// N x K multi-hot labels (0 or 1).
    pub labels: Array2<'a>,
    /// K x d classifier.
    pub classifier: Option<Array2<'a>>,
    /// Bias, length K.
    pub bias: Option<&'a [f64]>,
}

/// What the error messages call the inputs: file names for the CLI, argument names for
/// Python.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The features.
    pub features: &'a str,
    /// The labels.
    pub labels: &'a str,
    /// The classifier.
    pub classifier: &'a str,
    /// The bias.
    pub bias: &'a str,
}

impl Names<'static> {
    /// The argument names of the Python functions.
    pub const ARGUMENTS: Names<'static> = Names { features: "features", labels: "labels", classifier: "classifier", bias: "bias" };
}

/// Label sets of the multi-hot rows of `labels` (N x K, any layout, read a row at a time);
/// `name` prefixes errors.
pub fn label_sets(labels: Array2, name: &str) -> Result<LabelSets> {
    let classes = labels.cols();
    if classes < 2 {
        bail!("{name}: K = {classes} classes; at least 2 are needed");
    }
    let mut samples = Vec::with_capacity(labels.rows());
    let mut buf = vec![0.0; classes];
    for i in 0..labels.rows() {
        let mut set = Vec::new();
        label_row(labels.row(i, &mut buf), i, name, &mut set)?;
        if set.is_empty() {
            bail!("{name}: sample {i} has no label");
        }
        samples.push(set);
    }
    LabelSets::from_samples(classes, &samples)
}

/// Appends to `set` the classes whose entry in row `i` of the labels is 1; an entry other
/// than 0 or 1 is an error.
pub fn label_row(row: &[f64], i: usize, name: &str, set: &mut Vec<usize>) -> Result<()> {
    for (k, &v) in row.iter().enumerate() {
        if v == 1.0 {
            set.push(k);
        } else if v != 0.0 {
            bail!("{name}: label ({i}, {k}) is {v}; labels must be 0 or 1");
        }
    }
    Ok(())
}

fn finite(data: &[f64], name: &str) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::new(format!("{name}: value {i} is {} (NaN or infinite values are not allowed)", data[i]))),
        None => Ok(()),
    }
}

/// Checks the shapes of the classifier (K x d) and the bias (K) against K and d.
pub fn check_head(classifier: Option<&Array2>, bias: Option<&[f64]>, classes: usize, dim: usize, names: &Names) -> Result<()> {
    if let Some(w) = classifier {
        if w.rows() != classes || w.cols() != dim {
            bail!("{}: classifier is {} x {}, expected K x d = {classes} x {dim} (nn.Linear.weight layout)", names.classifier, w.rows(), w.cols());
        }
        if let Some((i, j, v)) = w.first_non_finite() {
            bail!("{}: entry ({i}, {j}) is {v} (NaN or infinite values are not allowed)", names.classifier);
        }
    }
    if let Some(b) = bias {
        if b.len() != classes {
            bail!("{}: bias has length {}, expected K = {classes}", names.bias, b.len());
        }
        finite(b, names.bias)?;
    }
    Ok(())
}

/// Measures in-memory arrays: checks shapes and values, then computes every metric.
pub fn measure_inputs(inp: &Inputs, names: &Names) -> Result<MeasureReport> {
    let (f, y) = (&inp.features, &inp.labels);
    if f.rows() != y.rows() {
        bail!("{}: {} rows, but {} has {} rows (one row per sample in both)", names.labels, y.rows(), names.features, f.rows());
    }
    if f.cols() == 0 || f.rows() == 0 {
        bail!("{}: empty feature matrix ({} x {})", names.features, f.rows(), f.cols());
    }
    check_head(inp.classifier.as_ref(), inp.bias, y.cols(), f.cols(), names)?;
    if let Some((i, j, v)) = f.first_non_finite() {
        bail!("{}: entry ({i}, {j}) is {v} (NaN or infinite values are not allowed)", names.features);
    }
    let labels = label_sets(*y, names.labels)?;
    // The features as the caller holds them, read a row at a time: no float64 copy.
    let mu = set_means(*f, &labels);
    Ok(report(&labels, &mu, Spread::Samples(*f), inp.classifier.as_ref(), inp.bias))
}

/// The report from the label sets, their means (d x #sets), the within-set spread and the
/// head (already checked by [`check_head`]).
pub fn report(labels: &LabelSets, mu: &DMatrix<f64>, spread: Spread, classifier: Option<&Array2>, bias: Option<&[f64]>) -> MeasureReport {
    let (d, k) = (mu.nrows(), labels.classes);
    let w_col = classifier.map(|w| {
        let mut t = vec![0.0; k * d];
        w.for_each(|r, c, v| t[r + c * k] = v);
        t
    });
    let metrics = Metrics::compute_from_means(spread, mu, labels, w_col.as_deref().map(|w| Mat::new(w, k, d)), bias);
    let n = labels.samples();
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
    MeasureReport { samples: n, dim: d, classes: k, counts, balanced_within_multiplicity: balanced, precondition, metrics, synthesis: synthesis(mu, labels) }
}
