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
pub fn totals(v: &VersionSnapshot, bounds_ms: &[f64]) -> Totals {
    Totals {
        requests: v.requests(),
        errors: v.errors(),
        le_ms: bounds_ms.to_vec(),
        counts: bounds_ms
            .iter()
            .map(|&le| v.latency.count_between(0, (le * 1000.0).round() as u64))
            .collect(),
    }
}

impl MetricSource for BuiltinSource {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let s = self.proxy.recorder().snapshot();
        let snapshot = Snapshot {
            stable: totals(&s.stable, &self.bounds_ms),
            canary: totals(&s.canary, &self.bounds_ms),
        };
        Box::pin(async move { Ok(snapshot) })
    }
}
