//! mlab-nc: verifies multi-label neural collapse (Li, Wang, Li, Qu 2024) in the unconstrained
//! feature model with the pick-all-label loss, by optimisation.

pub mod analysis;
#[doc(hidden)]
pub mod bench;
pub mod cli;
pub mod commands;
pub mod error;
pub mod io;
pub(crate) mod kernels;
pub mod linalg;
pub mod model;
pub mod solver;
pub mod theory;

pub use kernels::cpu::Isa;
