//! Ready-made Prometheus queries (`analysis.prometheus`) for the standard
//! metrics of each provider, with `{{version}}` left for the metric source
//! to replace by `stable` or `canary`.
//!
//! The metrics do not carry the words `stable` / `canary`, so each query
//! derives a label `serin_version` from one that tells the versions apart
//! (`label_replace`), sums by it, and keeps the series of `{{version}}`
//! (`and on (serin_version)` with a one-element vector carrying the word).
//! All return counters, as the metric source expects.
//!
//! - nginx-ingress: `nginx_ingress_controller_requests` and
//!   `nginx_ingress_controller_request_duration_seconds_bucket` of the
//!   primary Ingress; the controller's `canary` label is the canary upstream
//!   when the canary served the request and empty otherwise (Flagger's
//!   NGINX queries use the same label).
//! - istio: `istio_requests_total` and `istio_request_duration_milliseconds_bucket`
//!   reported by the destination, by `destination_workload` (`NAME` and
//!   `NAME-canary`). Istio's buckets are in milliseconds; the query rewrites
//!   `le` into seconds (`250` becomes `0.250`), as the metric source reads
//!   `le` in seconds.
//! - gateway-api: the gateways' own metrics differ by implementation, so the
//!   queries read the application's `http_requests_total{code}` and
//!   `http_request_duration_seconds_bucket` (what `serin demo-app` exports)
//!   by pod name: `NAME-<hash>-<id>` is stable, `NAME-canary-<hash>-<id>` the canary
//!   (hash 5 to 10 characters, id 5, as the ReplicaSet controller names pods).
//!
//! With a baseline (`baseline: {}`), `{{version}}` is also `baseline`, and
//! the queries tell its series apart by the same label: on Istio
//! `destination_workload` `NAME-baseline`, on Gateway API pods named
//! `NAME-baseline-<hash>-<id>` (the Deployment serin runs). Never by the
//! pods' `version` label value of the stable (the baseline runs the
//! stable's template, so that value would count both as one).

use super::kubernetes::{BASELINE_SUFFIX, CANARY_SUFFIX, KubeProvider, KubeTarget};

/// Sums `series` by `serin_version` (plus `by`), derived from label `src`
/// (`baseline_re`: the baseline's values, when there is one), and keeps
/// `{{version}}`'s series.
fn by_version(
    series: &str,
    src: &str,
    stable_re: &str,
    canary_re: &str,
    baseline_re: Option<&str>,
    by: &str,
) -> String {
    let mut labelled = format!(
        "label_replace(label_replace({series}, \"serin_version\", \"stable\", \"{src}\", \"{stable_re}\"), \"serin_version\", \"canary\", \"{src}\", \"{canary_re}\")"
    );
    if let Some(b) = baseline_re {
        labelled = format!(
            "label_replace({labelled}, \"serin_version\", \"baseline\", \"{src}\", \"{b}\")"
        );
    }
    let summed = format!("sum by ({by}serin_version) ({labelled})");
    keep_version(&summed)
}

fn keep_version(expr: &str) -> String {
    format!(
        "{expr} and on (serin_version) label_replace(vector(1), \"serin_version\", \"{{{{version}}}}\", \"\", \"\")"
    )
}

/// Rewrites `le` from milliseconds to seconds by moving the decimal point:
/// `0.5` → `0.0005`, `2500` → `2.500`, `250` → `0.250`, `25` → `0.025`,
/// `5` → `0.005`. Each rule's output has a `.`, which no later rule accepts.
fn le_ms_to_seconds(expr: &str) -> String {
    let rules = [
        ("0.000$1", "0\\\\.(\\\\d+)"),
        ("$1.$2", "(\\\\d+)(\\\\d{3})"),
        ("0.$1", "(\\\\d{3})"),
        ("0.0$1", "(\\\\d{2})"),
        ("0.00$1", "(\\\\d)"),
    ];
    let mut out = expr.to_string();
    for (replacement, regex) in rules {
        out = format!("label_replace({out}, \"le\", \"{replacement}\", \"le\", \"{regex}\")");
    }
    out
}

/// `(requests, errors, latencyBuckets)` PromQL templates for `provider`,
/// for the Prometheus metric source.
pub fn prometheus_queries(provider: KubeProvider, target: &KubeTarget) -> (String, String, String) {
    let ns = &target.namespace;
    match provider {
        KubeProvider::NginxIngress => {
            let ingress = target.ingress.as_deref().unwrap_or(&target.service);
            let sel = format!("namespace=\"{ns}\",ingress=\"{ingress}\"");
            let q = |metric: &str, extra: &str, by: &str| {
                by_version(
                    &format!("{metric}{{{sel}{extra}}}"),
                    "canary",
                    "",
                    ".+",
                    None,
                    by,
                )
            };
            (
                q("nginx_ingress_controller_requests", "", ""),
                q("nginx_ingress_controller_requests", ",status=~\"5..\"", ""),
                q(
                    "nginx_ingress_controller_request_duration_seconds_bucket",
                    "",
                    "le, ",
                ),
            )
        }
        KubeProvider::Istio => {
            let d = &target.deployment;
            let baseline = target.baseline.then(|| format!("{d}{BASELINE_SUFFIX}"));
            let workloads = match &baseline {
                Some(b) => format!("{d}|{d}{CANARY_SUFFIX}|{b}"),
                None => format!("{d}|{d}{CANARY_SUFFIX}"),
            };
            let sel = format!(
                "reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=~\"{workloads}\""
            );
            let stable = d.to_string();
            let canary = format!("{d}{CANARY_SUFFIX}");
            let labelled = |metric: &str, extra: &str, by: &str| {
                let series = format!("{metric}{{{sel}{extra}}}");
                let mut labelled = format!(
                    "label_replace(label_replace({series}, \"serin_version\", \"stable\", \"destination_workload\", \"{stable}\"), \"serin_version\", \"canary\", \"destination_workload\", \"{canary}\")"
                );
                if let Some(b) = &baseline {
                    labelled = format!(
                        "label_replace({labelled}, \"serin_version\", \"baseline\", \"destination_workload\", \"{b}\")"
                    );
                }
                format!("sum by ({by}serin_version) ({labelled})")
            };
            (
                keep_version(&labelled("istio_requests_total", "", "")),
                keep_version(&labelled(
                    "istio_requests_total",
                    ",response_code=~\"5..\"",
                    "",
                )),
                keep_version(&le_ms_to_seconds(&labelled(
                    "istio_request_duration_milliseconds_bucket",
                    "",
                    "le, ",
                ))),
            )
        }
        KubeProvider::GatewayApi => {
            let d = &target.deployment;
            let pod = "-[a-z0-9]{5,10}-[a-z0-9]{5}";
            let sel = if target.baseline {
                format!("namespace=\"{ns}\",pod=~\"{d}(-canary|-baseline)?{pod}\"")
            } else {
                format!("namespace=\"{ns}\",pod=~\"{d}(-canary)?{pod}\"")
            };
            let stable_re = format!("{d}{pod}");
            let canary_re = format!("{d}{CANARY_SUFFIX}{pod}");
            let baseline_re = target
                .baseline
                .then(|| format!("{d}{BASELINE_SUFFIX}{pod}"));
            let q = |metric: &str, extra: &str, by: &str| {
                by_version(
                    &format!("{metric}{{{sel}{extra}}}"),
                    "pod",
                    &stable_re,
                    &canary_re,
                    baseline_re.as_deref(),
                    by,
                )
            };
            (
                q("http_requests_total", "", ""),
                q("http_requests_total", ",code=~\"5..\"", ""),
                q("http_request_duration_seconds_bucket", "", "le, "),
            )
        }
    }
}
