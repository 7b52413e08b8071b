//! What the judge checks: the rollout file's `analysis` section as types.

use std::fmt;

/// How `maxRatioToStable` (and, for `sequential` and `fixed`, `max`) limits are
/// judged. See `docs/judge.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Anytime-valid tests (e-processes): safe to judge at every interval.
    #[default]
    Sequential,
    /// Fixed-horizon tests (z-test, Mann–Whitney U), judged once at the end
    /// of each pause, like Kayenta.
    Fixed,
    /// Point estimates against the limits (no statistics).
    None,
}

impl Method {
    /// The rollout file's spelling: `sequential`, `fixed`, `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Sequential => "sequential",
            Method::Fixed => "fixed",
            Method::None => "none",
        }
    }
}

/// Limits on one metric of the canary.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limit {
    /// Absolute limit on the canary alone: error rate as a fraction (0.05),
    /// latency in milliseconds.
    pub max: Option<f64>,
    /// Limit on canary ÷ stable (1.0 = any worsening).
    pub max_ratio_to_stable: Option<f64>,
}

impl Limit {
    /// No limit.
    pub const NONE: Limit = Limit {
        max: None,
        max_ratio_to_stable: None,
    };

    /// Whether either limit is set.
    pub fn is_set(&self) -> bool {
        self.max.is_some() || self.max_ratio_to_stable.is_some()
    }
}

/// Which way a custom metric gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A higher rate is better (conversions): fail when stable ÷ canary
    /// exceeds the ratio.
    HigherIsBetter,
    /// A lower rate is better (failures): fail when canary ÷ stable exceeds
    /// the ratio.
    LowerIsBetter,
}

/// A business metric given as a numerator/denominator pair per version
/// (e.g. checkouts per visit).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetric {
    /// Name shown in checks and reasons.
    pub name: String,
    /// Which way is better.
    pub direction: Direction,
    /// Allowed worsening factor; `None` means 1.0 (any worsening).
    pub max_ratio_to_stable: Option<f64>,
}

impl CustomMetric {
    /// The ratio in force (default 1.0).
    pub fn ratio(&self) -> f64 {
        self.max_ratio_to_stable.unwrap_or(1.0)
    }
}

/// What the relative (`maxRatioToStable`) checks compare the canary with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reference {
    /// The stable version (the default).
    #[default]
    Stable,
    /// A fresh baseline: the stable's build started beside the canary with
    /// the same share. The caller passes its totals as
    /// `Observation::stable`; reasons then say "baseline".
    Baseline,
}

impl Reference {
    /// The word reasons use: `stable` or `baseline`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reference::Stable => "stable",
            Reference::Baseline => "baseline",
        }
    }
}

/// The judge's configuration (the rollout file's `analysis` section).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Canary requests in the current step before a verdict can be pass or fail.
    pub min_requests: u64,
    /// Error rate limits (`max` as a fraction).
    pub error_rate: Limit,
    /// Median latency limits (`max` in ms).
    pub latency_p50: Limit,
    /// 95th percentile latency limits (`max` in ms).
    pub latency_p95: Limit,
    /// 99th percentile latency limits (`max` in ms).
    pub latency_p99: Limit,
    /// How limits are judged.
    pub method: Method,
    /// Confidence for `sequential` and `fixed`, in (0, 1); false rollbacks
    /// are kept below `1 - confidence`.
    pub confidence: f64,
    /// Custom ratio metrics, in the order of `Observation::custom`.
    pub custom: Vec<CustomMetric>,
    /// Limit on the canary's client-error (4xx) rate ÷ stable's
    /// (`analysis.clientErrorRate.maxRatioToStable`); `None` turns the check
    /// off. On by default ([`DEFAULT_CLIENT_ERROR_RATIO`]): a canary that
    /// answers 404 to everything is broken although 4xx are not errors.
    /// Skipped while the metric source counts no 4xx.
    pub client_error_ratio: Option<f64>,
    /// Metrics whose checks are advisory: judged and reported, never
    /// making the verdict fail or no data (see [`Config::ADVISORY_HELP`]
    /// for the names). At least one configured check must stay enforced.
    pub advisory: Vec<String>,
    /// What the relative checks compare the canary with.
    pub compare_with: Reference,
}

/// The default `analysis.clientErrorRate.maxRatioToStable`: a canary is
/// failed once it is shown to answer 4xx more than 5 times as often as
/// stable.
pub const DEFAULT_CLIENT_ERROR_RATIO: f64 = 5.0;

impl Default for Config {
    /// The SPEC's defaults: `minRequests` 100, error rate max 5 %, p95 max
    /// 1000 ms, `sequential` at 0.95, client errors at most 5 × stable's.
    fn default() -> Config {
        Config {
            min_requests: 100,
            error_rate: Limit {
                max: Some(0.05),
                max_ratio_to_stable: None,
            },
            latency_p50: Limit::NONE,
            latency_p95: Limit {
                max: Some(1000.0),
                max_ratio_to_stable: None,
            },
            latency_p99: Limit::NONE,
            method: Method::Sequential,
            confidence: 0.95,
            custom: Vec::new(),
            client_error_ratio: Some(DEFAULT_CLIENT_ERROR_RATIO),
            advisory: Vec::new(),
            compare_with: Reference::Stable,
        }
    }
}

/// A configuration value out of range; names the field as the rollout file
/// spells it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The field, e.g. `analysis.statistics.confidence`.
    pub field: String,
    /// What was found and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

fn check_ratio(field: &str, value: Option<f64>) -> Result<(), ConfigError> {
    match value {
        Some(r) if !(r.is_finite() && r > 0.0) => Err(err(
            field,
            format!("got {r}, expected a ratio above 0 (1.0 means any worsening)"),
        )),
        _ => Ok(()),
    }
}

impl Config {
    /// The metric names [`Config::advisory`] accepts.
    pub const ADVISORY_HELP: &'static str =
        "error-rate, latency-p50, latency-p95, latency-p99, client-error-rate or custom/NAME";

    /// The metrics that have a check in this configuration, by the names
    /// [`Config::advisory`] uses: `error-rate` (checks `error-rate` and
    /// `error-rate/ratio`), `latency-pNN`, `custom/NAME`,
    /// `client-error-rate`.
    pub fn checked_metrics(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.error_rate.is_set() {
            out.push("error-rate".to_string());
        }
        for (_, name, limit) in self.latency_limits() {
            if limit.is_set() {
                out.push(format!("latency-{name}"));
            }
        }
        for c in &self.custom {
            out.push(format!("custom/{}", c.name));
        }
        if self.client_error_ratio.is_some() {
            out.push("client-error-rate".to_string());
        }
        out
    }

    /// Whether the checks of `metric` (a name of [`Config::checked_metrics`])
    /// are advisory.
    pub fn is_advisory(&self, metric: &str) -> bool {
        self.advisory.iter().any(|a| a == metric)
    }

    /// The latency limits with their quantile and the rollout file's name.
    pub(crate) fn latency_limits(&self) -> [(f64, &'static str, Limit); 3] {
        [
            (0.50, "p50", self.latency_p50),
            (0.95, "p95", self.latency_p95),
            (0.99, "p99", self.latency_p99),
        ]
    }

    /// Checks every value's range; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_requests < 1 {
            // A step judged on no canary request at all would pass blind.
            return Err(err(
                "analysis.minRequests",
                "got 0, expected at least 1 canary request before a verdict",
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(err(
                "analysis.statistics.confidence",
                format!(
                    "got {}, expected a number between 0 and 1 (e.g. 0.95)",
                    self.confidence
                ),
            ));
        }
        if let Some(m) = self.error_rate.max
            && !(m > 0.0 && m <= 1.0)
        {
            return Err(err(
                "analysis.errorRate.max",
                format!("got {m}, expected a fraction above 0 and at most 1 (5% = 0.05)"),
            ));
        }
        check_ratio(
            "analysis.errorRate.maxRatioToStable",
            self.error_rate.max_ratio_to_stable,
        )?;
        for (_, name, limit) in self.latency_limits() {
            let key = match name {
                "p50" => "latencyP50",
                "p95" => "latencyP95",
                _ => "latencyP99",
            };
            if let Some(m) = limit.max
                && !(m.is_finite() && m > 0.0)
            {
                return Err(err(
                    format!("analysis.{key}.max"),
                    format!("got {m}, expected a latency above 0 ms"),
                ));
            }
            check_ratio(
                &format!("analysis.{key}.maxRatioToStable"),
                limit.max_ratio_to_stable,
            )?;
        }
        check_ratio(
            "analysis.clientErrorRate.maxRatioToStable",
            self.client_error_ratio,
        )?;
        for (i, c) in self.custom.iter().enumerate() {
            if c.name.trim().is_empty() {
                return Err(err(
                    format!("analysis.custom[{i}].name"),
                    "expected a non-empty name",
                ));
            }
            if self.custom[..i].iter().any(|o| o.name == c.name) {
                return Err(err(
                    format!("analysis.custom[{i}].name"),
                    format!("{:?} is used twice, expected unique names", c.name),
                ));
            }
            check_ratio(
                &format!("analysis.custom[{i}].maxRatioToStable"),
                c.max_ratio_to_stable,
            )?;
        }
        let checked = self.checked_metrics();
        for (i, a) in self.advisory.iter().enumerate() {
            if !checked.contains(a) {
                return Err(err(
                    format!("analysis.advisory[{i}]"),
                    format!(
                        "{a:?} names no configured check, expected one of {}",
                        if checked.is_empty() {
                            "the configured checks (there are none)".to_string()
                        } else {
                            checked.join(", ")
                        }
                    ),
                ));
            }
        }
        if !self.advisory.is_empty() && checked.iter().all(|m| self.is_advisory(m)) {
            // The rollout file marks checks one by one (`advisory: true`):
            // the error names the section, not a list the file never has.
            return Err(err(
                "analysis",
                format!(
                    "every check ({}) has `advisory: true`, expected at least one enforced check (for a dry run of the whole analysis, `mode: advisory` with the checks' `advisory` left out)",
                    checked.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specs() {
        let c = Config::default();
        assert_eq!(c.min_requests, 100);
        assert_eq!(c.error_rate.max, Some(0.05));
        assert_eq!(c.latency_p95.max, Some(1000.0));
        assert_eq!(c.method, Method::Sequential);
        assert_eq!(c.confidence, 0.95);
        assert_eq!(c.client_error_ratio, Some(5.0));
        assert!(c.validate().is_ok());
    }

    /// Every check advisory is refused naming the section the rollout file
    /// has (its checks are marked one by one), not a list it never has.
    #[test]
    fn every_check_advisory_is_refused_naming_the_analysis_section() {
        let c = Config {
            client_error_ratio: None,
            latency_p95: Limit::NONE,
            advisory: vec!["error-rate".into()],
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "analysis");
        assert!(
            e.to_string()
                .contains("every check (error-rate) has `advisory: true`"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err().field
        };
        assert_eq!(
            bad(&|c| c.confidence = 1.0),
            "analysis.statistics.confidence"
        );
        assert_eq!(
            bad(&|c| c.error_rate.max = Some(5.0)),
            "analysis.errorRate.max"
        );
        assert_eq!(
            bad(&|c| c.latency_p99.max_ratio_to_stable = Some(0.0)),
            "analysis.latencyP99.maxRatioToStable"
        );
        assert_eq!(bad(&|c| c.min_requests = 0), "analysis.minRequests");
        assert_eq!(
            bad(&|c| c.client_error_ratio = Some(-1.0)),
            "analysis.clientErrorRate.maxRatioToStable"
        );
        assert_eq!(
            bad(&|c| c.latency_p50.max = Some(f64::NAN)),
            "analysis.latencyP50.max"
        );
        assert_eq!(
            bad(&|c| c.custom = vec![
                CustomMetric {
                    name: "a".into(),
                    direction: Direction::HigherIsBetter,
                    max_ratio_to_stable: None
                };
                2
            ]),
            "analysis.custom[1].name"
        );
        assert_eq!(
            bad(&|c| c.advisory = vec!["latency-p50".into()]),
            "analysis.advisory[0]"
        );
        assert_eq!(
            bad(&|c| c.advisory = vec!["error-rate".into(), "errors".into()]),
            "analysis.advisory[1]"
        );
        assert_eq!(
            bad(&|c| c.advisory = vec![
                "error-rate".into(),
                "latency-p95".into(),
                "client-error-rate".into()
            ]),
            "analysis"
        );
        let some = Config {
            advisory: vec!["error-rate".into(), "client-error-rate".into()],
            ..Config::default()
        };
        assert!(some.validate().is_ok());
        assert!(some.is_advisory("error-rate") && !some.is_advisory("latency-p95"));
        let e = Config {
            advisory: vec!["latency-p99".into()],
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.message.contains(
                "\"latency-p99\" names no configured check, expected one of error-rate, latency-p95, client-error-rate"
            ),
            "{e}"
        );
        let e = Config {
            confidence: 2.0,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("got 2, expected a number between 0 and 1")
        );
    }
}
