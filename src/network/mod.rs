//! Deep nets on multi-label images (`train`): the network ([`model`]), the UFM's losses as
//! tensors ([`loss`]) and the training loop with its measurements ([`train`]). burn does the
//! autodiff on its CPU backend.

pub mod loss;
pub mod model;
pub mod train;
