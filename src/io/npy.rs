//! Reading `.npy` arrays exported from PyTorch/NumPy (via the `npyz` crate) into f64.
//!
//! Accepted dtypes: float32/float64 (any matrix), and for labels also bool, int8..int64 and
//! uint8..uint64. Both C (row-major) and Fortran (column-major) order are accepted; the
//! result is always row-major. Every failure is one line naming the file.

use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar};

use crate::error::{Error, Result};

/// A 1-D or 2-D array in row-major order, as f64.
#[derive(Debug, Clone)]
pub struct Array {
    /// Rows (the length for a 1-D array).
    pub rows: usize,
    /// Columns (1 for a 1-D array).
    pub cols: usize,
    /// Row-major data.
    pub data: Vec<f64>,
    /// Original dtype, e.g. "<f4".
    pub dtype: String,
}

fn err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(format!("{}: {msg}", path.display()))
}

fn read_as<T: npyz::Deserialize>(path: &Path, npy: NpyFile<&[u8]>, conv: impl Fn(T) -> f64) -> Result<Vec<f64>> {
    let v: Vec<T> = npy.into_vec().map_err(|e| err(path, format!("cannot read the data (truncated or corrupt file?): {e}")))?;
    Ok(v.into_iter().map(conv).collect())
}

/// Reads a 1-D or 2-D `.npy` file; `allow_ints` also accepts bool and integer dtypes.
pub fn read(path: &Path, ndim: usize, allow_ints: bool) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(err(path, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let npy = NpyFile::new(&bytes[..]).map_err(|e| err(path, format!("bad .npy header: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    if shape.len() != ndim {
        return Err(err(path, format!("expected a {ndim}-D array, got shape {shape:?}")));
    }
    let (rows, cols) = if ndim == 1 { (shape[0], 1) } else { (shape[0], shape[1]) };
    let fortran = npy.order() == Order::Fortran;
    let DType::Plain(ts) = npy.dtype() else {
        return Err(err(path, "unsupported dtype (structured or nested array)"));
    };
    let dtype = ts.to_string();
    let size = ts.size_field();
    let data = match (ts.type_char(), size) {
        (TypeChar::Float, 4) => read_as::<f32>(path, npy, f64::from)?,
        (TypeChar::Float, 8) => read_as::<f64>(path, npy, |v| v)?,
        (TypeChar::Bool, 1) if allow_ints => read_as::<bool>(path, npy, |v| if v { 1.0 } else { 0.0 })?,
        (TypeChar::Int, 1) if allow_ints => read_as::<i8>(path, npy, f64::from)?,
        (TypeChar::Int, 2) if allow_ints => read_as::<i16>(path, npy, f64::from)?,
        (TypeChar::Int, 4) if allow_ints => read_as::<i32>(path, npy, f64::from)?,
        (TypeChar::Int, 8) if allow_ints => read_as::<i64>(path, npy, |v| v as f64)?,
        (TypeChar::Uint, 1) if allow_ints => read_as::<u8>(path, npy, f64::from)?,
        (TypeChar::Uint, 2) if allow_ints => read_as::<u16>(path, npy, f64::from)?,
        (TypeChar::Uint, 4) if allow_ints => read_as::<u32>(path, npy, f64::from)?,
        (TypeChar::Uint, 8) if allow_ints => read_as::<u64>(path, npy, |v| v as f64)?,
        _ => {
            let allowed = if allow_ints { "float32, float64, bool, int or uint" } else { "float32 or float64" };
            return Err(err(path, format!("unsupported dtype {dtype} (expected {allowed})")));
        }
    };
    if data.len() != rows * cols {
        return Err(err(path, format!("data has {} values but the shape {shape:?} needs {}", data.len(), rows * cols)));
    }
    let data = if fortran && ndim == 2 {
        let mut t = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                t[i * cols + j] = data[i + j * rows];
            }
        }
        t
    } else {
        data
    };
    Ok(Array { rows, cols, data, dtype })
}
