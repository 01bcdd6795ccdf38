//! Label sets and the data layout (docs/theory.md §1): every S ⊆ {0..K-1} with 1 <= |S| <= M, each repeated n_{|S|} times.
//!
//! Samples are stored grouped by label set, in the order of [`LabelSets::sets`]
//! (by multiplicity, then lexicographically).

use crate::bail;
use crate::error::Result;

/// Binomial coefficient C(n, k) as f64 (exact below 2^53, used for size estimates).
pub fn binomial(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// All label sets of sizes 1..=M over K classes, with a sample count for each, and the
/// per-sample set index.
#[derive(Debug, Clone)]
pub struct LabelSets {
    /// Number of classes K.
    pub classes: usize,
    /// Largest multiplicity M.
    pub max_labels: usize,
    /// Label sets, sorted by size then lexicographically.
    pub sets: Vec<Vec<usize>>,
    /// Samples per label set (same order as `sets`).
    pub counts: Vec<usize>,
    /// For each sample, the index of its label set.
    pub set_of: Vec<u32>,
}

impl LabelSets {
    /// Balanced within each multiplicity: every set of size m appears `per_set[m-1]` times.
    pub fn balanced(classes: usize, max_labels: usize, per_set: &[usize]) -> Result<Self> {
        if per_set.len() != max_labels {
            bail!("--per-set: expected 1 or {max_labels} counts (one per multiplicity), got {}", per_set.len());
        }
        let mut sets = Vec::new();
        let mut counts = Vec::new();
        for m in 1..=max_labels {
            for s in combinations(classes, m) {
                sets.push(s);
                counts.push(per_set[m - 1]);
            }
        }
        Self::from_counts(classes, max_labels, sets, counts)
    }

    /// Any list of label sets with any counts (sets must be sorted, distinct, non-empty).
    pub fn from_counts(classes: usize, max_labels: usize, sets: Vec<Vec<usize>>, counts: Vec<usize>) -> Result<Self> {
        let mut set_of = Vec::with_capacity(counts.iter().sum());
        for (j, &c) in counts.iter().enumerate() {
            set_of.extend(std::iter::repeat_n(j as u32, c));
        }
        if set_of.is_empty() {
            bail!("the data set is empty: every sample count is 0");
        }
        Ok(LabelSets { classes, max_labels, sets, counts, set_of })
    }

    /// The label sets of samples given in any order: distinct sets are sorted by size, then
    /// lexicographically; `set_of` keeps the samples' order.
    pub fn from_samples(classes: usize, samples: &[Vec<usize>]) -> Result<Self> {
        let mut sets: Vec<Vec<usize>> = samples.to_vec();
        sets.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        sets.dedup();
        let max_labels = sets.iter().map(Vec::len).max().unwrap_or(0);
        if max_labels == 0 {
            bail!("no labelled samples");
        }
        let mut counts = vec![0; sets.len()];
        let mut set_of = Vec::with_capacity(samples.len());
        for s in samples {
            let j = sets
                .binary_search_by(|x| x.len().cmp(&s.len()).then_with(|| x.cmp(s)))
                .map_err(|_| crate::error::Error::new("internal: label set not found"))?;
            counts[j] += 1;
            set_of.push(j as u32);
        }
        Ok(LabelSets { classes, max_labels, sets, counts, set_of })
    }

    /// Total number of samples N.
    pub fn samples(&self) -> usize {
        self.set_of.len()
    }

    /// Number of samples of each multiplicity, N_m (index m-1).
    pub fn samples_per_multiplicity(&self) -> Vec<usize> {
        let mut n = vec![0; self.max_labels];
        for (s, &c) in self.sets.iter().zip(&self.counts) {
            n[s.len() - 1] += c;
        }
        n
    }

    /// True when all sets of one multiplicity have the same count, and every set of each
    /// multiplicity that has samples is present (the theorem's data precondition).
    pub fn balanced_within_multiplicity(&self) -> bool {
        let mut seen: Vec<Option<usize>> = vec![None; self.max_labels];
        let mut present = vec![0.0; self.max_labels];
        for (s, &c) in self.sets.iter().zip(&self.counts) {
            let m = s.len() - 1;
            match seen[m] {
                None => seen[m] = Some(c),
                Some(c0) if c0 != c => return false,
                _ => {}
            }
            present[m] += 1.0;
        }
        (0..self.max_labels).all(|m| match seen[m] {
            Some(c) if c > 0 => present[m] == binomial(self.classes, m + 1),
            _ => true,
        })
    }

    /// Index of the singleton set {k}, if present.
    pub fn singleton(&self, k: usize) -> Option<usize> {
        self.sets.iter().position(|s| s.len() == 1 && s[0] == k)
    }
}

/// All m-subsets of {0..n-1}, in lexicographic order.
pub fn combinations(n: usize, m: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if m == 0 || m > n {
        return out;
    }
    let mut idx: Vec<usize> = (0..m).collect();
    loop {
        out.push(idx.clone());
        let mut i = m;
        while i > 0 && idx[i - 1] == n - m + i - 1 {
            i -= 1;
        }
        if i == 0 {
            return out;
        }
        idx[i - 1] += 1;
        for j in i..m {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_counts_match_binomials() {
        for n in 1..8 {
            for m in 1..=n {
                assert_eq!(combinations(n, m).len() as f64, binomial(n, m));
            }
        }
        assert_eq!(combinations(4, 2)[0], vec![0, 1]);
        assert_eq!(combinations(4, 2)[5], vec![2, 3]);
    }

    #[test]
    fn balanced_layout_sizes() {
        let l = LabelSets::balanced(4, 2, &[3, 2]).unwrap();
        assert_eq!(l.samples(), 4 * 3 + 6 * 2);
        assert_eq!(l.samples_per_multiplicity(), vec![12, 12]);
        assert!(l.balanced_within_multiplicity());
        assert_eq!(l.singleton(2), Some(2));
    }

    #[test]
    fn zero_count_multiplicity_is_allowed() {
        let l = LabelSets::balanced(3, 2, &[2, 0]).unwrap();
        assert_eq!(l.samples(), 6);
        assert!(l.balanced_within_multiplicity());
    }
}
