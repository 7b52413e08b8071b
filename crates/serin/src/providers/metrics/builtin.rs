//! The built-in proxy's recorder as a metric source: read in-process, no
//! scrape lag, no window to misalign.

use std::sync::Arc;

use serin_proxy::{Proxy, VersionSnapshot};

use super::{MetricSource, Snapshot, Totals, default_bounds_ms};
use crate::controller::driver::BoxFuture;

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

/// One version's recorder figures as totals with `bounds_ms` buckets.
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
        le_ms: bounds_ms.to_vec(),
        counts: bounds_ms
            .iter()
            .map(|&le| {
                v.latency
                    .count_between(0, (le * 1000.0).round() as u64)
                    .min(requests)
            })
            .collect(),
    }
}

impl MetricSource for BuiltinSource {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let s = self.proxy.recorder().snapshot();
        let snapshot = Snapshot {
            stable: totals(&s.stable, &self.bounds_ms),
            canary: totals(&s.canary, &self.bounds_ms),
            custom: Vec::new(),
        };
        Box::pin(async move { Ok(snapshot) })
    }
}
