//! Per-version request counters and latency histograms, written on the request
//! path and read by `/metrics`, the controller and the judge.
//!
//! Every request routed to a version ends in exactly one of three ways:
//! - **answered**: counted by status class, with its latency;
//! - **timed out**: the client gave up while the version kept it waiting:
//!   before the version sent its response head (and it sent none within
//!   [`ANSWER_GRACE`](crate::ANSWER_GRACE) after), or mid-body when the
//!   upstream had sent nothing for [`SILENT_UPSTREAM`](crate::SILENT_UPSTREAM)
//!   or more. It counts against the version: an error, in
//!   [`VersionSnapshot::requests`] and [`VersionSnapshot::errors`], with the
//!   time until the client left as its latency;
//! - **cancelled**: the client went away or failed on its own side (while the
//!   response body was flowing, or while it was still sending its own body);
//!   counted on its own, against neither version.
//!
//! # Runs
//!
//! The recorder counts per **run** (epoch): [`Recorder::begin_run`] starts a
//! new one, and every request belongs to the run in force when it was routed.
//! A request of an earlier run that ends after a new run began is counted in
//! none of the figures above: only in [`VersionSnapshot::carried_over`] (and
//! [`VersionSnapshot::carried_over_errors`]), so that a run's figures (the
//! snapshot now less the snapshot taken when it began) hold its own requests
//! only, never the slow last requests of the run before. The counts stay
//! cumulative; the run number costs one atomic load when a request is routed
//! and one when it ends.
//!
//! Writes are relaxed atomic adds: no lock, no allocation, and memory does not
//! grow with traffic. A [`RecorderSnapshot`] is read field by field without a
//! lock, so under load its figures may be a few requests apart from one another;
//! each one is cumulative and never goes backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use http::StatusCode;

use crate::latency::LatencyBuckets;
use crate::weight::Version;

/// The class of an HTTP status code, as counted in `serin_requests_total{code}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// 1xx
    Informational,
    /// 2xx
    Success,
    /// 3xx
    Redirection,
    /// 4xx
    ClientError,
    /// 5xx, including the proxy's own 502 and 504 for an upstream failure.
    ServerError,
}

impl StatusClass {
    /// All classes, 1xx first.
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// The class of `status`. hyper's `StatusCode` is always 100-999; codes
    /// from 600 up (which no RFC defines) are counted as 5xx, since the
    /// upstream misbehaved.
    pub fn of(status: StatusCode) -> StatusClass {
        match status.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    /// The metric label: `1xx` ... `5xx`.
    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Keeps each version's counters on their own cache lines, so the
/// versions' request paths do not slow each other down.
#[repr(align(128))]
struct VersionStats {
    by_class: [AtomicU64; 5],
    in_flight: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    routed: AtomicU64,
    /// Requests of an earlier run that ended in this one (in no other count).
    carried_over: AtomicU64,
    /// Of those, the ones that would have been errors.
    carried_over_errors: AtomicU64,
    latency: LatencyBuckets,
}

impl VersionStats {
    fn new() -> VersionStats {
        VersionStats {
            by_class: Default::default(),
            in_flight: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            carried_over: AtomicU64::new(0),
            carried_over_errors: AtomicU64::new(0),
            latency: LatencyBuckets::new(),
        }
    }

    /// A request of an earlier run ended now; `error`: it would have counted
    /// as one.
    fn carried_over(&self, error: bool) {
        self.carried_over.fetch_add(1, Ordering::Relaxed);
        if error {
            self.carried_over_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One more judged request (answered or timed out) that a route sent.
    fn routed(&self, by_route: bool) {
        if by_route {
            self.routed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One writer's counters. The proxy gives each runtime that serves it its own
/// shard, so that cores do not fight over the same cache lines on every request;
/// a snapshot adds the shards up.
pub(crate) struct Shard {
    versions: [VersionStats; 3],
    /// The run in force, shared by every shard of the recorder.
    run: Arc<AtomicU64>,
}

impl Shard {
    fn new(run: Arc<AtomicU64>) -> Shard {
        Shard {
            versions: std::array::from_fn(|_| VersionStats::new()),
            run,
        }
    }

    fn of(&self, version: Version) -> &VersionStats {
        &self.versions[version.index()]
    }

    /// The run in force now: a request routed now belongs to it.
    pub(crate) fn run(&self) -> u64 {
        self.run.load(Ordering::SeqCst)
    }

    /// Whether a request of `run` ends in a later run (and is counted apart).
    fn late(&self, run: u64) -> bool {
        self.run() != run
    }

    /// Counts one answered request of `run`; `by_route`: a route override
    /// sent it.
    pub(crate) fn record(
        &self,
        run: u64,
        version: Version,
        status: StatusClass,
        latency: Duration,
        by_route: bool,
    ) {
        let v = self.of(version);
        if self.late(run) {
            v.carried_over(status == StatusClass::ServerError);
            return;
        }
        // Histogram first, so a reader that takes the counts first never sees
        // more requests than latencies; the routed count last, so it is never
        // ahead of the requests it is a part of.
        v.latency.record(latency);
        v.by_class[status.index()].fetch_add(1, Ordering::Relaxed);
        v.routed(by_route);
    }

    /// A request of `version` has started.
    pub(crate) fn started(&self, version: Version) {
        self.of(version).in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A started request of `version` has ended, answered or not.
    pub(crate) fn ended(&self, version: Version) {
        self.of(version).in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The client of a request of `version` gave up after `waited` without
    /// the version's response head, or with its body stalled: an error of the
    /// version.
    pub(crate) fn timed_out(&self, run: u64, version: Version, waited: Duration, by_route: bool) {
        let v = self.of(version);
        if self.late(run) {
            v.carried_over(true);
            return;
        }
        v.latency.record(waited);
        v.timed_out.fetch_add(1, Ordering::Relaxed);
        v.routed(by_route);
    }

    /// A started request of `version` was abandoned by its client (while the
    /// response body flowed, or while sending its own body): counted on its
    /// own, against neither version's error rate.
    pub(crate) fn cancelled(&self, run: u64, version: Version) {
        let v = self.of(version);
        if self.late(run) {
            v.carried_over(false);
            return;
        }
        v.cancelled.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the proxy has seen, per version, since it started.
pub struct Recorder {
    shards: Box<[Arc<Shard>]>,
    /// A table with a baseline has been in force: the baseline is shown.
    baseline: AtomicBool,
    /// The run in force (see the module docs), shared with the shards.
    run: Arc<AtomicU64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder with every count at zero.
    pub fn new() -> Recorder {
        Recorder::with_shards(1)
    }

    /// A recorder with `n` shards (at least one), for `n` writers on
    /// different cores.
    pub(crate) fn with_shards(n: usize) -> Recorder {
        let run = Arc::new(AtomicU64::new(0));
        Recorder {
            shards: (0..n.max(1))
                .map(|_| Arc::new(Shard::new(run.clone())))
                .collect(),
            baseline: AtomicBool::new(false),
            run,
        }
    }

    /// A new run begins: requests routed from now on are its own, and the
    /// requests still open of earlier runs are, when they end, counted only
    /// as [carried over](VersionSnapshot::carried_over). Returns the new
    /// run's number (the recorder starts in run 0). A snapshot taken after
    /// this call is the start of the new run's figures.
    pub fn begin_run(&self) -> u64 {
        self.run.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The run in force (0 until [`Recorder::begin_run`] is first called).
    pub fn run(&self) -> u64 {
        self.run.load(Ordering::SeqCst)
    }

    /// From now on, snapshots show the baseline (its counts are cumulative
    /// like the others', so once shown it stays). The proxy calls this
    /// before it puts a table with a baseline in force.
    pub fn track_baseline(&self) {
        self.baseline.store(true, Ordering::Relaxed);
    }

    /// The shard for writer `i`.
    pub(crate) fn shard(&self, i: usize) -> Arc<Shard> {
        self.shards[i % self.shards.len()].clone()
    }

    /// Counts one answered request of `version` with its status and latency
    /// (from request received to response fully sent). Does not touch the
    /// in-flight gauge: the proxy's request path pairs that itself.
    pub fn record(&self, version: Version, status: StatusClass, latency: Duration) {
        let shard = &self.shards[0];
        shard.record(shard.run(), version, status, latency, false);
    }

    /// The cumulative figures of each version (the baseline's once
    /// [tracked](Recorder::track_baseline)).
    pub fn snapshot(&self) -> RecorderSnapshot {
        let read = |version| {
            let sum = |f: &dyn Fn(&VersionStats) -> u64| -> u64 {
                self.shards.iter().map(|s| f(s.of(version))).sum()
            };
            let by_class = std::array::from_fn(|i| sum(&|v| v.by_class[i].load(Ordering::Relaxed)));
            let (latency, latency_sum) =
                LatencyBuckets::merged(self.shards.iter().map(|s| &s.of(version).latency));
            VersionSnapshot {
                requests_by_class: by_class,
                in_flight: sum(&|v| v.in_flight.load(Ordering::Relaxed)),
                timed_out: sum(&|v| v.timed_out.load(Ordering::Relaxed)),
                cancelled: sum(&|v| v.cancelled.load(Ordering::Relaxed)),
                routed: sum(&|v| v.routed.load(Ordering::Relaxed)),
                carried_over: sum(&|v| v.carried_over.load(Ordering::Relaxed)),
                carried_over_errors: sum(&|v| v.carried_over_errors.load(Ordering::Relaxed)),
                latency,
                latency_sum,
            }
        };
        RecorderSnapshot {
            stable: read(Version::Stable),
            canary: read(Version::Canary),
            baseline: self
                .baseline
                .load(Ordering::Relaxed)
                .then(|| read(Version::Baseline)),
        }
    }
}

/// Every version's cumulative figures at one moment.
#[derive(Debug, Clone)]
pub struct RecorderSnapshot {
    /// The stable version.
    pub stable: VersionSnapshot,
    /// The canary version.
    pub canary: VersionSnapshot,
    /// The baseline, once a table with one has been in force.
    pub baseline: Option<VersionSnapshot>,
}

impl RecorderSnapshot {
    /// The figures of `version`; none for a baseline never in force.
    pub fn version(&self, version: Version) -> Option<&VersionSnapshot> {
        match version {
            Version::Stable => Some(&self.stable),
            Version::Canary => Some(&self.canary),
            Version::Baseline => self.baseline.as_ref(),
        }
    }
}

/// One version's cumulative figures since the proxy started.
#[derive(Debug, Clone)]
pub struct VersionSnapshot {
    /// Answered requests by status class, indexed like [`StatusClass::ALL`]
    /// (`[1xx, 2xx, 3xx, 4xx, 5xx]`).
    pub requests_by_class: [u64; 5],
    /// Requests started and not yet answered in full.
    pub in_flight: u64,
    /// Requests whose client gave up before the version sent its response
    /// head, or while its response body had been stalled for
    /// [`SILENT_UPSTREAM`](crate::SILENT_UPSTREAM): errors of the version, in
    /// no status class; their latency is the time until the client left.
    pub timed_out: u64,
    /// Requests whose client went away while the response body flowed, or
    /// failed while sending its own body; counted in no class, in no latency
    /// and against neither version.
    pub cancelled: u64,
    /// Of [`requests`](VersionSnapshot::requests) (answered and timed out),
    /// those a route override (a header or cookie match) sent to this
    /// version whatever the weight. The rest are the weight's: the sticky
    /// key's bucket or the exact split.
    pub routed: u64,
    /// Requests routed in an earlier run that ended (answered, timed out or
    /// cancelled) after a later run began: counted here only, in no other
    /// figure, so that no run is credited with another's requests.
    pub carried_over: u64,
    /// Of [`carried_over`](VersionSnapshot::carried_over), those that would
    /// have been errors (5xx or timed out).
    pub carried_over_errors: u64,
    /// Latency of answered and timed-out requests in microseconds, 1 µs to
    /// 60 s, two significant digits.
    pub latency: Histogram<u64>,
    /// Exact sum of the latencies in `latency`.
    pub latency_sum: Duration,
}

impl VersionSnapshot {
    /// Answered requests of one class.
    pub fn requests_of(&self, class: StatusClass) -> u64 {
        self.requests_by_class[class.index()]
    }

    /// All requests judged: answered ones and timed-out ones.
    pub fn requests(&self) -> u64 {
        self.requests_by_class.iter().sum::<u64>() + self.timed_out
    }

    /// Errors: answered with 5xx (the upstream's own, or the proxy's
    /// 502/504), or timed out while the client waited for the version.
    pub fn errors(&self) -> u64 {
        self.requests_of(StatusClass::ServerError) + self.timed_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for (code, class) in [
            (100, StatusClass::Informational),
            (204, StatusClass::Success),
            (308, StatusClass::Redirection),
            (404, StatusClass::ClientError),
            (502, StatusClass::ServerError),
            (599, StatusClass::ServerError),
            (700, StatusClass::ServerError),
        ] {
            assert_eq!(
                StatusClass::of(StatusCode::from_u16(code).unwrap()),
                class,
                "{code}"
            );
        }
        let labels: Vec<_> = StatusClass::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels, ["1xx", "2xx", "3xx", "4xx", "5xx"]);
    }

    #[test]
    fn counts_per_version() {
        let r = Recorder::with_shards(3);
        let (a, b) = (r.shard(0), r.shard(4));
        a.started(Version::Canary);
        a.record(
            0,
            Version::Canary,
            StatusClass::ServerError,
            Duration::from_millis(3),
            true,
        );
        a.ended(Version::Canary);
        b.started(Version::Canary);
        r.record(
            Version::Stable,
            StatusClass::Success,
            Duration::from_millis(1),
        );
        b.record(
            0,
            Version::Stable,
            StatusClass::Success,
            Duration::from_millis(2),
            false,
        );
        a.started(Version::Stable);
        a.cancelled(0, Version::Stable);
        a.ended(Version::Stable);
        b.started(Version::Canary);
        b.timed_out(0, Version::Canary, Duration::from_secs(2), true);
        b.ended(Version::Canary);
        let s = r.snapshot();
        assert!(s.baseline.is_none(), "no baseline was ever in force");
        assert_eq!((s.stable.routed, s.canary.routed), (0, 2));
        assert_eq!(s.stable.requests(), 2);
        assert_eq!(s.stable.errors(), 0);
        assert_eq!(s.stable.cancelled, 1);
        assert_eq!(s.stable.in_flight, 0);
        assert_eq!(s.stable.latency.len(), 2);
        assert_eq!(s.stable.latency_sum, Duration::from_millis(3));
        assert_eq!(s.canary.requests(), 2);
        assert_eq!(s.canary.errors(), 2);
        assert_eq!(s.canary.timed_out, 1);
        assert_eq!(s.canary.cancelled, 0);
        assert_eq!(s.canary.latency.len(), 2);
        assert!(s.canary.latency.max() >= 1_990_000);
        assert_eq!(s.canary.in_flight, 1);
        assert_eq!(
            s.version(Version::Canary)
                .map(|v| v.requests_of(StatusClass::ServerError)),
            Some(1)
        );
        assert!(s.version(Version::Baseline).is_none());
    }

    #[test]
    fn the_baseline_is_counted_apart_and_shown_once_tracked() {
        let r = Recorder::with_shards(2);
        r.track_baseline();
        let a = r.shard(1);
        a.started(Version::Baseline);
        a.record(
            0,
            Version::Baseline,
            StatusClass::ClientError,
            Duration::from_millis(4),
            false,
        );
        a.ended(Version::Baseline);
        a.started(Version::Baseline);
        a.timed_out(0, Version::Baseline, Duration::from_secs(1), false);
        a.ended(Version::Baseline);
        let s = r.snapshot();
        let b = s.baseline.as_ref().expect("tracked");
        assert_eq!((b.requests(), b.errors(), b.routed), (2, 1, 0));
        assert_eq!(b.requests_of(StatusClass::ClientError), 1);
        assert_eq!(b.in_flight, 0);
        assert_eq!(b.latency.len(), 2);
        assert_eq!(s.stable.requests() + s.canary.requests(), 0);
        assert_eq!(s.version(Version::Baseline).map(|v| v.timed_out), Some(1));
    }

    #[test]
    fn a_request_counts_in_the_run_it_was_routed_in() {
        let r = Recorder::with_shards(2);
        let (a, b) = (r.shard(0), r.shard(1));
        let ms = Duration::from_millis;
        // Run 0: three canary requests routed, one answered in run 0.
        let routed_in_0 = a.run();
        assert_eq!(routed_in_0, 0);
        for s in [&a, &b, &b] {
            s.started(Version::Canary);
        }
        a.record(
            routed_in_0,
            Version::Canary,
            StatusClass::ServerError,
            ms(5),
            false,
        );
        a.ended(Version::Canary);

        assert_eq!(r.begin_run(), 1);
        let start = r.snapshot();
        assert_eq!((r.run(), start.canary.requests()), (1, 1));
        // The two of run 0 end in run 1: a 500 and a timeout, carried over.
        b.record(
            routed_in_0,
            Version::Canary,
            StatusClass::ServerError,
            ms(900),
            true,
        );
        b.ended(Version::Canary);
        b.timed_out(routed_in_0, Version::Canary, ms(2_000), false);
        b.ended(Version::Canary);
        // One of run 1, routed and answered in it.
        let routed_in_1 = b.run();
        b.started(Version::Canary);
        b.record(
            routed_in_1,
            Version::Canary,
            StatusClass::Success,
            ms(3),
            false,
        );
        b.ended(Version::Canary);
        // And a stable one of run 0, cancelled in run 1.
        a.started(Version::Stable);
        a.cancelled(routed_in_0, Version::Stable);
        a.ended(Version::Stable);

        let now = r.snapshot();
        let c = &now.canary;
        assert_eq!(c.requests() - start.canary.requests(), 1, "run 1's own");
        assert_eq!(
            c.errors() - start.canary.errors(),
            0,
            "none of run 0's errors"
        );
        assert_eq!(c.latency.len() - start.canary.latency.len(), 1);
        assert_eq!((c.routed, c.timed_out), (0, 0));
        assert_eq!((c.carried_over, c.carried_over_errors), (2, 2));
        assert_eq!(c.in_flight, 0, "every started request ended");
        assert_eq!(now.stable.cancelled, 0);
        assert_eq!(now.stable.carried_over, 1);
        assert_eq!(now.stable.carried_over_errors, 0);
    }
}
