//! The neural-collapse metrics (docs/theory.md §5) of features from a real network, in
//! memory.
//!
//! Features are N x d (one row per sample, PyTorch layout), labels N x K multi-hot, the
//! classifier K x d (`nn.Linear.weight`), the bias K. Row-major N x d is exactly the
//! column-major d x N layout that [`Metrics::compute`] takes, so features are used as read;
//! the classifier is transposed into column-major K x d. The metrics come from the same code
//! as `ufm`.

use serde::Serialize;

use crate::analysis::metrics::{set_means, synthesis, Metrics, Synthesis};
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
    Ok(MeasureReport {
        samples: n,
        dim: d,
        classes: k,
        counts,
        balanced_within_multiplicity: balanced,
        precondition,
        metrics,
        synthesis: synthesis(&mu, &labels),
    })
}
