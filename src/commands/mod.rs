//! What the command line runs: one function per command.

#[cfg(feature = "cli")]
pub mod figures;
pub mod fuzz;
#[cfg(feature = "cli")]
pub mod hunt;
pub mod measure;
#[cfg(feature = "cli")]
pub mod sweep;
pub mod timing;
#[cfg(all(feature = "cli", feature = "train"))]
pub mod train;
pub mod verify;
