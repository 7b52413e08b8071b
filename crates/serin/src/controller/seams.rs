//! The controller's seams: what it needs from the world, as traits the
//! providers implement. The controller depends on these alone, never on a
//! provider, the daemon or the command line.
//!
//! - [`TrafficRouter`]: make a data plane send a share of traffic to the
//!   canary (the built-in proxy, nginx, Kubernetes).
//! - [`MetricSource`]: cumulative per-version totals ([`Snapshot`], built on
//!   the judge's own [`Totals`]) read every interval (the built-in recorder,
//!   nginx's access log, Prometheus).
//! - [`Analysis`]: a metric source and the judge together, one interval at a
//!   time ([`crate::controller::analysis::LiveAnalysis`]).
//! - [`RolloutStore`]: where the driver persists a rollout's state and
//!   decisions before applying them (SQLite's [`Store`], or a Rollout's
//!   status subresource in a cluster), and what a write conflict means there.
//!
//! Failures carry a [`crate::error::Kind`], so a port in use or a refused
//! `nginx -t` reads as "unavailable" wherever it surfaces.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serin_analysis::{Observation, Ratio, Totals};
use serin_proxy::Weight;

use crate::error::Error;
use crate::rollout::{Decision, Verdict};
use crate::store::{RolloutRecord, Sample, Store, StoreError, VersionSample};
use crate::time::Millis;

/// A boxed future, for object-safe async seams.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes a data plane send a share of traffic to the canary.
pub trait TrafficRouter: Send + Sync {
    /// Both versions can take traffic (health check / readiness), or why not.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// Send `weight` % of requests to the canary (route matches stay in force).
    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), Error>>;
    /// The canary becomes the new stable: all traffic on it.
    fn promote(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// All traffic on the stable, header and cookie routes to the canary
    /// included: no run is in progress (rolled back, cleaned up, not begun).
    /// A route left to a canary nothing judges any more is live traffic on
    /// a version serin said it took out. `apply_weight` puts the routes
    /// back. By default the weight 0 alone (a router whose routes end with
    /// its weight).
    fn withdraw(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.apply_weight(Weight::ZERO)
    }
}

/// Every version's cumulative totals at one moment, as a metric source read
/// them: requests, errors, 4xx where the source counts them, and the
/// latency histogram where it has one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Stable.
    pub stable: Totals,
    /// Canary.
    pub canary: Totals,
    /// The baseline (the stable's version started fresh, given the canary's
    /// share), when the data plane has one and the source counts it; `None`
    /// otherwise. To compare the canary with it, the caller puts it in the
    /// judge's stable slot ([`Snapshot::observation`] leaves it out).
    pub baseline: Option<Totals>,
    /// Of `stable.requests` and `canary.requests`, those a route override
    /// (header or cookie) sent whatever the weight, as (stable, canary),
    /// cumulative; `None` where the source cannot tell them apart. The split
    /// the weight gave is the totals less these.
    pub routed: Option<(u64, u64)>,
    /// Custom business metrics (`analysis.custom`), in the rollout file's
    /// order: cumulative numerator and denominator as (reference, canary): the stable's,
    /// or the baseline's when the rollout has one,
    /// never going backwards (the source carries counter resets). Sources
    /// that cannot query them (the built-in recorder, nginx's access log)
    /// leave it empty, which the judge reports as no data for a configured
    /// custom metric.
    pub custom: Vec<(Ratio, Ratio)>,
    /// Canary requests started and not yet answered now, where the source
    /// can tell (the built-in proxy); `None` elsewhere. Only explains what
    /// a rollout waits for: never a request, never evidence.
    pub canary_in_flight: Option<u64>,
}

impl Snapshot {
    /// The judge's observation of these numbers, taken `at` seconds (any
    /// fixed origin).
    pub fn observation(&self, at: Option<f64>) -> Observation {
        Observation {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            custom: self.custom.clone(),
            at,
            routed: None,
            baseline: self.baseline.clone(),
        }
    }
}

/// Where the judge's numbers come from.
pub trait MetricSource: Send {
    /// Cumulative totals now, or why there are none (which the judge treats
    /// as no data — never as a pass).
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>>;
}

/// One interval's analysis: what the judge said and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysed {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, with the numbers.
    pub reason: String,
    /// The interval's numbers per version, if the source answered.
    pub sample: Option<IntervalSample>,
    /// Canary requests the judge counted in this stage, if it judged
    /// (what a rollout waiting for `minRequests` has so far).
    pub canary_requests: Option<u64>,
    /// An advisory check failed: what would have rolled back.
    pub would_fail: Option<String>,
    /// The canary was shown within every enforced limit (early success).
    pub within_limits: Option<String>,
    /// The canary's observed share against the weight asked for.
    pub split: Option<crate::rollout::SplitSeen>,
}

/// One interval's numbers per version (not cumulative).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalSample {
    /// Stable.
    pub stable: VersionSample,
    /// Canary.
    pub canary: VersionSample,
    /// The baseline, when the data plane has one and the source counts it.
    pub baseline: Option<VersionSample>,
    /// Canary requests held open at the interval's end, where the source
    /// can tell (not stored with the sample: it explains the wait).
    pub canary_unanswered: Option<Unanswered>,
}

/// Canary requests the canary holds open: what tells a canary that accepts
/// requests and never answers from one that gets no traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unanswered {
    /// Canary requests in flight (started, not yet answered).
    pub in_flight: u64,
    /// Milliseconds since a canary request was last answered (or given up
    /// on) while some were in flight; 0 when one was answered in the last
    /// interval.
    pub silent_ms: u64,
}

impl Analysed {
    /// An interval without a judgement: `verdict` (no data, or the judge's
    /// refusal) and why.
    pub fn without_judgement(verdict: Verdict, reason: String) -> Analysed {
        Analysed {
            verdict,
            reason,
            sample: None,
            canary_requests: None,
            would_fail: None,
            within_limits: None,
            split: None,
        }
    }
}

/// Takes metrics from a source and judges them. It runs on a task of its
/// own: however long it takes, the rollout's commands are answered.
pub trait Analysis: Send {
    /// A new weight stage begins (absolute limits and `fixed` tests restart
    /// from the numbers as they are now).
    fn begin_stage(&mut self, weight: Weight) -> BoxFuture<'_, ()>;
    /// Judge the interval that just ended.
    fn analyse(&mut self, end_of_pause: bool) -> BoxFuture<'_, Analysed>;
}

/// What a write conflict (another writer changed the rollout since it was
/// read) means for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Take the stored state and go on from it; a rollback is written over
    /// it (the safe direction wins). The SQLite store, where the other
    /// writer is an operator's command in the same process.
    TakeStored,
    /// Stop acting at once, applying nothing more: the other writer is
    /// another controller that now owns the rollout (the cluster's status
    /// store, fenced by resourceVersion).
    Stop,
}

/// Where the driver keeps a rollout's state, decisions and samples: what it
/// needs of [`crate::store::Store`] (SQLite) or of a Rollout's status in a
/// cluster (`cluster::status`). The futures own what they need, so they
/// can run on tasks of their own.
pub trait RolloutStore: Send + Sync {
    /// Writes `record` (state, versions, last verdict) with `decisions`, if
    /// nobody wrote it since it was read (`record.generation`); returns the
    /// new generation, or [`StoreError::Conflict`] when another writer did.
    fn save(
        &self,
        record: RolloutRecord,
        decisions: Vec<Decision>,
        now: Millis,
    ) -> BoxFuture<'static, Result<i64, StoreError>>;
    /// The rollout as stored.
    fn get(&self, name: String) -> BoxFuture<'static, Result<RolloutRecord, StoreError>>;
    /// Keeps one interval's numbers (for reports; losing one changes no decision).
    fn add_sample(
        &self,
        name: String,
        run: u32,
        sample: Sample,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Where a rollback the store could not take yet is recorded until it
    /// can (a synced file), if this store has such a place.
    fn pending_rollback_path(&self, name: &str) -> Option<PathBuf>;
    /// Writes that record (`text`: the reason, then the outcome's JSON),
    /// synced, where [`RolloutStore::pending_rollback_path`] says.
    fn write_pending_rollback(&self, name: &str, text: &str) -> std::io::Result<()> {
        let _ = (name, text);
        Err(std::io::ErrorKind::Unsupported.into())
    }
    /// What a [`StoreError::Conflict`] from [`RolloutStore::save`] means.
    fn on_conflict(&self) -> OnConflict;
}

/// The SQLite store, unchanged: each call on a blocking thread.
impl RolloutStore for Store {
    fn save(
        &self,
        record: RolloutRecord,
        decisions: Vec<Decision>,
        now: Millis,
    ) -> BoxFuture<'static, Result<i64, StoreError>> {
        let store = self.clone();
        blocking(move || store.save(&record, &decisions, now))
    }

    fn get(&self, name: String) -> BoxFuture<'static, Result<RolloutRecord, StoreError>> {
        let store = self.clone();
        blocking(move || store.get(&name))
    }

    fn add_sample(
        &self,
        name: String,
        run: u32,
        sample: Sample,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let store = self.clone();
        blocking(move || store.add_sample(&name, run, &sample))
    }

    fn pending_rollback_path(&self, name: &str) -> Option<PathBuf> {
        Some(Store::pending_rollback_path(self, name))
    }

    fn write_pending_rollback(&self, name: &str, text: &str) -> std::io::Result<()> {
        Store::write_pending_rollback(self, name, text)
    }

    fn on_conflict(&self) -> OnConflict {
        OnConflict::TakeStored
    }
}

/// Runs `f` on a blocking thread; a lost thread is an unavailable store.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| StoreError::Unavailable("the store's task was lost".into()))?
    })
}
