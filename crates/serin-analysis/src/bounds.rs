//! What a metric may plausibly say. Metric sources are not trusted: a
//! counter that saturates, is not a number, or rises faster than any
//! service could answer makes its interval *no data*, never traffic. Every
//! bound lives here, used by the judge and by the metric sources that read
//! floating-point counters (Prometheus).
//!
//! - a count is a whole number of at most [`MAX_COUNT`] (2^53: above it an
//!   `f64` counter cannot count single requests any more);
//! - a counter rises by at most [`MAX_PER_SECOND`] per second of the
//!   interval (an interval shorter than a second counts as one second).

use crate::observation::ObservationError;

/// The largest count believed: 2^53, the largest integer up to which every
/// whole number is exact in an `f64` (Prometheus' counters are `f64`).
pub const MAX_COUNT: u64 = 1 << 53;

/// The largest rise per second believed of any counter of one version:
/// ten million requests per second, well above the largest single service.
pub const MAX_PER_SECOND: f64 = 1e7;

/// The largest rise believed in `seconds` (at least one second's worth).
pub fn max_rise(seconds: f64) -> f64 {
    let s = if seconds.is_finite() && seconds > 1.0 {
        seconds
    } else {
        1.0
    };
    MAX_PER_SECOND * s
}

/// Whether a rise of `rise` in `seconds` is believable.
pub fn rise_ok(rise: f64, seconds: f64) -> bool {
    rise <= max_rise(seconds)
}

/// A counter value read as an `f64` (Prometheus' sample values) as a count:
/// finite, not negative, at most [`MAX_COUNT`]. Fractions are rounded
/// (`rate`-free counters are whole; sums of them stay whole). The error
/// names `what`.
pub fn count(what: &str, value: f64) -> Result<u64, ObservationError> {
    if value.is_finite() && value >= 0.0 && value <= MAX_COUNT as f64 {
        Ok(value.round() as u64)
    } else {
        Err(ObservationError::Implausible {
            what: what.to_string(),
            why: format!(
                "is {value}, expected a count from 0 to 2^53 (a saturated or broken counter)"
            ),
        })
    }
}

/// Checks a whole count against [`MAX_COUNT`]; the error names `what`.
pub(crate) fn bounded(what: impl Fn() -> String, value: u64) -> Result<(), ObservationError> {
    if value <= MAX_COUNT {
        Ok(())
    } else {
        Err(ObservationError::Implausible {
            what: what(),
            why: format!("is {value}, above 2^53 (a saturated or broken counter)"),
        })
    }
}

/// Checks that `what` rose by no more than [`max_rise`] in `seconds`.
pub(crate) fn rise(
    what: impl Fn() -> String,
    by: u64,
    seconds: f64,
) -> Result<(), ObservationError> {
    if rise_ok(by as f64, seconds) {
        Ok(())
    } else {
        Err(ObservationError::Implausible {
            what: what(),
            why: format!(
                "rose by {by} in {} s, more than 10^7 a second could give",
                format_seconds(seconds)
            ),
        })
    }
}

fn format_seconds(s: f64) -> String {
    if s >= 10.0 || s == s.round() {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_finite_whole_and_below_2_to_the_53() {
        assert_eq!(count("x", 12.0), Ok(12));
        assert_eq!(count("x", 9_007_199_254_740_992.0), Ok(MAX_COUNT));
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e30, 1.8446744073709552e19] {
            let e = count("canary requests", bad).unwrap_err();
            assert!(e.to_string().starts_with("canary requests is "), "{e}");
        }
        assert!(bounded(|| "x".into(), MAX_COUNT + 1).is_err());
    }

    #[test]
    fn rises_are_bounded_by_the_interval() {
        assert!(rise(|| "x".into(), 20_000_000, 2.0).is_ok());
        assert!(rise(|| "x".into(), 20_000_001, 2.0).is_err());
        // Less than a second, or no time at all, counts as a second.
        assert!(rise(|| "x".into(), 10_000_000, 0.0).is_ok());
        let e = rise(|| "canary requests".into(), 1_000_000_000_000, 2.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "canary requests rose by 1000000000000 in 2 s, more than 10^7 a second could give"
        );
    }
}
