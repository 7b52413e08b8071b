//! The rollout controller: a pure state machine ([`machine`]) and, around it,
//! the thin async driver that executes its actions.

pub mod machine;
