//! Buffers shared across threads: [`SharedMut`], a raw view through which disjoint ranges of
//! one slice are written from several threads, and [`Staggered`], a buffer whose start is
//! shifted by a chosen number of cache lines.

use std::marker::PhantomData;
use std::ops::Range;

/// A raw view of a mutable slice, through which disjoint ranges are written from several
/// threads at once (each chunk of a parallel loop takes its own range).
///
/// The view borrows the slice for `'a`, so the slice outlives it. Ranges are checked
/// (`start <= end <= len`); disjointness of ranges used at the same time is the caller's
/// promise, made at each `unsafe` call.
pub struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<T> Clone for SharedMut<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<'_, T> {}

// SAFETY: a `SharedMut` is a `&mut [T]` handed to several threads, each of which only touches
// the ranges it was promised (see `slice` and `view`). Writing a `T` from another thread
// needs `T: Send`; reading the same `T` from several threads at once (`view`) needs `T: Sync`.
unsafe impl<T: Send + Sync> Send for SharedMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Wraps a mutable slice for the lifetime of the borrow.
    pub fn new(s: &'a mut [T]) -> Self {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len(), _borrow: PhantomData }
    }

    fn check(&self, r: &Range<usize>) {
        assert!(r.start <= r.end && r.end <= self.len, "SharedMut: range {r:?} outside 0..{}", self.len);
    }

    /// The sub-slice `r`, writable.
    ///
    /// # Safety
    /// While the returned slice is alive, no other slice (from `slice` or `view`) of this
    /// view may overlap `r`. The range itself is checked.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, r: Range<usize>) -> &'a mut [T] {
        self.check(&r);
        // SAFETY: `start <= end <= len` (checked), so the range lies in the wrapped slice,
        // which the view borrows for 'a; no overlapping slice is alive (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }

    /// The sub-slice `r`, read-only.
    ///
    /// # Safety
    /// While the returned slice is alive, no writable slice of this view may overlap `r`.
    /// The range itself is checked.
    pub unsafe fn view(&self, r: Range<usize>) -> &'a [T] {
        self.check(&r);
        // SAFETY: in bounds (checked); no overlapping writer (the caller's promise).
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.end - r.start) }
    }
}

/// A zero-initialised buffer of `n` elements whose start is shifted by a chosen number of
/// cache lines from its allocation's.
///
/// The solver's vectors are large allocations, which the allocator maps page by page: they
/// all begin at the same offset within a page. The direction pass reads or writes ten of them
/// at once (m = 3), and ten streams at equal page offsets fall into the same set of the
/// 8-way L1 cache, evicting each other. Shifting buffer k by 5k lines gives every stream its
/// own set (docs/performance.md).
#[derive(Debug, Clone, Default)]
pub struct Staggered<T> {
    data: Vec<T>,
    off: usize,
    n: usize,
}

impl<T: Copy + Default> Staggered<T> {
    /// `n` zeros, starting `5 k` cache lines into the allocation.
    pub fn zeros(n: usize, k: usize) -> Self {
        let off = 5 * k * 64 / std::mem::size_of::<T>().max(1);
        Staggered { data: vec![T::default(); n + off], off, n }
    }

    /// `v` itself, unshifted (as [`zeros`](Self::zeros) with `k = 0`, without a copy).
    pub fn from_vec(v: Vec<T>) -> Self {
        let n = v.len();
        Staggered { data: v, off: 0, n }
    }

    /// The elements as a `Vec` (the allocation itself when unshifted).
    pub fn into_vec(self) -> Vec<T> {
        if self.off == 0 {
            let mut data = self.data;
            data.truncate(self.n);
            return data;
        }
        self.data[self.off..self.off + self.n].to_vec()
    }
}

impl<T> std::ops::Deref for Staggered<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data[self.off..self.off + self.n]
    }
}

impl<T> std::ops::DerefMut for Staggered<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data[self.off..self.off + self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mut v = vec![0.0f64; 10];
        let s = SharedMut::new(&mut v);
        // SAFETY: one slice at a time.
        unsafe {
            s.slice(2..5).fill(1.0);
            assert_eq!(s.view(0..10).iter().sum::<f64>(), 3.0);
        }
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = std::panic::catch_unwind(|| {
            // SAFETY: the range is rejected before any slice exists.
            unsafe { s.view(5..2).len() }
        });
        assert!(backwards.is_err(), "start > end is refused");
        // SAFETY: as above.
        assert!(std::panic::catch_unwind(|| unsafe { s.view(3..11).len() }).is_err(), "end > len is refused");
    }

    #[test]
    fn staggered_buffers_start_on_their_own_cache_lines() {
        let a = Staggered::<f64>::zeros(100, 0);
        let b = Staggered::<f64>::zeros(100, 3);
        assert_eq!((a.len(), b.len()), (100, 100));
        assert_eq!(b.off, 3 * 5 * 8);
        assert!(b.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn a_vector_moves_in_and_out_without_a_copy() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let at = v.as_ptr();
        let s = Staggered::from_vec(v);
        assert_eq!((s.as_ptr(), s.len(), s[999]), (at, 1000, 999.0));
        let back = s.into_vec();
        assert_eq!((back.as_ptr(), back.len()), (at, 1000));
        assert!(back.iter().enumerate().all(|(i, &x)| x == i as f64));
        let mut shifted = Staggered::<f64>::zeros(5, 2);
        shifted.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(shifted.into_vec(), [1.0, 2.0, 3.0, 4.0, 5.0], "a shifted buffer is copied out");
    }
}
