//! mlab-nc: verifies multi-label neural collapse (Li, Wang, Li, Qu 2024) in the unconstrained
//! feature model with the pick-all-label loss, by optimisation.

// `!(x > 0.0)` is the code's way of rejecting NaN together with the values that fail.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

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
