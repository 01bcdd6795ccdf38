//! mlab-nc: verifies multi-label neural collapse (Li, Wang, Li, Qu 2024) in the unconstrained
//! feature model with the pick-all-label loss, by optimisation.
//!
//! The pipeline, one module per stage: [`labels`] (label sets and data layout) ->
//! [`loss`] (PAL, PAL-mean) -> [`ufm`] (objective) -> [`solver`] (L-BFGS via argmin) ->
//! [`theory`] (predicted optimum) -> [`metrics`] (neural-collapse metrics) -> [`verdict`] ->
//! [`report`] (JSON and terminal table) -> [`cli`].

pub mod certificate;
pub mod cli;
pub mod config;
pub mod error;
pub mod fastexp;
pub mod figures;
pub mod hunt;
pub mod labels;
pub mod linalg;
pub mod loss;
pub mod measure;
pub mod metrics;
pub mod npy;
pub mod precond;
pub mod report;
pub mod solver;
pub mod sweep;
pub mod theory;
pub mod timing;
pub mod ufm;
pub mod verdict;
pub mod vecops;
pub mod verify;
