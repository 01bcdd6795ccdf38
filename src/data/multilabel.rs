//! Multi-label images built the paper's way: every item (one single-class image) is placed
//! into a larger canvas at a corner, shifted by a small random roll, and the items of one
//! sample are combined by a pixel-wise maximum.
//!
//! What this code does exactly (docs/theory.md §8 states it too):
//! - Items are downsampled by 2 x 2 means (a 28 x 28 image becomes 14 x 14), and the canvas
//!   is the original size (28 x 28), so a sample is as large as one source image and the
//!   network's input stays 784 wide.
//! - Slots, in this order: top-left, bottom-right, top-right, bottom-left. A sample of a data
//!   set with at most M labels uses the first M slots (M <= 4). An item in a corner slot is
//!   shifted towards the centre by (dy, dx), each drawn uniformly from 0..=2 pixels.
//! - The items of a set with m labels go to m distinct slots drawn uniformly among the M;
//!   a single label goes to one random slot of the M, so position does not give the class away.
//! - Counts are balanced within each multiplicity: every label set of size m appears
//!   `per_set[m-1]` times. Each item is a different image of its class, drawn without
//!   replacement from that class's images of the split; a split that has too few is an error.
//! - Pixels are bytes / 255, in [0, 1].

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bail;
use crate::data::Images;
use crate::error::Result;
use crate::model::labels::{binomial, combinations};

/// The slots, as (from the bottom?, from the right?): top-left, bottom-right, top-right,
/// bottom-left.
pub const SLOTS: [(bool, bool); 4] = [(false, false), (true, true), (false, true), (true, false)];

/// The largest shift towards the centre, in pixels.
pub const MAX_SHIFT: usize = 2;

/// Where one item of a sample came from and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Its class.
    pub class: usize,
    /// Its index in the source split.
    pub image: usize,
    /// Its slot (index into [`SLOTS`]).
    pub slot: usize,
    /// Shift towards the centre, rows.
    pub dy: usize,
    /// Shift towards the centre, columns.
    pub dx: usize,
}

/// A multi-label split: one canvas per sample, its label set and its provenance.
#[derive(Debug, Clone)]
pub struct MultiLabel {
    /// Classes K.
    pub classes: usize,
    /// Largest multiplicity M.
    pub max_labels: usize,
    /// Canvas height.
    pub rows: usize,
    /// Canvas width.
    pub cols: usize,
    /// `samples x rows x cols` pixels in [0, 1], row-major.
    pub pixels: Vec<f32>,
    /// The label set of each sample (sorted classes).
    pub sets: Vec<Vec<usize>>,
    /// The items of each sample, in the order of its set.
    pub placements: Vec<Vec<Placement>>,
}

impl MultiLabel {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Pixels per sample.
    pub fn input_dim(&self) -> usize {
        self.rows * self.cols
    }

    /// The N x K multi-hot labels, row-major.
    pub fn multi_hot(&self) -> Vec<f32> {
        let mut y = vec![0.0; self.len() * self.classes];
        for (i, s) in self.sets.iter().enumerate() {
            for &k in s {
                y[i * self.classes + k] = 1.0;
            }
        }
        y
    }

    /// Samples per multiplicity N_m (index m-1).
    pub fn samples_per_multiplicity(&self) -> Vec<usize> {
        let mut n = vec![0; self.max_labels];
        for s in &self.sets {
            n[s.len() - 1] += 1;
        }
        n
    }
}

/// The item size of a source image: half of each side (2 x 2 means).
pub fn item_size(src: &Images) -> (usize, usize) {
    (src.rows / 2, src.cols / 2)
}

/// Image `i` of `src` downsampled by 2 x 2 means, in [0, 1].
pub fn downsample(src: &Images, i: usize) -> Vec<f32> {
    let (r, c) = item_size(src);
    let img = src.image(i);
    let mut out = vec![0.0f32; r * c];
    for y in 0..r {
        for x in 0..c {
            let p = |yy: usize, xx: usize| img[yy * src.cols + xx] as f32;
            let s = p(2 * y, 2 * x) + p(2 * y, 2 * x + 1) + p(2 * y + 1, 2 * x) + p(2 * y + 1, 2 * x + 1);
            out[y * c + x] = s / (4.0 * 255.0);
        }
    }
    out
}

/// Top-left corner of an item of size `item` in a canvas of size `canvas`, at `slot` shifted
/// by `(dy, dx)` towards the centre.
pub fn origin(slot: usize, dy: usize, dx: usize, item: (usize, usize), canvas: (usize, usize)) -> (usize, usize) {
    let (bottom, right) = SLOTS[slot];
    let row = if bottom { canvas.0 - item.0 - dy } else { dy };
    let col = if right { canvas.1 - item.1 - dx } else { dx };
    (row, col)
}

/// Images each class must supply for `per_set` (index m-1) with K classes: a class is in
/// C(K-1, m-1) of the sets of size m.
pub fn items_per_class(classes: usize, per_set: &[usize]) -> usize {
    per_set.iter().enumerate().map(|(i, &n)| n * binomial(classes - 1, i) as usize).sum()
}

/// Builds the multi-label split of `src` with K = `classes`, sets of up to `per_set.len()`
/// labels, each set of size m `per_set[m-1]` times. `what` names the split in errors.
pub fn build(src: &Images, classes: usize, per_set: &[usize], seed: u64, what: &str) -> Result<MultiLabel> {
    let max_labels = per_set.len();
    let have = src.classes();
    if classes < 2 {
        bail!("--classes {classes}: at least 2 are needed");
    }
    if classes > have {
        bail!("--classes {classes}: the {what} data has only {have} classes");
    }
    if max_labels == 0 || max_labels > SLOTS.len() || max_labels > classes {
        bail!("--max-labels {max_labels}: the canvas has {} slots, so 1 <= M <= min(4, K = {classes})", SLOTS.len());
    }
    if src.rows < 2 * (MAX_SHIFT + 1) || src.cols < 2 * (MAX_SHIFT + 1) {
        bail!("{what} images are {} x {}: too small to place items", src.rows, src.cols);
    }
    let need = items_per_class(classes, per_set);
    let mut pools: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in src.labels.iter().enumerate() {
        if (l as usize) < classes {
            pools[l as usize].push(i);
        }
    }
    for (k, pool) in pools.iter().enumerate() {
        if pool.len() < need {
            bail!("{what} split: the counts need {need} distinct images of class {k}, but it has {}; lower the counts", pool.len());
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for pool in &mut pools {
        pool.shuffle(&mut rng);
    }
    let mut next = vec![0usize; classes];
    let item = item_size(src);
    let canvas = (2 * item.0, 2 * item.1);
    let items: Vec<Option<Vec<f32>>> = vec![None; src.len()];
    let mut items = items;
    let (mut sets, mut placements) = (Vec::new(), Vec::new());
    for (mi, &n) in per_set.iter().enumerate() {
        for set in combinations(classes, mi + 1) {
            for _ in 0..n {
                let mut slots: Vec<usize> = (0..max_labels).collect();
                slots.shuffle(&mut rng);
                let mut p = Vec::with_capacity(set.len());
                for (j, &k) in set.iter().enumerate() {
                    let image = pools[k][next[k]];
                    next[k] += 1;
                    let (dy, dx) = (rng.random_range(0..=MAX_SHIFT), rng.random_range(0..=MAX_SHIFT));
                    p.push(Placement { class: k, image, slot: slots[j], dy, dx });
                }
                sets.push(set.clone());
                placements.push(p);
            }
        }
    }
    let px = canvas.0 * canvas.1;
    let mut pixels = vec![0.0f32; sets.len() * px];
    for (s, p) in placements.iter().enumerate() {
        let out = &mut pixels[s * px..(s + 1) * px];
        for pl in p {
            let it = items[pl.image].get_or_insert_with(|| downsample(src, pl.image));
            let (r0, c0) = origin(pl.slot, pl.dy, pl.dx, item, canvas);
            for y in 0..item.0 {
                for x in 0..item.1 {
                    let o = &mut out[(r0 + y) * canvas.1 + c0 + x];
                    *o = o.max(it[y * item.1 + x]);
                }
            }
        }
    }
    Ok(MultiLabel { classes, max_labels, rows: canvas.0, cols: canvas.1, pixels, sets, placements })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `count` random 8 x 8 images with labels cycling through `classes`.
    fn images(count: usize, classes: usize, seed: u64) -> Images {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pixels = (0..count * 64).map(|_| rng.random::<u8>()).collect();
        Images { rows: 8, cols: 8, pixels, labels: (0..count).map(|i| (i % classes) as u8).collect() }
    }

    #[test]
    fn each_image_is_the_pixelwise_max_of_its_items() {
        let src = images(300, 5, 1);
        for per_set in [vec![3usize], vec![2, 1], vec![1, 1, 2]] {
            let ml = build(&src, 5, &per_set, 9, "train").unwrap();
            assert_eq!((ml.rows, ml.cols), (8, 8));
            for (s, p) in ml.placements.iter().enumerate() {
                // Independently: every canvas pixel is the max over the items covering it of
                // the 2 x 2 mean of the source pixels, or 0.
                for r in 0..8 {
                    for c in 0..8 {
                        let mut want = 0.0f32;
                        for pl in p {
                            let (bottom, right) = SLOTS[pl.slot];
                            let r0 = if bottom { 4 - pl.dy } else { pl.dy } as isize;
                            let c0 = if right { 4 - pl.dx } else { pl.dx } as isize;
                            let (y, x) = (r as isize - r0, c as isize - c0);
                            if (0..4).contains(&y) && (0..4).contains(&x) {
                                let img = src.image(pl.image);
                                let (y, x) = (y as usize, x as usize);
                                let sum: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)].iter().map(|(a, b)| img[(2 * y + a) * 8 + 2 * x + b] as u32).sum();
                                want = want.max(sum as f32 / 1020.0);
                            }
                        }
                        assert_eq!(ml.pixels[s * 64 + r * 8 + c], want, "sample {s} pixel ({r}, {c})");
                    }
                }
                // Right classes, distinct slots among the first M, shifts within range.
                let set: Vec<usize> = p.iter().map(|pl| pl.class).collect();
                assert_eq!(set, ml.sets[s]);
                assert!(p.iter().all(|pl| src.labels[pl.image] as usize == pl.class && pl.slot < per_set.len() && pl.dy <= MAX_SHIFT && pl.dx <= MAX_SHIFT));
                assert_eq!(p.iter().map(|pl| pl.slot).collect::<HashSet<_>>().len(), p.len());
            }
        }
    }

    #[test]
    fn counts_are_balanced_and_images_are_never_reused() {
        let (train, test) = (images(400, 4, 2), images(200, 4, 3));
        let per_set = [5usize, 3];
        let a = build(&train, 4, &per_set, 7, "train").unwrap();
        let b = build(&test, 4, &per_set, 8, "test").unwrap();
        for ml in [&a, &b] {
            // Every set of size m appears per_set[m-1] times: N_m = n_m C(K, m).
            assert_eq!(ml.samples_per_multiplicity(), vec![5 * 4, 3 * 6]);
            let mut count = std::collections::HashMap::new();
            for s in &ml.sets {
                assert!(s.windows(2).all(|w| w[0] < w[1]));
                *count.entry(s.clone()).or_insert(0) += 1;
            }
            assert_eq!(count.len(), 4 + 6);
            assert!(count.iter().all(|(s, &c)| c == per_set[s.len() - 1]));
            // Within a split no source image is used twice.
            let used: Vec<usize> = ml.placements.iter().flatten().map(|p| p.image).collect();
            assert_eq!(used.iter().collect::<HashSet<_>>().len(), used.len());
        }
        // The test split's items are test images: its canvases are the max of test items (the
        // test above checks it pixel by pixel); here, its indices fit the test split only.
        assert!(b.placements.iter().flatten().all(|p| p.image < test.len() && test.labels[p.image] as usize == p.class));
        // Each class supplies per_set[0] + per_set[1] (K - 1) images.
        assert_eq!(items_per_class(4, &per_set), 5 + 3 * 3);
    }

    #[test]
    fn bad_requests_are_one_line_errors() {
        let src = images(40, 4, 5);
        let e = |r: Result<MultiLabel>| r.unwrap_err().to_string();
        assert!(e(build(&src, 5, &[1], 0, "train")).contains("only 4 classes"));
        assert!(e(build(&src, 1, &[1], 0, "train")).contains("at least 2"));
        assert!(e(build(&src, 4, &[1, 1, 1, 1, 1], 0, "train")).contains("--max-labels 5"));
        let msg = e(build(&src, 4, &[20], 0, "train"));
        assert!(msg.contains("need 20 distinct images of class 0, but it has 10"), "{msg}");
    }
}
