//! Neural-collapse metrics (docs/theory.md §5), in float64, for any features, with or without a classifier.
//!
//! Notation: `mu_S` is the mean feature of label set S, `H1` the d x K matrix of the
//! multiplicity-1 means `mu_{k}`, `mu_G` their average, `C = H1 - mu_G 1^T`,
//! `E = (I - 11^T/K)/sqrt(K-1)` (unit Frobenius norm).
//! - NC1 = tr(Sigma_W Sigma_B^+)/K, `Sigma_W` the within-label-set covariance over all samples,
//!   `Sigma_B = C C^T / K`; the pseudo-inverse keeps only the numerically nonzero singular
//!   values of C (at most K-1), never a plain low-precision pinv.
//! - NC2-W = ||W W^T/||W W^T||_F - E||_F; NC2-H the same for the centred `C^T C`;
//!   NC3 = ||W C/||W C||_F - E||_F.
//! - Tag-wise average per multiplicity m >= 2: the angle between `mu_S` and
//!   `sum_{k in S} mu_k` (max and mean over S), and the scale `||mu_S|| / ||(1/m) sum mu_k||`.
//! - Angle ratio (direction only, our reading of the paper's angle metric): the mean over
//!   multi-label S of angle(mu_S, sum_{k in S} mu_k), divided by the mean over S and k in S of
//!   angle(mu_S, mu_k). 0 under the tag-wise average; about 1 when mu_S ignores the sum.
//! - Synthesis weights: least squares `mu_S ~ sum_{k in S} c_{S,k} mu_k`, with the relative
//!   off-span residual `||mu_S - fit|| / ||mu_S||`.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;
use serde::Serialize;

use crate::analysis::arrays::Array2;
use crate::linalg::{gemm, jacobi, Mat};
use crate::model::labels::LabelSets;

/// Tag-wise average metrics of one multiplicity m >= 2.
#[derive(Debug, Clone, Serialize)]
pub struct TagMetric {
    /// Multiplicity m.
    pub multiplicity: usize,
    /// Label sets of this multiplicity that have samples.
    pub sets: usize,
    /// Largest angle (degrees) between mu_S and sum_{k in S} mu_k.
    pub max_angle_deg: Option<f64>,
    /// Mean of that angle (degrees).
    pub mean_angle_deg: Option<f64>,
    /// Mean of ||mu_S|| / ||(1/m) sum_{k in S} mu_k||.
    pub scale_mean: Option<f64>,
    /// Smallest measured scale.
    pub scale_min: Option<f64>,
    /// Largest measured scale.
    pub scale_max: Option<f64>,
    /// Predicted scale s_m (filled in by the caller when a prediction exists).
    pub scale_pred: Option<f64>,
    /// Why the tag metrics are missing, if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Least-squares synthesis of one multi-label mean from its tags' multiplicity-1 means.
#[derive(Debug, Clone, Serialize)]
pub struct Synthesis {
    /// The label set S.
    pub set: Vec<usize>,
    /// Weights c_{S,k}, k in S (in the order of `set`).
    pub weights: Vec<f64>,
    /// Relative off-span residual ||mu_S - sum c mu_k|| / ||mu_S||.
    pub residual: f64,
}

/// All metrics of one set of features (and optionally a classifier and bias).
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Within-set variability relative to between-class spread.
    pub nc1: Option<f64>,
    /// Distance of the classifier Gram matrix from the simplex ETF.
    pub nc2_w: Option<f64>,
    /// Distance of the centred multiplicity-1 mean Gram matrix from the simplex ETF.
    pub nc2_h: Option<f64>,
    /// Distance of W C from the simplex ETF (self-duality).
    pub nc3: Option<f64>,
    /// ||b||.
    pub bias_norm: Option<f64>,
    /// Measured ETF scale ||W||_F^2 / (K-1).
    pub alpha: Option<f64>,
    /// Tag-wise average per multiplicity m >= 2.
    pub tag: Vec<TagMetric>,
    /// The direction-only angle ratio (see module docs).
    pub angle_ratio: Option<f64>,
    /// Why NC2-H/NC3 are missing (and which classes NC1 used), if some class lacks a mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Angle in degrees between two vectors, stable for tiny angles: 2 atan2(|a^ - b^|, |a^ + b^|).
pub fn angle_deg(a: &[f64], b: &[f64]) -> f64 {
    let na = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let nb = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    let (mut dm, mut dp) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (u, v) = (x / na, y / nb);
        dm += (u - v) * (u - v);
        dp += (u + v) * (u + v);
    }
    (2.0 * dm.sqrt().atan2(dp.sqrt())).to_degrees()
}

/// `||G / ||G||_F - E||_F` for a K x K matrix G, with E the unit-norm simplex ETF Gram matrix.
pub fn etf_distance(g: &DMatrix<f64>) -> f64 {
    let k = g.nrows();
    // Divided by its largest entry first, so that the norm's squares cannot over- or underflow.
    let top = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let g = &(g / top);
    let e = (DMatrix::<f64>::identity(k, k) - DMatrix::from_element(k, k, 1.0 / k as f64)) / ((k - 1) as f64).sqrt();
    (g / g.norm() - e).norm()
}

/// `etf_distance(a b)`, with a and b first divided by powers of two that bring their largest
/// entries into (1/2, 1]: the distance does not depend on the scale, the scaling is exact, and
/// the product cannot overflow (features of 1e300 gave an infinite Gram matrix and a NaN).
pub fn etf_distance_of(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    etf_distance(&(unit_scaled(a) * unit_scaled(b)))
}

/// `m` divided exactly by the power of two above its largest |entry|
/// ([`pow2_scaled`](crate::linalg::pow2_scaled)); `m` itself if an entry is not finite.
fn unit_scaled(m: &DMatrix<f64>) -> DMatrix<f64> {
    crate::linalg::pow2_scaled(m).map_or_else(|| m.clone(), |(b, _)| b)
}

/// Mean feature of every label set (d x #sets, column j = mu of set j; empty sets are zero).
///
/// Two passes: the plain mean, then the mean of the deviations from it, which removes the
/// first pass's rounding when the features sit far from the origin (a common offset of 1e4
/// with a spread of 1 would otherwise cost about four digits of every difference of means).
/// `h` is N x d, one row per sample, in any layout ([`Array2::row`]).
pub fn set_means(h: Array2, labels: &LabelSets) -> DMatrix<f64> {
    let d = h.cols();
    let mut buf = vec![0.0; d];
    let sets = labels.sets.len();
    // Column j of a d x #sets column-major buffer.
    let col = |j: usize| j * d..(j + 1) * d;
    let mut mu = vec![0.0; d * sets];
    for (i, &s) in labels.set_of.iter().enumerate() {
        let cr = col(s as usize);
        mu[cr].iter_mut().zip(h.row(i, &mut buf)).for_each(|(m, v)| *m += v);
    }
    for (j, &c) in labels.counts.iter().enumerate() {
        if c > 0 {
            let r = 1.0 / c as f64;
            mu[col(j)].iter_mut().for_each(|x| *x *= r);
        }
    }
    // The second pass set by set, each set's samples in their order (a stable counting
    // sort): the same sums in the same order as a second d x #sets buffer, without it (it
    // set the peak of `measure` with many label sets: 76 MB at 200 classes and their pairs).
    let mut first = vec![0usize; sets + 1];
    labels.set_of.iter().for_each(|&s| first[s as usize + 1] += 1);
    (0..sets).for_each(|j| first[j + 1] += first[j]);
    let mut order = vec![0usize; labels.set_of.len()];
    let mut next = first.clone();
    for (i, &s) in labels.set_of.iter().enumerate() {
        order[next[s as usize]] = i;
        next[s as usize] += 1;
    }
    let mut fix = vec![0.0; d];
    for (j, &c) in labels.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let cr = col(j);
        fix.fill(0.0);
        for &i in &order[first[j]..first[j + 1]] {
            fix.iter_mut().zip(h.row(i, &mut buf)).zip(&mu[cr.clone()]).for_each(|((f, v), m)| *f += v - m);
        }
        let r = 1.0 / c as f64;
        mu[cr].iter_mut().zip(&fix).for_each(|(m, f)| *m += f * r);
    }
    DMatrix::from_vec(d, sets, mu)
}

/// The within-label-set spread behind NC1: the features themselves, or the pooled
/// within-set scatter that a stream keeps ([`crate::analysis::accumulate`]).
#[derive(Debug, Clone, Copy)]
pub enum Spread<'a> {
    /// N x d features, one row per sample (`labels.set_of` names each one's set), in any
    /// layout and float32 or float64 (a solver's d x N matrix converts with `into`).
    Samples(Array2<'a>),
    /// `sum_i (h_i - mu_{S_i})(h_i - mu_{S_i})^T` over the N samples: d x d, column-major.
    Scatter(Mat<'a>),
}

impl Spread<'_> {
    fn dim(&self) -> usize {
        match self {
            Spread::Samples(h) => h.cols(),
            Spread::Scatter(h) => h.rows,
        }
    }

    fn finite(&self) -> bool {
        match self {
            Spread::Samples(h) => h.all_finite(),
            Spread::Scatter(h) => h.data.iter().all(|x| x.is_finite()),
        }
    }
}

impl Metrics {
    /// Computes every metric that the inputs allow. `h` is d x N, `w` K x d, `b` length K.
    pub fn compute(h: Mat, labels: &LabelSets, w: Option<Mat>, b: Option<&[f64]>) -> Metrics {
        Self::compute_from_means(Spread::Samples(h.into()), &set_means(h.into(), labels), labels, w, b)
    }

    /// [`Metrics::compute`] from the label-set means ([`set_means`]) and the within-set
    /// spread (the features, or their scatter).
    pub fn compute_from_means(spread: Spread, mu: &DMatrix<f64>, labels: &LabelSets, w: Option<Mat>, b: Option<&[f64]>) -> Metrics {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !spread.finite() || !finite(mu.as_slice()) || !w.is_none_or(|w| finite(w.data)) || !b.is_none_or(finite) {
            return Metrics::unavailable(labels, "unavailable: the features, the classifier or the bias hold values that are not finite in float64");
        }
        let k = labels.classes;
        let d = spread.dim();
        let singleton: Vec<Option<usize>> = (0..k).map(|c| labels.singleton(c).filter(|&j| labels.counts[j] > 0)).collect();
        let missing: Vec<usize> = (0..k).filter(|&c| singleton[c].is_none()).collect();
        let w_mat = w.map(|w| w.to_dmatrix());
        let nc2_w = w_mat.as_ref().map(|w| etf_distance_of(w, &w.transpose()));
        // None when ||W||^2 lies outside float64 (an overflow, or an underflow of a nonzero W).
        let alpha = w_mat.as_ref().and_then(|w| {
            let a = w.norm_squared() / (k - 1) as f64;
            (a.is_finite() && (a > 0.0 || w.iter().all(|&v| v == 0.0))).then_some(a)
        });
        let bias_norm = b.map(|b| b.iter().map(|v| v * v).sum::<f64>().sqrt());

        let (mut nc1, mut nc2_h, mut nc3, mut note) = (None, None, None, None);
        if missing.is_empty() {
            let mut h1 = DMatrix::<f64>::zeros(d, k);
            for (c, j) in singleton.iter().enumerate() {
                h1.set_column(c, &mu.column(j.unwrap_or(0)));
            }
            let mu_g = h1.column_mean();
            let mut cm = h1.clone();
            for mut col in cm.column_iter_mut() {
                col -= &mu_g;
            }
            nc1 = nc1_value(spread, labels, mu, &cm);
            nc2_h = Some(etf_distance_of(&cm.transpose(), &cm));
            nc3 = w_mat.as_ref().map(|w| etf_distance_of(w, &cm));
        } else {
            let present: Vec<usize> = singleton.iter().flatten().copied().collect();
            if present.len() >= 2 {
                let h1 = DMatrix::from_columns(&present.iter().map(|&j| mu.column(j).into_owned()).collect::<Vec<_>>());
                let mu_g = h1.column_mean();
                let cm = DMatrix::from_columns(&h1.column_iter().map(|c| c - &mu_g).collect::<Vec<_>>());
                nc1 = nc1_value(spread, labels, mu, &cm);
            }
            note = Some(format!(
                "no multiplicity-1 mean for class {}: NC2-H and NC3 are undefined; NC1 uses the {} classes that have one",
                join(&missing),
                present.len()
            ));
        }
        let (tag, angle_ratio) = tag_metrics(labels, mu, &singleton);
        Metrics { nc1, nc2_w, nc2_h, nc3, bias_norm, alpha, tag, angle_ratio, note }
    }
}

impl Metrics {
    /// No metric, with the reason.
    pub fn unavailable(labels: &LabelSets, why: &str) -> Metrics {
        let tag = (2..=labels.max_labels)
            .map(|m| TagMetric {
                multiplicity: m,
                sets: 0,
                max_angle_deg: None,
                mean_angle_deg: None,
                scale_mean: None,
                scale_min: None,
                scale_max: None,
                scale_pred: None,
                note: Some(why.to_string()),
            })
            .collect();
        Metrics { nc1: None, nc2_w: None, nc2_h: None, nc3: None, bias_norm: None, alpha: None, tag, angle_ratio: None, note: Some(why.to_string()) }
    }
}

fn join(v: &[usize]) -> String {
    v.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
}

/// tr(Sigma_W Sigma_B^+)/K' with Sigma_B = C C^T / K', i.e. tr(Sigma_W (C C^T)^+), using
/// the SVD of C (d x K', K' classes with a multiplicity-1 mean) and at most K'-1 directions.
fn nc1_value(spread: Spread, labels: &LabelSets, mu: &DMatrix<f64>, cm: &DMatrix<f64>) -> Option<f64> {
    let k = cm.ncols();
    let n = labels.samples();
    let d = spread.dim();
    let svd = jacobi::svd(cm)?;
    let u = &svd.u;
    let smax = svd.max();
    let keep: Vec<usize> = (0..svd.singular_values.len()).filter(|&r| svd.singular_values[r] > smax * 1e-10 && smax > 0.0).take(k - 1).collect();
    if keep.is_empty() {
        return None;
    }
    // Columns u_r / sigma_r, r kept (P): tr = (K/N) sum_i ||P^T (h_i - mu_{S_i})||^2, which
    // is (K/N) tr(P^T Sw P) for the scatter Sw.
    let mut proj = DMatrix::<f64>::zeros(d, keep.len());
    for (c, &r) in keep.iter().enumerate() {
        proj.set_column(c, &(u.column(r) / svd.singular_values[r]));
    }
    let proj = Mat::new(proj.as_slice(), d, keep.len());
    let sum_sq = match spread {
        Spread::Samples(h) => {
            // The deviations a block of samples at a time (the whole d x N matrix of them
            // doubled the peak memory of `measure`), their squares summed in sample order.
            const BLOCK: usize = 2048;
            let (mut dev, mut p) = (vec![0.0; d * BLOCK.min(n)], vec![0.0; keep.len() * BLOCK.min(n)]);
            let mut buf = vec![0.0; d];
            let mut sum = 0.0;
            for start in (0..n).step_by(BLOCK) {
                let m = BLOCK.min(n - start);
                for (c, out) in dev.chunks_exact_mut(d).take(m).enumerate() {
                    let mean = mu.column(labels.set_of[start + c] as usize);
                    out.iter_mut().zip(h.row(start + c, &mut buf)).zip(mean.iter()).for_each(|((o, v), mj)| *o = v - mj);
                }
                let pb = &mut p[..keep.len() * m];
                gemm(1.0, proj, true, Mat::new(&dev[..d * m], d, m), false, 0.0, pb);
                sum = pb.iter().fold(sum, |acc, v| acc + v * v);
            }
            sum
        }
        Spread::Scatter(sw) => {
            let mut sp = vec![0.0; d * keep.len()];
            gemm(1.0, sw, false, proj, false, 0.0, &mut sp);
            sp.iter().zip(proj.data).map(|(a, b)| a * b).sum::<f64>()
        }
    };
    let tr = sum_sq * k as f64 / n as f64;
    Some(tr / k as f64).filter(|v| v.is_finite())
}

fn tag_metrics(labels: &LabelSets, mu: &DMatrix<f64>, singleton: &[Option<usize>]) -> (Vec<TagMetric>, Option<f64>) {
    // Angles and ratios of norms do not depend on the means' scale: taken on means scaled by
    // a power of two (exact), so that means of 1e300 or 1e-300 cannot overflow or underflow
    // the squared norms (they gave an angle of 0 and no scale). Column by column, as they are
    // read: a scaled copy of all the means co-peaked with the features in `measure`.
    let scale = crate::linalg::pow2_scale(mu).unwrap_or(1.0);
    let col = |j: usize| -> DVector<f64> { mu.column(j) / scale };
    let mut out = Vec::new();
    let (mut sum_tag, mut sum_own, mut n_tag, mut n_own) = (0.0, 0.0, 0usize, 0usize);
    for m in 2..=labels.max_labels {
        let sets: Vec<usize> = (0..labels.sets.len()).filter(|&j| labels.sets[j].len() == m && labels.counts[j] > 0).collect();
        let mut t = TagMetric {
            multiplicity: m,
            sets: sets.len(),
            max_angle_deg: None,
            mean_angle_deg: None,
            scale_mean: None,
            scale_min: None,
            scale_max: None,
            scale_pred: None,
            note: None,
        };
        let mut missing = Vec::new();
        let (mut angles, mut scales) = (Vec::new(), Vec::new());
        for &j in &sets {
            let set = &labels.sets[j];
            let tags: Option<Vec<usize>> = set.iter().map(|&c| singleton[c]).collect();
            let Some(tags) = tags else {
                missing.extend(set.iter().copied().filter(|&c| singleton[c].is_none()));
                continue;
            };
            let mu_s = col(j);
            let mut sum = DVector::<f64>::zeros(mu.nrows());
            for &tj in &tags {
                let own = col(tj);
                sum += &own;
                sum_own += angle_deg(mu_s.as_slice(), own.as_slice());
                n_own += 1;
            }
            let a = angle_deg(mu_s.as_slice(), sum.as_slice());
            angles.push(a);
            sum_tag += a;
            n_tag += 1;
            let ns = mu_s.norm();
            scales.push(ns / (sum.norm() / m as f64));
        }
        if !angles.is_empty() {
            t.max_angle_deg = Some(angles.iter().copied().fold(0.0, f64::max));
            t.mean_angle_deg = Some(angles.iter().sum::<f64>() / angles.len() as f64);
            t.scale_mean = Some(scales.iter().sum::<f64>() / scales.len() as f64);
            t.scale_min = Some(scales.iter().copied().fold(f64::INFINITY, f64::min));
            t.scale_max = Some(scales.iter().copied().fold(0.0, f64::max));
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            t.note = Some(format!("no multiplicity-1 mean for class {}", join(&missing)));
        }
        out.push(t);
    }
    let ratio = if n_tag > 0 && sum_own > 0.0 { Some((sum_tag / n_tag as f64) / (sum_own / n_own as f64)) } else { None };
    (out, ratio)
}

/// The geometry of a solution when the theorem's prediction does not apply.
#[derive(Debug, Clone, Serialize)]
pub struct Geometry {
    /// ||w_k|| per class.
    pub classifier_norms: Vec<f64>,
    /// cos(w_j, w_k), K x K (row-major list of rows).
    pub classifier_cosines: Vec<Vec<f64>>,
    /// ||W W^T/||W W^T|| - E||_F (NC2-W).
    pub etf_distance: f64,
    /// Singular values of W, largest first.
    pub classifier_singular_values: Vec<f64>,
    /// Numerical rank of W (singular values above 1e-8 of the largest).
    pub classifier_rank: usize,
    /// Least squares of each multi-label mean over all multiplicity-1 means:
    /// weights (one per class) and relative residual (left out with the report's
    /// `synthesis`, above 2000 multi-label sets).
    pub synthesis_all: Vec<Synthesis>,
}

/// Classifier norms, cosines, spectrum, and (when `with_synthesis`) the synthesis over all
/// multiplicity-1 means, from the label-set means `mu` ([`set_means`]).
pub fn geometry(w: Mat, mu: &DMatrix<f64>, labels: &LabelSets, with_synthesis: bool) -> Geometry {
    let wm = w.to_dmatrix();
    let k = wm.nrows();
    let norms: Vec<f64> = (0..k).map(|i| wm.row(i).norm()).collect();
    let cos = (0..k).map(|i| (0..k).map(|j| wm.row(i).dot(&wm.row(j)) / (norms[i] * norms[j])).collect()).collect();
    let sv: Vec<f64> = jacobi::svd(&wm).map(|s| s.singular_values.iter().copied().collect()).unwrap_or_default();
    let rank = sv.first().map_or(0, |&top| sv.iter().filter(|&&x| x > 1e-8 * top).count());
    let singles: Vec<Option<usize>> = (0..labels.classes).map(|c| labels.singleton(c).filter(|&j| labels.counts[j] > 0)).collect();
    let mut all = Vec::new();
    if with_synthesis && singles.iter().all(Option::is_some) {
        let a = DMatrix::from_columns(&singles.iter().flatten().map(|&j| mu.column(j).into_owned()).collect::<Vec<_>>());
        let svd = jacobi::svd(&a);
        let eps = svd.as_ref().map_or(0.0, |s| 1e-12 * s.max());
        for (j, set) in labels.sets.iter().enumerate() {
            let Some(svd) = &svd else { break };
            if set.len() < 2 || labels.counts[j] == 0 {
                continue;
            }
            let y: DVector<f64> = mu.column(j).into_owned();
            let c = svd.solve(&y, eps);
            let residual = (&y - &a * &c).norm() / y.norm().max(f64::MIN_POSITIVE);
            all.push(Synthesis { set: set.clone(), weights: c.iter().copied().collect(), residual });
        }
    }
    Geometry {
        classifier_norms: norms,
        classifier_cosines: cos,
        etf_distance: etf_distance_of(&wm, &wm.transpose()),
        classifier_singular_values: sv,
        classifier_rank: rank,
        synthesis_all: all,
    }
}

/// Least-squares synthesis weights for every multi-label set whose tags all have a
/// multiplicity-1 mean, from the label-set means `mu` ([`set_means`]).
pub fn synthesis(mu: &DMatrix<f64>, labels: &LabelSets) -> Vec<Synthesis> {
    // One small least-squares problem per set, independent: solved in parallel, collected
    // in the sets' order (the same result on any thread count).
    labels
        .sets
        .par_iter()
        .enumerate()
        .filter_map(|(j, set)| {
            if set.len() < 2 || labels.counts[j] == 0 {
                return None;
            }
            let tags: Vec<usize> = set.iter().map(|&c| labels.singleton(c).filter(|&s| labels.counts[s] > 0)).collect::<Option<_>>()?;
            let mut a = DMatrix::<f64>::zeros(mu.nrows(), tags.len());
            for (c, &t) in tags.iter().enumerate() {
                a.set_column(c, &mu.column(t));
            }
            let y: DVector<f64> = mu.column(j).into_owned();
            let svd = jacobi::svd(&a)?;
            let c = svd.solve(&y, 1e-12 * svd.max());
            let residual = (&y - &a * &c).norm() / y.norm().max(f64::MIN_POSITIVE);
            Some(Synthesis { set: set.clone(), weights: c.iter().copied().collect(), residual })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far from the origin the second pass recovers the digits the first loses. Features 1e9
    /// plus deviations of 2^-23 granularity, 4,000 samples a set, the three sets' samples
    /// interleaved (the second pass gathers each set's own): the exact mean is 1e9 plus the
    /// mean deviation (their sum is exact in float64), rounded twice.
    #[test]
    fn set_means_keep_their_digits_far_from_the_origin() {
        let (k, per, d) = (3usize, 4000usize, 2usize);
        let samples: Vec<Vec<usize>> = (0..k * per).map(|i| vec![i % k]).collect();
        let labels = LabelSets::from_samples(k, &samples).unwrap();
        let n = samples.len();
        let h: Vec<f64> = (0..n * d).map(|e| 1e9 + (((e * 7919) % 20011) as f64 / 10005.5 - 1.0)).collect();
        let mu = set_means(Mat::new(&h, d, n).into(), &labels);
        let ulp = 2f64.powi(-23);
        let mut one_pass_worst = 0.0f64;
        for j in 0..labels.sets.len() {
            let members: Vec<usize> = (0..n).filter(|&i| labels.set_of[i] as usize == j).collect();
            for r in 0..d {
                // h - 1e9 is exact (Sterbenz), and so is the sum of 4,000 such multiples of 2^-23.
                let dev: f64 = members.iter().map(|&i| h[i * d + r] - 1e9).sum();
                let exact = 1e9 + dev / members.len() as f64;
                assert!((mu[(r, j)] - exact).abs() <= ulp, "set {j}, row {r}: {} against {exact}", mu[(r, j)]);
                let naive = members.iter().map(|&i| h[i * d + r]).sum::<f64>() / members.len() as f64;
                one_pass_worst = one_pass_worst.max((naive - exact).abs());
            }
        }
        assert!(one_pass_worst > 2.0 * ulp, "the data must be hard for one pass ({one_pass_worst:e})");
    }
}
