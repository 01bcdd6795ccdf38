//! The problem: label sets, losses, the configuration, and the UFM objective.

pub mod config;
pub mod labels;
pub mod loss;
pub mod objective;
pub mod precond;
