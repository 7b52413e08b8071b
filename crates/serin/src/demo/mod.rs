//! The demo's moving parts: a small upstream with fault injection
//! (`serin demo-app`) and an open-loop load generator (`serin load`).

pub mod app;
pub mod load;
pub mod tour;
