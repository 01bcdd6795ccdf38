//! `measure`: the neural-collapse metrics of features exported from a real network as `.npy`
//! files (the computation is `analysis::measure`).

use std::path::Path;

use crate::analysis::arrays::{Array2, Order, Values};
use crate::analysis::measure::{measure_inputs, Inputs, MeasureReport, Names};
use crate::error::Result;
use crate::io::npy::{self, FloatArray, Floats};

/// Reads the `.npy` files and measures them.
pub fn measure_files(features: &Path, labels: &Path, classifier: Option<&Path>, bias: Option<&Path>) -> Result<MeasureReport> {
    let f = npy::read_floats(features, 2, false)?;
    let y = npy::read_floats(labels, 2, true)?;
    let w = classifier.map(|p| npy::read(p, 2, false)).transpose()?;
    let b = bias.map(|p| npy::read(p, 1, false)).transpose()?;
    let names = [
        features.display().to_string(),
        labels.display().to_string(),
        classifier.map(|p| p.display().to_string()).unwrap_or_default(),
        bias.map(|p| p.display().to_string()).unwrap_or_default(),
    ];
    let inp = Inputs {
        features: in_place(&f)?,
        labels: in_place(&y)?,
        classifier: w.as_ref().map(|w| Array2::row_major(&w.data, w.rows, w.cols)).transpose()?,
        bias: b.as_ref().map(|b| b.data.as_slice()),
    };
    measure_inputs(&inp, &Names { features: &names[0], labels: &names[1], classifier: &names[2], bias: &names[3] })
}

/// The array as read, in its own precision.
fn in_place(a: &FloatArray) -> Result<Array2<'_>> {
    match &a.data {
        Floats::F32(v) => Array2::new(Values::F32(v), a.rows, a.cols, Order::RowMajor),
        Floats::F64(v) => Array2::row_major(v, a.rows, a.cols),
    }
}
