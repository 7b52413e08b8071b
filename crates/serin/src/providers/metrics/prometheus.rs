//! Prometheus as a metric source (`analysis.prometheus`).
//!
//! Every interval, three instant queries per version through the HTTP API
//! (`/api/v1/query`), with `{{version}}` replaced by `stable` or `canary`:
//! `requests` and `errors` return counters, `latencyBuckets` a histogram's
//! cumulative buckets by `le` (seconds). Then two per custom business metric
//! (`analysis.custom`) and version: its `numerator` and `denominator`
//! counters. serin takes differences between intervals itself, so there is
//! no `rate()` window to line up with the scrape interval (the classic source
//! of empty results and false rollbacks).
//!
//! All queries of one snapshot are evaluated at the same instant (`time=`),
//! so the errors, buckets and custom counters belong to the same scrapes as
//! the request counter they are compared with.
//!
//! A counter that goes down is either a reset (a restarted app) or a
//! series missing from a `sum()` for one evaluation (a pod not scraped);
//! the second comes back at its old height, and carrying the old total as
//! an offset then would count the whole history again as new requests. So
//! a drop is no data at first (the snapshot is an error naming the query);
//! a value back at or above the one before continues the count; one that
//! stays below for [`DROPS_BEFORE_RESET`] snapshots in a row is a reset,
//! and the value before it is carried as an offset from then on, so the
//! totals handed to the judge never go backwards. An error, a non-success answer, or an
//! empty result is an error here, which the judge counts as no data; the
//! exceptions are the error counter and a custom numerator, for which no
//! series means none yet (0).
//!
//! With a baseline ([`PrometheusSource::with_baseline`]: the rollout has
//! `baseline:`) every query runs a third time with `{{version}}` replaced by
//! `baseline`, and its totals are the snapshot's [`Snapshot::baseline`]; its
//! custom metrics stand in the stable's place of each pair (the relative
//! checks compare the canary with the baseline, as the judge does with the
//! totals). The baseline's queries follow the same rules as the others: no
//! request series for it (the baseline not running yet, or a label that
//! does not tell it apart) is an error, so the interval is no data, never a
//! comparison with nothing.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serin_analysis::Ratio;
use serin_proxy::Version;

use serin_analysis::{Histogram, Totals};

use crate::controller::seams::{BoxFuture, MetricSource, Snapshot};
use crate::error::Error;
use crate::spec::{CustomMetric, PrometheusSettings};

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read from Prometheus (an instant vector per version is
/// a few kB; a histogram's buckets a few more).
const MAX_ANSWER: usize = 8 * 1024 * 1024;

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

/// Snapshots in a row a counter may stay below its last value before the
/// drop counts as a reset (until then: no data, for a series missing from a
/// `sum()` comes back at its old height).
pub const DROPS_BEFORE_RESET: u32 = 3;

/// Carries counter values across resets.
///
/// Only a believable value (`serin_analysis::bounds`) becomes the one later
/// values are compared with: after a value that rose implausibly (a
/// 10^12 jump), the counter coming back down is the spike ending, not a
/// reset, so the spike never enters the offset. The implausible total is
/// still handed on, for the judge to refuse as no data.
#[derive(Debug, Default, Clone)]
struct Monotone {
    /// The last believable value and its evaluation time.
    last: Option<(f64, f64)>,
    offset: f64,
    /// Snapshots in a row below `last` (see [`DROPS_BEFORE_RESET`]).
    drops: u32,
}

impl Monotone {
    /// The total carried across resets, or why this value is not counted
    /// (a drop not yet taken for a reset).
    fn feed(&mut self, value: f64, at: f64) -> Result<f64, String> {
        match self.last {
            Some((last, _)) if value < last => {
                self.drops += 1;
                if self.drops < DROPS_BEFORE_RESET {
                    return Err(format!(
                        "went down from {last} to {value} (a series missing from the sum, or a restart): not counted until it is back or stays down for {DROPS_BEFORE_RESET} readings"
                    ));
                }
                // Down for good: a reset.
                self.offset += last;
            }
            Some((last, then)) if !serin_analysis::bounds::rise_ok(value - last, at - then) => {
                return Ok(self.offset + value);
            }
            _ => {}
        }
        self.drops = 0;
        self.last = Some((value, at));
        Ok(self.offset + value)
    }
}

#[derive(Default)]
struct VersionState {
    requests: Monotone,
    errors: Monotone,
    client_errors: Monotone,
    buckets: Vec<Monotone>,
    /// (numerator, denominator) per custom metric.
    custom: Vec<(Monotone, Monotone)>,
}

/// Queries a Prometheus server.
pub struct PrometheusSource {
    /// Address and queries (`analysis.prometheus`); without its
    /// `client_errors` query the judge's 4xx check is skipped.
    config: PrometheusSettings,
    /// Custom business metrics (`analysis.custom`), in the file's order.
    custom: Vec<CustomMetric>,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// How long one query may take, answer body included.
    timeout: Duration,
    stable: VersionState,
    canary: VersionState,
    /// The baseline's, when the rollout has one.
    baseline: Option<VersionState>,
}

impl PrometheusSource {
    /// A source for the rollout file's `analysis.prometheus` and
    /// `analysis.custom`, as checked by the spec.
    pub fn new(config: PrometheusSettings, custom: Vec<CustomMetric>) -> PrometheusSource {
        PrometheusSource {
            config,
            custom,
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout: QUERY_TIMEOUT,
            stable: VersionState::default(),
            canary: VersionState::default(),
            baseline: None,
        }
    }

    /// The same source for a rollout with a baseline: the queries run for
    /// `baseline` too (see the module doc).
    pub fn with_baseline(mut self) -> PrometheusSource {
        self.baseline = Some(VersionState::default());
        self
    }

    /// Runs one instant query evaluated at `at` (Unix seconds); the
    /// result's series.
    async fn query(
        &self,
        template: &str,
        version: Version,
        at: f64,
    ) -> Result<Vec<Series>, String> {
        let promql = template.replace("{{version}}", version.as_str());
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let url = format!(
            "{}/api/v1/query?query={encoded}&time={at:.3}",
            self.config.address.trim_end_matches('/')
        );
        let request = http::Request::get(&url)
            .body(Empty::new())
            .map_err(|e| format!("bad Prometheus address {}: {e}", self.config.address))?;
        // The whole exchange is bounded, the body too: a Prometheus (or a
        // proxy before it) that sends its headers and then stalls would
        // otherwise hold the analysis for ever, and no interval would count
        // as no data.
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| {
                    format!("Prometheus at {} unreachable: {e}", self.config.address)
                })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("Prometheus answer cut short: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                format!(
                    "Prometheus did not answer `{promql}` within {} s",
                    self.timeout.as_secs_f64()
                )
            })??;
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
    async fn scalar(&self, template: &str, version: Version, at: f64) -> Result<f64, String> {
        let series = self.query(template, version, at).await?;
        if series.len() != 1 {
            return Err(format!(
                "`{}` returned {} series, expected one (wrap it in sum())",
                template.replace("{{version}}", version.as_str()),
                series.len()
            ));
        }
        let what = format!("`{}`", template.replace("{{version}}", version.as_str()));
        parse_value(&what, &series[0].value.1)
    }

    /// A counter for which no series means none counted yet (errors,
    /// custom numerators): 0 rather than an error.
    async fn scalar_or_zero(
        &self,
        template: &str,
        version: Version,
        at: f64,
    ) -> Result<f64, String> {
        match self.scalar(template, version, at).await {
            Ok(v) => Ok(v),
            Err(e) if e.contains("no series") => Ok(0.0),
            Err(e) => Err(e),
        }
    }

    /// `version`'s totals; the outer error is a query that failed (the
    /// snapshot stops there), the inner one a counter that went down (the
    /// other parts are still read, so every counter sees every snapshot).
    async fn totals(&mut self, version: Version, at: f64) -> Result<Dropped<Totals>, String> {
        let requests = self.scalar(&self.config.requests, version, at).await?;
        // No error yet is a legitimate empty result for an error counter.
        let errors = self
            .scalar_or_zero(&self.config.errors, version, at)
            .await?;
        let client_errors = match &self.config.client_errors {
            Some(q) => Some(self.scalar_or_zero(q, version, at).await?),
            None => None,
        };
        let mut buckets = match &self.config.latency_buckets {
            Some(q) => {
                let series = self.query(q, version, at).await?;
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
                    let what = format!(
                        "`{}` (le=\"{le}\")",
                        q.replace("{{version}}", version.as_str())
                    );
                    b.push((le * 1000.0, parse_value(&what, &s.value.1)?));
                }
                b.sort_by(|x, y| x.0.total_cmp(&y.0));
                b
            }
            None => Vec::new(),
        };
        let state = match version {
            Version::Stable => &mut self.stable,
            Version::Canary => &mut self.canary,
            Version::Baseline => self.baseline.get_or_insert_with(VersionState::default),
        };
        if state.buckets.len() != buckets.len() {
            state.buckets = vec![Monotone::default(); buckets.len()];
        }
        let what = |q: &str| q.replace("{{version}}", version.as_str());
        // Every counter is fed, then the first drop is the answer: each
        // counts its drops in a row on every snapshot.
        let mut dropped: Option<String> = None;
        let buckets_query = self.config.latency_buckets.as_deref().unwrap_or_default();
        for (b, m) in buckets.iter_mut().zip(state.buckets.iter_mut()) {
            let le = b.0;
            b.1 = kept(
                &mut dropped,
                m.feed(b.1, at)
                    .map_err(|e| format!("`{}` (le {le}) {e}", what(buckets_query))),
            );
        }
        let count = |q: &str, v: f64| {
            serin_analysis::bounds::count(&format!("`{}`", what(q)), v).map_err(|e| e.to_string())
        };
        let fed = |q: &str, m: &mut Monotone, v: f64| {
            m.feed(v, at).map_err(|e| format!("`{}` {e}", what(q)))
        };
        let requests = kept(
            &mut dropped,
            fed(&self.config.requests, &mut state.requests, requests),
        );
        let errors = kept(
            &mut dropped,
            fed(&self.config.errors, &mut state.errors, errors),
        );
        let client_errors = match (&self.config.client_errors, client_errors) {
            (Some(q), Some(x)) => Some(kept(&mut dropped, fed(q, &mut state.client_errors, x))),
            _ => None,
        };
        if let Some(e) = dropped {
            return Ok(Err(e));
        }
        let requests = count(&self.config.requests, requests)?;
        let errors = count(&self.config.errors, errors)?;
        let mut counts = Vec::with_capacity(buckets.len());
        for b in &buckets {
            counts.push(count(
                self.config.latency_buckets.as_deref().unwrap_or_default(),
                b.1,
            )?);
        }
        let client_errors = match (&self.config.client_errors, client_errors) {
            (Some(q), Some(x)) => Some(count(q, x)?),
            _ => None,
        };
        Ok(Ok(Totals {
            requests,
            errors,
            client_errors,
            latency: (!buckets.is_empty()).then(|| Histogram {
                le_ms: buckets.iter().map(|b| b.0).collect(),
                counts,
            }),
        }))
    }
}

/// A part of a snapshot, or the counter that went down in it.
type Dropped<T> = Result<T, String>;

/// A sample value of `what` (the query, as the error names it) as a count:
/// a number, finite, not negative, at most 2^53 — the bound the judge uses.
/// A saturated counter (1e30) is refused here, so its interval is no data.
fn parse_value(what: &str, v: &str) -> Result<f64, String> {
    let x: f64 = v
        .parse()
        .map_err(|_| format!("{what} is `{v}`, not a number"))?;
    serin_analysis::bounds::count(what, x)
        .map(|_| x)
        .map_err(|_| {
            format!(
                "{what} is {v}, expected a count from 0 to 2^53 (a saturated or broken counter)"
            )
        })
}

impl PrometheusSource {
    /// Cumulative numerator and denominator of every custom metric for
    /// `version`, in configuration order, carried across counter resets.
    async fn custom(&mut self, version: Version, at: f64) -> Result<Dropped<Vec<Ratio>>, String> {
        let mut raw = Vec::with_capacity(self.custom.len());
        for c in &self.custom {
            // No event yet (no checkout) is a legitimate empty numerator; an
            // empty denominator is no exposure seen, or a wrong query.
            let numerator = self
                .scalar_or_zero(&c.numerator, version, at)
                .await
                .map_err(|e| format!("custom metric `{}` numerator: {e}", c.name))?;
            let denominator = self
                .scalar(&c.denominator, version, at)
                .await
                .map_err(|e| format!("custom metric `{}` denominator: {e}", c.name))?;
            raw.push((numerator, denominator));
        }
        let state = match version {
            Version::Stable => &mut self.stable,
            Version::Canary => &mut self.canary,
            Version::Baseline => self.baseline.get_or_insert_with(VersionState::default),
        };
        if state.custom.len() != raw.len() {
            state.custom = vec![Default::default(); raw.len()];
        }
        // Every counter is fed, then the first drop is the answer.
        let mut dropped: Option<String> = None;
        let ratios: Vec<Ratio> = raw
            .into_iter()
            .zip(state.custom.iter_mut())
            .zip(&self.custom)
            .map(|(((n, d), (mn, md)), c)| {
                let mut fed = |m: &mut Monotone, v: f64, part: &str| {
                    let r = m
                        .feed(v, at)
                        .map_err(|e| format!("custom metric `{}` {part} {e}", c.name));
                    kept(&mut dropped, r).round() as u64
                };
                Ratio {
                    numerator: fed(mn, n, "numerator"),
                    denominator: fed(md, d, "denominator"),
                }
            })
            .collect();
        Ok(match dropped {
            Some(e) => Err(e),
            None => Ok(ratios),
        })
    }
}

/// The value of a counter fed, or 0 with its error kept in `dropped` (the
/// first one wins): every counter is fed before a snapshot answers.
fn kept(dropped: &mut Option<String>, r: Result<f64, String>) -> f64 {
    r.unwrap_or_else(|e| {
        dropped.get_or_insert(e);
        0.0
    })
}

/// Now as Unix seconds (the evaluation time of one snapshot's queries).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl MetricSource for PrometheusSource {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>> {
        Box::pin(async move { self.read().await.map_err(Error::unavailable) })
    }
}

impl PrometheusSource {
    /// Both versions' totals (and custom metrics) now, or what Prometheus
    /// said instead.
    async fn read(&mut self) -> Result<Snapshot, String> {
        {
            let at = unix_now();
            // Every part is read (and its counters fed) before the first
            // error is the answer, so each counter sees every snapshot.
            let stable = self.totals(Version::Stable, at).await?;
            let canary = self.totals(Version::Canary, at).await?;
            let baseline = match self.baseline {
                Some(_) => Some(self.totals(Version::Baseline, at).await?),
                None => None,
            };
            // The custom metrics' reference: the baseline when there is one.
            let reference = match baseline {
                Some(_) => Version::Baseline,
                None => Version::Stable,
            };
            let custom = if self.custom.is_empty() {
                (Ok(Vec::new()), Ok(Vec::new()))
            } else {
                let s = self.custom(reference, at).await?;
                let c = self.custom(Version::Canary, at).await?;
                (s, c)
            };
            let (stable, canary, baseline) = (stable?, canary?, baseline.transpose()?);
            let custom = custom.0?.into_iter().zip(custom.1?).collect();
            Ok(Snapshot {
                stable,
                canary,
                baseline,
                custom,
                ..Snapshot::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_resets_carry_the_old_total() {
        let mut m = Monotone::default();
        assert_eq!(m.feed(100.0, 0.0), Ok(100.0));
        assert_eq!(m.feed(150.0, 2.0), Ok(150.0));
        // Down: no data until it has stayed down three readings.
        assert!(m.feed(20.0, 4.0).is_err());
        assert!(m.feed(25.0, 6.0).is_err());
        assert_eq!(m.feed(28.0, 8.0), Ok(178.0), "reset: 150 before, 28 since");
        assert_eq!(m.feed(30.0, 10.0), Ok(180.0));
    }

    /// One pod's series missing from a `sum()` for one evaluation: the sum
    /// dips, then comes back at its height. Counted on from where it was,
    /// never its whole history again (outside breaker: the replay gave a
    /// 30 %-error canary early success).
    #[test]
    fn a_series_missing_for_one_reading_is_no_data_not_a_reset() {
        let mut m = Monotone::default();
        assert_eq!(m.feed(3000.0, 0.0), Ok(3000.0));
        let dip = m.feed(2000.0, 2.0).unwrap_err();
        assert!(dip.starts_with("went down from 3000 to 2000"), "{dip}");
        assert_eq!(m.feed(3100.0, 4.0), Ok(3100.0));
        assert_eq!(m.feed(3200.0, 6.0), Ok(3200.0));
    }

    #[test]
    fn a_spike_is_handed_on_but_never_taken_for_a_reset() {
        let mut m = Monotone::default();
        assert_eq!(m.feed(1000.0, 0.0), Ok(1000.0));
        // 10^12 in 2 s: handed on (the judge refuses it), not remembered.
        assert_eq!(m.feed(1e12 + 1100.0, 2.0), Ok(1e12 + 1100.0));
        // Back to normal: not a reset, no offset.
        assert_eq!(m.feed(1200.0, 4.0), Ok(1200.0));
    }

    #[test]
    fn values_must_be_finite_counts() {
        let v = |x| parse_value("`q`", x);
        assert_eq!(v("12"), Ok(12.0));
        assert!(v("NaN").is_err());
        assert!(v("-1").is_err());
        assert!(v("+Inf").is_err());
        assert_eq!(
            v("1e+30"),
            Err(
                "`q` is 1e+30, expected a count from 0 to 2^53 (a saturated or broken counter)"
                    .into()
            ),
            "beyond 2^53: saturated, and the error names the query"
        );
        assert_eq!(v("x"), Err("`q` is `x`, not a number".into()));
    }

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Values by PromQL text (absent: an empty result), and the `time`
    /// parameters seen.
    #[derive(Default)]
    struct Fake {
        values: HashMap<String, f64>,
        times: Vec<String>,
    }

    /// A stand-in for Prometheus' instant-query API on 127.0.0.1.
    async fn fake_prometheus(state: Arc<Mutex<Fake>>) -> String {
        use axum::extract::Query;
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
                let state = state.clone();
                async move {
                    let mut s = state.lock().unwrap();
                    s.times.push(q.get("time").cloned().unwrap_or_default());
                    let result = match s.values.get(q.get("query").map_or("", |x| x.as_str())) {
                        Some(v) => {
                            serde_json::json!([{"metric": {}, "value": [1.0, v.to_string()]}])
                        }
                        None => serde_json::json!([]),
                    };
                    axum::Json(serde_json::json!({
                        "status": "success",
                        "data": {"resultType": "vector", "result": result}
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn source(address: String) -> PrometheusSource {
        PrometheusSource::new(
            PrometheusSettings {
                address,
                requests: "req{v=\"{{version}}\"}".into(),
                errors: "err{v=\"{{version}}\"}".into(),
                latency_buckets: None,
                client_errors: None,
            },
            vec![CustomMetric {
                name: "conversion".into(),
                numerator: "checkouts{v=\"{{version}}\"}".into(),
                denominator: "visits{v=\"{{version}}\"}".into(),
            }],
        )
    }

    fn set(state: &Arc<Mutex<Fake>>, pairs: &[(&str, f64)]) {
        let mut s = state.lock().unwrap();
        for (k, v) in pairs {
            s.values.insert(k.to_string(), *v);
        }
    }

    #[tokio::test]
    async fn custom_metrics_are_queried_per_version_and_carried_across_resets() {
        let state = Arc::new(Mutex::new(Fake::default()));
        let address = fake_prometheus(state.clone()).await;
        let mut source = source(address);
        set(
            &state,
            &[
                ("req{v=\"stable\"}", 1000.0),
                ("req{v=\"canary\"}", 100.0),
                ("visits{v=\"stable\"}", 900.0),
                ("visits{v=\"canary\"}", 90.0),
                ("checkouts{v=\"stable\"}", 90.0),
            ],
        );
        // No error and no canary checkout yet: both count as 0.
        let first = source.snapshot().await.unwrap();
        assert_eq!(first.stable.errors, 0);
        let r = |numerator, denominator| Ratio {
            numerator,
            denominator,
        };
        assert_eq!(first.custom, vec![(r(90, 900), r(0, 90))]);
        {
            let s = state.lock().unwrap();
            assert!(
                s.times.windows(2).all(|w| w[0] == w[1] && !w[0].is_empty()),
                "one evaluation time per snapshot: {:?}",
                s.times
            );
        }
        // The canary app restarted: its counters start again from 0.
        set(
            &state,
            &[
                ("visits{v=\"stable\"}", 1800.0),
                ("checkouts{v=\"stable\"}", 180.0),
                ("visits{v=\"canary\"}", 30.0),
                ("checkouts{v=\"canary\"}", 2.0),
            ],
        );
        // No data while it may be a series missing from the sum; once it
        // has stayed down, a reset: the 90 visits before it are carried.
        for _ in 1..DROPS_BEFORE_RESET {
            let err = source.snapshot().await.unwrap_err().to_string();
            assert!(err.contains("went down from 90 to 30"), "{err}");
        }
        let second = source.snapshot().await.unwrap();
        assert_eq!(
            second.custom,
            vec![(r(180, 1800), r(2, 120))],
            "the canary's 90 visits before the reset are carried"
        );
        // No denominator is no data, naming the metric.
        state.lock().unwrap().values.remove("visits{v=\"canary\"}");
        let err = source.snapshot().await.unwrap_err().to_string();
        assert!(
            err.contains("custom metric `conversion` denominator") && err.contains("no series"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_baseline_is_queried_as_the_third_version_and_missing_it_is_no_data() {
        let state = Arc::new(Mutex::new(Fake::default()));
        let address = fake_prometheus(state.clone()).await;
        let mut plain = source(address.clone());
        let mut source = source(address).with_baseline();
        set(
            &state,
            &[
                ("req{v=\"stable\"}", 1000.0),
                ("req{v=\"canary\"}", 100.0),
                ("err{v=\"canary\"}", 7.0),
                ("visits{v=\"stable\"}", 900.0),
                ("visits{v=\"canary\"}", 90.0),
                ("checkouts{v=\"canary\"}", 3.0),
                ("checkouts{v=\"stable\"}", 90.0),
            ],
        );
        // Without a baseline the source never asks for one.
        let s = plain.snapshot().await.unwrap();
        assert_eq!(s.baseline, None);
        // The baseline has no request series yet (not running, or a label
        // that does not tell it apart): no data, naming its query.
        let err = source.snapshot().await.unwrap_err().to_string();
        assert!(
            err.contains("req{v=\"baseline\"}") && err.contains("no series"),
            "{err}"
        );
        set(
            &state,
            &[
                ("req{v=\"baseline\"}", 110.0),
                ("err{v=\"baseline\"}", 1.0),
                ("visits{v=\"baseline\"}", 95.0),
                ("checkouts{v=\"baseline\"}", 9.0),
            ],
        );
        let s = source.snapshot().await.unwrap();
        let b = s.baseline.expect("the baseline's totals");
        assert_eq!((b.requests, b.errors), (110, 1));
        assert_eq!((s.stable.requests, s.canary.requests), (1000, 100));
        let r = |numerator, denominator| Ratio {
            numerator,
            denominator,
        };
        // Custom metrics: the baseline stands in the stable's place.
        assert_eq!(s.custom, vec![(r(9, 95), r(3, 90))]);
        // Its counters are carried across a reset like the others'.
        set(&state, &[("req{v=\"baseline\"}", 10.0)]);
        for _ in 1..DROPS_BEFORE_RESET {
            assert!(source.snapshot().await.is_err());
        }
        let s = source.snapshot().await.unwrap();
        assert_eq!(s.baseline.map(|b| b.requests), Some(120));
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_an_error_never_numbers() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut source = source(format!("http://127.0.0.1:{port}"));
        let err = source.snapshot().await.unwrap_err();
        assert_eq!(err.kind(), crate::error::Kind::Unavailable);
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    #[tokio::test]
    async fn a_prometheus_that_stalls_in_its_body_is_no_data_in_bounded_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Headers promising 1000 bytes, ten of them, then nothing.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"status\":")
                    .await;
                held.push(conn);
            }
        });
        let mut source = source(format!("http://{addr}"));
        source.timeout = Duration::from_millis(300);
        let err = tokio::time::timeout(Duration::from_secs(20), source.snapshot())
            .await
            .expect("the query is bounded")
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::Kind::Unavailable);
        assert!(err.to_string().contains("did not answer"), "{err}");
    }
}
