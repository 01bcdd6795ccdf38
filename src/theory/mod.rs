//! What the theorem predicts (docs/theory.md §3), and the certificate that checks a solve
//! without it (§4).

pub mod certificate;
pub mod prediction;

pub use certificate::{certify, solve, Certificate};
pub use prediction::{predict, Prediction};
