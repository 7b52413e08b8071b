//! The rollout file. (Placeholder.)
