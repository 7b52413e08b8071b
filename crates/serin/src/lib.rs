//! `serin`: canary releases with nothing but one binary.
//!
//! The library half of the `serin` binary, so integration tests can start its
//! parts in-process. `main.rs` only parses the command line and dispatches.
//!
//! # Layout (ARCHITECTURE.md has the layers and the invariants)
//! - [`time`], [`rollout`], [`error`], [`exit`]: the ground floor: the clock
//!   and durations, the rollout's domain types, the error every seam speaks
//!   (its kind picks the exit code and the HTTP status), the SPEC's exit codes.
//! - [`spec`]: the rollout file (YAML), checked once, with located errors.
//! - [`cluster`]: serin's `Rollout` custom resource (the rollout file as a
//!   Kubernetes object, its status, the CRD generated from them).
//! - [`store`]: durable state in SQLite (rollouts, decisions, samples);
//!   [`statedir`]: the lock that makes one process the owner of a state directory.
//! - [`controller`]: the rollout state machine (pure), its driver, and the
//!   seams the providers implement.
//! - [`providers`]: traffic routers (built-in proxy, nginx, Kubernetes) and
//!   metric sources (built-in, nginx log, Prometheus) behind those seams.
//! - [`notify`]: webhook notifications (JSON, Slack) with retries, off the controller's path.
//! - [`runtime`]: a rollout's data plane and driver, started from its file
//!   (shared by `serve` and `run`); [`daemon`]: the registry of rollouts
//!   behind `serin serve`; [`shutdown`]: how it stops.
//! - [`report`]: the rollout report as JSON and as self-contained HTML with SVG charts;
//!   [`wire`]: the JSON the API speaks.
//! - [`api`]: the daemon's HTTP API and the dashboard.
//! - [`cli`]: one module per command group; each has an `Args` (clap) and a
//!   `run` that returns the process exit code; `main.rs` dispatches to them.
//! - [`demo`]: the tour, the small upstream (`serin demo-app`) and the load generator (`serin load`).
//!
//! The data plane lives in the `serin-proxy` crate and the judge in `serin-analysis`;
//! this crate wires them to files, sockets and the command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod cluster;
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
