//! `measure`: the neural-collapse metrics of features exported from a real network as `.npy`
//! files (the computation is `analysis::measure`).

use std::path::Path;

use crate::analysis::measure::{measure_inputs, Inputs, MeasureReport};
use crate::bail;
use crate::error::Result;
use crate::io::npy;

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
