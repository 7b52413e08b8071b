//! `serin`: canary releases with nothing but one binary.
//!
//! The library half of the `serin` binary, so integration tests can start its
//! parts in-process. `main.rs` only parses the command line and dispatches.
//!
//! # Layout
//! - [`api`]: the daemon's HTTP API and the dashboard; [`wire`]: the JSON it speaks,
//!   shared by the daemon, the API and the client commands.
//! - [`cli`]: one module per command group; each has an `Args` (clap) and a
//!   `run` that returns the process exit code; `main.rs` dispatches to them.
//! - [`controller`]: the rollout state machine (pure) and its driver.
//! - [`spec`]: the rollout file (YAML), its types and validation with located errors.
//! - [`notify`]: webhook notifications (JSON, Slack) with retries, off the controller's path.
//! - [`providers`]: traffic routers (built-in proxy, ...) behind the controller's seams.
//! - [`daemon`]: the registry of rollouts behind `serin serve`; [`runtime`]: a rollout's
//!   proxy and driver, started from its file (shared by `serve` and `run`);
//!   [`shutdown`]: the order in which `serin serve` stops.
//! - [`report`]: the rollout report as JSON and as self-contained HTML with SVG charts.
//! - [`store`]: durable state in SQLite (rollouts, decisions, samples);
//!   [`statedir`]: the lock that makes one process the owner of a state directory.
//! - [`demo`]: the small upstream (`serin demo-app`) and the load generator (`serin load`).
//! - [`error`]: the error every seam speaks, with a kind that picks the exit code and
//!   the HTTP status; [`exit`]: the SPEC's exit codes.
//! - [`time`]: `Millis`, the clock, RFC 3339 and durations; [`rollout`]: the
//!   domain types (phase, step, plan, state, decision, verdict). The ground
//!   floor every other module may use; they use nothing above them.
//!
//! The data plane lives in the `serin-proxy` crate and the judge in `serin-analysis`;
//! this crate wires them to files, sockets and the command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod exit;
pub mod notify;
pub mod providers;
pub mod report;
pub mod rollout;
pub mod runtime;
pub mod shutdown;
pub mod spec;
pub mod statedir;
pub mod store;
pub mod time;
pub mod wire;
