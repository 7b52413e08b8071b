//! `serin load`: steady open-loop load with a latency summary.
//!
//! **Open loop.** Request *i* is due at `start + i / rps`, and is sent then
//! whether or not earlier requests have been answered: a slow server does not
//! slow the sender down, so the number of requests is `rps × duration` however
//! slow the answers. Latency is measured from the *due* time, not from the
//! moment the request left, so when the sender itself falls behind (a busy
//! machine) that delay counts too: the percentiles are not flattered by
//! coordinated omission.
//!
//! **Bounded.** Sending ends after `--duration` (or on Ctrl-C); then the
//! requests in flight are waited for, each at most `--timeout`. At most
//! `--max-in-flight` requests are open at once (default `rps × timeout`,
//! capped at 1000): a due request that finds the limit reached is not sent
//! and is counted as `skipped`, never silently dropped. Requests go through
//! one pooled keep-alive HTTP/1.1 client; nothing is stored per request (the
//! latencies go into a fixed-size HDR histogram).
//!
//! **Summary.** Requests sent, by status class (`2xx` … `5xx`, and `failed`
//! for connection errors and timeouts), and p50/p95/p99/max latency of the
//! requests that got an answer (any status; the body is read to the end).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::cli::output::OutputFormat;
use crate::cli::signals;
use crate::exit::{Exit, invalid};
use crate::time::parse_duration;

/// The highest rate accepted, requests per second.
pub const MAX_RPS: f64 = 1_000_000.0;

/// The highest `max_in_flight` accepted.
pub const MAX_IN_FLIGHT: usize = 100_000;

/// The default limit on requests in flight is `rps × timeout`, at most this.
pub const DEFAULT_MAX_IN_FLIGHT_CAP: usize = 1000;

/// Flags of `serin load`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Open loop: request i is sent at start + i/rps whether or not earlier ones were \
answered, and its latency is measured from that scheduled time. Requests that find \
--max-in-flight reached are not sent and are counted as skipped. Percentiles are over \
the requests that got an answer; `failed` counts connection errors and timeouts.")]
pub struct Args {
    /// The URL to request (GET), http://host:port/path.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Requests per second (may be fractional, e.g. 0.5).
    #[arg(long, value_name = "N")]
    pub rps: f64,

    /// How long to send, e.g. 30s, 500ms, 2m.
    #[arg(long, value_name = "D")]
    pub duration: String,

    /// A request header, NAME:VALUE. Repeatable.
    #[arg(long = "header", short = 'H', value_name = "K:V")]
    pub header: Vec<String>,

    /// How long one request may take before it counts as failed, e.g. 10s.
    #[arg(long, value_name = "D", default_value = "10s")]
    pub timeout: String,

    /// Most requests open at once (default: rps × timeout, at most 1000).
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,
}

/// What to load and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://host:port/path?query`; requests are GETs.
    pub url: String,
    /// Requests per second; finite, above 0, at most [`MAX_RPS`].
    pub rps: f64,
    /// How long to send.
    pub duration: Duration,
    /// Headers added to every request, `(name, value)`.
    pub headers: Vec<(String, String)>,
}

/// Limits of one run; [`LoadOptions::default`] is what [`run_load`] uses.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How long one request (connect, answer and body) may take.
    pub timeout: Duration,
    /// Most requests open at once; `None`: `rps × timeout`, at most
    /// [`DEFAULT_MAX_IN_FLIGHT_CAP`], at least 1.
    pub max_in_flight: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            timeout: Duration::from_secs(10),
            max_in_flight: None,
        }
    }
}

/// Answers by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatusClasses {
    /// 1xx final answers (rare).
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// No answer: connection errors and timeouts.
    pub failed: u64,
}

impl StatusClasses {
    fn count(&mut self, status: u16) {
        match status {
            200..=299 => self.success += 1,
            300..=399 => self.redirect += 1,
            400..=499 => self.client_error += 1,
            500..=599 => self.server_error += 1,
            _ => self.informational += 1,
        }
    }
}

/// The result of a run. JSON field names are camelCase (`p50Ms`), the
/// classes `"2xx"` … `"5xx"` and `"failed"`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The URL loaded.
    pub url: String,
    /// The rate asked for.
    pub target_rps: f64,
    /// How long requests were sent: the configured duration, or less when
    /// stopped early.
    pub duration_seconds: f64,
    /// Requests that came due in that time.
    pub scheduled: u64,
    /// Requests sent (`scheduled - skipped`); each is counted in exactly one
    /// class.
    pub count: u64,
    /// Due requests not sent because `max_in_flight` were open.
    pub skipped: u64,
    /// The limit on requests in flight that applied.
    pub max_in_flight: usize,
    /// Requests sent per second of `duration_seconds`.
    pub achieved_rps: f64,
    /// Answers by status class, and `failed`.
    pub classes: StatusClasses,
    /// Of `failed`, those that ran out of time.
    pub timed_out: u64,
    /// Latency percentiles of answered requests, from the scheduled send
    /// time to the end of the body, in milliseconds; `None` without answers.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest answer, ms.
    pub max_ms: Option<f64>,
    /// Mean, ms.
    pub mean_ms: Option<f64>,
    /// The first failure's message, if any failed (e.g. connection refused).
    pub first_error: Option<String>,
    /// Whether the stop future ended sending before the duration was over.
    pub interrupted: bool,
}

/// Latencies are recorded in microseconds, 1 µs to 1 hour, 3 significant
/// digits: a fixed ~200 KB however long the run.
const HIST_MAX_MICROS: u64 = 3_600_000_000;

/// What the request tasks report into.
struct Tally {
    latency: Histogram<u64>,
    classes: StatusClasses,
    timed_out: u64,
    first_error: Option<String>,
}

/// A checked [`LoadConfig`].
struct Plan {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    rps: f64,
    duration: Duration,
    timeout: Duration,
    max_in_flight: usize,
}

/// Runs the load with [`LoadOptions::default`]; see [`run_load_with`].
pub async fn run_load(
    config: LoadConfig,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    run_load_with(config, LoadOptions::default(), stop).await
}

/// Sends GETs to `config.url` at `config.rps` for `config.duration` (or
/// until `stop` resolves), then waits for the requests in flight (each at
/// most `options.timeout`) and sums up.
///
/// A config that does not check out (URL, rate, header, zero duration) is an
/// [`crate::error::Kind::Invalid`] error naming the field; failed requests are
/// not errors, they are counted.
pub async fn run_load_with(
    config: LoadConfig,
    options: LoadOptions,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let plan = plan(&config, &options)?;
    let tally = Arc::new(Mutex::new(Tally {
        latency: Histogram::new_with_bounds(1, HIST_MAX_MICROS, 3)
            .context("creating the latency histogram")?,
        classes: StatusClasses::default(),
        timed_out: 0,
        first_error: None,
    }));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(plan.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(plan.max_in_flight)
        .build(connector);
    let permits = Arc::new(tokio::sync::Semaphore::new(plan.max_in_flight));
    let request = Arc::new(RequestTemplate {
        uri: plan.uri.clone(),
        headers: plan.headers.clone(),
    });

    // Due sends: i / rps < duration, with a little slack for float error
    // (0.1 × 30 is not exactly 3).
    let due_count = (plan.rps * plan.duration.as_secs_f64() - 1e-9)
        .ceil()
        .max(0.0) as u64;
    let period = 1.0 / plan.rps;
    let start = Instant::now();
    let (mut scheduled, mut skipped) = (0u64, 0u64);
    let mut interrupted = false;
    tokio::pin!(stop);
    while scheduled < due_count {
        let due = start + Duration::from_secs_f64(scheduled as f64 * period);
        if due > Instant::now() {
            tokio::select! {
                biased;
                () = &mut stop => {
                    interrupted = true;
                    break;
                }
                () = tokio::time::sleep_until(due) => {}
            }
        }
        scheduled += 1;
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (client, request, tally) = (client.clone(), request.clone(), tally.clone());
                let timeout = plan.timeout;
                tokio::spawn(async move {
                    send(&client, &request, due, timeout, &tally).await;
                    drop(permit);
                });
            }
            Err(_) => skipped += 1,
        }
    }
    let sent_for = if interrupted {
        start.elapsed()
    } else {
        plan.duration
    };
    // Every request gives its permit back when done (each is bounded by the
    // timeout), so holding all permits means nothing is in flight.
    let all = u32::try_from(plan.max_in_flight).context("max in flight above u32")?;
    let _ = permits
        .acquire_many(all)
        .await
        .context("waiting for the requests in flight")?;

    let tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let count = scheduled - skipped;
    let h = &tally.latency;
    let ms = |micros: u64| micros as f64 / 1000.0;
    // Percentiles only when something was answered (an empty histogram
    // reads 0, which would look like a fast server).
    let quantile = |q: f64| (!h.is_empty()).then(|| ms(h.value_at_quantile(q)));
    let secs = sent_for.as_secs_f64();
    Ok(Summary {
        url: config.url,
        target_rps: plan.rps,
        duration_seconds: secs,
        scheduled,
        count,
        skipped,
        max_in_flight: plan.max_in_flight,
        achieved_rps: if secs > 0.0 { count as f64 / secs } else { 0.0 },
        classes: tally.classes.clone(),
        timed_out: tally.timed_out,
        p50_ms: quantile(0.50),
        p95_ms: quantile(0.95),
        p99_ms: quantile(0.99),
        max_ms: (!h.is_empty()).then(|| ms(h.max())),
        mean_ms: (!h.is_empty()).then(|| h.mean() / 1000.0),
        first_error: tally.first_error.clone(),
        interrupted,
    })
}

/// The parts every request shares.
struct RequestTemplate {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// One request: send, read the body to the end, record.
async fn send(
    client: &Client<HttpConnector, Empty<Bytes>>,
    template: &RequestTemplate,
    due: Instant,
    timeout: Duration,
    tally: &Mutex<Tally>,
) {
    let mut request = Request::get(template.uri.clone());
    for (name, value) in &template.headers {
        request = request.header(name, value);
    }
    let outcome = match request.body(Empty::new()) {
        Ok(request) => {
            let exchange = async {
                let response = client.request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                Ok::<u16, Box<dyn std::error::Error + Send + Sync>>(status)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(e)) => Err((false, error_chain(&*e))),
                Err(_) => Err((true, format!("no answer within {timeout:?}"))),
            }
        }
        Err(e) => Err((false, format!("building the request: {e}"))),
    };
    let took = due.elapsed();
    let mut tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match outcome {
        Ok(status) => {
            tally.classes.count(status);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
            tally.latency.saturating_record(micros);
        }
        Err((timed_out, message)) => {
            tally.classes.failed += 1;
            if timed_out {
                tally.timed_out += 1;
            }
            tally.first_error.get_or_insert(message);
        }
    }
}

/// `error: cause: cause`, as hyper's own `Display` leaves out the causes
/// (e.g. "client error (Connect)" without "connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn plan(config: &LoadConfig, options: &LoadOptions) -> anyhow::Result<Plan> {
    let uri = parse_url(&config.url).map_err(|e| invalid(format!("load URL: {e}")))?;
    check_rps(config.rps).map_err(|e| invalid(format!("load rps: {e}")))?;
    if config.duration.is_zero() {
        return Err(invalid("load duration: expected more than 0"));
    }
    if options.timeout.is_zero() {
        return Err(invalid("load timeout: expected more than 0"));
    }
    let mut headers = Vec::with_capacity(config.headers.len());
    for (name, value) in &config.headers {
        headers
            .push(header(name, value).map_err(|e| invalid(format!("load header `{name}`: {e}")))?);
    }
    let max_in_flight = match options.max_in_flight {
        Some(n) if !(1..=MAX_IN_FLIGHT).contains(&n) => {
            return Err(invalid(format!(
                "load max in flight: expected 1 to {MAX_IN_FLIGHT}, got {n}"
            )));
        }
        Some(n) => n,
        None => {
            let n = (config.rps * options.timeout.as_secs_f64()).ceil();
            (n.min(DEFAULT_MAX_IN_FLIGHT_CAP as f64) as usize).max(1)
        }
    };
    Ok(Plan {
        uri,
        headers,
        rps: config.rps,
        duration: config.duration,
        timeout: options.timeout,
        max_in_flight,
    })
}

/// An `http://` URL with a host; the path defaults to `/`.
fn parse_url(text: &str) -> Result<Uri, String> {
    let expected =
        || format!("expected an http:// URL such as http://127.0.0.1:8080/, got `{text}`");
    let uri: Uri = text.parse().map_err(|_| expected())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "https is not supported (the load generator speaks plain HTTP), got `{text}`"
            ));
        }
        _ => return Err(expected()),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(uri),
        _ => Err(expected()),
    }
}

fn check_rps(rps: f64) -> Result<(), String> {
    if rps.is_finite() && rps > 0.0 && rps <= MAX_RPS {
        Ok(())
    } else {
        Err(format!(
            "expected a number of requests per second above 0 and at most {MAX_RPS}, got {rps}"
        ))
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
    Ok((name, value))
}

/// `NAME:VALUE` from `--header`.
fn header_flag(spec: &str) -> anyhow::Result<(String, String)> {
    let expected = |why: &str| {
        invalid(format!(
            "--header: expected NAME:VALUE such as x-user-id:42, got `{spec}` ({why})"
        ))
    };
    let (name, value) = spec.split_once(':').ok_or_else(|| expected("no `:`"))?;
    if name.trim().is_empty() {
        return Err(expected("empty name"));
    }
    header(name, value).map_err(|e| expected(&e))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

fn duration_flag(flag: &str, value: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(value).map_err(|e| invalid(format!("{flag}: {e}")))?;
    if d.is_zero() {
        return Err(invalid(format!(
            "{flag}: expected a duration above 0, got `{value}`"
        )));
    }
    Ok(d)
}

/// Runs `serin load`: checks every flag (exit 2 naming it), loads, prints the
/// summary. Ctrl-C ends sending early; the summary still prints, once the
/// requests in flight are answered (each waited for at most `--timeout`).
pub fn run(args: Args, output: OutputFormat) -> anyhow::Result<Exit> {
    parse_url(&args.url).map_err(|e| invalid(format!("URL: {e}")))?;
    check_rps(args.rps).map_err(|e| invalid(format!("--rps: {e}")))?;
    let length = duration_flag("--duration", &args.duration)?;
    let timeout = duration_flag("--timeout", &args.timeout)?;
    if let Some(n) = args.max_in_flight
        && !(1..=MAX_IN_FLIGHT).contains(&n)
    {
        return Err(invalid(format!(
            "--max-in-flight: expected 1 to {MAX_IN_FLIGHT}, got {n}"
        )));
    }
    let headers = args
        .header
        .iter()
        .map(|h| header_flag(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = LoadConfig {
        url: args.url,
        rps: args.rps,
        duration: length,
        headers,
    };
    let options = LoadOptions {
        timeout,
        max_in_flight: args.max_in_flight,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(run_load_with(config, options, signals::terminated()))?;
    match output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&summary)?),
        OutputFormat::Text => crate::out!("{}", text(&summary)),
    }
    Ok(Exit::Success)
}

/// The summary as a few aligned lines.
pub fn text(s: &Summary) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
    let c = &s.classes;
    let mut out = format!(
        "target    {} req/s for {:.2} s{}  {}\n\
         requests  {} sent ({:.1}/s), {} skipped (max {} in flight)\n\
         status    2xx {}  3xx {}  4xx {}  5xx {}  failed {}{}\n\
         latency   p50 {}  p95 {}  p99 {}  max {}\n",
        s.target_rps,
        s.duration_seconds,
        if s.interrupted {
            " (stopped early)"
        } else {
            ""
        },
        s.url,
        s.count,
        s.achieved_rps,
        s.skipped,
        s.max_in_flight,
        c.success,
        c.redirect,
        c.client_error,
        c.server_error,
        c.failed,
        if s.timed_out > 0 {
            format!(" ({} timed out)", s.timed_out)
        } else {
            String::new()
        },
        ms(s.p50_ms),
        ms(s.p95_ms),
        ms(s.p99_ms),
        ms(s.max_ms),
    );
    if let Some(e) = &s.first_error {
        out.push_str(&format!("error     first failure: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://127.0.0.1:8080").unwrap().path(), "/");
        assert!(parse_url("http://localhost/x?y=1").is_ok());
        for bad in ["", "127.0.0.1:8080", "ftp://x/", "http://", "not a url"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url("https://x/").unwrap_err().contains("https"));
    }

    #[test]
    fn rates() {
        assert!(check_rps(0.5).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_RPS * 2.0] {
            assert!(check_rps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_flags() {
        assert_eq!(
            header_flag("x-user-id: 42").unwrap(),
            ("x-user-id".to_owned(), "42".to_owned())
        );
        // Only the first colon splits.
        assert_eq!(header_flag("x-t:a:b").unwrap().1, "a:b");
        for bad in ["novalue", ":v", "bad name:v", "x:\u{7f}"] {
            let err = header_flag(bad).unwrap_err().to_string();
            assert!(err.starts_with("--header:"), "{bad}: {err}");
        }
    }

    #[test]
    fn classes() {
        let mut c = StatusClasses::default();
        for s in [200, 204, 301, 404, 500, 503, 101] {
            c.count(s);
        }
        assert_eq!(
            (
                c.success,
                c.redirect,
                c.client_error,
                c.server_error,
                c.informational
            ),
            (2, 1, 1, 2, 1)
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["5xx"], 2);
        assert_eq!(json["failed"], 0);
    }

    #[test]
    fn default_in_flight_limit() {
        let config = LoadConfig {
            url: "http://127.0.0.1:1/".into(),
            rps: 200.0,
            duration: Duration::from_secs(1),
            headers: vec![],
        };
        let p = plan(&config, &LoadOptions::default()).unwrap();
        assert_eq!(p.max_in_flight, 1000);
        let slow = LoadConfig {
            rps: 0.5,
            ..config.clone()
        };
        assert_eq!(
            plan(&slow, &LoadOptions::default()).unwrap().max_in_flight,
            5
        );
        let bad = LoadConfig {
            headers: vec![("x y".into(), "1".into())],
            ..config
        };
        let err = plan(&bad, &LoadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("header"), "{err}");
    }
}
