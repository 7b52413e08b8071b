//! The implementations behind the controller's seams: traffic routers (where
//! the weight is applied) and, with the judge, metric sources.

pub mod metrics;
pub mod traffic;
