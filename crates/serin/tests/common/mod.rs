//! Helpers shared by the end-to-end tests. Each test binary uses a part.
#![allow(dead_code)]

pub mod chromium;
pub mod controller;
pub mod daemon;
pub mod exporter;
pub mod hooks;
pub mod http;
pub mod kubesim;
pub mod nginx;
pub mod prometheus;
pub mod rollout;
pub mod serin;
pub mod upstream;
