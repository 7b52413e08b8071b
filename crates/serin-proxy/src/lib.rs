//! serin's data plane.
#![forbid(unsafe_code)]
