//! The canary judge. Pure: no I/O, no clock, no async. Same observations,
//! same verdicts.
//!
//! Start at [`Judge`]: the controller gives it cumulative [`Observation`]s of
//! both versions and gets a [`Judgement`] back (a [`Verdict`] with its reason
//! and per-check numbers). [`Config`] is the rollout file's `analysis`
//! section. [`plan`] answers "how long until a regression of this size is
//! caught?". The statistics are explained, with citations, in
//! `docs/judge.md`:
//!
//! - `eprocess.rs`: anytime-valid mixture e-processes (the `sequential` method);
//! - `stats.rs`: distribution functions, z-test and Mann–Whitney U (`fixed`);
//! - `histogram.rs`: cumulative latency histograms, deltas and quantiles;
//! - `judge.rs`: the checks and how they combine into a verdict.
#![forbid(unsafe_code)]

mod config;
pub mod eprocess;
mod histogram;
mod judge;
mod observation;
mod plan;
pub mod stats;
mod verdict;

pub use config::{Config, ConfigError, CustomMetric, Direction, Limit, Method};
pub use histogram::{Histogram, HistogramError};
pub use judge::Judge;
pub use observation::{Observation, ObservationError, Ratio, Totals, check};
pub use plan::{Plan, PlanInput, plan};
pub use verdict::{CheckResult, Evidence, Judgement, Verdict};
