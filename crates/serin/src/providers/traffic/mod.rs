//! Traffic routers: make a data plane send the canary its share.

pub mod builtin;
pub mod kubernetes;
pub mod nginx;
