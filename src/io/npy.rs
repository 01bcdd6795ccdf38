//! Reading `.npy` arrays exported from PyTorch/NumPy (via the `npyz` crate) into f64, or, for
//! features and labels, into the narrowest float type that holds their values exactly
//! (float32 for float32, bool and 1- and 2-byte integers; float64 for the rest, 8-byte
//! integers beyond 2^53 rounded).
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

/// Values in the narrowest float type that holds them exactly.
#[derive(Debug, Clone)]
pub enum Floats {
    /// float32 files, and bool and 1- and 2-byte integer files.
    F32(Vec<f32>),
    /// float64 files, and 4- and 8-byte integer files.
    F64(Vec<f64>),
}

/// A 1-D or 2-D array in row-major order, its values in the narrowest float type that holds
/// them exactly ([`read_floats`]).
#[derive(Debug, Clone)]
pub struct FloatArray {
    /// Rows (the length for a 1-D array).
    pub rows: usize,
    /// Columns (1 for a 1-D array).
    pub cols: usize,
    /// Row-major data.
    pub data: Floats,
    /// Original dtype, e.g. "<f4".
    pub dtype: String,
}

impl FloatArray {
    /// The same array in float64.
    pub fn into_f64(self) -> Array {
        let data = match self.data {
            Floats::F32(v) => v.into_iter().map(f64::from).collect(),
            Floats::F64(v) => v,
        };
        Array { rows: self.rows, cols: self.cols, data, dtype: self.dtype }
    }
}

fn err(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(format!("{path}: {msg}"))
}

/// The data in row-major order, converted by `conv` (to f64, or not at all) and placed
/// element by element as it is read (from a buffered file): no copy of the whole file, none
/// to convert it afterwards, and none to transpose a Fortran-order file. `measure` on a
/// float32 file of 205 MB peaked at 846 MB in C order and 1 GB in Fortran order; now at
/// 241 MB, the float32 features themselves (docs/performance.md). `rows cols` is the count the
/// header's shape gives, already checked against the file's size.
fn read_as<T: npyz::Deserialize, O: Copy + Default, R: std::io::Read>(
    path: &str,
    npy: NpyFile<R>,
    (rows, cols): (usize, usize),
    fortran: bool,
    conv: impl Fn(T) -> O,
) -> Result<Vec<O>> {
    let bad = |e: &dyn std::fmt::Display| err(path, format!("cannot read the data (truncated or corrupt file?): {e}"));
    // A Fortran-order file holds the columns one after another: they are gathered PANEL at a
    // time and written out row by row, a cache line per row rather than one per value.
    const PANEL: usize = 8;
    let values = rows * cols;
    // A file larger than the machine's memory is refused before its array is allocated (a
    // 400 GB file aborted the process).
    if let Some(short) = crate::model::config::beyond_memory(values as f64 * std::mem::size_of::<O>() as f64) {
        return Err(err(path, format!("a {rows} x {cols} array would need {short}")));
    }
    let mut out = vec![O::default(); values];
    // At most the data's own size: a header may claim any number of rows when it has no columns.
    let mut panel = Vec::with_capacity(if fortran { PANEL.saturating_mul(rows).min(values) } else { 0 });
    let mut count = 0;
    let flush = |panel: &mut Vec<O>, out: &mut [O], first_col: usize| {
        let w = panel.len() / rows.max(1);
        for i in 0..rows {
            for c in 0..w {
                out[i * cols + first_col + c] = panel[c * rows + i];
            }
        }
        panel.clear();
    };
    for v in npy.data::<T>().map_err(|e| bad(&e))? {
        if count == values {
            return Err(err(path, format!("data has more values than the shape {rows} x {cols} needs")));
        }
        let x = conv(v.map_err(|e| bad(&e))?);
        if fortran {
            panel.push(x);
            if panel.len() == PANEL * rows {
                flush(&mut panel, &mut out, (count + 1) / rows - PANEL);
            }
        } else {
            out[count] = x;
        }
        count += 1;
    }
    if count != values {
        return Err(err(path, format!("data has {count} values but the shape {rows} x {cols} needs {values}")));
    }
    if !panel.is_empty() {
        let w = panel.len() / rows;
        flush(&mut panel, &mut out, cols - w);
    }
    Ok(out)
}

/// Reads a 1-D or 2-D `.npy` file into float64; `allow_ints` also accepts bool and integer
/// dtypes. The file is read through a buffer, not whole into memory first.
pub fn read(path: &Path, ndim: usize, allow_ints: bool) -> Result<Array> {
    Ok(read_floats(path, ndim, allow_ints)?.into_f64())
}

/// [`read`], the values kept in the narrowest float type that holds them exactly: a float32
/// file (features of a network) or a bool or uint8 file (labels) is never held as float64;
/// `measure` reads them a row at a time.
pub fn read_floats(path: &Path, ndim: usize, allow_ints: bool) -> Result<FloatArray> {
    let name = path.display().to_string();
    let (r, len) = open(path, &name)?;
    parse_from(r, len, &name, ndim, allow_ints)
}

fn open(path: &Path, name: &str) -> Result<(std::io::BufReader<std::fs::File>, u64)> {
    let open = |e: std::io::Error| err(name, format!("cannot open: {e}"));
    let file = std::fs::File::open(path).map_err(open)?;
    let len = file.metadata().map_err(open)?.len();
    Ok((std::io::BufReader::with_capacity(1 << 16, file), len))
}

/// Parses the bytes of a 1-D or 2-D `.npy` file named `path` (for messages) into float64. Any
/// byte string gives an array or an error, never a panic.
pub fn parse(bytes: &[u8], path: &str, ndim: usize, allow_ints: bool) -> Result<Array> {
    Ok(parse_from(bytes, bytes.len() as u64, path, ndim, allow_ints)?.into_f64())
}

/// A checked header, the reader left at the data.
struct Header<R: std::io::Read> {
    npy: NpyFile<R>,
    rows: usize,
    cols: usize,
    fortran: bool,
    ts: npyz::TypeStr,
}

/// Reads and checks the magic and the header of a 1-D or 2-D file of `len` bytes.
fn header<R: std::io::Read>(mut r: R, len: u64, path: &str, ndim: usize) -> Result<Header<impl std::io::Read>> {
    let mut magic = [0u8; 6];
    let got = match r.read_exact(&mut magic) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(err(path, format!("cannot read: {e}"))),
    };
    if !got || &magic != b"\x93NUMPY" {
        return Err(err(path, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let npy = NpyFile::new(std::io::Read::chain(std::io::Cursor::new(magic), r)).map_err(|e| err(path, format!("bad .npy header: {e}")))?;
    let shape: Vec<u64> = npy.shape().to_vec();
    if shape.len() != ndim {
        return Err(err(path, format!("expected a {ndim}-D array, got shape {shape:?}")));
    }
    let (rows, cols) = if ndim == 1 { (shape[0], 1) } else { (shape[0], shape[1]) };
    // The data must fit in the file: a header claiming more is refused before any allocation.
    rows.checked_mul(cols).filter(|&v| v <= len).ok_or_else(|| err(path, format!("shape {shape:?} needs more data than the file holds")))?;
    // A 1-D array reads the same in either order.
    let fortran = npy.order() == Order::Fortran && ndim == 2;
    let DType::Plain(ts) = npy.dtype() else {
        return Err(err(path, "unsupported dtype (structured or nested array)"));
    };
    Ok(Header { npy, rows: rows as usize, cols: cols as usize, fortran, ts })
}

/// The array in a reader of `len` bytes, its values in the narrowest float type that holds
/// them exactly.
fn parse_from<R: std::io::Read>(r: R, len: u64, path: &str, ndim: usize, allow_ints: bool) -> Result<FloatArray> {
    let Header { npy, rows, cols, fortran, ts } = header(r, len, path, ndim)?;
    let dtype = ts.to_string();
    let dims = (rows, cols);
    let data = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => Floats::F32(read_as::<f32, _, _>(path, npy, dims, fortran, |v| v)?),
        (TypeChar::Float, 8) => Floats::F64(read_as::<f64, _, _>(path, npy, dims, fortran, |v| v)?),
        (TypeChar::Bool, 1) if allow_ints => Floats::F32(read_as::<bool, _, _>(path, npy, dims, fortran, |v| if v { 1.0 } else { 0.0 })?),
        (TypeChar::Int, 1) if allow_ints => Floats::F32(read_as::<i8, _, _>(path, npy, dims, fortran, f32::from)?),
        (TypeChar::Int, 2) if allow_ints => Floats::F32(read_as::<i16, _, _>(path, npy, dims, fortran, f32::from)?),
        (TypeChar::Int, 4) if allow_ints => Floats::F64(read_as::<i32, _, _>(path, npy, dims, fortran, f64::from)?),
        (TypeChar::Int, 8) if allow_ints => Floats::F64(read_as::<i64, _, _>(path, npy, dims, fortran, |v| v as f64)?),
        (TypeChar::Uint, 1) if allow_ints => Floats::F32(read_as::<u8, _, _>(path, npy, dims, fortran, f32::from)?),
        (TypeChar::Uint, 2) if allow_ints => Floats::F32(read_as::<u16, _, _>(path, npy, dims, fortran, f32::from)?),
        (TypeChar::Uint, 4) if allow_ints => Floats::F64(read_as::<u32, _, _>(path, npy, dims, fortran, f64::from)?),
        (TypeChar::Uint, 8) if allow_ints => Floats::F64(read_as::<u64, _, _>(path, npy, dims, fortran, |v| v as f64)?),
        _ => {
            let allowed = if allow_ints { "float32, float64, bool, int or uint" } else { "float32 or float64" };
            return Err(err(path, format!("unsupported dtype {dtype} (expected {allowed})")));
        }
    };
    Ok(FloatArray { rows, cols, data, dtype })
}

/// The bytes of a C-order float32 `.npy` file (format 1.0) of the given shape (1-D or 2-D).
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a float32 `.npy` file atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    crate::io::report::write_atomic(path, &encode_f32(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid version-1.0 file: header padded to 64 bytes, then little-endian f64 data.
    fn file(shape: &[usize], fortran: bool, data: &[f64]) -> Vec<u8> {
        let shape_s = match shape.len() {
            1 => format!("({},)", shape[0]),
            _ => format!("({})", shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let mut header = format!("{{'descr': '<f8', 'fortran_order': {}, 'shape': {shape_s}, }}", if fortran { "True" } else { "False" });
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes
    }

    /// A file whose array would not fit in memory is refused before the array is allocated
    /// (a 400 GB file aborted the process): the header of a 10^8 x 1000 float64 file, read as
    /// if the file held its 800 GB.
    #[test]
    fn an_array_larger_than_memory_is_refused() {
        let bytes = file(&[100_000_000, 1000], false, &[]);
        let len = bytes.len() as u64 + 800_000_000_000;
        let e = parse_from(std::io::Cursor::new(bytes), len, "big.npy", 2, false).unwrap_err().0;
        assert!(e.starts_with("big.npy: a 100000000 x 1000 array would need about 745.1 GiB but the machine has"), "{e}");
    }

    #[test]
    fn reads_c_and_fortran_order_as_row_major() {
        let c = parse(&file(&[2, 3], false, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), "c", 2, false).unwrap();
        let f = parse(&file(&[2, 3], true, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]), "f", 2, false).unwrap();
        assert_eq!((c.rows, c.cols), (2, 3));
        assert_eq!(c.data, f.data);
        assert!(parse(&file(&[6], false, &[0.0; 6]), "x", 2, false).unwrap_err().0.contains("2-D"));
        // Columns are placed a panel of 8 at a time: shapes with whole panels, a partial
        // last one, and a single row or column.
        for (rows, cols) in [(5, 8), (3, 17), (1, 9), (9, 1), (4, 3)] {
            let value = |i: usize, j: usize| (i * 100 + j) as f64;
            let col_major: Vec<f64> = (0..cols).flat_map(|j| (0..rows).map(move |i| value(i, j))).collect();
            let a = parse(&file(&[rows, cols], true, &col_major), "f", 2, false).unwrap();
            let row_major: Vec<f64> = (0..rows).flat_map(|i| (0..cols).map(move |j| value(i, j))).collect();
            assert_eq!(a.data, row_major, "{rows} x {cols}");
        }
        // No columns: any number of rows holds no data, and reserves nothing.
        for fortran in [false, true] {
            let a = parse(&file(&[1 << 60, 0], fortran, &[]), "empty", 2, false).unwrap();
            assert_eq!((a.rows, a.cols, a.data.len()), (1 << 60, 0, 0));
        }
    }

    proptest! {
        /// Random bytes, with or without the magic, never panic.
        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), magic in any::<bool>()) {
            if magic {
                let mut b = b"\x93NUMPY\x01\x00".to_vec();
                b.append(&mut bytes);
                bytes = b;
            }
            let _ = parse(&bytes, "random", 2, true);
            let _ = parse(&bytes, "random", 1, false);
        }

        /// A valid file cut anywhere, or with one byte changed anywhere, gives an error or a
        /// valid array of the shape its header states, never a panic.
        #[test]
        fn truncated_or_corrupted_files_never_panic(rows in 0usize..6, cols in 1usize..5, cut in any::<proptest::sample::Index>(), flip in any::<proptest::sample::Index>(), byte in any::<u8>()) {
            let data: Vec<f64> = (0..rows * cols).map(|i| i as f64 * 0.5).collect();
            let full = file(&[rows, cols], false, &data);
            let whole = parse(&full, "whole", 2, false).unwrap();
            prop_assert_eq!(&whole.data, &data);
            let cut = cut.index(full.len());
            if let Ok(a) = parse(&full[..cut], "cut", 2, false) {
                prop_assert_eq!(a.data.len(), a.rows * a.cols);
            }
            let mut bad = full.clone();
            let at = flip.index(bad.len());
            bad[at] = byte;
            if let Ok(a) = parse(&bad, "flipped", 2, true) {
                prop_assert_eq!(a.data.len(), a.rows * a.cols);
            }
        }
    }

    #[test]
    fn written_float32_files_read_back_exactly() {
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 1.5).collect();
        let a = parse(&encode_f32(&[3, 4], &data), "w.npy", 2, false).unwrap();
        assert_eq!((a.rows, a.cols, a.dtype.as_str()), (3, 4, "<f4"));
        assert_eq!(a.data, data.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let b = parse(&encode_f32(&[5], &data[..5]), "b.npy", 1, false).unwrap();
        assert_eq!((b.rows, b.cols), (5, 1));
        assert_eq!(encode_f32(&[3, 4], &data).len() % 16, (12 * 4) % 16);
    }
}
