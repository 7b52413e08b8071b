//! The rollout controller: a pure state machine ([`machine`]) and the thin
//! async [`driver`] that persists its decisions and executes its actions
//! through the seams ([`driver::TrafficRouter`], [`driver::Analysis`]).

pub mod analysis;
pub mod driver;
pub mod machine;
pub mod probe;
