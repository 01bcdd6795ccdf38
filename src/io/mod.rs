//! Files in and out: `.npy` arrays, JSON reports and the terminal tables.

pub mod npy;
pub mod report;
