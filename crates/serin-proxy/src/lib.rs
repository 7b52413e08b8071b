//! serin's data plane.
#![forbid(unsafe_code)]

mod weight;

pub use weight::{Version, Weight, WeightError};
