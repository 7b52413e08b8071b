//! Metric sources, behind [`crate::controller::seams::MetricSource`]:
//! cumulative per-version totals (requests, errors, 4xx, latency histogram)
//! read every interval. The judge takes differences itself.

pub mod builtin;
pub mod nginx_log;
pub mod prometheus;

use crate::controller::seams::{BoxFuture, MetricSource, Snapshot};
use crate::error::Error;

/// A source that has nothing to read: every interval is no data (so the
/// rollout rolls back after `noDataLimit`, never promotes blind).
pub struct Unavailable(pub Error);

impl MetricSource for Unavailable {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>> {
        let why = self.0.clone();
        Box::pin(async move { Err(why) })
    }
}

/// Latency bucket bounds (ms) used by sources that can choose them: 1-1.5-2-3-5-7
/// per decade from 0.1 ms to 60 s, fine enough for quantiles and for the
/// judge's per-boundary tail tests.
pub fn default_bounds_ms() -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade: f64 = 0.1;
    while decade < 100_000.0 {
        for m in [1.0, 1.5, 2.0, 3.0, 5.0, 7.0] {
            let b = decade * m;
            if b <= 60_000.0 + 1e-9 {
                out.push((b * 1000.0).round() / 1000.0);
            }
        }
        decade *= 10.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_ascend_and_cover_a_minute() {
        let b = default_bounds_ms();
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(b.first(), Some(&0.1));
        assert_eq!(b.last(), Some(&50_000.0));
        assert!(b.contains(&1000.0) && b.contains(&1.5));
    }
}
