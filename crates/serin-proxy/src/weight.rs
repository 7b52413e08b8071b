//! The canary weight and the versions (stable, canary, and an optional fresh
//! baseline of the stable): the words every other part uses.

use std::fmt;

/// The share of requests, in percent with two decimals, that go to the canary.
///
/// Stored as hundredths of a percent (`0..=10_000`), so `5.25 %` is exactly
/// `525` and comparisons never suffer from floating point. Validated once, at
/// construction; every holder of a `Weight` may rely on the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u16);

/// A weight that is not a number from 0 to 100 with at most two decimals.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected a weight from 0 to 100 with at most two decimals, got {0}")]
pub struct WeightError(pub String);

impl Weight {
    /// No traffic on the canary.
    pub const ZERO: Weight = Weight(0);
    /// All traffic on the canary.
    pub const FULL: Weight = Weight(10_000);

    /// From hundredths of a percent (`525` is 5.25 %).
    pub fn from_hundredths(h: u16) -> Result<Weight, WeightError> {
        if h <= 10_000 {
            Ok(Weight(h))
        } else {
            Err(WeightError(format!("{}.{:02}", h / 100, h % 100)))
        }
    }

    /// From a percentage such as `25` or `5.25`. More than two decimals, NaN,
    /// negative values and values above 100 are refused rather than rounded:
    /// a user who writes 5.125 meant something serin cannot do exactly.
    pub fn from_percent(pct: f64) -> Result<Weight, WeightError> {
        let hundredths = pct * 100.0;
        let rounded = hundredths.round();
        if !pct.is_finite()
            || !(0.0..=10_000.0).contains(&rounded)
            || (hundredths - rounded).abs() > 1e-6
        {
            return Err(WeightError(pct.to_string()));
        }
        Ok(Weight(rounded as u16))
    }

    /// Hundredths of a percent, `0..=10_000`.
    pub fn hundredths(self) -> u16 {
        self.0
    }

    /// The weight in percent, for display and JSON.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// The share as a fraction of 1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// The baseline's share when this is the canary's and the table has a
    /// baseline: the canary's own share, so the two are compared on equal
    /// footing, but never more than what the canary leaves (`min(w, 100 − w)`).
    /// Up to 50 % the stable keeps `100 − 2w`; above, the stable gets nothing
    /// and the baseline (the stable's version, started fresh) the rest.
    pub fn baseline_share(self) -> Weight {
        Weight(self.0.min(10_000 - self.0))
    }
}

impl std::str::FromStr for Weight {
    type Err = WeightError;

    /// Parses `25`, `5.25` or `25%`.
    fn from_str(s: &str) -> Result<Weight, WeightError> {
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim();
        let pct: f64 = t.parse().map_err(|_| WeightError(format!("`{s}`")))?;
        Weight::from_percent(pct)
    }
}

impl fmt::Display for Weight {
    /// `25`, `5.25`, `0.5`: no trailing zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}"),
            f10 if f10 % 10 == 0 => write!(f, "{whole}.{}", f10 / 10),
            _ => write!(f, "{whole}.{frac:02}"),
        }
    }
}

/// Which version of the service serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The version in production before the rollout.
    Stable,
    /// The new version being rolled out.
    Canary,
    /// The stable's version, started fresh beside the canary and given the
    /// canary's share ([`Weight::baseline_share`]), so that the canary is
    /// compared with something as young as itself. Only in a table with a
    /// baseline upstream, and reached by the weight only (never by a route).
    Baseline,
}

impl Version {
    /// Every version: stable, canary, baseline.
    pub const ALL: [Version; 3] = [Version::Stable, Version::Canary, Version::Baseline];

    /// The label value used in metrics and JSON: `stable`, `canary` or
    /// `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
            Version::Baseline => "baseline",
        }
    }

    /// The index of per-version arrays (`0..3`, in [`Version::ALL`]'s order).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_two_decimals() {
        for (input, hundredths, shown) in [
            ("0", 0, "0"),
            ("5", 500, "5"),
            ("5.25", 525, "5.25"),
            ("0.5", 50, "0.5"),
            ("25%", 2500, "25"),
            ("100", 10_000, "100"),
        ] {
            let w: Weight = input.parse().unwrap();
            assert_eq!(w.hundredths(), hundredths, "{input}");
            assert_eq!(w.to_string(), shown, "{input}");
        }
    }

    #[test]
    fn refuses_out_of_range_and_extra_precision() {
        for bad in ["-1", "100.01", "101", "5.125", "NaN", "inf", "abc", ""] {
            assert!(bad.parse::<Weight>().is_err(), "{bad} should be refused");
        }
        assert!(Weight::from_hundredths(10_001).is_err());
    }

    #[test]
    fn the_baseline_gets_the_canarys_share_up_to_what_the_canary_leaves() {
        for (w, b) in [
            (0, 0),
            (1, 1),
            (500, 500),
            (5000, 5000),
            (6000, 4000),
            (10_000, 0),
        ] {
            let share = Weight::from_hundredths(w).unwrap().baseline_share();
            assert_eq!(share.hundredths(), b, "{w}");
        }
        for (i, v) in Version::ALL.into_iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        assert_eq!(Version::Baseline.to_string(), "baseline");
    }
}
