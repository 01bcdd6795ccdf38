//! The problem: label sets, losses, the configuration, and the UFM objective
//! (docs/theory.md §1).

pub mod config;
pub mod labels;
pub mod loss;
pub mod objective;
pub mod precond;

pub use config::{UfmConfig, ValidConfig};
pub use labels::LabelSets;
pub use loss::Loss;
pub use objective::UfmObjective;
