//! Problem configuration, checked before any work starts (an unchecked [`UfmConfig`] becomes
//! a [`ValidConfig`]; everything downstream only sees valid ones).

use serde::{Deserialize, Serialize};

use crate::bail;
use crate::error::Result;
use crate::model::labels::{binomial, LabelSets};
use crate::model::loss::Loss;

/// L-BFGS history length used by the solver.
pub const LBFGS_HISTORY: usize = 3;
/// Estimated peak bytes of one solve with K classes, dimension d, N samples and label sets of
/// at most M labels, counted in parameter-sized f64 vectors: the solver's x (moved in place to
/// each trial point), gradient and trial gradient (3), its m stored pairs in f32 (m), and 3
/// for the start, the result and the metrics; plus the K x N logit buffer and the
/// certificate's copy of it, and the per-sample entropies; plus, per sample, at most what the
/// preconditioner keeps (`crate::precond`: m + 1 projections of up to r = min(M, 4) values,
/// two r x r factors, and 17 bytes of layout).
pub fn estimate_bytes(k: f64, d: f64, n: f64, m: usize) -> f64 {
    let vars = k * d + d * n + k;
    let r = m.min(crate::model::precond::MAX_RANK) as f64;
    let pre = if m >= 2 { 8.0 * ((LBFGS_HISTORY + 1) as f64 * r + 2.0 * r * r) + 17.0 } else { 0.0 };
    8.0 * ((LBFGS_HISTORY + 6) as f64 * vars + 2.0 * k * n + n) + pre * n
}

/// Largest accepted L-BFGS history (the direction pass combines at most 2m + 1 vectors).
pub const MAX_HISTORY: usize = 64;

/// A UFM problem as the user states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UfmConfig {
    /// Number of classes K.
    pub classes: usize,
    /// Largest label-set size M.
    pub max_labels: usize,
    /// Feature dimension d.
    pub dim: usize,
    /// Samples per label set, one count per multiplicity (index m-1).
    pub per_set: Vec<usize>,
    /// Weight decay on W.
    pub lambda_w: f64,
    /// Weight decay on H.
    pub lambda_h: f64,
    /// Weight decay on b.
    pub lambda_b: f64,
    /// The loss.
    pub loss: Loss,
}

/// A configuration that passed [`UfmConfig::validate`], with its data layout built.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The checked configuration (per_set expanded to one count per multiplicity).
    pub config: UfmConfig,
    /// The label sets and sample layout.
    pub labels: LabelSets,
    /// Explicit per-set counts, when they replace `per_set` (`--counts`, `--class-skew`).
    pub counts: Option<Vec<SetCount>>,
}

/// One label set and its number of samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCount {
    /// Sorted, distinct class indices.
    pub set: Vec<usize>,
    /// Samples carrying exactly this label set.
    pub count: usize,
}

/// Parses a counts file: one label set per line, `i j k : n` (class indices, a colon, the
/// count); blank lines and lines starting with `#` are skipped.
pub fn parse_counts_file(text: &str, name: &str) -> Result<Vec<SetCount>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((set, count)) = line.split_once(':') else {
            bail!("{name}: line {}: expected 'class indices : count', got '{line}'", i + 1);
        };
        let mut set: Vec<usize> = set
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<usize>().map_err(|_| crate::error::Error::new(format!("{name}: line {}: '{t}' is not a class index", i + 1))))
            .collect::<Result<_>>()?;
        let count =
            count.trim().parse::<usize>().map_err(|_| crate::error::Error::new(format!("{name}: line {}: '{}' is not a count", i + 1, count.trim())))?;
        set.sort_unstable();
        out.push(SetCount { set, count });
    }
    Ok(out)
}

/// Counts skewed by class frequency: class k gets weight `rho^(-k/(K-1))`, and a set's count
/// is `max(1, round(n_|S| prod_{k in S} w_k))`. With `singletons_only`, only multiplicity 1
/// is skewed.
pub fn skewed_counts(c: &UfmConfig, rho: f64, singletons_only: bool) -> Vec<SetCount> {
    let per = c.expanded_per_set();
    let w = |k: usize| rho.powf(-(k as f64) / (c.classes - 1) as f64);
    let mut out = Vec::new();
    for m in 1..=c.max_labels {
        for set in crate::model::labels::combinations(c.classes, m) {
            let n = per[m - 1];
            if n == 0 {
                continue;
            }
            let weight: f64 = if singletons_only && m > 1 { 1.0 } else { set.iter().map(|&k| w(k)).product() };
            out.push(SetCount { count: ((n as f64 * weight).round() as usize).max(1), set });
        }
    }
    out
}

/// What the front ends say when [`skew_vanishes`].
pub const SKEW_VANISHES: &str =
    "the class skew leaves every multiplicity's counts equal (each is max(1, round(n prod w_k))): the problem is the balanced one; raise the samples per set to skew it";

/// Whether skewed counts ([`skewed_counts`]) came out equal within every multiplicity: then
/// the skew changed nothing (with small `per_set`, every `n w` rounds to the same count, or
/// to 0 and is lifted to 1), and the problem is the balanced one. One pass: each count
/// against the first of its multiplicity.
pub fn skew_vanishes(counts: &[SetCount]) -> bool {
    let mut first: Vec<Option<usize>> = Vec::new();
    counts.iter().all(|c| {
        let m = c.set.len();
        if first.len() <= m {
            first.resize(m + 1, None);
        }
        *first[m].get_or_insert(c.count) == c.count
    })
}

/// The note the front ends give for a skew `rho` that produced `counts`: [`SKEW_VANISHES`]
/// when a real skew (`rho != 1`) left every multiplicity balanced.
pub fn skew_note(rho: f64, counts: &[SetCount]) -> Option<&'static str> {
    (rho != 1.0 && skew_vanishes(counts)).then_some(SKEW_VANISHES)
}

impl UfmConfig {
    /// K classes and label sets of up to M labels, with the defaults of `mlab-nc ufm`: d = K,
    /// one sample per label set, every weight decay 5e-3, the PAL loss. Change any field, then
    /// [`validate`](Self::validate).
    pub fn new(classes: usize, max_labels: usize) -> Self {
        UfmConfig { classes, max_labels, dim: classes, per_set: vec![1], lambda_w: 5e-3, lambda_h: 5e-3, lambda_b: 5e-3, loss: Loss::Pal }
    }

    /// Number of samples N implied by the configuration (as f64, so huge sizes do not overflow).
    pub fn samples_f64(&self) -> f64 {
        let per = self.expanded_per_set();
        (1..=self.max_labels.min(self.classes)).map(|m| per.get(m - 1).copied().unwrap_or(0) as f64 * binomial(self.classes, m)).sum()
    }

    fn expanded_per_set(&self) -> Vec<usize> {
        if self.per_set.len() == 1 {
            vec![self.per_set[0]; self.max_labels]
        } else {
            self.per_set.clone()
        }
    }

    /// Estimated peak memory of one solve in bytes: parameters, gradient, L-BFGS history,
    /// line-search temporaries and the K x N logit buffer.
    pub fn memory_estimate(&self) -> f64 {
        let n = self.samples_f64();
        let (k, d) = (self.classes as f64, self.dim as f64);
        estimate_bytes(k, d, n, self.max_labels)
    }

    /// Checks every parameter, with explicit per-set counts instead of `per_set`.
    pub fn validate_with_counts(self, counts: Vec<SetCount>) -> Result<ValidConfig> {
        let base = UfmConfig { per_set: vec![1], ..self.clone() };
        base.check_scalars()?;
        let mut seen = std::collections::HashSet::new();
        for sc in &counts {
            if sc.set.is_empty() || sc.set.len() > self.max_labels {
                bail!("--counts: label set {:?} must have 1 to M = {} classes", sc.set, self.max_labels);
            }
            if sc.set.windows(2).any(|w| w[0] == w[1]) || sc.set.iter().any(|&k| k >= self.classes) {
                bail!("--counts: label set {:?} must list distinct classes below K = {}", sc.set, self.classes);
            }
            if !seen.insert(sc.set.clone()) {
                bail!("--counts: label set {:?} is listed twice", sc.set);
            }
        }
        let n: f64 = counts.iter().map(|c| c.count as f64).sum();
        let bytes = estimate_bytes(self.classes as f64, self.dim as f64, n, self.max_labels);
        if let Some(short) = beyond_memory(bytes) {
            bail!("problem too large: K={} M={} d={} gives N={n:.3e} samples and needs {short}", self.classes, self.max_labels, self.dim);
        }
        let mut sorted = counts.clone();
        sorted.sort_by(|a, b| a.set.len().cmp(&b.set.len()).then_with(|| a.set.cmp(&b.set)));
        let (sets, cnts): (Vec<_>, Vec<_>) = sorted.iter().map(|c| (c.set.clone(), c.count)).unzip();
        let labels = LabelSets::from_counts(self.classes, self.max_labels, sets, cnts)?;
        let mut per_set = vec![0; self.max_labels];
        for c in &sorted {
            per_set[c.set.len() - 1] = per_set[c.set.len() - 1].max(c.count);
        }
        Ok(ValidConfig { config: UfmConfig { per_set, ..self }, labels, counts: Some(sorted) })
    }

    fn check_scalars(&self) -> Result<()> {
        if self.classes < 2 {
            bail!("--classes must be at least 2 (got {})", self.classes);
        }
        if self.max_labels < 1 || self.max_labels > self.classes {
            bail!("--max-labels must be between 1 and --classes = {} (got {})", self.classes, self.max_labels);
        }
        if self.dim < 1 {
            bail!("--dim must be at least 1 (got {})", self.dim);
        }
        check_lambdas(self.lambda_w, self.lambda_h, self.lambda_b)
    }

    /// The configuration as [`validate`](Self::validate) keeps it: `per_set` expanded to one
    /// count per multiplicity.
    pub fn normalised(mut self) -> UfmConfig {
        self.per_set = self.expanded_per_set();
        self
    }

    /// Checks every parameter; the error names the flag at fault.
    pub fn validate(self) -> Result<ValidConfig> {
        self.check_scalars()?;
        if self.per_set.len() != 1 && self.per_set.len() != self.max_labels {
            bail!("--per-set: expected 1 count or {} counts (one per multiplicity), got {}", self.max_labels, self.per_set.len());
        }
        let config = self.normalised();
        if let Some(short) = beyond_memory(config.memory_estimate()) {
            bail!(
                "problem too large: K={} M={} d={} gives N={:.3e} samples and needs {short}",
                config.classes,
                config.max_labels,
                config.dim,
                config.samples_f64()
            );
        }
        let labels = LabelSets::balanced(config.classes, config.max_labels, &config.per_set)?;
        Ok(ValidConfig { config, labels, counts: None })
    }
}

/// The weight decays' part of [`UfmConfig::validate`]: each finite and >= 0, those on W and H
/// positive. It depends on nothing else, so a sweep checks each listed value once.
pub fn check_lambdas(lambda_w: f64, lambda_h: f64, lambda_b: f64) -> Result<()> {
    for (name, v) in [("--lambda-w", lambda_w), ("--lambda-h", lambda_h), ("--lambda-b", lambda_b)] {
        if !v.is_finite() || v < 0.0 {
            bail!("{name} must be a finite number >= 0 (got {v})");
        }
    }
    if lambda_w == 0.0 || lambda_h == 0.0 {
        bail!("--lambda-w and --lambda-h must be > 0: without weight decay the UFM has no minimiser");
    }
    Ok(())
}

/// Memory the machine can give us: MemAvailable from /proc/meminfo, or 16 GiB if unknown.
pub fn available_memory_bytes() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map(|kib| kib * 1024.0)
        .unwrap_or(16.0 * 1024.0 * 1024.0 * 1024.0)
}

/// `Some("about X but the machine has Y")` when `bytes` exceed [`available_memory_bytes`]:
/// the one comparison behind every "too large" refusal.
pub fn beyond_memory(bytes: f64) -> Option<String> {
    let available = available_memory_bytes();
    (bytes > available).then(|| format!("about {} but the machine has {}", human_bytes(bytes), human_bytes(available)))
}

/// Formats a byte count as KiB/MiB/GiB/TiB.
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u + 1 == units.len() && v >= 1024.0 {
        return format!("{b:.2e} B");
    }
    format!("{v:.1} {}", units[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> UfmConfig {
        UfmConfig { classes: 4, max_labels: 2, dim: 4, per_set: vec![1], lambda_w: 5e-3, lambda_h: 5e-3, lambda_b: 5e-3, loss: Loss::Pal }
    }

    /// K = 4: weights rho^(-k/3). At one sample per set and rho = 1e300 every product rounds
    /// to 0 or 1 and is lifted to 1, so the counts stay balanced; at 100 per set and rho = 4
    /// the singletons get 100, 63, 40 and 25 (100 x 4^(-1/3) = 63.0, 100 x 4^(-2/3) = 39.7).
    #[test]
    fn a_skew_that_rounds_away_is_recognised() {
        assert!(skew_vanishes(&skewed_counts(&base(), 1e300, false)));
        let c = UfmConfig { per_set: vec![100], ..base() };
        let counts = skewed_counts(&c, 4.0, false);
        let singles: Vec<usize> = counts.iter().filter(|s| s.set.len() == 1).map(|s| s.count).collect();
        assert_eq!(singles, vec![100, 63, 40, 25]);
        assert!(!skew_vanishes(&counts));
        assert!(skew_vanishes(&skewed_counts(&c, 1.0, false)), "rho = 1 is no skew at all");
    }

    #[test]
    fn rejects_bad_values_naming_the_flag() {
        let cases: Vec<(UfmConfig, &str)> = vec![
            (UfmConfig { classes: 1, ..base() }, "--classes"),
            (UfmConfig { max_labels: 0, ..base() }, "--max-labels"),
            (UfmConfig { max_labels: 5, ..base() }, "--max-labels"),
            (UfmConfig { dim: 0, ..base() }, "--dim"),
            (UfmConfig { lambda_w: -1.0, ..base() }, "--lambda-w"),
            (UfmConfig { lambda_h: f64::NAN, ..base() }, "--lambda-h"),
            (UfmConfig { lambda_b: f64::INFINITY, ..base() }, "--lambda-b"),
            (UfmConfig { per_set: vec![1, 2, 3], ..base() }, "--per-set"),
            (UfmConfig { classes: 100_000, max_labels: 5, ..base() }, "too large"),
        ];
        for (c, flag) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.0.contains(flag), "{e} should mention {flag}");
        }
    }

    proptest::proptest! {
        /// A configuration survives JSON (the report's `config`, a sweep line's key) and the
        /// sweep file's TOML unchanged, and validates the same way before and after.
        #[test]
        fn config_round_trips(k in 2usize..9, m in 1usize..4, d in 1usize..12, per in proptest::collection::vec(0usize..4, 1..4),
                              lw in 1e-6f64..1.0, lh in 1e-6f64..1.0, lb in 0.0f64..1.0, loss in 0usize..3) {
            let loss = [Loss::Pal, Loss::PalMean, Loss::Bce][loss];
            let c = UfmConfig { classes: k, max_labels: m, dim: d, per_set: per, lambda_w: lw, lambda_h: lh, lambda_b: lb, loss };
            let back: UfmConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            proptest::prop_assert_eq!(&back, &c);
            let toml_text = toml::to_string(&c).unwrap();
            let from_toml: UfmConfig = toml::from_str(&toml_text).unwrap();
            proptest::prop_assert_eq!(&from_toml, &c);
            proptest::prop_assert_eq!(c.clone().validate().map(|v| v.config), back.validate().map(|v| v.config));
        }
    }

    #[test]
    fn expands_single_count() {
        let v = base().validate().unwrap();
        assert_eq!(v.config.per_set, vec![1, 1]);
        assert_eq!(v.labels.samples(), 10);
    }
}
