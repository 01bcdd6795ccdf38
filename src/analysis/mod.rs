//! Measuring a solution: neural-collapse metrics, and the verdict.

pub mod metrics;
pub mod verdict;
