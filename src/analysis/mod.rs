//! Measuring a solution: neural-collapse metrics, the verdict, and the reports built from
//! them.

pub mod accumulate;
pub mod arrays;
pub mod assess;
pub mod measure;
pub mod metrics;
pub mod report;
pub mod verdict;

pub use metrics::Metrics;
pub use verdict::{Tolerances, Verdict};
