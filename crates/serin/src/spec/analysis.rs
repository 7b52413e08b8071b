//! The `analysis` section: interval, limits, statistics, Prometheus and
//! custom metrics.

use std::time::Duration;

use serde_saphyr::{Location, Spanned};
use serin_analysis::{Config, Limit};

use super::raw::{
    RawAnalysis, RawClientErrorRate, RawDirection, RawLatencyLimit, RawMethod, RawMode,
};
use super::{AnalysisSettings, Checker, CustomMetric, Mode, PrometheusSettings, Provider};

impl Checker {
    /// The section, with the judge's configuration built from it and
    /// checked; `at` is where the section is (`None`: left out).
    pub(super) fn analysis(
        &mut self,
        raw: Option<Spanned<RawAnalysis>>,
        provider: Provider,
    ) -> Option<AnalysisSettings> {
        let defaults = AnalysisSettings::default();
        let Some(Spanned {
            value: raw,
            referenced: at,
            ..
        }) = raw
        else {
            return Some(defaults);
        };
        let judge_defaults = defaults.judge.clone();
        let mut ok = true;
        let interval = match raw.interval {
            Some(i) if i.value.0 < Duration::from_millis(100) => {
                self.at(&i.referenced, "analysis.interval: expected at least 100ms");
                ok = false;
                defaults.interval
            }
            // A verdict at least every hour: a longer interval would leave a
            // failing canary in traffic that long.
            Some(i) if i.value.0 > Duration::from_secs(3600) => {
                self.at(&i.referenced, "analysis.interval: expected at most 1h");
                ok = false;
                defaults.interval
            }
            Some(i) => i.value.0,
            None => defaults.interval,
        };
        let confidence = match raw.statistics.as_ref().and_then(|s| s.confidence.as_ref()) {
            Some(c) if !(c.value > 0.5 && c.value < 1.0) => {
                self.at(
                    &c.referenced,
                    format!(
                        "analysis.statistics.confidence: expected a number between 0.5 and 1 (exclusive), like 0.95, got {}",
                        c.value
                    ),
                );
                ok = false;
                judge_defaults.confidence
            }
            Some(c) => c.value,
            None => judge_defaults.confidence,
        };
        let no_data_limit = match raw.no_data_limit {
            Some(n) if n.value.0 == 0 || n.value.0 > 1000 => {
                self.at(&n.referenced, "analysis.noDataLimit: expected at least 1");
                ok = false;
                defaults.no_data_limit
            }
            Some(n) => u32::try_from(n.value.0).unwrap_or(u32::MAX),
            None => defaults.no_data_limit,
        };
        let prometheus = match raw.prometheus {
            Some(p) => {
                let address = p.address.value.trim_end_matches('/').to_string();
                if !(address.starts_with("http://") || address.starts_with("https://")) {
                    self.at(
                        &p.address.referenced,
                        format!(
                            "analysis.prometheus.address: expected http://host:port, got `{}`",
                            p.address.value
                        ),
                    );
                    ok = false;
                }
                match (p.requests, p.errors) {
                    (Some(requests), Some(errors)) => Some(PrometheusSettings {
                        address,
                        requests,
                        errors,
                        latency_buckets: p.latency_buckets,
                        client_errors: p.client_errors,
                    }),
                    // Filled with the provider's ready-made queries by `parse`.
                    (None, None) if provider.is_kubernetes() => Some(PrometheusSettings {
                        address,
                        requests: String::new(),
                        errors: String::new(),
                        latency_buckets: None,
                        client_errors: p.client_errors,
                    }),
                    _ => {
                        self.at(
                            &p.address.referenced,
                            format!(
                                "analysis.prometheus: expected both requests and errors queries (ready-made ones exist only for the Kubernetes providers, not {})",
                                provider.as_str()
                            ),
                        );
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        // The checks marked advisory, by the judge's metric names, in the
        // order of the section.
        // A section written replaces the default limits: one marked
        // advisory with neither limit is no check at all, refused.
        let mut advisory_checks: Vec<String> = Vec::new();
        fn latency(l: &Option<Spanned<RawLatencyLimit>>) -> Option<(Option<&Spanned<bool>>, bool)> {
            l.as_ref().map(|l| {
                let on = l.value.max.is_some() || l.value.max_ratio_to_stable.is_some();
                (l.value.advisory.as_ref(), on)
            })
        }
        let limits = [
            (
                raw.error_rate.as_ref().map(|e| {
                    let on = e.max.is_some() || e.max_ratio_to_stable.is_some();
                    (e.advisory.as_ref(), on)
                }),
                "errorRate",
                "error-rate",
            ),
            (latency(&raw.latency_p50), "latencyP50", "latency-p50"),
            (latency(&raw.latency_p95), "latencyP95", "latency-p95"),
            (latency(&raw.latency_p99), "latencyP99", "latency-p99"),
        ];
        for (given, field, name) in limits {
            let Some((Some(advisory), on)) = given else {
                continue;
            };
            if !advisory.value {
                continue;
            }
            if !on {
                self.at(
                    &advisory.referenced,
                    format!(
                        "analysis.{field}.advisory: expected a check to make advisory, but {field} has neither max nor maxRatioToStable (a section written replaces the default limits)"
                    ),
                );
                ok = false;
            }
            advisory_checks.push(name.into());
        }
        let mut custom = Vec::new();
        let mut judged = Vec::new();
        for c in raw.custom {
            if c.value.advisory {
                advisory_checks.push(format!("custom/{}", c.value.name));
            }
            if prometheus.is_none() {
                self.at(
                    &c.referenced,
                    "analysis.custom: expected analysis.prometheus too (custom metrics are PromQL queries)",
                );
                ok = false;
            }
            let name = &c.value.name;
            if !readable_metric_name(name) {
                self.at(
                    &c.referenced,
                    format!(
                        "analysis.custom: expected a name of printable ASCII letters, digits, punctuation and single spaces, at most 64 characters, not starting or ending with a space, got {name:?}"
                    ),
                );
                ok = false;
            } else if custom
                .iter()
                .any(|o: &CustomMetric| o.name.eq_ignore_ascii_case(name))
            {
                self.at(
                    &c.referenced,
                    format!(
                        "analysis.custom: expected a name of its own, got `{name}` again (names, whatever their case, tell the metrics apart in verdicts and reports)"
                    ),
                );
                ok = false;
            }
            judged.push(serin_analysis::CustomMetric {
                name: c.value.name.clone(),
                direction: match c.value.direction {
                    RawDirection::HigherIsBetter => serin_analysis::Direction::HigherIsBetter,
                    RawDirection::LowerIsBetter => serin_analysis::Direction::LowerIsBetter,
                },
                max_ratio_to_stable: Some(c.value.max_ratio_to_stable.map_or(1.0, |r| r.0)),
            });
            custom.push(CustomMetric {
                name: c.value.name,
                numerator: c.value.numerator,
                denominator: c.value.denominator,
            });
        }
        // Without latency buckets from Prometheus there is no latency to
        // judge: the default p95 limit is dropped, an explicit one refused
        // (it would be no data every interval).
        let no_latency = prometheus
            .as_ref()
            .is_some_and(|p| p.latency_buckets.is_none());
        if no_latency {
            for (given, field) in [
                (&raw.latency_p50, "latencyP50"),
                (&raw.latency_p95, "latencyP95"),
                (&raw.latency_p99, "latencyP99"),
            ] {
                if let Some(given) = given {
                    self.at(
                        &given.referenced,
                        format!(
                            "analysis.{field}: expected analysis.prometheus.latencyBuckets too (without it there is no latency to judge)"
                        ),
                    );
                    ok = false;
                }
            }
        }
        // Limits the judge could never meet, or never apply, are refused here
        // where their place is known.
        for (given, field) in [
            (&raw.latency_p50, "latencyP50"),
            (&raw.latency_p95, "latencyP95"),
            (&raw.latency_p99, "latencyP99"),
        ] {
            if let Some(max) = given.as_ref().and_then(|l| l.value.max.as_ref())
                && max.value.0.is_zero()
            {
                self.at(
                    &max.referenced,
                    format!("analysis.{field}.max: expected a latency above 0, like 500ms"),
                );
                ok = false;
            }
        }
        if let Some(max) = raw.error_rate.as_ref().and_then(|e| e.max.as_ref())
            && max.value.0 == 0.0
        {
            self.at(
                &max.referenced,
                "analysis.errorRate.max: expected a percentage above 0%, like 0.1% (at 0% a single error fails the canary; to allow no more errors than stable, use maxRatioToStable)",
            );
            ok = false;
        }
        let min_requests = match &raw.min_requests {
            Some(n) if n.value.0 == 0 => {
                self.at(
                    &n.referenced,
                    "analysis.minRequests: expected at least 1 (a verdict on no requests is no evidence)",
                );
                ok = false;
                judge_defaults.min_requests
            }
            Some(n) => n.value.0,
            None => judge_defaults.min_requests,
        };
        let client_error_ratio = self.client_error_ratio(
            raw.client_error_rate.as_ref(),
            prometheus.as_ref(),
            judge_defaults.client_error_ratio,
        );
        ok &= client_error_ratio.is_some();
        let client_error_ratio = client_error_ratio.unwrap_or(None);
        if let Some(c) = raw.client_error_rate.as_ref().filter(|c| c.value.advisory) {
            if client_error_ratio.is_none() {
                self.at(
                    &c.referenced,
                    "analysis.clientErrorRate.advisory: expected a check to make advisory, but clientErrorRate is off",
                );
                ok = false;
            }
            advisory_checks.push("client-error-rate".into());
        }
        // Without latency buckets the default p95 limit is dropped (above).
        let default_p95 = if no_latency {
            Limit::NONE
        } else {
            judge_defaults.latency_p95
        };
        let latency = |l: Option<Spanned<RawLatencyLimit>>, default: Limit| match l {
            Some(l) => Limit {
                max: l.value.max.map(|d| d.value.0.as_secs_f64() * 1000.0),
                max_ratio_to_stable: l.value.max_ratio_to_stable.map(|r| r.0),
            },
            None => default,
        };
        let judge = Config {
            min_requests,
            error_rate: match raw.error_rate {
                Some(e) => Limit {
                    max: e.max.map(|p| p.value.0),
                    max_ratio_to_stable: e.max_ratio_to_stable.map(|r| r.0),
                },
                None => judge_defaults.error_rate,
            },
            latency_p50: latency(raw.latency_p50, judge_defaults.latency_p50),
            latency_p95: latency(raw.latency_p95, default_p95),
            latency_p99: latency(raw.latency_p99, judge_defaults.latency_p99),
            method: match raw.statistics.as_ref().and_then(|s| s.method) {
                Some(RawMethod::Sequential) => serin_analysis::Method::Sequential,
                Some(RawMethod::Fixed) => serin_analysis::Method::Fixed,
                Some(RawMethod::None) => serin_analysis::Method::None,
                None => judge_defaults.method,
            },
            confidence,
            custom: judged,
            client_error_ratio,
            advisory: advisory_checks.clone(),
            compare_with: serin_analysis::Reference::Stable,
        };
        // Only when everything above passed: each value the judge refuses
        // was refused above at its place; this keeps that true.
        ok = ok && self.judge_accepts(&judge, &at);
        ok.then_some(AnalysisSettings {
            interval,
            no_data_limit,
            judge,
            prometheus,
            custom,
            mode: match raw.mode {
                Some(RawMode::Advisory) => Mode::Advisory,
                Some(RawMode::Enforce) | None => Mode::Enforce,
            },
            advisory_checks,
        })
    }

    /// Whether the judge takes `config`; if not, its problem is recorded at
    /// the `analysis` section.
    pub(super) fn judge_accepts(&mut self, config: &Config, at: &Location) -> bool {
        match config.validate() {
            Ok(()) => true,
            Err(e) => {
                self.at(at, e.to_string());
                false
            }
        }
    }

    /// `analysis.clientErrorRate`: `Some(None)` when off, `Some(Some(r))`
    /// for a ratio, `None` (a problem recorded) when it cannot be used.
    /// With Prometheus as the source and no `clientErrors` query there are
    /// no 4xx counts: the default check is off, an explicit one refused.
    pub(super) fn client_error_ratio(
        &mut self,
        raw: Option<&Spanned<RawClientErrorRate>>,
        prometheus: Option<&PrometheusSettings>,
        default: Option<f64>,
    ) -> Option<Option<f64>> {
        let no_counts = prometheus.is_some_and(|p| p.client_errors.is_none());
        let Some(raw) = raw else {
            return Some(if no_counts { None } else { default });
        };
        let ratio = match &raw.value.max_ratio_to_stable {
            None => default,
            // `false` too: YAML 1.1 readers (kubectl's among them) turn
            // `off` into false, so a Rollout resource arrives with that.
            Some(t) if matches!(t.value.0.trim(), "off" | "false") => return Some(None),
            Some(t) => match t.value.0.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 1.0 => Some(v),
                _ => {
                    self.at(
                        &t.referenced,
                        format!(
                            "analysis.clientErrorRate.maxRatioToStable: expected a ratio of at least 1, like 5, or `off`, got `{}`",
                            t.value.0
                        ),
                    );
                    return None;
                }
            },
        };
        if no_counts {
            self.at(
                &raw.referenced,
                "analysis.clientErrorRate: expected analysis.prometheus.clientErrors too (without a 4xx query there is nothing to compare), or `maxRatioToStable: off`",
            );
            return None;
        }
        Some(ratio)
    }
}

/// A custom metric's name as verdicts, logs and reports show it: visible
/// ASCII and single spaces inside (no control or direction-changing
/// characters that would make a report say something else than it does).
fn readable_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && !name.contains("  ")
        && name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}
