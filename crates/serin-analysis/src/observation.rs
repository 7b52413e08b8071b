//! What the judge is given: cumulative totals of both versions, and the
//! differences between two of them.

use crate::bounds;
use crate::histogram::{Histogram, HistogramError};
use std::fmt;

/// Cumulative totals of one version since some start.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Of which errors (HTTP 5xx or upstream failure).
    pub errors: u64,
    /// Of which client errors (HTTP 4xx), if the source counts them.
    pub client_errors: Option<u64>,
    /// Latency histogram of the same requests, if the source has one.
    pub latency: Option<Histogram>,
}

/// A numerator/denominator pair (custom business metric, e.g.
/// checkouts/visits), cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ratio {
    /// Events (e.g. checkouts).
    pub numerator: u64,
    /// Exposure (e.g. visits).
    pub denominator: u64,
}

/// One observation of both versions, cumulative since the rollout started.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// The stable version.
    pub stable: Totals,
    /// The canary version.
    pub canary: Totals,
    /// Custom ratios as (stable, canary), in the order of `Config::custom`;
    /// with `Reference::Baseline`, as (baseline, canary).
    pub custom: Vec<(Ratio, Ratio)>,
    /// When it was taken, in seconds from any fixed origin (the live
    /// analysis' clock, `serin analyze`'s `t`). With it, counters that rise
    /// faster than any service could answer are refused (see `bounds`);
    /// without it only the counts themselves are bounded.
    pub at: Option<f64>,
    /// Requests (stable, canary) that a header or cookie route sent to a
    /// version whatever the weight, cumulative like the totals (`None`: no
    /// routes). Split verification leaves them out; nothing else uses them.
    pub routed: Option<(u64, u64)>,
    /// The baseline (a fresh instance of the stable's version given the
    /// canary's share), when the rollout has one. With
    /// `Reference::Baseline` the relative checks compare the canary with
    /// it, and the baseline itself is checked against the stable (a
    /// baseline worse than the stable is no fair reference).
    pub baseline: Option<Totals>,
}

/// Why two observations cannot be subtracted.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservationError {
    /// A counter is lower than in the earlier observation (counters never
    /// go backwards; a reset must be handled by the metric source).
    Backwards {
        /// Which counter, e.g. `canary requests`.
        what: String,
        /// Earlier value.
        before: u64,
        /// Later value.
        after: u64,
    },
    /// More errors than requests, or more histogram counts than requests.
    Inconsistent {
        /// What is inconsistent.
        what: String,
    },
    /// A latency histogram is malformed or changed its buckets.
    Histogram {
        /// `stable` or `canary`.
        version: &'static str,
        /// The problem.
        error: HistogramError,
    },
    /// A counter says something no service could: saturated, beyond 2^53,
    /// or rising faster than 10^7 a second. The observation is missing
    /// data, never traffic.
    Implausible {
        /// Which counter, e.g. `canary requests`.
        what: String,
        /// What it did.
        why: String,
    },
    /// The number of custom ratios changed.
    CustomCount {
        /// Earlier count.
        before: usize,
        /// Later count.
        after: usize,
    },
}

impl fmt::Display for ObservationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backwards {
                what,
                before,
                after,
            } => write!(
                f,
                "{what} went backwards from {before} to {after} (expected cumulative counters that never decrease)"
            ),
            Self::Inconsistent { what } => write!(f, "inconsistent totals: {what}"),
            Self::Implausible { what, why } => write!(f, "{what} {why}"),
            Self::Histogram { version, error } => write!(f, "{version}: {error}"),
            Self::CustomCount { before, after } => write!(
                f,
                "the number of custom ratios changed from {before} to {after} (expected the same metrics in every observation)"
            ),
        }
    }
}

impl std::error::Error for ObservationError {}

/// Checks that `current` can follow `previous`: no counter went backwards,
/// histograms keep their buckets, totals are consistent. Used by
/// `serin analyze`, where counters going backwards are an error, not a reset.
pub fn check(previous: &Observation, current: &Observation) -> Result<(), ObservationError> {
    current.validate()?;
    current.since(previous).map(|_| ())
}

/// The requests of one version between two observations.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct VersionDelta {
    pub requests: u64,
    pub errors: u64,
    /// `None` unless both observations counted 4xx.
    pub client_errors: Option<u64>,
    /// `None` if either observation had no histogram.
    pub latency: Option<Histogram>,
    /// Requests the latency delta covers (the judge widens it when the
    /// earlier histogram is older than the earlier request count).
    pub latency_requests: u64,
}

/// Everything between two observations.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Delta {
    pub stable: VersionDelta,
    pub canary: VersionDelta,
    pub custom: Vec<(Ratio, Ratio)>,
    /// Requests (stable, canary) sent by routes in the interval, `None`
    /// when that is unknown (the routed counters went backwards, or began
    /// to be reported after the first requests): split verification then
    /// leaves the interval out.
    pub routed: Option<(u64, u64)>,
}

fn sub(what: impl Fn() -> String, before: u64, after: u64) -> Result<u64, ObservationError> {
    after
        .checked_sub(before)
        .ok_or_else(|| ObservationError::Backwards {
            what: what(),
            before,
            after,
        })
}

impl Totals {
    fn validate(&self, version: &'static str) -> Result<(), ObservationError> {
        bounds::bounded(|| format!("{version} requests"), self.requests)?;
        if let Some(h) = &self.latency {
            bounds::bounded(|| format!("{version} latency histogram"), h.counted())?;
        }
        if let Some(c) = self.client_errors
            && c > self.requests
        {
            return Err(ObservationError::Inconsistent {
                what: format!(
                    "{version} has {c} client errors (4xx) but only {} requests",
                    self.requests
                ),
            });
        }
        if self.errors > self.requests {
            return Err(ObservationError::Inconsistent {
                what: format!(
                    "{version} has {} errors but only {} requests",
                    self.errors, self.requests
                ),
            });
        }
        if let Some(h) = &self.latency {
            h.validate()
                .map_err(|error| ObservationError::Histogram { version, error })?;
            if h.counted() > self.requests {
                return Err(ObservationError::Inconsistent {
                    what: format!(
                        "{version} latency histogram counts {} requests but the total is {}",
                        h.counted(),
                        self.requests
                    ),
                });
            }
        }
        Ok(())
    }

    fn since(
        &self,
        earlier: &Totals,
        version: &'static str,
    ) -> Result<VersionDelta, ObservationError> {
        let requests = sub(
            || format!("{version} requests"),
            earlier.requests,
            self.requests,
        )?;
        let errors = sub(|| format!("{version} errors"), earlier.errors, self.errors)?;
        let client_errors = match (self.client_errors, earlier.client_errors) {
            (Some(now), Some(before)) => {
                Some(sub(|| format!("{version} client errors"), before, now)?)
            }
            (Some(now), None) if earlier.requests == 0 => Some(now),
            _ => None,
        };
        let latency = match (&self.latency, &earlier.latency) {
            (Some(now), Some(before)) => Some(
                now.since(before)
                    .map_err(|error| ObservationError::Histogram { version, error })?,
            ),
            // Nothing recorded before: everything so far is in this interval.
            (Some(now), None) if earlier.requests == 0 => Some(now.clone()),
            _ => None,
        };
        Ok(VersionDelta {
            requests,
            errors,
            client_errors,
            latency,
            latency_requests: requests,
        })
    }
}

impl Observation {
    /// Checks each version's totals on their own: consistent, and every
    /// count at most 2^53.
    pub fn validate(&self) -> Result<(), ObservationError> {
        self.stable.validate("stable")?;
        self.canary.validate("canary")?;
        for (i, (s, c)) in self.custom.iter().enumerate() {
            for (v, r) in [("stable", s), ("canary", c)] {
                bounds::bounded(|| format!("custom[{i}] {v} numerator"), r.numerator)?;
                bounds::bounded(|| format!("custom[{i}] {v} denominator"), r.denominator)?;
            }
        }
        Ok(())
    }

    /// Checks that no counter rose by more than the time between `earlier`
    /// and `self` allows (`bounds::max_rise`); `delta` is `self − earlier`.
    /// Without both times there is nothing to check.
    pub(crate) fn check_rise(
        &self,
        earlier: &Observation,
        delta: &Delta,
    ) -> Result<(), ObservationError> {
        let (Some(now), Some(then)) = (self.at, earlier.at) else {
            return Ok(());
        };
        let seconds = now - then;
        for (v, d) in [("stable", &delta.stable), ("canary", &delta.canary)] {
            bounds::rise(|| format!("{v} requests"), d.requests, seconds)?;
            bounds::rise(|| format!("{v} errors"), d.errors, seconds)?;
            if let Some(c) = d.client_errors {
                bounds::rise(|| format!("{v} client errors"), c, seconds)?;
            }
            if let Some(h) = &d.latency {
                bounds::rise(|| format!("{v} latency histogram"), h.counted(), seconds)?;
            }
        }
        for (i, (s, c)) in delta.custom.iter().enumerate() {
            for (v, r) in [("stable", s), ("canary", c)] {
                bounds::rise(
                    || format!("custom[{i}] {v} numerator"),
                    r.numerator,
                    seconds,
                )?;
                bounds::rise(
                    || format!("custom[{i}] {v} denominator"),
                    r.denominator,
                    seconds,
                )?;
            }
        }
        Ok(())
    }

    pub(crate) fn since(&self, earlier: &Observation) -> Result<Delta, ObservationError> {
        let stable = self.stable.since(&earlier.stable, "stable")?;
        let canary = self.canary.since(&earlier.canary, "canary")?;
        let custom = if earlier.custom.is_empty() {
            self.custom.clone()
        } else if earlier.custom.len() != self.custom.len() {
            return Err(ObservationError::CustomCount {
                before: earlier.custom.len(),
                after: self.custom.len(),
            });
        } else {
            let mut out = Vec::with_capacity(self.custom.len());
            for (i, ((s, c), (s0, c0))) in self.custom.iter().zip(&earlier.custom).enumerate() {
                let r = |v: &str, now: &Ratio, before: &Ratio| -> Result<Ratio, ObservationError> {
                    Ok(Ratio {
                        numerator: sub(
                            || format!("custom[{i}] {v} numerator"),
                            before.numerator,
                            now.numerator,
                        )?,
                        denominator: sub(
                            || format!("custom[{i}] {v} denominator"),
                            before.denominator,
                            now.denominator,
                        )?,
                    })
                };
                out.push((r("stable", s, s0)?, r("canary", c, c0)?));
            }
            out
        };
        let routed = match (self.routed, earlier.routed) {
            (Some(now), Some(before)) => {
                now.0.checked_sub(before.0).zip(now.1.checked_sub(before.1))
            }
            (Some(now), None) if earlier.stable.requests + earlier.canary.requests == 0 => {
                Some(now)
            }
            (Some(_), None) => None,
            (None, _) => Some((0, 0)),
        };
        Ok(Delta {
            stable,
            canary,
            custom,
            routed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(sr: u64, se: u64, cr: u64, ce: u64) -> Observation {
        Observation {
            stable: Totals {
                requests: sr,
                errors: se,
                ..Totals::default()
            },
            canary: Totals {
                requests: cr,
                errors: ce,
                ..Totals::default()
            },
            ..Observation::default()
        }
    }

    #[test]
    fn backwards_is_an_error_naming_the_counter() {
        assert!(check(&obs(10, 1, 5, 0), &obs(20, 1, 6, 0)).is_ok());
        let e = check(&obs(10, 1, 5, 0), &obs(20, 1, 4, 0)).unwrap_err();
        assert_eq!(
            e,
            ObservationError::Backwards {
                what: "canary requests".into(),
                before: 5,
                after: 4
            }
        );
        assert!(
            e.to_string()
                .contains("canary requests went backwards from 5 to 4")
        );
        assert!(matches!(
            check(&obs(10, 1, 5, 0), &obs(20, 1, 6, 7)),
            Err(ObservationError::Inconsistent { .. })
        ));
        let mut a = obs(10, 1, 5, 0);
        a.custom = vec![(Ratio::default(), Ratio::default())];
        let mut b = obs(20, 1, 6, 0);
        b.custom = vec![
            (Ratio::default(), Ratio::default()),
            (Ratio::default(), Ratio::default()),
        ];
        assert!(matches!(
            check(&a, &b),
            Err(ObservationError::CustomCount {
                before: 1,
                after: 2
            })
        ));
    }

    #[test]
    fn latency_deltas_need_the_same_buckets() {
        let mut a = obs(10, 0, 10, 0);
        a.canary.latency = Some(Histogram {
            le_ms: vec![1.0, 2.0],
            counts: vec![5, 10],
        });
        let mut b = obs(20, 0, 20, 0);
        b.canary.latency = Some(Histogram {
            le_ms: vec![1.0, 2.0],
            counts: vec![12, 20],
        });
        let d = b.since(&a).unwrap();
        assert_eq!(d.canary.latency.unwrap().counts, vec![7, 10]);
        assert_eq!(d.stable.latency, None);
        b.canary.latency = Some(Histogram {
            le_ms: vec![1.0, 3.0],
            counts: vec![12, 20],
        });
        assert!(matches!(
            check(&a, &b),
            Err(ObservationError::Histogram {
                version: "canary",
                ..
            })
        ));
    }
}
