//! Prometheus as a metric source (`analysis.prometheus`).
//!
//! Every interval, three instant queries per version through the HTTP API
//! (`/api/v1/query`), with `{{version}}` replaced by `stable` or `canary`:
//! `requests` and `errors` return counters, `latencyBuckets` a histogram's
//! cumulative buckets by `le` (seconds). serin takes differences between
//! intervals itself, so there is no `rate()` window to line up with the
//! scrape interval (the classic source of empty results and false rollbacks).
//!
//! Counter resets (a restarted app) are handled: when a counter goes down,
//! the value before the reset is carried as an offset, so the totals handed
//! to the judge never go backwards. An error, a non-success answer, or an
//! empty result is an error here, which the judge counts as no data.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serin_proxy::Version;

use super::{MetricSource, Snapshot, Totals};
use crate::controller::driver::BoxFuture;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the source needs from the rollout file.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// `http://host:port` of the Prometheus server.
    pub address: String,
    /// Query returning the total requests counter of `{{version}}`.
    pub requests: String,
    /// Query returning the error counter of `{{version}}`.
    pub errors: String,
    /// Query returning cumulative latency buckets by `le` (seconds).
    pub latency_buckets: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

/// Carries counter values across resets.
#[derive(Debug, Default, Clone)]
struct Monotone {
    last: Option<f64>,
    offset: f64,
}

impl Monotone {
    fn feed(&mut self, value: f64) -> f64 {
        if let Some(last) = self.last
            && value < last
        {
            self.offset += last;
        }
        self.last = Some(value);
        self.offset + value
    }
}

#[derive(Default)]
struct VersionState {
    requests: Monotone,
    errors: Monotone,
    buckets: Vec<Monotone>,
}

/// Queries a Prometheus server.
pub struct PrometheusSource {
    config: PrometheusConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    stable: VersionState,
    canary: VersionState,
}

impl PrometheusSource {
    /// A source for `config`.
    pub fn new(config: PrometheusConfig) -> PrometheusSource {
        PrometheusSource {
            config,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stable: VersionState::default(),
            canary: VersionState::default(),
        }
    }

    /// Runs one instant query; the result's series.
    async fn query(&self, template: &str, version: Version) -> Result<Vec<Series>, String> {
        let promql = template.replace("{{version}}", version.as_str());
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let url = format!(
            "{}/api/v1/query?query={encoded}",
            self.config.address.trim_end_matches('/')
        );
        let request = http::Request::get(&url)
            .body(Empty::new())
            .map_err(|e| format!("bad Prometheus address {}: {e}", self.config.address))?;
        let response = tokio::time::timeout(QUERY_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| {
                format!(
                    "Prometheus did not answer `{promql}` within {} s",
                    QUERY_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("Prometheus at {} unreachable: {e}", self.config.address))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("Prometheus answer cut short: {e}"))?
            .to_bytes();
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "Prometheus answered HTTP {status} with something that is not its API's JSON: {e}"
            )
        })?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus refused `{promql}`: {}",
                answer.error.unwrap_or_else(|| format!("HTTP {status}"))
            ));
        }
        let data = answer
            .data
            .ok_or_else(|| format!("Prometheus answered `{promql}` without data"))?;
        if data.result_type != "vector" {
            return Err(format!(
                "`{promql}` returned a {}, expected an instant vector",
                data.result_type
            ));
        }
        if data.result.is_empty() {
            return Err(format!(
                "`{promql}` returned no series (no traffic yet, or a wrong label?)"
            ));
        }
        Ok(data.result)
    }

    /// A query that must return one number.
    async fn scalar(&self, template: &str, version: Version) -> Result<f64, String> {
        let series = self.query(template, version).await?;
        if series.len() != 1 {
            return Err(format!(
                "`{}` returned {} series, expected one (wrap it in sum())",
                template.replace("{{version}}", version.as_str()),
                series.len()
            ));
        }
        parse_value(&series[0].value.1)
    }

    async fn totals(&mut self, version: Version) -> Result<Totals, String> {
        let requests = self.scalar(&self.config.requests, version).await?;
        // No error yet is a legitimate empty result for an error counter.
        let errors = match self.scalar(&self.config.errors, version).await {
            Ok(v) => v,
            Err(e) if e.contains("no series") => 0.0,
            Err(e) => return Err(e),
        };
        let mut buckets = match &self.config.latency_buckets {
            Some(q) => {
                let series = self.query(q, version).await?;
                let mut b = Vec::with_capacity(series.len());
                for s in &series {
                    let le = s.metric.get("le").ok_or_else(|| {
                        format!("`{q}` returned a series without an `le` label (use sum by (le))")
                    })?;
                    if le == "+Inf" {
                        continue;
                    }
                    let le: f64 = le
                        .parse()
                        .map_err(|_| format!("`{q}`: le=\"{le}\" is not a number"))?;
                    b.push((le * 1000.0, parse_value(&s.value.1)?));
                }
                b.sort_by(|x, y| x.0.total_cmp(&y.0));
                b
            }
            None => Vec::new(),
        };
        let state = match version {
            Version::Stable => &mut self.stable,
            Version::Canary => &mut self.canary,
        };
        if state.buckets.len() != buckets.len() {
            state.buckets = vec![Monotone::default(); buckets.len()];
        }
        for (b, m) in buckets.iter_mut().zip(state.buckets.iter_mut()) {
            b.1 = m.feed(b.1);
        }
        Ok(Totals {
            requests: state.requests.feed(requests).round() as u64,
            errors: state.errors.feed(errors).round() as u64,
            le_ms: buckets.iter().map(|b| b.0).collect(),
            counts: buckets.iter().map(|b| b.1.round() as u64).collect(),
        })
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    let x: f64 = v
        .parse()
        .map_err(|_| format!("value `{v}` is not a number"))?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("value `{v}` is not a finite count"))
    }
}

impl MetricSource for PrometheusSource {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, String>> {
        Box::pin(async move {
            Ok(Snapshot {
                stable: self.totals(Version::Stable).await?,
                canary: self.totals(Version::Canary).await?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_resets_carry_the_old_total() {
        let mut m = Monotone::default();
        assert_eq!(m.feed(100.0), 100.0);
        assert_eq!(m.feed(150.0), 150.0);
        assert_eq!(m.feed(20.0), 170.0, "reset: 150 before, 20 since");
        assert_eq!(m.feed(30.0), 180.0);
    }

    #[test]
    fn values_must_be_finite_counts() {
        assert_eq!(parse_value("12"), Ok(12.0));
        assert!(parse_value("NaN").is_err());
        assert!(parse_value("-1").is_err());
        assert!(parse_value("+Inf").is_err());
    }
}
