//! Cumulative latency histograms (Prometheus `le` style): differences between
//! two snapshots, merging, quantiles and tail counts.

use std::fmt;

/// Cumulative latency buckets: `counts[i]` = requests that took at most
/// `le_ms[i]` ms (Prometheus `le` style). `le_ms` is strictly increasing and may
/// end with `f64::INFINITY`. Requests slower than the last finite bound are
/// the owner's request total minus the last count (see [`Histogram::above`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Upper bounds in milliseconds, strictly increasing.
    pub le_ms: Vec<f64>,
    /// Requests at most `le_ms[i]`, non-decreasing in `i`.
    pub counts: Vec<u64>,
}

/// Why a histogram cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum HistogramError {
    /// `le_ms` and `counts` differ in length.
    LengthMismatch {
        /// Number of bounds.
        bounds: usize,
        /// Number of counts.
        counts: usize,
    },
    /// A bound is NaN, negative, or not above the previous one.
    BadBound {
        /// Index of the offending bound.
        index: usize,
    },
    /// `counts[index]` is below `counts[index - 1]`.
    NotCumulative {
        /// Index of the offending count.
        index: usize,
    },
    /// The two histograms have different bounds.
    DifferentBounds,
    /// A count is lower than in the earlier snapshot.
    Backwards {
        /// Bound (ms) whose count went down.
        le_ms: f64,
        /// Earlier count.
        before: u64,
        /// Later count.
        after: u64,
    },
}

impl fmt::Display for HistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthMismatch { bounds, counts } => write!(
                f,
                "latency histogram has {bounds} bounds but {counts} counts (expected one count per bound)"
            ),
            Self::BadBound { index } => write!(
                f,
                "latency histogram bound #{index} is not a number above the previous bound (expected strictly increasing, non-negative bounds)"
            ),
            Self::NotCumulative { index } => write!(
                f,
                "latency histogram count #{index} is below the previous count (expected cumulative counts)"
            ),
            Self::DifferentBounds => write!(
                f,
                "latency histograms have different bucket bounds (expected the same bounds in every snapshot)"
            ),
            Self::Backwards {
                le_ms,
                before,
                after,
            } => write!(
                f,
                "latency bucket le={le_ms} ms went backwards from {before} to {after}"
            ),
        }
    }
}

impl std::error::Error for HistogramError {}

impl Histogram {
    /// A histogram with the given bounds and all counts zero.
    pub fn empty(le_ms: Vec<f64>) -> Histogram {
        let counts = vec![0; le_ms.len()];
        Histogram { le_ms, counts }
    }

    /// Builds a cumulative histogram from per-bucket (non-cumulative) counts.
    pub fn from_bucket_counts(le_ms: Vec<f64>, per_bucket: &[u64]) -> Histogram {
        let mut sum = 0u64;
        let counts = per_bucket
            .iter()
            .map(|c| {
                sum = sum.saturating_add(*c);
                sum
            })
            .collect();
        Histogram { le_ms, counts }
    }

    /// Checks the shape: as many counts as bounds, bounds strictly
    /// increasing and non-negative, counts non-decreasing.
    pub fn validate(&self) -> Result<(), HistogramError> {
        if self.le_ms.len() != self.counts.len() {
            return Err(HistogramError::LengthMismatch {
                bounds: self.le_ms.len(),
                counts: self.counts.len(),
            });
        }
        for (i, &b) in self.le_ms.iter().enumerate() {
            let above_previous = i == 0 || b > self.le_ms[i - 1];
            if b.is_nan() || b < 0.0 || !above_previous {
                return Err(HistogramError::BadBound { index: i });
            }
        }
        for i in 1..self.counts.len() {
            if self.counts[i] < self.counts[i - 1] {
                return Err(HistogramError::NotCumulative { index: i });
            }
        }
        Ok(())
    }

    /// The requests counted in the last bucket (at most the last bound).
    pub fn counted(&self) -> u64 {
        self.counts.last().copied().unwrap_or(0)
    }

    /// `self - earlier`, bucket by bucket: the histogram of the requests
    /// between two cumulative snapshots. An earlier snapshot without bounds
    /// (nothing recorded yet) counts as all zeros.
    pub fn since(&self, earlier: &Histogram) -> Result<Histogram, HistogramError> {
        if earlier.le_ms.is_empty() && earlier.counts.is_empty() {
            return Ok(self.clone());
        }
        if !same_bounds(&self.le_ms, &earlier.le_ms) || self.counts.len() != earlier.counts.len() {
            return Err(HistogramError::DifferentBounds);
        }
        let mut counts = Vec::with_capacity(self.counts.len());
        for ((&now, &before), &le_ms) in self.counts.iter().zip(&earlier.counts).zip(&self.le_ms) {
            match now.checked_sub(before) {
                Some(d) => counts.push(d),
                None => {
                    return Err(HistogramError::Backwards {
                        le_ms,
                        before,
                        after: now,
                    });
                }
            }
        }
        Ok(Histogram {
            le_ms: self.le_ms.clone(),
            counts,
        })
    }

    /// Adds `other` into `self`. Histograms with different bounds are merged
    /// onto the bounds they share (the only ones at which both cumulative
    /// counts are known exactly); with no shared bound the result is empty.
    pub fn merge(&mut self, other: &Histogram) {
        if self.le_ms.is_empty() && self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        if same_bounds(&self.le_ms, &other.le_ms) {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a = a.saturating_add(*b);
            }
            return;
        }
        let mut le_ms = Vec::new();
        let mut counts = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.le_ms.len() && j < other.le_ms.len() {
            let (a, b) = (self.le_ms[i], other.le_ms[j]);
            if bound_eq(a, b) {
                le_ms.push(a);
                counts.push(self.counts[i].saturating_add(other.counts[j]));
                i += 1;
                j += 1;
            } else if a < b {
                i += 1;
            } else {
                j += 1;
            }
        }
        *self = Histogram { le_ms, counts };
    }

    /// Requests slower than `le_ms[index]`, out of `total` requests.
    pub fn above(&self, index: usize, total: u64) -> u64 {
        total.saturating_sub(self.counts.get(index).copied().unwrap_or(0))
    }

    /// Index of the smallest bound `>= value` (within a relative 1e-9), if any.
    pub fn bound_at_or_above(&self, value: f64) -> Option<usize> {
        self.le_ms
            .iter()
            .position(|&b| b >= value * (1.0 - 1e-9) || bound_eq(b, value))
    }

    /// The `p` quantile (0 < p < 1) of `total` requests, interpolated linearly
    /// inside the bucket that holds it, as Prometheus' `histogram_quantile`
    /// does (the first bucket starts at 0 ms). Requests beyond the last finite
    /// bound are reported at that bound (a lower limit). `None` without
    /// requests or bounds.
    pub fn quantile(&self, total: u64, p: f64) -> Option<f64> {
        if total == 0 || self.le_ms.is_empty() || p.is_nan() {
            return None;
        }
        let last_finite = self.le_ms.iter().rev().find(|b| b.is_finite()).copied();
        let rank = p.clamp(0.0, 1.0) * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for (&le, &count) in self.le_ms.iter().zip(&self.counts) {
            if count as f64 >= rank && count > 0 {
                if !le.is_finite() {
                    return last_finite;
                }
                let in_bucket = count.saturating_sub(below) as f64;
                let frac = if in_bucket > 0.0 {
                    (rank - below as f64) / in_bucket
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * frac.clamp(0.0, 1.0));
            }
            lower = le;
            below = count;
        }
        last_finite
    }
}

fn bound_eq(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same_bounds(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bound_eq(*x, *y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(le: &[f64], counts: &[u64]) -> Histogram {
        Histogram {
            le_ms: le.to_vec(),
            counts: counts.to_vec(),
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 10 at <=10, 80 in (10,20], 10 in (20,40].
        let x = h(&[10.0, 20.0, 40.0], &[10, 90, 100]);
        assert!((x.quantile(100, 0.5).unwrap() - 15.0).abs() < 1e-12);
        assert!((x.quantile(100, 0.95).unwrap() - 30.0).abs() < 1e-12);
        assert!((x.quantile(100, 0.05).unwrap() - 5.0).abs() < 1e-12);
        // 10 requests beyond the last bound: p99 is reported at the bound.
        assert_eq!(x.quantile(110, 0.99), Some(40.0));
        assert_eq!(x.quantile(0, 0.5), None);
        let inf = h(&[10.0, f64::INFINITY], &[5, 10]);
        assert_eq!(inf.quantile(10, 0.9), Some(10.0));
        // Uniform 0..100 ms in buckets of 1 ms: quantiles are exact.
        let le: Vec<f64> = (1..=100).map(f64::from).collect();
        let counts: Vec<u64> = (1..=100).map(|i| i * 7).collect();
        let u = h(&le, &counts);
        for p in [0.01, 0.1, 0.5, 0.95, 0.99] {
            assert!(
                (u.quantile(700, p).unwrap() - 100.0 * p).abs() < 1e-9,
                "p={p}"
            );
        }
    }

    #[test]
    fn since_and_merge_are_exact() {
        let a = h(&[10.0, 20.0, 40.0], &[50, 90, 100]);
        let b = h(&[10.0, 20.0, 40.0], &[60, 180, 200]);
        let d = b.since(&a).unwrap();
        assert_eq!(d.counts, vec![10, 90, 100]);
        let mut m = a.clone();
        m.merge(&d);
        assert_eq!(m, b);
        assert!(matches!(
            a.since(&b),
            Err(HistogramError::Backwards {
                before: 60,
                after: 50,
                ..
            })
        ));
        assert_eq!(
            a.since(&h(&[10.0, 30.0, 40.0], &[0, 0, 0])),
            Err(HistogramError::DifferentBounds)
        );
        assert_eq!(b.since(&Histogram::default()).unwrap(), b);
        // Different bounds: merged on the shared ones.
        let mut c = h(&[10.0, 20.0, 40.0], &[1, 2, 3]);
        c.merge(&h(&[5.0, 20.0, 40.0, 80.0], &[1, 10, 20, 30]));
        assert_eq!(c, h(&[20.0, 40.0], &[12, 23]));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(h(&[1.0, 2.0], &[1, 2]).validate().is_ok());
        assert_eq!(
            h(&[1.0, 2.0], &[1]).validate(),
            Err(HistogramError::LengthMismatch {
                bounds: 2,
                counts: 1
            })
        );
        assert_eq!(
            h(&[2.0, 2.0], &[1, 2]).validate(),
            Err(HistogramError::BadBound { index: 1 })
        );
        assert_eq!(
            h(&[1.0, 2.0], &[3, 2]).validate(),
            Err(HistogramError::NotCumulative { index: 1 })
        );
        let x = h(&[1.0, 2.0, 5.0], &[1, 4, 9]);
        assert_eq!(x.above(1, 10), 6);
        assert_eq!(x.bound_at_or_above(2.0), Some(1));
        assert_eq!(x.bound_at_or_above(2.5), Some(2));
        assert_eq!(x.bound_at_or_above(6.0), None);
    }
}
