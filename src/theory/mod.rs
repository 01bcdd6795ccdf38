//! What the theorem predicts, and the certificate that checks a solve without it.

pub mod certificate;
pub mod prediction;
