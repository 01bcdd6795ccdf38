//! What the command line runs: one function per command.

pub mod figures;
pub mod fuzz;
pub mod hunt;
pub mod measure;
pub mod sweep;
pub mod timing;
pub mod verify;
