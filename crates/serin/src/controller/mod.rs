//! The rollout controller: a pure state machine ([`machine`]) and the thin
//! async [`driver`] that persists its decisions and executes its actions
//! through the [`seams`] ([`seams::TrafficRouter`], [`seams::Analysis`]),
//! which providers implement. Nothing here depends on a provider, the
//! daemon, the API or the command line.

pub mod analysis;
pub mod driver;
pub mod machine;
pub mod probe;
pub mod seams;
