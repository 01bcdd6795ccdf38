//! Streaming measurement: what `measure` needs, accumulated batch by batch in one pass over
//! a data loader, in float64, so that the features never have to be in memory together
//! (docs/theory.md §5).
//!
//! The metrics need only, per label set S, the count `n_S` and the mean `mu_S`, and over all
//! samples the pooled within-set scatter `Sw = sum_i (h_i - mu_{S_i})(h_i - mu_{S_i})^T`
//! (d x d; NC1 is `tr(Sw P P^T) / N` for the projection P of the class means). A batch is
//! reduced to its own count `n_b`, mean `m_b` and scatter `S_b` about `m_b` per set, and
//! merged with the running `n_a`, `m_a` by Chan, Golub and LeVeque's update:
//!
//! `n = n_a + n_b`, `delta = m_b - m_a`, `mu = m_a + (n_b / n) delta`,
//! `Sw += S_b + (n_a n_b / n) delta delta^T`.
//!
//! Every term is a sum of squared deviations or a difference of nearby means, never
//! `E[x^2] - E[x]^2`, so a large common offset costs no digits. Within a batch each set is
//! shifted by its first sample `m0`: one pass gives the mean `c` of the deviations from it
//! (`m_b = m0 + c`), and `S_b` is the scatter about `m0` less `n_b c c^T` (c is of the size of
//! the spread, not of the offset).

use std::collections::HashMap;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::analysis::arrays::{Array2, Order, Values};
use crate::analysis::measure::{check_head, label_row, report, MeasureReport, Names};
use crate::analysis::metrics::Spread;
use crate::bail;
use crate::error::Result;
use crate::kernels::cpu::Isa;
use crate::kernels::products::syrk_panel;
use crate::linalg::{syrk_upper, Mat};
use crate::model::labels::LabelSets;

/// Running statistics of a stream of (features, labels) batches.
#[derive(Debug, Clone)]
pub struct Accumulator {
    classes: usize,
    dim: usize,
    /// Label sets in order of first appearance, and their index.
    sets: Vec<Vec<usize>>,
    index: HashMap<Vec<usize>, usize>,
    counts: Vec<u64>,
    /// Means, `dim` per set.
    means: Vec<f64>,
    /// The within-set scatter, d x d column-major; only the upper triangle is kept.
    scatter: Vec<f64>,
    samples: u64,
    batches: u64,
    /// One block of deviations ([`add_scatter`]), kept to reuse the memory (not part of the
    /// state).
    scratch: Vec<f64>,
    /// The instruction set of the scatter's product.
    isa: Isa,
}

impl Accumulator {
    /// An empty accumulator for K classes and features of dimension d.
    pub fn new(classes: usize, dim: usize) -> Result<Self> {
        if classes < 2 {
            bail!("classes: K = {classes}; at least 2 are needed");
        }
        if dim == 0 {
            bail!("dim: the feature dimension must be at least 1");
        }
        let Some(cells) = dim.checked_mul(dim).filter(|&c| c <= 1 << 30) else {
            bail!("dim: d = {dim} is too large (the d x d scatter would not fit in memory)");
        };
        Ok(Accumulator {
            classes,
            dim,
            sets: Vec::new(),
            index: HashMap::new(),
            counts: Vec::new(),
            means: Vec::new(),
            scatter: vec![0.0; cells],
            samples: 0,
            batches: 0,
            scratch: Vec::new(),
            isa: Isa::detect(),
        })
    }

    /// The same accumulator with the scatter's product on `isa` (benchmarks compare the
    /// AVX-512 tiles with matrixmultiply on the same blocks).
    pub(crate) fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// K.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Samples seen so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Batches seen so far (empty ones included).
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Adds one batch: features n x d, multi-hot labels n x K. A batch that fails a check
    /// leaves the accumulator as it was.
    pub fn update(&mut self, features: &Array2, labels: &Array2, names: &Names) -> Result<()> {
        let (n, d, k) = (features.rows(), self.dim, self.classes);
        if features.cols() != d {
            bail!("{}: the batch has d = {} columns, but this accumulator was created with dim = {d}", names.features, features.cols());
        }
        if labels.cols() != k {
            bail!("{}: the batch has K = {} columns, but this accumulator was created with classes = {k}", names.labels, labels.cols());
        }
        if labels.rows() != n {
            bail!("{}: {} rows, but {} has {n} rows (one row per sample in both)", names.labels, labels.rows(), names.features);
        }
        if n == 0 {
            self.batches += 1;
            return Ok(());
        }
        // Each sample's label set, as an index into this batch's sets.
        let mut buf = vec![0.0; k];
        let mut batch_sets: Vec<Vec<usize>> = Vec::new();
        let mut batch_index: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut slot = Vec::with_capacity(n);
        let mut set = Vec::with_capacity(k);
        for i in 0..n {
            set.clear();
            label_row(labels.row(i, &mut buf), i, names.labels, &mut set)?;
            if set.is_empty() {
                bail!("{}: sample {i} of the batch has no label", names.labels);
            }
            let s = match batch_index.get(set.as_slice()) {
                Some(&s) => s,
                None => {
                    batch_sets.push(set.clone());
                    batch_index.insert(set.clone(), batch_sets.len() - 1);
                    batch_sets.len() - 1
                }
            };
            slot.push(s);
        }
        // The scatter is a sum of squared deviations: float64 features far from 1 in size
        // would over- or underflow it (features of 1e-200 gave NC1 = 0). The metrics do not
        // depend on the features' scale, so such a batch is refused with that advice. (No
        // float32 value can leave the range.)
        if let Values::F64(_) = features.values() {
            let mut top = 0.0f64;
            features.for_each(|_, _, v| top = top.max(v.abs()));
            if top.is_finite() && (top > FEATURE_RANGE.1 || (top > 0.0 && top < FEATURE_RANGE.0)) {
                bail!(
                    "{}: the largest |entry| is {top:.1e}, outside [{:.0e}, {:.0e}], where the streamed sums of squares stay inside float64; the metrics do not depend on the features' scale, so multiply them by a constant",
                    names.features,
                    FEATURE_RANGE.0,
                    FEATURE_RANGE.1
                );
            }
        }
        let b = batch_sets.len();
        let mut count = vec![0u64; b];
        slot.iter().for_each(|&s| count[s] += 1);

        // The shift m0 of each set: its first sample in the batch. Deviations from a sample of
        // the set are of the size of the set's spread, however far it is from the origin, so
        // one pass over the batch gives both the mean (m0 plus the mean c of the deviations)
        // and the scatter (about m0, less n_b c c^T) without cancellation (theory §5.1).
        let row_major = features.order() == Order::RowMajor;
        let mut first = vec![usize::MAX; b];
        for (i, &s) in slot.iter().enumerate() {
            if first[s] == usize::MAX {
                first[s] = i;
            }
        }
        let at = |i: usize, j: usize| -> f64 {
            let p = if row_major { i * d + j } else { j * n + i };
            match features.values() {
                Values::F32(x) => x[p] as f64,
                Values::F64(x) => x[p],
            }
        };
        let m0: Vec<f64> = first.iter().flat_map(|&i| (0..d).map(move |j| (i, j))).map(|(i, j)| at(i, j)).collect();
        // The sums of the deviations from m0 per set, and so their means c.
        let mut fix = match features.values() {
            Values::F32(x) => set_sums(x, row_major, d, &slot, b, &m0),
            Values::F64(x) => set_sums(x, row_major, d, &slot, b, &m0),
        };
        if m0.iter().chain(&fix).any(|v| !v.is_finite()) {
            return Err(match features.first_non_finite() {
                Some((i, j, v)) => crate::error::Error::new(format!("{}: entry ({i}, {j}) is {v} (NaN or infinite values are not allowed)", names.features)),
                None => crate::error::Error::new(format!("{}: values too large to sum in float64", names.features)),
            });
        }
        for (s, &c) in count.iter().enumerate() {
            fix[s * d..(s + 1) * d].iter_mut().for_each(|v| *v /= c as f64);
        }

        // The merge. Rows of `up` add (n_a n_b / n) delta delta^T, rows of `down` take off
        // n_b c c^T.
        let mut up = Vec::new();
        let mut down = Vec::with_capacity(b * d);
        let mut moves = Vec::with_capacity(b);
        for (s, set) in batch_sets.iter().enumerate() {
            let nb = count[s] as f64;
            let mb: Vec<f64> = (0..d).map(|j| m0[s * d + j] + fix[s * d + j]).collect();
            down.extend(fix[s * d..(s + 1) * d].iter().map(|c| c * nb.sqrt()));
            match self.index.get(set.as_slice()) {
                Some(&g) => {
                    let na = self.counts[g] as f64;
                    let delta: Vec<f64> = (0..d).map(|j| mb[j] - self.means[g * d + j]).collect();
                    let w = (na * nb / (na + nb)).sqrt();
                    up.extend(delta.iter().map(|x| x * w));
                    moves.push((Some(g), delta.iter().map(|x| x * (nb / (na + nb))).collect::<Vec<f64>>()));
                }
                None => moves.push((None, mb)),
            }
        }
        match features.values() {
            Values::F32(x) => add_scatter(self.isa, x, row_major, d, &slot, &m0, &mut self.scratch, &mut self.scatter),
            Values::F64(x) => add_scatter(self.isa, x, row_major, d, &slot, &m0, &mut self.scratch, &mut self.scatter),
        }
        syrk_upper(1.0, &up, up.len() / d, d, true, &mut self.scatter);
        syrk_upper(-1.0, &down, b, d, true, &mut self.scatter);
        for ((s, set), (g, v)) in batch_sets.into_iter().enumerate().zip(moves) {
            match g {
                Some(g) => {
                    self.means[g * d..(g + 1) * d].iter_mut().zip(&v).for_each(|(m, x)| *m += x);
                    self.counts[g] += count[s];
                }
                None => {
                    self.index.insert(set.clone(), self.sets.len());
                    self.sets.push(set);
                    self.means.extend(v);
                    self.counts.push(count[s]);
                }
            }
        }
        self.samples += n as u64;
        self.batches += 1;
        Ok(())
    }

    /// The report `measure` gives on all the batches together, with an optional classifier
    /// (K x d) and bias (K).
    pub fn result(&self, classifier: Option<&Array2>, bias: Option<&[f64]>, names: &Names) -> Result<MeasureReport> {
        let (d, k) = (self.dim, self.classes);
        check_head(classifier, bias, k, d, names)?;
        if self.samples == 0 {
            bail!("no samples: call update() with at least one non-empty batch first");
        }
        // Sets sorted by size, then lexicographically (as `measure` orders them).
        let mut order: Vec<usize> = (0..self.sets.len()).collect();
        order.sort_by(|&a, &b| self.sets[a].len().cmp(&self.sets[b].len()).then_with(|| self.sets[a].cmp(&self.sets[b])));
        let sets: Vec<Vec<usize>> = order.iter().map(|&g| self.sets[g].clone()).collect();
        let counts: Vec<usize> = order.iter().map(|&g| self.counts[g] as usize).collect();
        let max_labels = sets.iter().map(Vec::len).max().unwrap_or(1);
        let labels = LabelSets::from_counts(k, max_labels, sets, counts)?;
        let mu = DMatrix::from_fn(d, order.len(), |j, c| self.means[order[c] * d + j]);
        let mut sw = self.scatter.clone();
        for j in 0..d {
            for i in j + 1..d {
                sw[i + j * d] = sw[j + i * d];
            }
        }
        Ok(report(&labels, &mu, Spread::Scatter(Mat::new(&sw, d, d)), classifier, bias))
    }
}

/// The range of a float64 batch's largest |entry| that [`Accumulator::update`] takes: its
/// squares, times up to 1e12 samples, and the squares of deviations 1e-4 of its size, stay
/// normal float64 numbers.
pub const FEATURE_RANGE: (f64, f64) = (1e-100, 1e100);

/// Rows per task of [`set_sums`]: fixed, so that the sums do not depend on the thread count.
const CHUNK_ROWS: usize = 512;

/// Per set (slot) s of the batch, `sum_{i in s} (x_i - centre_s)`, `b * d` values. Row-major
/// batches run in parallel over fixed chunks of rows whose partial sums are added in chunk
/// order.
fn set_sums<T: Copy + Into<f64> + Send + Sync>(x: &[T], row_major: bool, d: usize, slot: &[usize], b: usize, centre: &[f64]) -> Vec<f64> {
    let n = slot.len();
    let mut sums = vec![0.0; b * d];
    let centre_of = |s: usize| &centre[s * d..(s + 1) * d];
    if !row_major {
        for (j, col) in x.chunks_exact(n).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                let s = slot[i];
                sums[s * d + j] += v.into() - centre_of(s)[j];
            }
        }
        return sums;
    }
    // One chunk: the sums of the sets it holds, indexed locally (a chunk holds at most
    // CHUNK_ROWS sets, whatever the batch holds).
    let chunk = |c: usize, xs: &[T]| -> (Vec<usize>, Vec<f64>) {
        let mut local: HashMap<usize, usize> = HashMap::new();
        let mut present = Vec::new();
        let mut part: Vec<f64> = Vec::new();
        for (r, row) in xs.chunks_exact(d).enumerate() {
            let s = slot[c * CHUNK_ROWS + r];
            let l = *local.entry(s).or_insert_with(|| {
                present.push(s);
                part.extend(std::iter::repeat_n(0.0, d));
                present.len() - 1
            });
            part[l * d..(l + 1) * d].iter_mut().zip(row).zip(centre_of(s)).for_each(|((a, &v), m)| *a += v.into() - m);
        }
        (present, part)
    };
    let parts: Vec<(Vec<usize>, Vec<f64>)> = x.par_chunks(CHUNK_ROWS * d).enumerate().map(|(c, xs)| chunk(c, xs)).collect();
    for (present, part) in parts {
        for (l, &s) in present.iter().enumerate() {
            sums[s * d..(s + 1) * d].iter_mut().zip(&part[l * d..(l + 1) * d]).for_each(|(a, p)| *a += p);
        }
    }
    sums
}

/// Samples per block of [`add_scatter`]: the block of deviations (d x 256 doubles, 1 MiB at
/// d = 512) stays in the level-2 cache while every panel of the product reads it.
const SCATTER_ROWS: usize = 256;
/// Columns of the scatter per task of [`add_scatter`] (the register tile's width).
const SCATTER_PANEL: usize = 12;

/// `scatter += sum_i (x_i - centre_{slot i})(x_i - centre_{slot i})^T` on the upper triangle
/// (and the diagonal blocks) of the d x d column-major `scatter`. The batch goes through in
/// blocks of [`SCATTER_ROWS`] samples: each block's deviations are formed in float64 in
/// `block` (columns padded to a multiple of 8, plus 8, so that no two columns share cache
/// sets), then the panels of [`SCATTER_PANEL`] columns of the product run in parallel
/// (`kernels::products::syrk_panel`). Each entry is one sum in sample order, whatever the
/// thread count. The deviations never exist for the whole batch at once.
#[allow(clippy::too_many_arguments)]
fn add_scatter<T: Copy + Into<f64> + Send + Sync>(
    isa: Isa,
    x: &[T],
    row_major: bool,
    d: usize,
    slot: &[usize],
    centre: &[f64],
    block: &mut Vec<f64>,
    scatter: &mut [f64],
) {
    let n = slot.len();
    let lda = d.div_ceil(8) * 8 + 8;
    block.resize(lda * SCATTER_ROWS, 0.0);
    for r0 in (0..n).step_by(SCATTER_ROWS) {
        let nb = (n - r0).min(SCATTER_ROWS);
        block[..lda * nb].par_chunks_mut(lda * 32).enumerate().for_each(|(c, cols)| {
            for (q, col) in cols.chunks_exact_mut(lda).enumerate() {
                let i = r0 + 32 * c + q;
                let m = &centre[slot[i] * d..(slot[i] + 1) * d];
                if row_major {
                    col.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(m).for_each(|((o, &v), m)| *o = v.into() - m);
                } else {
                    col.iter_mut().zip(m).enumerate().for_each(|(j, (o, m))| *o = x[j * n + i].into() - m);
                }
            }
        });
        let a = &block[..lda * nb];
        scatter.par_chunks_mut(SCATTER_PANEL * d).enumerate().rev().for_each(|(p, panel)| {
            let j0 = p * SCATTER_PANEL;
            syrk_panel(isa, a, lda, nb, j0, j0 + panel.len() / d, panel, d);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::measure::{measure_inputs, Inputs};

    /// A deterministic pseudo-random stream over K = 4, M = 2: features `offset + t(S) +
    /// noise`, with the template `t(S)` the average of its tags' templates. With `paired`,
    /// consecutive samples of a set carry opposite noise, so every set's mean is exactly
    /// `offset + t(S)`: the multi-label means lie in the span of the single-label ones and the
    /// least-squares synthesis is exact. Otherwise its residual is the noise's.
    fn data(n: usize, d: usize, offset: f64, paired: bool) -> (Vec<f64>, Vec<f64>) {
        let sets: Vec<Vec<usize>> = vec![vec![0], vec![1], vec![2], vec![3], vec![0, 1], vec![0, 2], vec![1, 3], vec![2, 3], vec![0, 3], vec![1, 2]];
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut noise = vec![0.0; d];
        for i in 0..n {
            let s = &sets[if paired { (i / 2) % sets.len() } else { i % sets.len() }];
            if !paired || i % 2 == 0 {
                noise.iter_mut().for_each(|v| *v = next());
            } else {
                noise.iter_mut().for_each(|v| *v = -*v);
            }
            for (j, e) in noise.iter().enumerate() {
                let template: f64 = s.iter().map(|&c| if j % 4 == c { 3.0 } else { 0.0 }).sum::<f64>() / s.len() as f64;
                x.push(offset + template + e);
            }
            y.extend((0..4).map(|c| if s.contains(&c) { 1.0 } else { 0.0 }));
        }
        (x, y)
    }

    fn close(a: &serde_json::Value, b: &serde_json::Value, rel: f64, path: &str) {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                // Quantities that are exactly zero for this data (the tag-wise angles when the
                // synthesis is exact) come out of float64 at rounding level, not as 0.
                assert!((x - y).abs() <= rel * x.abs().max(y.abs()) + 1e-12, "{path}: {x} vs {y}");
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{path}");
                x.iter().zip(y).enumerate().for_each(|(i, (x, y))| close(x, y, rel, &format!("{path}[{i}]")));
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{path}");
                x.iter().for_each(|(k, v)| close(v, &y[k], rel, &format!("{path}.{k}")));
            }
            _ => assert_eq!(a, b, "{path}"),
        }
    }

    #[test]
    fn batches_give_what_measure_gives_on_everything() {
        // 600 samples: three blocks of the scatter's product in one batch; d = 13: a panel of
        // 12 columns and a remainder of 1.
        let (n, d) = (600, 13);
        let names = Names::ARGUMENTS;
        // Far from the origin (1e4, with a spread of 1) the synthesis weights are as
        // ill-conditioned as the single-label means are nearly parallel (cond ~ 1e4): with a
        // residual r they move by cond^2 |r| times a mean's rounding, so there the data's
        // synthesis is exact (r = 0) and only the first-order cond * rounding ~ 1e-12 is left.
        for (offset, paired) in [(0.0, false), (0.0, true), (1e4, true)] {
            let (x, y) = data(n, d, offset, paired);
            let whole = Inputs { features: Array2::row_major(&x, n, d).unwrap(), labels: Array2::row_major(&y, n, 4).unwrap(), classifier: None, bias: None };
            let want = serde_json::to_value(measure_inputs(&whole, &names).unwrap()).unwrap();
            for batches in [1usize, 7, 100] {
                let mut acc = Accumulator::new(4, d).unwrap();
                let size = n.div_ceil(batches);
                for (xb, yb) in x.chunks(size * d).zip(y.chunks(size * 4)) {
                    let r = xb.len() / d;
                    // Every other batch column-major, to cover both memory orders.
                    let colmajor: Vec<f64> = (0..r * d).map(|t| xb[(t % r) * d + t / r]).collect();
                    let f = if r % 2 == 0 { Array2::new(Values::F64(&colmajor), r, d, Order::ColMajor).unwrap() } else { Array2::row_major(xb, r, d).unwrap() };
                    acc.update(&f, &Array2::row_major(yb, r, 4).unwrap(), &names).unwrap();
                }
                assert_eq!(acc.samples(), n as u64);
                let got = serde_json::to_value(acc.result(None, None, &names).unwrap()).unwrap();
                close(&got, &want, 1e-10, &format!("offset {offset}, paired {paired}, {batches} batches"));
            }
        }
    }

    #[test]
    fn the_thread_count_changes_no_bit() {
        // 3000 rows: six chunks of rows, summed in parallel.
        let (x, y) = data(3000, 5, 1e4, false);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut acc = Accumulator::new(4, 5).unwrap();
                acc.update(&Array2::row_major(&x, 3000, 5).unwrap(), &Array2::row_major(&y, 3000, 4).unwrap(), &Names::ARGUMENTS).unwrap();
                serde_json::to_string(&acc.result(None, None, &Names::ARGUMENTS).unwrap()).unwrap()
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn a_bad_batch_changes_nothing() {
        let names = Names::ARGUMENTS;
        let (x, y) = data(20, 3, 0.0, false);
        let mut acc = Accumulator::new(4, 3).unwrap();
        acc.update(&Array2::row_major(&x, 20, 3).unwrap(), &Array2::row_major(&y, 20, 4).unwrap(), &names).unwrap();
        let before = serde_json::to_string(&acc.result(None, None, &names).unwrap()).unwrap();
        let mut bad_x = x.clone();
        bad_x[7] = f64::NAN;
        let mut bad_y = y.clone();
        bad_y[9] = 2.0;
        let e1 = acc.update(&Array2::row_major(&bad_x, 20, 3).unwrap(), &Array2::row_major(&y, 20, 4).unwrap(), &names).unwrap_err();
        assert!(e1.to_string().contains("NaN or infinite"), "{e1}");
        let e2 = acc.update(&Array2::row_major(&x, 20, 3).unwrap(), &Array2::row_major(&bad_y, 20, 4).unwrap(), &names).unwrap_err();
        assert!(e2.to_string().contains("must be 0 or 1"), "{e2}");
        let e3 = acc.update(&Array2::row_major(&x[..20], 10, 2).unwrap(), &Array2::row_major(&y[..40], 10, 4).unwrap(), &names).unwrap_err();
        assert!(e3.to_string().contains("dim = 3"), "{e3}");
        assert_eq!(serde_json::to_string(&acc.result(None, None, &names).unwrap()).unwrap(), before);
    }

    /// Features of 1e-200 would underflow every squared deviation (NC1 came out 0), and of
    /// 1e200 overflow them: such a batch is refused, and the state is left as it was; the same
    /// features at 1e90 and 1e-90 give what they give at 1 (NC1 is scale-free).
    #[test]
    fn features_whose_squares_leave_float64_are_refused() {
        let names = Names::ARGUMENTS;
        let (x, y) = data(60, 3, 0.0, false);
        let ya = Array2::row_major(&y, 60, 4).unwrap();
        let nc1 = |c: f64| {
            let xs: Vec<f64> = x.iter().map(|v| v * c).collect();
            let mut acc = Accumulator::new(4, 3).unwrap();
            acc.update(&Array2::row_major(&xs, 60, 3).unwrap(), &ya, &names).map(|_| acc.result(None, None, &names).unwrap().metrics.nc1.unwrap())
        };
        let one = nc1(1.0).unwrap();
        assert!(one > 0.0);
        for c in [1e90, 1e-90] {
            let v = nc1(c).unwrap();
            assert!((v - one).abs() <= 1e-12 * one, "scale {c:e}: {v} against {one}");
        }
        for c in [1e200, 1e-200] {
            let e = nc1(c).unwrap_err().to_string();
            assert!(e.contains("multiply them by a constant"), "{e}");
        }
    }
}
