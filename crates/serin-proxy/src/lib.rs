//! serin's data plane: a traffic-splitting HTTP/1.1 reverse proxy that records
//! each version's requests.
//!
//! It knows nothing of rollouts: it holds a [`RoutingTable`] (two upstreams,
//! an optional baseline upstream that gets the canary's share, the canary
//! [`Weight`], an optional sticky key, route overrides) behind one
//! atomic swap and a [`Recorder`] per proxy. The controller changes the weight
//! with [`Proxy::set_weight`], starts each run with [`Proxy::begin_run`] (a
//! request counts in the run it was routed in) and reads [`Recorder::snapshot`].
//!
//! # Layout
//! - [`weight`](Weight), `table`: the domain words and the routing table, validated once.
//! - `split`: the choice of version, a pure function ([`route`]). Start here.
//! - `proxy`: [`Proxy`] and the request path (check, route, rewrite, forward, record).
//! - `pool`: keep-alive connections to the upstreams, one pool per serving
//!   runtime, and the client's request body sent on them (timed, telling a
//!   stalled client from a slow upstream).
//! - `forwarding`: what a gateway changes in forwarded messages (hop-by-hop
//!   fields, `X-Forwarded-*`, `Via`) and the request checks hyper leaves to us.
//! - `body`: the response body, which records the request when sent (or as a
//!   timeout of its version when the client gives up before the response
//!   head or on a body stalled for [`SILENT_UPSTREAM`]) and gives its connection back to the pool; it holds the serving
//!   runtime's pool and recorder shard, never the proxy.
//! - `stall`: the idle timeout of both bodies.
//!
//! Modules depend downwards only: `weight` ← `table` ← `split`; `stall` ←
//! `pool` ← `body`, `failure` ← `proxy` ← `admin`, `server`.
//! - `failure`: upstream failures → 502/504 against the version; a client's
//!   broken or stalled upload → 400/408 against neither version.
//! - `recorder`, `latency`: lock-free counters and HDR-shaped latency buckets.
//! - `prometheus`: the text exposition with the SPEC's metric names.
//! - `server`: the per-core runtimes, accept loops and graceful shutdown
//!   ([`serve_per_core`], [`serve`], [`serve_admin`]).
//! - `balance`: spreads client connections evenly over the serving runtimes.
//! - `admin`: `GET /metrics`, `GET`/`PUT /weight` (the latter behind a
//!   bearer token when one is set).
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use serin_proxy::{Proxy, ProxyOptions, RoutingTable, Weight};
//! let table = RoutingTable::new("http://127.0.0.1:9001", "http://127.0.0.1:9002", Weight::from_percent(5.0)?)?;
//! let proxy = Proxy::new(table, ProxyOptions::default());
//! let listener = serin_proxy::bind_per_core("127.0.0.1:8080".parse()?)?;
//! serin_proxy::serve_per_core(listener, proxy.clone(), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod balance;
mod body;
mod cookie;
mod failure;
mod forwarding;
mod latency;
mod pool;
mod prometheus;
mod proxy;
mod recorder;
mod server;
mod split;
mod stall;
mod table;
mod weight;

pub use admin::bearer_matches;
pub use body::{ANSWER_GRACE, ResponseBody, SILENT_UPSTREAM};
pub use latency::empty_histogram;
pub use prometheus::{
    CONTENT_TYPE as METRICS_CONTENT_TYPE, LATENCY_BOUNDS, RolloutMetrics, encode as encode_metrics,
};
pub use proxy::{Proxy, ProxyOptions};
pub use recorder::{Recorder, RecorderSnapshot, StatusClass, VersionSnapshot};
pub use server::{PerCoreListener, bind_per_core, serve, serve_admin, serve_per_core};
pub use split::{
    STICKY_BUCKETS, Via, choose, route, split, split_with_baseline, sticky, sticky_bucket,
    sticky_with_baseline,
};
pub use table::{ConfigError, Match, Route, RoutingTable, StickyKey, Upstream};
pub use weight::{Version, Weight, WeightError};
