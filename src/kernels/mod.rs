//! Hot loops: the vectorised exponential, the solver's vector passes, the objective's
//! matrix products, and the buffers shared across threads.

pub mod cpu;
pub mod exp;
pub mod products;
pub mod shared;
pub mod vecops;
