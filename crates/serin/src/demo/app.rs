//! `serin demo-app`: a small upstream for demos and tests, with faults that
//! can be changed while it runs.
//!
//! Endpoints:
//!
//! - `GET /metrics`: Prometheus text. `http_requests_total{version,code}`
//!   counts answered requests by status code; `http_request_duration_seconds`
//!   is a histogram of the time from a request's arrival to its answer
//!   (injected latency included). The series for codes 200 and 500 are always
//!   there, at 0 before the first request, so an error query never comes back
//!   empty. Only the application's own traffic is counted: requests to
//!   `/metrics` and `/faults` are not.
//! - `GET /faults`: the current faults as JSON,
//!   `{"errorRate":0.0,"latencyMs":0,"jitterMs":0}`.
//! - `POST /faults`: changes the faults. The body may name only some fields
//!   (`{"errorRate":0.2}` changes just the error rate); the answer is the
//!   faults now in force. Bad JSON or an out-of-range value is a 400 with a
//!   message, and changes nothing.
//! - Any other path and method: after the injected latency (`latencyMs` ±
//!   a uniform `jitterMs`, never below 0), a 500 with probability `errorRate`,
//!   otherwise a 200 with a short text body naming the version. So `/` and
//!   `/healthz` work as health checks (with the faults applied).
//!
//! Every response, from every endpoint, carries `x-serin-version: <--version>`.
//!
//! **The `version` label.** Every series carries `version="<label>"`, where
//! the label is `--metrics-version-label`, or the `--version` value when that
//! flag is absent. One Prometheus can then scrape a stable and a canary app
//! and tell them apart: start them with `--metrics-version-label stable` and
//! `--metrics-version-label canary`, and the queries of the rollout file's
//! `analysis.prometheus` section work as written, e.g.
//! `sum(http_requests_total{version="canary",code=~"5.."})`.
//!
//! Memory is fixed: one counter per status code and one per histogram bucket,
//! nothing stored per request.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::cli::signals;
use crate::exit::{Exit, invalid};

/// The response header naming the app's version.
pub const VERSION_HEADER: &str = "x-serin-version";

/// How long [`DemoApp::stop`] waits for requests in flight.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The largest `latencyMs` or `jitterMs` accepted: one hour.
pub const MAX_LATENCY_MS: u64 = 3_600_000;

/// Flags of `serin demo-app`.
///
/// `--version` here is the version the app plays, so the subcommand has no
/// `--version` flag of its own (`serin --version` still prints serin's).
#[derive(Debug, clap::Args)]
#[command(
    disable_version_flag = true,
    after_help = "\
Endpoints: GET /metrics (Prometheus text: http_requests_total{version,code}, \
http_request_duration_seconds{version}), GET /faults, POST /faults with JSON such as \
{\"errorRate\":0.2,\"latencyMs\":300,\"jitterMs\":50} (fields left out are kept). Any \
other path answers 200 (or an injected 500) naming the version. Every response carries \
x-serin-version."
)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the chosen
    /// address is logged).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,

    /// The version this app plays; sent in the x-serin-version header.
    #[arg(long, value_name = "V")]
    pub version: String,

    /// Fraction of requests answered with a 500, from 0 to 1.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Latency added to every request, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,

    /// Uniform jitter around --latency-ms, in milliseconds (the delay is
    /// latency ± jitter, never below 0).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub jitter_ms: u64,

    /// The value of the `version` label on every metric series (default: the
    /// --version value). Use `stable` and `canary` to match the rollout
    /// file's Prometheus queries.
    #[arg(long, value_name = "LABEL")]
    pub metrics_version_label: Option<String>,
}

/// The injected faults. `latency_ms ± jitter_ms` (uniform, never below 0) is
/// added to every application request; a fraction `error_rate` of them is
/// answered with a 500.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Fraction of requests answered with a 500, `0.0..=1.0`.
    pub error_rate: f64,
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Uniform jitter around `latency_ms`, in milliseconds.
    pub jitter_ms: u64,
}

impl Faults {
    /// Checks the ranges; the message names the field (as in the JSON) and
    /// what was expected.
    pub fn validate(&self) -> Result<(), String> {
        self.problem()
            .map_or(Ok(()), |(field, what)| Err(format!("{field}: {what}")))
    }

    /// The first value out of range: its JSON field name and what was
    /// expected.
    fn problem(&self) -> Option<(&'static str, String)> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Some((
                "errorRate",
                format!("expected a number from 0 to 1, got {}", self.error_rate),
            ));
        }
        for (field, value) in [("latencyMs", self.latency_ms), ("jitterMs", self.jitter_ms)] {
            if value > MAX_LATENCY_MS {
                return Some((
                    field,
                    format!("expected at most {MAX_LATENCY_MS} (one hour), got {value}"),
                ));
            }
        }
        None
    }

    /// The same faults brought into range: an error rate outside `0..=1`
    /// (or NaN) is clamped (NaN to 0), latencies to [`MAX_LATENCY_MS`].
    fn clamped(mut self) -> Faults {
        self.error_rate = if self.error_rate.is_nan() {
            0.0
        } else {
            self.error_rate.clamp(0.0, 1.0)
        };
        self.latency_ms = self.latency_ms.min(MAX_LATENCY_MS);
        self.jitter_ms = self.jitter_ms.min(MAX_LATENCY_MS);
        self
    }

    /// This request's delay: latency ± uniform jitter, never below 0.
    fn delay(&self) -> Duration {
        let base = self.latency_ms as i64;
        let jitter = self.jitter_ms as i64;
        let ms = if jitter > 0 {
            base + rand::random_range(-jitter..=jitter)
        } else {
            base
        };
        Duration::from_millis(ms.max(0) as u64)
    }

    /// Whether this request gets an injected 500.
    fn fail(&self) -> bool {
        self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate
    }
}

/// A partial update, as `POST /faults` takes it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsPatch {
    error_rate: Option<f64>,
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
}

impl FaultsPatch {
    fn apply(&self, to: &Faults) -> Faults {
        Faults {
            error_rate: self.error_rate.unwrap_or(to.error_rate),
            latency_ms: self.latency_ms.unwrap_or(to.latency_ms),
            jitter_ms: self.jitter_ms.unwrap_or(to.jitter_ms),
        }
    }
}

/// Upper bounds of the latency histogram, in seconds: fine enough around the
/// usual 100 ms – 2 s thresholds for interpolated quantiles to be close.
const BUCKETS: [f64; 21] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
    1.5, 2.0, 2.5, 5.0, 10.0,
];

/// Status codes are counted in a fixed table indexed by code.
const CODES: std::ops::Range<u16> = 100..600;

/// The app's counters: fixed size, lock-free.
struct Metrics {
    /// Requests by status code, index `code - 100`.
    by_code: Vec<AtomicU64>,
    /// Non-cumulative bucket counts; the last one is `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            by_code: CODES.map(|_| AtomicU64::new(0)).collect(),
            buckets: (0..=BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn record(&self, code: StatusCode, took: Duration) {
        if CODES.contains(&code.as_u16()) {
            self.by_code[usize::from(code.as_u16() - CODES.start)].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    fn render(&self, label: &str) -> String {
        use std::fmt::Write as _;
        let v = escape_label(label);
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP http_requests_total Requests answered by the demo app, by status code.\n\
             # TYPE http_requests_total counter\n",
        );
        for (i, counter) in self.by_code.iter().enumerate() {
            let code = CODES.start + i as u16;
            let n = counter.load(Ordering::Relaxed);
            if n > 0 || code == 200 || code == 500 {
                let _ = writeln!(
                    out,
                    "http_requests_total{{version=\"{v}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP http_request_duration_seconds Time from a request's arrival to its answer, \
             injected latency included.\n\
             # TYPE http_request_duration_seconds histogram\n",
        );
        let mut cumulative = 0u64;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{version=\"{v}\"}} {sum}"
        );
        // The count is the +Inf bucket, read once, so the two always agree.
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count{{version=\"{v}\"}} {cumulative}"
        );
        out
    }
}

/// Escapes a label value for the text format: backslash, quote, newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// What the handlers share.
struct Shared {
    version: String,
    /// The `x-serin-version` header, made once (or absent when the version
    /// is not a valid header value).
    version_header: Option<HeaderValue>,
    metrics_label: String,
    faults: Mutex<Faults>,
    metrics: Metrics,
}

impl Shared {
    fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_faults(&self, faults: Faults) {
        *self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = faults;
    }

    /// Applies a partial update under the lock, so two concurrent `POST`s
    /// each see the other's fields.
    fn patch_faults(&self, patch: &FaultsPatch) -> Result<Faults, String> {
        let mut current = self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = patch.apply(&current);
        next.validate()?;
        *current = next.clone();
        Ok(next)
    }
}

/// A running demo app.
///
/// Stop it with [`DemoApp::stop`], which waits for requests in flight;
/// dropping it also stops it, without waiting.
pub struct DemoApp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoApp {
    /// Starts serving on `listener`, on the current tokio runtime, with the
    /// metrics' `version` label equal to `version`. Faults out of range are
    /// clamped (see [`Faults::validate`] to reject them instead).
    pub async fn start(
        listener: TcpListener,
        version: String,
        faults: Faults,
    ) -> std::io::Result<DemoApp> {
        let label = version.clone();
        DemoApp::start_with_metrics_label(listener, version, label, faults).await
    }

    /// As [`DemoApp::start`], with the metrics' `version` label given apart
    /// from the version (e.g. `canary`, for the rollout file's queries).
    pub async fn start_with_metrics_label(
        listener: TcpListener,
        version: String,
        metrics_label: String,
        faults: Faults,
    ) -> std::io::Result<DemoApp> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            version_header: HeaderValue::from_str(&version).ok(),
            version,
            metrics_label,
            faults: Mutex::new(faults.clamped()),
            metrics: Metrics::new(),
        });
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/faults", get(get_faults).post(post_faults))
            .fallback(application)
            .layer(axum::middleware::map_response_with_state(
                shared.clone(),
                stamp_version,
            ))
            .with_state(shared.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A send or a dropped sender: either way, stop.
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(%addr, error = %e, "demo app stopped serving");
            }
        });
        Ok(DemoApp {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The version it plays.
    pub fn version(&self) -> &str {
        &self.shared.version
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the faults; takes effect for requests that arrive from now
    /// on. Out-of-range values are clamped.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults.clamped());
    }

    /// Stops accepting, and waits for the requests in flight to be answered,
    /// at most [`STOP_GRACE`]; connections still open then are left to
    /// finish on their own.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if e.is_panic() {
                    tracing::warn!(addr = %self.addr, "demo app task panicked");
                }
            }
            Err(_) => {
                tracing::warn!(addr = %self.addr, "demo app: requests still open after {STOP_GRACE:?}; not waiting for them");
                task.abort();
            }
        }
    }
}

/// Adds `x-serin-version` to every response.
async fn stamp_version(State(shared): State<Arc<Shared>>, mut response: Response) -> Response {
    if let Some(v) = &shared.version_header {
        response
            .headers_mut()
            .insert(HeaderName::from_static(VERSION_HEADER), v.clone());
    }
    response
}

/// Every path but `/metrics` and `/faults`: the faults, then an answer.
async fn application(State(shared): State<Arc<Shared>>) -> Response {
    let arrived = Instant::now();
    let faults = shared.faults();
    let delay = faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (code, body) = if faults.fail() {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("injected error from version {}\n", shared.version),
        )
    } else {
        (
            StatusCode::OK,
            format!("serin demo app, version {}\n", shared.version),
        )
    };
    shared.metrics.record(code, arrived.elapsed());
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(&shared.metrics_label),
    )
        .into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.faults()).into_response()
}

async fn post_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let bad = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("POST /faults: {message}\n"),
        )
            .into_response()
    };
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return bad(format!(
                "expected a JSON object with any of errorRate (0 to 1), latencyMs, jitterMs, \
                 such as {{\"errorRate\":0.2,\"latencyMs\":300}}: {e}"
            ));
        }
    };
    match shared.patch_faults(&patch) {
        Ok(now) => {
            tracing::info!(
                version = %shared.version,
                error_rate = now.error_rate,
                latency_ms = now.latency_ms,
                jitter_ms = now.jitter_ms,
                "faults changed"
            );
            axum::Json(now).into_response()
        }
        Err(message) => bad(message),
    }
}

/// Runs `serin demo-app` until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let faults = Faults {
        error_rate: args.error_rate,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
    };
    // Name the flag, not the JSON field, in the message.
    if let Some((field, what)) = faults.problem() {
        let flag = match field {
            "errorRate" => "--error-rate",
            "latencyMs" => "--latency-ms",
            _ => "--jitter-ms",
        };
        return Err(invalid(format!("{flag}: {what}")));
    }
    let listen = address(&args.listen)?;
    if args.version.is_empty() || HeaderValue::from_str(&args.version).is_err() {
        return Err(invalid(format!(
            "--version: expected a non-empty name usable as a header value, got `{}`",
            args.version
        )));
    }
    let label = args
        .metrics_version_label
        .unwrap_or_else(|| args.version.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| crate::error::Error::cannot_listen("--listen", listen, &e))?;
        let app = DemoApp::start_with_metrics_label(listener, args.version, label.clone(), faults)
            .await
            .context("reading the listening address")?;
        tracing::info!(
            listen = %app.addr(),
            version = %app.version(),
            metrics_version_label = %label,
            "demo app listening (GET /metrics, GET/POST /faults)"
        );
        signals::terminated().await;
        tracing::info!("shutting down: answering requests in flight");
        app.stop().await;
        Ok(Exit::Success)
    })
}

fn address(value: &str) -> anyhow::Result<SocketAddr> {
    let expected = || {
        invalid(format!(
            "--listen: expected HOST:PORT such as 127.0.0.1:9001, got `{value}`"
        ))
    };
    value
        .to_socket_addrs()
        .map_err(|_| expected())?
        .next()
        .ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = Faults {
            error_rate: 1.0,
            latency_ms: 10,
            jitter_ms: 5,
        };
        assert!(ok.validate().is_ok());
        for rate in [-0.1, 1.01, f64::NAN] {
            let bad = Faults {
                error_rate: rate,
                ..Faults::default()
            };
            assert!(bad.validate().unwrap_err().starts_with("errorRate:"));
        }
        let slow = Faults {
            jitter_ms: MAX_LATENCY_MS + 1,
            ..Faults::default()
        };
        assert!(slow.validate().unwrap_err().starts_with("jitterMs:"));
    }

    #[test]
    fn clamped_is_valid() {
        let f = Faults {
            error_rate: f64::NAN,
            latency_ms: u64::MAX,
            jitter_ms: 0,
        }
        .clamped();
        assert!(f.validate().is_ok());
        assert_eq!(f.error_rate, 0.0);
        assert_eq!(
            Faults {
                error_rate: 7.0,
                ..Faults::default()
            }
            .clamped()
            .error_rate,
            1.0
        );
    }

    #[test]
    fn delay_stays_within_jitter_and_above_zero() {
        let f = Faults {
            error_rate: 0.0,
            latency_ms: 10,
            jitter_ms: 30,
        };
        for _ in 0..1000 {
            let d = f.delay();
            assert!(d <= Duration::from_millis(40), "{d:?}");
        }
        let fixed = Faults {
            latency_ms: 25,
            ..Faults::default()
        };
        assert_eq!(fixed.delay(), Duration::from_millis(25));
    }

    #[test]
    fn patch_keeps_unnamed_fields() {
        let now = Faults {
            error_rate: 0.1,
            latency_ms: 300,
            jitter_ms: 20,
        };
        let patch: FaultsPatch = serde_json::from_str(r#"{"errorRate":0.5}"#).unwrap();
        assert_eq!(
            patch.apply(&now),
            Faults {
                error_rate: 0.5,
                ..now.clone()
            }
        );
        assert!(serde_json::from_str::<FaultsPatch>(r#"{"errorrate":0.5}"#).is_err());
    }

    #[test]
    fn metrics_render_cumulative_buckets() {
        let m = Metrics::new();
        m.record(StatusCode::OK, Duration::from_millis(3));
        m.record(StatusCode::OK, Duration::from_millis(120));
        m.record(StatusCode::INTERNAL_SERVER_ERROR, Duration::from_secs(20));
        let text = m.render("can\"ary");
        assert!(text.contains("http_requests_total{version=\"can\\\"ary\",code=\"200\"} 2\n"));
        assert!(text.contains("http_requests_total{version=\"can\\\"ary\",code=\"500\"} 1\n"));
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.15\"} 2\n"), "{text}");
        assert!(text.contains("le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("http_request_duration_seconds_count{version=\"can\\\"ary\"} 3\n"));
    }
}
