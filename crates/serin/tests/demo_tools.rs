//! `serin demo-app` and `serin load`, on real sockets on 127.0.0.1: the
//! in-process APIs first, then the binary.
//!
//! No test asserts an upper bound on wall-clock time; every wait is bounded.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serin::demo::app::{DemoApp, Faults};
use serin::demo::load::{LoadConfig, LoadOptions, run_load, run_load_with};
use tokio::net::TcpListener;

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

struct Answer {
    status: u16,
    version: Option<String>,
    body: String,
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answer within 10 s")
        .expect("request");
    let status = res.status().as_u16();
    let version = res
        .headers()
        .get("x-serin-version")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        version,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, "").await
}

async fn post_faults(addr: SocketAddr, json: &str) -> Answer {
    request(addr, "POST", "/faults", json).await
}

async fn app(version: &str, faults: Faults) -> DemoApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    DemoApp::start(listener, version.to_owned(), faults)
        .await
        .unwrap()
}

fn faults(error_rate: f64, latency_ms: u64) -> Faults {
    Faults {
        error_rate,
        latency_ms,
        jitter_ms: 0,
    }
}

/// The value of one series line in Prometheus text, e.g.
/// `http_requests_total{version="v1",code="200"}`.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

fn load(url: String, rps: f64, duration: Duration) -> LoadConfig {
    LoadConfig {
        url,
        rps,
        duration,
        headers: vec![],
    }
}

// ---- demo app ----

#[tokio::test]
async fn every_response_names_the_version() {
    let app = app("v1.2.0", Faults::default()).await;
    for path in ["/", "/healthz", "/any/thing?x=1", "/metrics", "/faults"] {
        let a = get(app.addr(), path).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.version.as_deref(), Some("v1.2.0"), "{path}");
    }
    let a = get(app.addr(), "/").await;
    assert!(a.body.contains("v1.2.0"), "{}", a.body);
    app.stop().await;
}

#[tokio::test]
async fn error_rate_one_fails_everything_and_zero_nothing() {
    let broken = app("bad", faults(1.0, 0)).await;
    let fine = app("good", faults(0.0, 0)).await;
    for _ in 0..30 {
        let a = get(broken.addr(), "/").await;
        assert_eq!(a.status, 500);
        assert_eq!(
            a.version.as_deref(),
            Some("bad"),
            "errors carry the header too"
        );
        assert_eq!(get(fine.addr(), "/").await.status, 200);
    }
    broken.stop().await;
    fine.stop().await;
}

#[tokio::test]
async fn faults_change_at_runtime() {
    let app = app("v1", faults(0.0, 0)).await;
    assert_eq!(get(app.addr(), "/").await.status, 200);

    // A partial update changes only the field it names.
    let a = post_faults(app.addr(), r#"{"jitterMs":3}"#).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post_faults(app.addr(), r#"{"errorRate":1.0}"#).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let now: Faults = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        now,
        Faults {
            error_rate: 1.0,
            latency_ms: 0,
            jitter_ms: 3
        }
    );
    assert_eq!(get(app.addr(), "/").await.status, 500);
    let current: Faults = serde_json::from_str(&get(app.addr(), "/faults").await.body).unwrap();
    assert_eq!(current, now);

    // Bad input: 400 with a message, nothing changed.
    let a = post_faults(app.addr(), "{not json").await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("errorRate"), "{}", a.body);
    let a = post_faults(app.addr(), r#"{"errorRate":2}"#).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body.contains("errorRate: expected a number from 0 to 1"),
        "{}",
        a.body
    );
    let a = post_faults(app.addr(), r#"{"errorRat":0.5}"#).await;
    assert_eq!(a.status, 400, "unknown fields are refused: {}", a.body);
    assert_eq!(app.faults(), now);

    // Back to healthy, from inside the process this time.
    app.set_faults(Faults::default());
    assert_eq!(get(app.addr(), "/").await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_answers_by_code_with_the_version_label() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = DemoApp::start_with_metrics_label(
        listener,
        "v1.2.0".into(),
        "canary".into(),
        Faults::default(),
    )
    .await
    .unwrap();
    let text = get(app.addr(), "/metrics").await.body;
    // Both series exist before any traffic, at 0.
    let ok = r#"http_requests_total{version="canary",code="200"}"#;
    let err = r#"http_requests_total{version="canary",code="500"}"#;
    assert_eq!(series(&text, ok), Some(0.0), "{text}");
    assert_eq!(series(&text, err), Some(0.0), "{text}");

    for _ in 0..3 {
        get(app.addr(), "/").await;
    }
    app.set_faults(faults(1.0, 0));
    for _ in 0..2 {
        get(app.addr(), "/checkout").await;
    }
    post_faults(app.addr(), r#"{"errorRate":0}"#).await;
    let text = get(app.addr(), "/metrics").await.body;
    // /metrics and /faults are not counted.
    assert_eq!(series(&text, ok), Some(3.0), "{text}");
    assert_eq!(series(&text, err), Some(2.0), "{text}");
    assert_eq!(
        series(
            &text,
            r#"http_request_duration_seconds_count{version="canary"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            r#"http_request_duration_seconds_bucket{version="canary",le="+Inf"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    assert!(!text.contains("v1.2.0"), "the label replaces the version");
    app.stop().await;
}

#[tokio::test]
async fn latency_fault_shows_in_the_histogram() {
    let app = app("slow", faults(0.0, 120)).await;
    get(app.addr(), "/").await;
    let text = get(app.addr(), "/metrics").await.body;
    let bucket = |le: &str| {
        series(
            &text,
            &format!(r#"http_request_duration_seconds_bucket{{version="slow",le="{le}"}}"#),
        )
    };
    assert_eq!(bucket("0.1"), Some(0.0), "{text}");
    assert_eq!(bucket("+Inf"), Some(1.0), "{text}");
    app.stop().await;
}

// ---- load ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_sends_rps_times_duration() {
    let app = app("v1", Faults::default()).await;
    let s = run_load(
        load(
            format!("http://{}/", app.addr()),
            200.0,
            Duration::from_secs(1),
        ),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(s.scheduled, 200);
    assert_eq!(s.skipped, 0);
    assert_eq!(s.count, 200);
    assert_eq!(s.classes.success + s.classes.failed, 200);
    assert!(s.classes.success >= 190, "{s:?}");
    assert!(!s.interrupted);
    let (p50, p95, p99) = (s.p50_ms.unwrap(), s.p95_ms.unwrap(), s.p99_ms.unwrap());
    assert!(p50 > 0.0 && p50 <= p95 && p95 <= p99 && p99 <= s.max_ms.unwrap());
    // The app saw them.
    let text = get(app.addr(), "/metrics").await.body;
    let seen = series(&text, r#"http_requests_total{version="v1",code="200"}"#).unwrap();
    assert_eq!(seen as u64, s.classes.success);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_open_loop_against_a_slow_app() {
    // At 300 ms per answer a closed loop of a few workers would send a few
    // dozen; the open loop sends on schedule.
    let app = app("slow", faults(0.0, 300)).await;
    let s = run_load(
        load(
            format!("http://{}/", app.addr()),
            200.0,
            Duration::from_secs(1),
        ),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(s.count, 200, "{s:?}");
    assert_eq!(s.skipped, 0);
    assert!(s.classes.success >= 190, "{s:?}");
    assert!(
        s.p50_ms.unwrap() >= 300.0,
        "p50 includes the latency fault: {s:?}"
    );
    let text = get(app.addr(), "/metrics").await.body;
    let seen = series(&text, r#"http_requests_total{version="slow",code="200"}"#).unwrap();
    assert_eq!(seen as u64, s.classes.success);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_errors_by_class() {
    let app = app("bad", faults(1.0, 0)).await;
    let s = run_load(
        load(
            format!("http://{}/", app.addr()),
            100.0,
            Duration::from_millis(500),
        ),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(s.count, 50);
    assert_eq!(s.classes.server_error + s.classes.failed, 50);
    assert!(s.classes.server_error >= 45, "{s:?}");
    assert_eq!(s.classes.success, 0);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["classes"]["5xx"], s.classes.server_error);
    assert!(json["p99Ms"].is_number());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_skips_and_counts() {
    let app = app("slow", faults(0.0, 300)).await;
    let s = run_load_with(
        load(
            format!("http://{}/", app.addr()),
            200.0,
            Duration::from_secs(1),
        ),
        LoadOptions {
            timeout: Duration::from_secs(10),
            max_in_flight: Some(10),
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(s.scheduled, 200);
    assert_eq!(s.count + s.skipped, 200);
    // 10 open at a time, each at least 300 ms, in about 1 s: far fewer than 200.
    assert!(s.skipped >= 100, "{s:?}");
    assert_eq!(s.max_in_flight, 10);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_sending_early() {
    let app = app("v1", Faults::default()).await;
    let s = run_load(
        load(
            format!("http://{}/", app.addr()),
            50.0,
            Duration::from_secs(60),
        ),
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert!(s.interrupted);
    assert!(s.scheduled > 0 && s.scheduled < 3000, "{s:?}");
    assert_eq!(s.count, s.classes.success + s.classes.failed);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_failed_with_the_reason() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = run_load(
        load(
            format!("http://127.0.0.1:{port}/"),
            50.0,
            Duration::from_millis(200),
        ),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(s.count, 10);
    assert_eq!(s.classes.failed, 10);
    assert_eq!(s.p50_ms, None);
    let why = s.first_error.unwrap();
    assert!(why.to_lowercase().contains("refused"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_sent() {
    use axum::http::{HeaderMap, StatusCode};
    let router = axum::Router::new().fallback(|h: HeaderMap| async move {
        if h.get("x-user-id").is_some_and(|v| v == "42") {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let mut config = load(format!("http://{addr}/x"), 50.0, Duration::from_millis(200));
    let s = run_load(config.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(s.classes.client_error, 10, "{s:?}");
    config.headers = vec![("x-user-id".into(), "42".into())];
    let s = run_load(config, std::future::pending()).await.unwrap();
    assert_eq!(s.classes.success, 10, "{s:?}");
    server.abort();
}

#[tokio::test]
async fn bad_config_is_invalid_input() {
    for (config, what) in [
        (load("ftp://x/".into(), 10.0, Duration::from_secs(1)), "URL"),
        (
            load("http://127.0.0.1:1/".into(), 0.0, Duration::from_secs(1)),
            "rps",
        ),
        (
            load("http://127.0.0.1:1/".into(), 10.0, Duration::ZERO),
            "duration",
        ),
    ] {
        let err = run_load(config, std::future::pending()).await.unwrap_err();
        assert_eq!(
            serin::error::kind_of(&err),
            serin::error::Kind::Invalid,
            "{err}"
        );
        assert!(err.to_string().contains(what), "{err}");
    }
}

// ---- the binary ----

fn serin(args: &[&str]) -> Output {
    Command::new(SERIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running serin")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cli_load_rejects_bad_flags_with_exit_2() {
    let base = ["load", "http://127.0.0.1:1/", "--duration", "1s"];
    let cases: [(&[&str], &str); 6] = [
        (&["--rps", "10", "--header", "nocolon"], "--header"),
        (&["--rps", "10", "--header", "bad name:1"], "--header"),
        (&["--rps", "0"], "--rps"),
        (&["--rps", "-5"], "--rps"),
        (&["--rps", "10", "--timeout", "soon"], "--timeout"),
        (&["--rps", "10", "--max-in-flight", "0"], "--max-in-flight"),
    ];
    for (extra, flag) in cases {
        let out = serin(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{extra:?}: {}", stderr(&out));
    }
    let out = serin(&["load", "localhost:8080", "--rps", "10", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("URL"), "{}", stderr(&out));
    let out = serin(&[
        "load",
        "http://127.0.0.1:1/",
        "--rps",
        "10",
        "--duration",
        "0s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--duration"), "{}", stderr(&out));
}

#[test]
fn cli_demo_app_rejects_bad_flags_with_exit_2() {
    let out = serin(&[
        "demo-app",
        "--listen",
        "127.0.0.1:0",
        "--version",
        "v1",
        "--error-rate",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--error-rate"), "{}", stderr(&out));
    let out = serin(&["demo-app", "--listen", "nowhere", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_load_prints_json_and_text() {
    let app = app("v1", Faults::default()).await;
    let url = format!("http://{}/", app.addr());
    let run = |format: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            serin(&[
                "-o",
                format,
                "load",
                &url,
                "--rps",
                "40",
                "--duration",
                "500ms",
                "-H",
                "x-a: 1",
            ])
        })
    };
    let out = run("json").await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["count"], 20, "{s}");
    assert_eq!(s["classes"]["2xx"], 20, "{s}");
    assert!(s["p50Ms"].as_f64().unwrap() > 0.0, "{s}");

    let out = run("text").await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("20 sent"), "{text}");
    assert!(text.contains("2xx 20"), "{text}");
    assert!(text.contains("p99"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_demo_app_serves_until_killed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(SERIN)
        .args([
            "demo-app",
            "--listen",
            &listen,
            "--version",
            "v2",
            "--latency-ms",
            "5",
            "--metrics-version-label",
            "canary",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = listen.parse().unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if up {
        let a = get(addr, "/healthz").await;
        assert_eq!((a.status, a.version.as_deref()), (200, Some("v2")));
        let f: Faults = serde_json::from_str(&get(addr, "/faults").await.body).unwrap();
        assert_eq!(f.latency_ms, 5);
        let text = get(addr, "/metrics").await.body;
        assert_eq!(
            series(&text, r#"http_requests_total{version="canary",code="200"}"#),
            Some(1.0),
            "{text}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "serin demo-app did not listen on {listen} within 10 s");
}
