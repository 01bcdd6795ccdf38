//! Files in and out: `.npy` arrays, JSON reports, JSON-lines result files, and the terminal
//! tables.

pub mod jsonl;
pub mod npy;
pub mod report;
