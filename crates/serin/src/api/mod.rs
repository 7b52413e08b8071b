//! The daemon's HTTP API (`/api/v1`), its wire types, and the dashboard.

pub mod guard;
pub mod server;
pub mod wire;
