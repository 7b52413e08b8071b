//! The built-in proxy's recorder as a metric source: read in-process, no
//! scrape lag, no window to misalign.
//!
//! Errors are the recorder's [`VersionSnapshot::errors`]: 5xx (the upstream's
//! own and the proxy's 502/504) and timeouts (requests whose client gave up
//! waiting for the version's response head). Requests cancelled by a client
//! after the head came are in neither requests nor errors.
//!
//! A proxy with a baseline ([`serin_proxy::RoutingTable::with_baseline`])
//! has the baseline's totals too, and every snapshot says how many of each
//! version's requests a route override sent ([`Snapshot::routed`]).

use std::sync::Arc;

use serin_analysis::{Histogram, Totals};
use serin_proxy::{Proxy, StatusClass, VersionSnapshot};

use super::default_bounds_ms;
use crate::controller::seams::{BoxFuture, MetricSource, Snapshot};
use crate::error::Error;

/// Reads an in-process [`Proxy`]'s recorder.
pub struct BuiltinSource {
    proxy: Arc<Proxy>,
    bounds_ms: Vec<f64>,
}

impl BuiltinSource {
    /// A source over `proxy`.
    pub fn new(proxy: Arc<Proxy>) -> BuiltinSource {
        BuiltinSource {
            proxy,
            bounds_ms: default_bounds_ms(),
        }
    }
}

/// One version's recorder figures as totals with `bounds_ms` buckets; timed
/// out requests count as requests and errors, with the time waited as
/// latency; 4xx answers are its client errors.
///
/// The recorder's counters and histogram are read one after the other while
/// requests go on, so the histogram may already hold a request the counters
/// do not: bucket counts are capped at the request total (the request shows
/// up in full at the next read).
pub fn totals(v: &VersionSnapshot, bounds_ms: &[f64]) -> Totals {
    let requests = v.requests();
    Totals {
        requests,
        errors: v.errors(),
        client_errors: Some(v.requests_of(StatusClass::ClientError)),
        latency: Some(Histogram {
            le_ms: bounds_ms.to_vec(),
            counts: bounds_ms
                .iter()
                .map(|&le| {
                    v.latency
                        .count_between(0, (le * 1000.0).round() as u64)
                        .min(requests)
                })
                .collect(),
        }),
    }
}

impl MetricSource for BuiltinSource {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>> {
        let s = self.proxy.recorder().snapshot();
        let snapshot = Snapshot {
            stable: totals(&s.stable, &self.bounds_ms),
            canary: totals(&s.canary, &self.bounds_ms),
            baseline: s.baseline.as_ref().map(|b| totals(b, &self.bounds_ms)),
            routed: Some((
                s.stable.routed.min(s.stable.requests()),
                s.canary.routed.min(s.canary.requests()),
            )),
            custom: Vec::new(),
            canary_in_flight: Some(s.canary.in_flight),
        };
        Box::pin(async move { Ok(snapshot) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_proxy::{ProxyOptions, RoutingTable, Upstream, Version, Weight};

    #[tokio::test]
    async fn the_baseline_is_reported_when_the_proxy_has_one() {
        let at = |baseline: Option<&str>| {
            let table = RoutingTable::new(
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                Weight::from_percent(5.0).unwrap(),
            )
            .unwrap()
            .with_baseline(baseline.map(|b| Upstream::parse(b).unwrap()));
            Proxy::new(table, ProxyOptions::default())
        };
        let without = at(None);
        let s = BuiltinSource::new(without).snapshot().await.unwrap();
        assert_eq!((s.baseline, s.routed), (None, Some((0, 0))));

        let with = at(Some("http://127.0.0.1:3"));
        let d = std::time::Duration::from_millis(3);
        with.recorder()
            .record(Version::Baseline, StatusClass::ServerError, d);
        with.recorder()
            .record(Version::Baseline, StatusClass::Success, d);
        with.recorder()
            .record(Version::Canary, StatusClass::Success, d);
        let s = BuiltinSource::new(with).snapshot().await.unwrap();
        let b = s.baseline.expect("the proxy has a baseline");
        assert_eq!((b.requests, b.errors, b.client_errors), (2, 1, Some(0)));
        assert_eq!((s.canary.requests, s.stable.requests), (1, 0));
        assert_eq!(s.routed, Some((0, 0)));
    }

    #[test]
    fn timed_out_requests_reach_the_judge_as_errors() {
        let mut latency = serin_proxy::empty_histogram();
        for micros in [2_000, 3_000, 2_500_000, 2_600_000] {
            latency.record(micros).unwrap();
        }
        let v = VersionSnapshot {
            requests_by_class: [0, 2, 0, 0, 0],
            in_flight: 0,
            timed_out: 2,
            cancelled: 5,
            routed: 0,
            carried_over: 0,
            carried_over_errors: 0,
            latency,
            latency_sum: std::time::Duration::from_millis(5_105),
        };
        let t = totals(&v, &default_bounds_ms());
        assert_eq!((t.requests, t.errors, t.client_errors), (4, 2, Some(0)));
        // The two waits of 2.5 s and more are above the 1 s bound.
        let h = t.latency.unwrap();
        let at_1s = h.le_ms.iter().position(|&le| le == 1000.0).unwrap();
        assert_eq!(h.counts[at_1s], 2);
        assert_eq!(*h.counts.last().unwrap(), 4);
    }
}
