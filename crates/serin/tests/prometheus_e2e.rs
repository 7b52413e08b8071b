//! Prometheus as the metric source, with Debian's real `prometheus` on a free
//! port of 127.0.0.1 scraping `serin demo-app`s (and, for business metrics,
//! a tiny exporter in the test) every second. `serin run` judges from its
//! answers: a bad canary is rolled back, a Prometheus that goes away
//! mid-rollout is no data (rolled back, never promoted), and a custom
//! numerator/denominator metric is compared between the versions.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::nginx::{free_port, local};
use common::prometheus::Prometheus;
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin_run, text, wait_for_port, write};

/// An exporter of business counters growing with time (for 90 s, then
/// still): per second, `visits` visits per version, of which `stable_rate`
/// (`canary_rate`) check out.
fn business(visits: [f64; 2], stable_rate: f64, canary_rate: f64) -> Exporter {
    let start = Instant::now();
    Exporter::start(move || {
        let t = start.elapsed().as_secs_f64().min(90.0);
        let (vs, vc) = ((visits[0] * t).floor(), (visits[1] * t).floor());
        counters(
            (vs, (vs * stable_rate).floor()),
            (vc, (vc * canary_rate).floor()),
        )
    })
}

/// Exposition text for `visits_total` and `checkouts_total` of both
/// versions: (visits, checkouts) each.
fn counters(stable: (f64, f64), canary: (f64, f64)) -> String {
    format!(
        "# TYPE visits_total counter\nvisits_total{{version=\"stable\"}} {}\n\
         visits_total{{version=\"canary\"}} {}\n\
         # TYPE checkouts_total counter\ncheckouts_total{{version=\"stable\"}} {}\n\
         checkouts_total{{version=\"canary\"}} {}\n",
        stable.0, canary.0, stable.1, canary.1
    )
}

/// A built-in-proxy rollout judged on Prometheus' numbers, plus `extra`
/// lines under `analysis:`.
fn rollout(
    name: &str,
    port: u16,
    stable: SocketAddr,
    canary: SocketAddr,
    prometheus: &str,
    steps: &str,
    extra: &str,
) -> String {
    Rollout::new(name, local(port), stable, canary)
        .steps(steps)
        .interval("2s")
        .no_data_limit(2)
        .analysis(&format!(
            "  prometheus:
    address: {prometheus}
    requests: sum(http_requests_total{{version=\"{{{{version}}}}\"}})
    errors: sum(http_requests_total{{version=\"{{{{version}}}}\",code=~\"5..\"}})
    latencyBuckets: sum by (le) (http_request_duration_seconds_bucket{{version=\"{{{{version}}}}\"}})
{extra}"
        ))
        .yaml()
}

/// Two demo apps labelled `stable` and `canary` (the canary with
/// `canary_flags`).
fn apps(canary_flags: &[&str]) -> ((Proc, SocketAddr), (Proc, SocketAddr)) {
    let stable = demo_app("v1", &["--metrics-version-label", "stable"]);
    let mut flags = vec!["--metrics-version-label", "canary"];
    flags.extend_from_slice(canary_flags);
    (stable, demo_app("v2", &flags))
}

/// Waits until Prometheus has scraped both apps.
fn scraped(p: &Prometheus) {
    for v in ["stable", "canary"] {
        p.wait_for(
            &format!("sum(http_requests_total{{version=\"{v}\"}})"),
            0.0,
            Duration::from_secs(20),
        );
    }
}

/// `serin run FILE` with its output captured; waits for its proxy.
fn spawn_run(dir: &Path, yaml: &str, port: u16) -> Proc {
    let file = write(dir, "rollout.yaml", yaml);
    let run = Proc::spawn(serin_run(&file, dir), true);
    wait_for_port(local(port));
    run
}

const STEPS: &str = "  - setWeight: 30
  - pause: { duration: 4s }
  - setWeight: 100
  - pause: { duration: 2s }
";

#[test]
fn prometheus_judges_a_canary_with_30_percent_errors_and_it_is_rolled_back() {
    let ((_s, stable), (_c, canary)) = apps(&["--error-rate", "0.3"]);
    let prometheus = Prometheus::start(&[stable, canary]);
    scraped(&prometheus);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = spawn_run(
        dir.path(),
        &rollout("bad", port, stable, canary, &prometheus.url(), STEPS, ""),
        port,
    );
    let _load = load(&format!("http://127.0.0.1:{port}/"), 150, "40s");
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(out.contains("canary error rate"), "{out}");
    // The judge's numbers came from Prometheus: what it holds now agrees
    // that the canary failed about 30 % of its requests.
    let errors = prometheus
        .value("sum(http_requests_total{version=\"canary\",code=~\"5..\"})")
        .unwrap();
    let all = prometheus
        .value("sum(http_requests_total{version=\"canary\"})")
        .unwrap();
    assert!(
        all >= 20.0 && (0.15..=0.45).contains(&(errors / all)),
        "{errors}/{all}"
    );
}

#[test]
fn prometheus_stopped_mid_rollout_is_no_data_and_the_rollout_is_rolled_back() {
    let ((_s, stable), (_c, canary)) = apps(&[]);
    let mut prometheus = Prometheus::start(&[stable, canary]);
    scraped(&prometheus);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Long enough that it cannot end before Prometheus goes.
    let steps = "  - setWeight: 30\n  - pause: { duration: 30s }\n  - setWeight: 100\n";
    let run = spawn_run(
        dir.path(),
        &rollout("gone", port, stable, canary, &prometheus.url(), steps, ""),
        port,
    );
    let _load = load(&format!("http://127.0.0.1:{port}/"), 150, "40s");
    // Two verdicts on Prometheus' numbers, then it goes.
    std::thread::sleep(Duration::from_millis(5000));
    prometheus.stop();
    let output = run.wait_output(Duration::from_secs(40));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(!out.contains("promoted"), "{out}");
    assert!(
        out.contains("verdict pass"),
        "judged on Prometheus before it went: {out}"
    );
    assert!(
        out.contains("no data for 2 intervals in a row (noDataLimit 2)")
            && out.contains("unreachable"),
        "rolled back on no data, naming the cause: {out}"
    );
}

const CONVERSION: &str = "  custom:
    - name: checkout conversion
      numerator: sum(checkouts_total{version=\"{{version}}\"})
      denominator: sum(visits_total{version=\"{{version}}\"})
      direction: higherIsBetter
      maxRatioToStable: 1.0
";

/// A rollout judged on Prometheus with a checkout-conversion metric whose
/// counters come from the test's exporter: `canary_rate` of the canary's
/// visits check out, 10 % of the stable's.
fn business_rollout(name: &str, canary_rate: f64) -> (i32, String) {
    let ((_s, stable), (_c, canary)) = apps(&[]);
    let exporter = business([100.0, 100.0], 0.10, canary_rate);
    let prometheus = Prometheus::start(&[stable, canary, exporter.addr]);
    scraped(&prometheus);
    prometheus.wait_for(
        "sum(visits_total{version=\"canary\"})",
        1.0,
        Duration::from_secs(20),
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = spawn_run(
        dir.path(),
        &rollout(
            name,
            port,
            stable,
            canary,
            &prometheus.url(),
            STEPS,
            CONVERSION,
        ),
        port,
    );
    let _load = load(&format!("http://127.0.0.1:{port}/"), 100, "40s");
    let output = run.wait_output(Duration::from_secs(60));
    (output.status.code().unwrap_or(-1), text(&output))
}

#[test]
fn a_canary_that_converts_less_is_rolled_back_on_its_business_metric() {
    let (code, out) = business_rollout("converts-less", 0.03);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("checkout conversion: canary ") && out.contains("lower than stable"),
        "the reason names the business metric: {out}"
    );
    let outcome = out
        .lines()
        .find(|l| l.starts_with("converts-less: rolled back:"))
        .unwrap_or_else(|| panic!("no outcome line: {out}"));
    assert!(
        outcome.contains("checkout conversion") && !outcome.contains("error rate"),
        "rolled back on the business metric alone: {outcome}"
    );
}

#[test]
fn a_canary_that_converts_as_well_is_promoted() {
    let (code, out) = business_rollout("converts-same", 0.10);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("promoted"), "{out}");
}

/// The source on its own against the real Prometheus: custom counters per
/// version, a missing numerator as 0, and a counter reset carried.
#[test]
fn the_prometheus_source_reads_custom_counters_and_carries_a_reset() {
    use serin::controller::seams::MetricSource;
    use serin::providers::metrics::prometheus::PrometheusSource;
    use serin::spec::{CustomMetric, PrometheusSettings};
    use serin_analysis::Ratio;

    let text = Arc::new(Mutex::new(counters((500.0, 50.0), (100.0, 5.0))));
    let exporter = Exporter::start({
        let text = text.clone();
        move || text.lock().unwrap().clone()
    });
    let prometheus = Prometheus::start(&[exporter.addr]);
    let visits = |v: &str| format!("sum(visits_total{{version=\"{v}\"}})");
    prometheus.wait_for(&visits("canary"), 100.0, Duration::from_secs(20));
    let mut source = PrometheusSource::new(
        PrometheusSettings {
            address: prometheus.url(),
            requests: "sum(visits_total{version=\"{{version}}\"})".into(),
            // Never exported: an error counter without series is 0 errors.
            errors: "sum(failed_visits_total{version=\"{{version}}\"})".into(),
            latency_buckets: None,
            client_errors: None,
        },
        vec![
            CustomMetric {
                name: "conversion".into(),
                numerator: "sum(checkouts_total{version=\"{{version}}\"})".into(),
                denominator: "sum(visits_total{version=\"{{version}}\"})".into(),
            },
            CustomMetric {
                name: "refunds".into(),
                numerator: "sum(refunds_total{version=\"{{version}}\"})".into(),
                denominator: "sum(checkouts_total{version=\"{{version}}\"})".into(),
            },
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = |numerator, denominator| Ratio {
        numerator,
        denominator,
    };
    let first = rt.block_on(source.snapshot()).unwrap();
    assert_eq!((first.stable.requests, first.stable.errors), (500, 0));
    assert_eq!(first.canary.requests, 100);
    assert_eq!(
        first.custom,
        vec![(r(50, 500), r(5, 100)), (r(0, 50), r(0, 5))],
        "in the file's order, (stable, canary); no refund yet is 0"
    );

    // The canary restarts (its counters fall to 20 visits, 1 checkout)
    // while the stable goes on.
    *text.lock().unwrap() = counters((1000.0, 100.0), (20.0, 1.0));
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus.value(&visits("canary")) != Some(20.0) {
        assert!(Instant::now() < deadline, "{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A drop is no data until it has stayed down (a series missing from a
    // sum for one scrape comes back at its height), then a reset.
    for _ in 1..serin::providers::metrics::prometheus::DROPS_BEFORE_RESET {
        let err = rt.block_on(source.snapshot()).unwrap_err().to_string();
        assert!(err.contains("went down from"), "{err}");
    }
    let second = rt.block_on(source.snapshot()).unwrap();
    assert_eq!(
        second.custom,
        vec![(r(100, 1000), r(6, 120)), (r(0, 100), r(0, 6))],
        "the canary's counts before the reset are carried"
    );
    assert_eq!(second.canary.requests, 120);
}
