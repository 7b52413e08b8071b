//! A lock-free latency histogram with the same buckets as an HDR histogram of
//! two significant digits, turned into a real `hdrhistogram::Histogram` only
//! when someone reads it.
//!
//! `hdrhistogram` records through `&mut self`, which would put a lock on every
//! request. Here recording is one relaxed `fetch_add` on a bucket chosen with a
//! few shifts, and the buckets are laid out exactly as HDR lays out its counts
//! for `sigfig = 2` (unit resolution up to 255, then 128 sub-buckets per power
//! of two), so converting loses nothing. Memory is fixed: about 2,500 counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency kept apart, in microseconds (60 s); slower ones count as 60 s.
pub const MAX_MICROS: u64 = 60_000_000;
/// Significant decimal digits of the snapshot histogram.
pub const SIGFIG: u8 = 2;

/// Sub-buckets per power of two: `2^SUB_BITS`.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for values up to `MAX_MICROS` (its top bit is bit 25).
const BUCKETS: usize = index(MAX_MICROS) + 1;
const _: () = assert!(BUCKETS < 2600, "fixed memory: about 20 KB per version");

/// Index of the bucket holding `v` microseconds.
const fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let top = 63 - v.leading_zeros();
    let shift = top - SUB_BITS;
    let mantissa = v >> shift;
    (SUB + shift as u64 * SUB + (mantissa - SUB)) as usize
}

/// The smallest value that falls into bucket `i`.
const fn lowest_value(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let mantissa = SUB + (i - SUB) % SUB;
    mantissa << shift
}

/// Latencies of one version: counts per bucket and an exact sum.
pub(crate) struct LatencyBuckets {
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl LatencyBuckets {
    pub(crate) fn new() -> LatencyBuckets {
        LatencyBuckets {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Adds one observation; never blocks, never allocates.
    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .min(MAX_MICROS);
        self.counts[index(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The latencies recorded in all of `parts` as one HDR histogram
    /// (microseconds, 1 µs to 60 s, two significant digits), and their exact sum.
    pub(crate) fn merged<'a>(
        parts: impl Iterator<Item = &'a LatencyBuckets> + Clone,
    ) -> (Histogram<u64>, Duration) {
        let mut h = empty_histogram();
        for i in 0..BUCKETS {
            let n: u64 = parts
                .clone()
                .map(|p| p.counts[i].load(Ordering::Relaxed))
                .sum();
            if n > 0 {
                // In range by construction: lowest_value(i) <= MAX_MICROS.
                h.saturating_record_n(lowest_value(i), n);
            }
        }
        let sum = parts.map(|p| p.sum_micros.load(Ordering::Relaxed)).sum();
        (h, Duration::from_micros(sum))
    }
}

/// An empty histogram with the recorder's bounds and precision.
pub fn empty_histogram() -> Histogram<u64> {
    // Bounds and precision are constants that hdrhistogram accepts (high >= 2 *
    // low, sigfig <= 5); a failure here is a programming error caught by tests.
    Histogram::new_with_bounds(1, MAX_MICROS, SIGFIG).expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_match_hdr() {
        let h = empty_histogram();
        let mut prev = 0;
        for v in [
            0u64, 1, 127, 128, 255, 256, 257, 511, 512, 1000, 4097, 65_537, 1_234_567, MAX_MICROS,
        ] {
            let i = index(v);
            assert!(i >= prev);
            prev = i;
            assert!(lowest_value(i) <= v, "{v}");
            assert!(index(lowest_value(i)) == i, "{v}");
            // Same bucket as HDR: both map v and our bucket's floor together.
            assert!(
                h.equivalent(v, lowest_value(i)),
                "{v} vs {}",
                lowest_value(i)
            );
        }
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(lowest_value(i + 1) - 1), i, "gap after bucket {i}");
        }
        assert_eq!(index(MAX_MICROS), BUCKETS - 1);
    }

    #[test]
    fn snapshot_keeps_counts_quantiles_and_sum() {
        let b = LatencyBuckets::new();
        for ms in 1..=100u64 {
            b.record(Duration::from_millis(ms));
        }
        b.record(Duration::from_secs(3600));
        let (h, sum) = LatencyBuckets::merged(std::iter::once(&b));
        assert_eq!(h.len(), 101);
        let p50 = h.value_at_quantile(0.5);
        assert!((50_000..=51_500).contains(&p50), "{p50}");
        assert!(h.max() >= MAX_MICROS * 99 / 100);
        assert_eq!(
            sum,
            Duration::from_millis(5050) + Duration::from_micros(MAX_MICROS)
        );
    }
}
