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
//! - `judge.rs`: the checks and how they combine into a verdict, and what
//!   is said beside it: advisory checks' fails, early success (every limit
//!   shown met), split verification (the canary's share of requests);
//! - [`bounds`]: what a metric may plausibly say (shared with the sources).
//!
//! ```
//! use serin_analysis::{Config, Judge, Limit, Observation, Totals, Verdict};
//!
//! let config = Config {
//!     error_rate: Limit { max: Some(0.05), max_ratio_to_stable: Some(1.0) },
//!     latency_p95: Limit::NONE,
//!     ..Config::default()
//! };
//! let mut judge = Judge::new(config)?;
//! let at = |s: u64, se: u64, c: u64, ce: u64| Observation {
//!     stable: Totals { requests: s, errors: se, ..Totals::default() },
//!     canary: Totals { requests: c, errors: ce, ..Totals::default() },
//!     ..Observation::default()
//! };
//! judge.begin_stage(&at(0, 0, 0, 0));
//! judge.set_canary_weight(5.0);
//! let j = judge.observe(&at(9_500, 85, 500, 41), false);
//! assert_eq!(j.verdict, Verdict::Fail);
//! assert_eq!(j.verdict.as_str(), "fail");
//! assert!(j.reason.starts_with("canary error rate 8.2 % (41/500) vs stable 0.89 % (85/9 500)"));
//! # Ok::<(), serin_analysis::ConfigError>(())
//! ```
#![forbid(unsafe_code)]

pub mod bounds;
mod config;
pub mod eprocess;
mod histogram;
mod judge;
mod observation;
mod plan;
pub mod stats;
mod verdict;

pub use config::{
    Config, ConfigError, CustomMetric, DEFAULT_CLIENT_ERROR_RATIO, Direction, Limit, Method,
    Reference,
};
pub use histogram::{Histogram, HistogramError};
pub use judge::Judge;
pub use observation::{Observation, ObservationError, Ratio, Totals, check};
pub use plan::{Plan, PlanInput, plan};
pub use verdict::{CheckResult, Evidence, Judgement, Split, Verdict};
