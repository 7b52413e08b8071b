//! The 4xx check with Prometheus as the metric source: the rollout file's
//! `analysis.prometheus.clientErrors` query reaches the judge, and
//! `analysis.clientErrorRate` turns the check off. A real `prometheus` on a
//! free port of 127.0.0.1 scrapes a tiny exporter in the test whose counters
//! grow with time: both versions answer 50 requests a second without a 5xx;
//! stable answers 2 % of them with a 4xx, the canary 80 %.

mod common;

use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::nginx::{free_port, local};
use common::prometheus::Prometheus;
use common::serin::{Proc, demo_app, serin_run, text, wait_for_port, write};

/// `/metrics` with counters computed from `seconds` since the exporter
/// started.
fn exposition(seconds: f64) -> String {
    let requests = (50.0 * seconds).floor();
    let (stable_4xx, canary_4xx) = ((requests * 0.02).floor(), (requests * 0.8).floor());
    format!(
        "# TYPE app_requests_total counter\n\
         app_requests_total{{version=\"stable\"}} {requests}\n\
         app_requests_total{{version=\"canary\"}} {requests}\n\
         # TYPE app_errors_total counter\n\
         app_errors_total{{version=\"stable\"}} 0\n\
         app_errors_total{{version=\"canary\"}} 0\n\
         # TYPE app_client_errors_total counter\n\
         app_client_errors_total{{version=\"stable\"}} {stable_4xx}\n\
         app_client_errors_total{{version=\"canary\"}} {canary_4xx}\n"
    )
}

/// Runs a rollout judged on the exporter's numbers, with `extra` lines
/// under `analysis:` (and `prometheus_extra` under `analysis.prometheus:`);
/// returns the exit code and output.
fn run(name: &str, prometheus_extra: &str, extra: &str) -> (Option<i32>, String) {
    // At most 120 s of serving.
    let start = Instant::now();
    let exporter = Exporter::start_for(Duration::from_secs(120), move || {
        exposition(start.elapsed().as_secs_f64())
    });
    let prometheus = Prometheus::start(&[exporter.addr]);
    prometheus.wait_for(
        "sum(app_requests_total{version=\"canary\"})",
        0.0,
        Duration::from_secs(20),
    );
    let (_s, stable) = demo_app("v1", &[]);
    let (_c, canary) = demo_app("v2", &[]);
    let port = free_port();
    let v = "{{version}}";
    let yaml = format!(
        "name: {name}
stable:
  version: v1
  upstream: http://{stable}
canary:
  version: v2
  upstream: http://{canary}
traffic:
  listen: {listen}
steps:
  - setWeight: 50
  - pause: {{ duration: 4s }}
  - setWeight: 100
  - pause: {{ duration: 2s }}
analysis:
  interval: 1s
  minRequests: 50
  noDataLimit: 5
  prometheus:
    address: {url}
    requests: sum(app_requests_total{{version=\"{v}\"}})
    errors: sum(app_errors_total{{version=\"{v}\"}})
{prometheus_extra}{extra}",
        listen = local(port),
        url = prometheus.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = Proc::spawn(serin_run(&file, dir.path()), true);
    wait_for_port(local(port));
    let output = run.wait_output(Duration::from_secs(60));
    (output.status.code(), text(&output))
}

/// Fails before this change: `clientErrors` was an unknown field (exit 2),
/// and without it the 4xx check was off for Prometheus.
#[test]
fn a_canary_answering_mostly_4xx_is_rolled_back_on_prometheus_client_errors() {
    let (code, out) = run(
        "prom-4xx",
        "    clientErrors: sum(app_client_errors_total{version=\"{{version}}\"})\n",
        "",
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(out.contains("4xx") || out.contains("client-error"), "{out}");
}

/// The same canary with the check turned off in the file is promoted: the
/// setting, not the query alone, decides.
#[test]
fn client_error_rate_off_leaves_4xx_unjudged() {
    let (code, out) = run(
        "prom-4xx-off",
        "    clientErrors: sum(app_client_errors_total{version=\"{{version}}\"})\n",
        "  clientErrorRate: { maxRatioToStable: off }\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("promoted"), "{out}");
}
