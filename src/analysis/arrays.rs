//! Two-dimensional arrays as a caller holds them (a training loop's numpy arrays, or `.npy`
//! files read into memory): float32 or float64, in row-major (numpy's C) or column-major
//! (Fortran) order, borrowed. Reading one as row-major float64 borrows it when it already is
//! that, and copies it otherwise.

use std::borrow::Cow;

use crate::bail;
use crate::error::Result;
use crate::linalg::Mat;

/// The elements, in memory order.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// float32 elements (widened to float64 exactly on reading).
    F32(&'a [f32]),
    /// float64 elements.
    F64(&'a [f64]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }
}

/// Memory order of a two-dimensional array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Each row contiguous (numpy's C order).
    RowMajor,
    /// Each column contiguous (numpy's Fortran order).
    ColMajor,
}

/// A borrowed rows x cols array.
#[derive(Debug, Clone, Copy)]
pub struct Array2<'a> {
    values: Values<'a>,
    rows: usize,
    cols: usize,
    order: Order,
}

impl<'a> Array2<'a> {
    /// An array over `values`, which must hold exactly `rows * cols` elements.
    pub fn new(values: Values<'a>, rows: usize, cols: usize, order: Order) -> Result<Self> {
        if rows.checked_mul(cols) != Some(values.len()) {
            bail!("internal: an array of {rows} x {cols} given {} elements", values.len());
        }
        Ok(Array2 { values, rows, cols, order })
    }

    /// A row-major float64 array.
    pub fn row_major(data: &'a [f64], rows: usize, cols: usize) -> Result<Self> {
        Self::new(Values::F64(data), rows, cols, Order::RowMajor)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Memory order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// The elements.
    pub fn values(&self) -> Values<'a> {
        self.values
    }

    /// Whether [`row_major_f64`](Self::row_major_f64) borrows rather than copies.
    pub fn is_row_major_f64(&self) -> bool {
        matches!(self.values, Values::F64(_)) && (self.order == Order::RowMajor || self.rows <= 1 || self.cols <= 1)
    }

    /// The elements as row-major float64: borrowed when they already are, else copied.
    pub fn row_major_f64(&self) -> Cow<'a, [f64]> {
        if let (true, Values::F64(v)) = (self.is_row_major_f64(), self.values) {
            return Cow::Borrowed(v);
        }
        let mut out = vec![0.0; self.rows * self.cols];
        self.for_each(|i, j, v| out[i * self.cols + j] = v);
        Cow::Owned(out)
    }

    /// Row `i` as float64: borrowed when the array is row-major float64, else widened or
    /// gathered into `buf` (at least `cols` long). Lets the metrics read any layout sample by
    /// sample, with no float64 copy of the whole array.
    pub fn row<'s>(&self, i: usize, buf: &'s mut [f64]) -> &'s [f64]
    where
        'a: 's,
    {
        let (rows, cols) = (self.rows, self.cols);
        let out = &mut buf[..cols];
        match (self.values, self.order) {
            (Values::F64(v), Order::RowMajor) => return &v[i * cols..(i + 1) * cols],
            (Values::F32(v), Order::RowMajor) => out.iter_mut().zip(&v[i * cols..(i + 1) * cols]).for_each(|(o, &x)| *o = f64::from(x)),
            (Values::F64(v), Order::ColMajor) => out.iter_mut().enumerate().for_each(|(j, o)| *o = v[i + j * rows]),
            (Values::F32(v), Order::ColMajor) => out.iter_mut().enumerate().for_each(|(j, o)| *o = f64::from(v[i + j * rows])),
        }
        out
    }

    /// Calls `f(row, col, value)` for every element, in memory order.
    pub fn for_each(&self, f: impl FnMut(usize, usize, f64)) {
        match self.values {
            Values::F32(v) => visit(v, self.rows, self.cols, self.order, f),
            Values::F64(v) => visit(v, self.rows, self.cols, self.order, f),
        }
    }

    /// Whether every element is finite: one pass without early exit, which vectorises
    /// (`first_non_finite` element by element took 7% of a `measure` run, twice).
    pub fn all_finite(&self) -> bool {
        match self.values {
            Values::F32(v) => v.iter().fold(true, |ok, x| ok & x.is_finite()),
            Values::F64(v) => v.iter().fold(true, |ok, x| ok & x.is_finite()),
        }
    }

    /// The first element that is not finite, as (row, col, value).
    pub fn first_non_finite(&self) -> Option<(usize, usize, f64)> {
        if self.all_finite() {
            return None;
        }
        let mut found = None;
        self.for_each(|i, j, v| {
            if found.is_none() && !v.is_finite() {
                found = Some((i, j, v));
            }
        });
        found
    }
}

/// The column-major d x N matrix of a solver (one column per sample) is the row-major N x d
/// array of the same memory.
impl<'a> From<Mat<'a>> for Array2<'a> {
    fn from(h: Mat<'a>) -> Self {
        Array2 { values: Values::F64(h.data), rows: h.cols, cols: h.rows, order: Order::RowMajor }
    }
}

fn visit<T: Copy + Into<f64>>(v: &[T], rows: usize, cols: usize, order: Order, mut f: impl FnMut(usize, usize, f64)) {
    match order {
        Order::RowMajor => {
            for i in 0..rows {
                for (j, &x) in v[i * cols..(i + 1) * cols].iter().enumerate() {
                    f(i, j, x.into());
                }
            }
        }
        Order::ColMajor => {
            for j in 0..cols {
                for (i, &x) in v[j * rows..(j + 1) * rows].iter().enumerate() {
                    f(i, j, x.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_reads_the_same_matrix() {
        // The 2 x 3 matrix [[1, 2, 3], [4, 5, 6]] in four storages.
        let c64 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f64_ = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let c32 = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f32_ = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0];
        let arrays = [
            Array2::new(Values::F64(&c64), 2, 3, Order::RowMajor).unwrap(),
            Array2::new(Values::F64(&f64_), 2, 3, Order::ColMajor).unwrap(),
            Array2::new(Values::F32(&c32), 2, 3, Order::RowMajor).unwrap(),
            Array2::new(Values::F32(&f32_), 2, 3, Order::ColMajor).unwrap(),
        ];
        for a in &arrays {
            assert_eq!(&*a.row_major_f64(), &c64[..]);
            let mut buf = [f64::NAN; 3];
            assert_eq!(a.row(0, &mut buf), &c64[..3]);
            assert_eq!(a.row(1, &mut buf), &c64[3..]);
        }
        // A solver's d x N matrix (here 3 x 2, column-major) is the N x d array of its memory.
        let h = Array2::from(Mat::new(&c64, 3, 2));
        assert_eq!((h.rows(), h.cols(), h.order()), (2, 3, Order::RowMajor));
        assert_eq!(h.row(1, &mut [0.0; 3]), &c64[3..]);
        assert!(matches!(arrays[0].row_major_f64(), Cow::Borrowed(_)), "row-major float64 is never copied");
        assert!(arrays[1..].iter().all(|a| matches!(a.row_major_f64(), Cow::Owned(_))));
        assert!(Array2::new(Values::F64(&c64), 2, 2, Order::RowMajor).is_err());
        let nan = [1.0, f64::NAN, 3.0, 4.0];
        assert_eq!(Array2::new(Values::F64(&nan), 2, 2, Order::ColMajor).unwrap().first_non_finite().map(|(i, j, _)| (i, j)), Some((1, 0)));
        assert!(arrays.iter().all(Array2::all_finite));
        assert!(!Array2::new(Values::F64(&nan), 2, 2, Order::RowMajor).unwrap().all_finite());
        assert!(!Array2::new(Values::F32(&[1.0, 2.0, f32::INFINITY, 4.0]), 2, 2, Order::RowMajor).unwrap().all_finite());
    }
}
