//! One module per command group: each has an `Args` (clap) and a `run`.

pub mod analyze;
pub mod client;
pub mod control;
pub mod duration;
pub mod inspect;
pub mod monitor;
pub mod output;
pub mod proxy;
pub mod run;
pub mod serve;
pub mod signals;
