//! Metric sources: cumulative per-version totals (requests, errors, latency
//! histogram) read every interval. The judge takes differences itself.

pub mod builtin;
pub mod nginx_log;
pub mod prometheus;

use crate::controller::driver::BoxFuture;
use crate::error::Error;

/// One version's totals since the source started counting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Of which errors (5xx or upstream failure).
    pub errors: u64,
    /// Latency bucket upper bounds, in milliseconds, ascending.
    pub le_ms: Vec<f64>,
    /// `counts[i]`: requests that took at most `le_ms[i]` (cumulative).
    pub counts: Vec<u64>,
}

impl Totals {
    /// The numbers of the interval between `earlier` and `self`: request and
    /// error deltas, and quantiles of the bucket deltas. `None` where counters
    /// went backwards or the buckets changed (the caller decides what that
    /// means; the judge reports it).
    pub fn since(&self, earlier: &Totals) -> Option<crate::store::VersionSample> {
        let requests = self.requests.checked_sub(earlier.requests)?;
        let errors = self.errors.checked_sub(earlier.errors)?;
        let deltas: Option<Vec<u64>> = if earlier.counts.is_empty() && earlier.requests == 0 {
            Some(self.counts.clone())
        } else if earlier.le_ms == self.le_ms {
            self.counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.checked_sub(*b))
                .collect()
        } else {
            None
        };
        let deltas = deltas?;
        let q = |p: f64| quantile(&self.le_ms, &deltas, requests, p);
        Some(crate::store::VersionSample {
            requests,
            errors,
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        })
    }
}

/// The `p` quantile of `total` requests whose cumulative bucket counts are
/// `counts` (at most `le_ms[i]`), interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does. Requests beyond the last bound are
/// reported at the last bound (a lower limit). `None` without requests.
pub fn quantile(le_ms: &[f64], counts: &[u64], total: u64, p: f64) -> Option<f64> {
    serin_analysis::Histogram {
        le_ms: le_ms.to_vec(),
        counts: counts.to_vec(),
    }
    .quantile(total, p)
}

/// Both versions' totals at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Stable.
    pub stable: Totals,
    /// Canary.
    pub canary: Totals,
    /// Custom business metrics (`analysis.custom`), in the rollout file's
    /// order: cumulative numerator and denominator as (stable, canary),
    /// never going backwards (the source carries counter resets). Sources
    /// that cannot query them (the built-in recorder, nginx's access log)
    /// leave it empty, which the judge reports as no data for a configured
    /// custom metric.
    pub custom: Vec<(serin_analysis::Ratio, serin_analysis::Ratio)>,
}

/// Where the judge's numbers come from.
pub trait MetricSource: Send {
    /// Cumulative totals now, or why there are none (which the judge treats
    /// as no data — never as a pass).
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>>;

    /// Cumulative client errors (4xx) as (stable, canary) in the snapshot
    /// last returned, if the source counts them; the judge's 4xx check is
    /// skipped without them.
    fn client_errors(&self) -> Option<(u64, u64)> {
        None
    }
}

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
    fn interval_numbers_come_from_deltas() {
        let le = vec![10.0, 20.0, 40.0];
        let a = Totals {
            requests: 100,
            errors: 1,
            le_ms: le.clone(),
            counts: vec![50, 90, 100],
        };
        let b = Totals {
            requests: 200,
            errors: 11,
            le_ms: le.clone(),
            counts: vec![60, 180, 200],
        };
        let s = b.since(&a).unwrap();
        assert_eq!((s.requests, s.errors), (100, 10));
        // Deltas: 10 at <=10, 80 in (10,20], 10 in (20,40]. Median rank 50:
        // in the second bucket, (50-10)/80 of the way from 10 to 20.
        assert!((s.p50_ms.unwrap() - 15.0).abs() < 1e-9);
        assert!((s.p95_ms.unwrap() - 30.0).abs() < 1e-9);
        let backwards = Totals {
            requests: 50,
            ..b.clone()
        };
        assert!(backwards.since(&b).is_none());
    }

    #[test]
    fn quantile_edges() {
        assert_eq!(quantile(&[1.0], &[0], 0, 0.5), None);
        assert_eq!(
            quantile(&[1.0, 2.0], &[0, 0], 10, 0.5),
            Some(2.0),
            "all beyond the last bound"
        );
        assert_eq!(quantile(&[1.0, 2.0], &[10, 10], 10, 0.99), Some(0.99));
    }
    #[test]
    fn bounds_ascend_and_cover_a_minute() {
        let b = super::default_bounds_ms();
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(b.first(), Some(&0.1));
        assert_eq!(b.last(), Some(&50_000.0));
        assert!(b.contains(&1000.0) && b.contains(&1.5));
    }
}
