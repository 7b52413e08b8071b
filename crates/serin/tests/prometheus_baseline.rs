//! The ready-made Prometheus queries with a baseline (`baseline: {}`),
//! evaluated by Prometheus' own engine (`promtool test rules`) on made-up
//! series of each provider's metrics: `{{version}}` = `baseline` counts
//! `checkout-baseline`'s requests only, and the stable's and canary's
//! counts stay what they are without a baseline (the baseline's series are
//! never counted as the stable's, though its pods run the stable's
//! template).

use std::process::Command;

use serde_json::{Value, json};
use serin::providers::traffic::kubernetes::{KubeProvider, KubeTarget, prometheus_queries};

fn target(provider: KubeProvider) -> KubeTarget {
    KubeTarget {
        provider,
        namespace: "shop".into(),
        deployment: "checkout".into(),
        service: "checkout".into(),
        ingress: None,
        virtual_service: Some("checkout".into()),
        http_route: Some("checkout".into()),
        owned_route: None,
        scale_with_weight: true,
        canary_version: "v2".into(),
        canary_image: None,
        sticky: None,
        routes: vec![],
        baseline: true,
    }
}

fn series(s: &str, v: u64) -> Value {
    json!({"series": s, "values": v.to_string()})
}

/// Series of `p`'s metrics: stable 105 requests (5 errors), canary 22 (2),
/// baseline 31 (1), and decoys that must count nowhere.
fn input(p: KubeProvider) -> Vec<Value> {
    match p {
        KubeProvider::Istio => {
            let m = |reporter: &str, w: &str, code: &str, v| {
                series(
                    &format!(
                        "istio_requests_total{{reporter=\"{reporter}\",destination_workload_namespace=\"shop\",destination_workload=\"{w}\",response_code=\"{code}\"}}"
                    ),
                    v,
                )
            };
            vec![
                m("destination", "checkout", "200", 100),
                m("destination", "checkout", "500", 5),
                m("destination", "checkout-canary", "200", 20),
                m("destination", "checkout-canary", "503", 2),
                m("destination", "checkout-baseline", "200", 30),
                m("destination", "checkout-baseline", "500", 1),
                m("source", "checkout-baseline", "500", 999),
                m("destination", "checkout-baseline-db", "500", 999),
            ]
        }
        KubeProvider::GatewayApi => {
            let m = |pod: &str, code: &str, v| {
                series(
                    &format!(
                        "http_requests_total{{namespace=\"shop\",pod=\"{pod}\",code=\"{code}\"}}"
                    ),
                    v,
                )
            };
            let (sp, cp, bp) = (
                "checkout-5d9f8b7c4-x2k9q",
                "checkout-canary-7c6b9d-fzq4m",
                "checkout-baseline-6c8d7f9b5-q7w2e",
            );
            vec![
                m(sp, "200", 60),
                m("checkout-7f8c9d6b5-b4n7r", "200", 40),
                m(sp, "500", 5),
                m(cp, "200", 20),
                m(cp, "502", 2),
                m(bp, "200", 30),
                m(bp, "500", 1),
                m("checkout-baseline-db-0", "500", 999),
            ]
        }
        KubeProvider::NginxIngress => unreachable!("no baseline with nginx-ingress"),
    }
}

#[test]
fn the_baseline_queries_count_the_baselines_series_only() {
    let mut tests = Vec::new();
    for p in [KubeProvider::Istio, KubeProvider::GatewayApi] {
        let (requests, errors, _) = prometheus_queries(p, &target(p));
        let mut exprs = Vec::new();
        for (version, r, e) in [
            ("stable", 105.0, 5.0),
            ("canary", 22.0, 2.0),
            ("baseline", 31.0, 1.0),
        ] {
            let at = |q: &str| q.replace("{{version}}", version);
            let one = format!("{{serin_version=\"{version}\"}}");
            exprs.push(json!({"expr": at(&requests), "eval_time": "0m",
                              "exp_samples": [{"labels": one, "value": r}]}));
            exprs.push(json!({"expr": at(&errors), "eval_time": "0m",
                              "exp_samples": [{"labels": one, "value": e}]}));
        }
        tests.push(json!({"interval": "1m", "input_series": input(p), "promql_expr_test": exprs}));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline-tests.json");
    std::fs::write(
        &file,
        json!({"rule_files": [], "evaluation_interval": "1m", "tests": tests}).to_string(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
