//! The daemon's HTTP API (`/api/v1`) and the dashboard; the JSON it speaks
//! is in [`crate::wire`].

pub mod guard;
pub mod server;
