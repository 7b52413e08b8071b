//! The Kubernetes router with a baseline (`baseline: {}`) against kubesim,
//! a real API server's behaviour (server-side apply, a Deployment
//! controller, the routing it evaluates): `checkout-baseline` is created
//! from the stable's template, gets ready pods, the route sends the
//! canary's share to the canary, and a rollback and cleanup leave nothing
//! of the baseline.
//!
//! What kubesim can and cannot tell: it classifies each backend as stable
//! or canary by matching selectors against the two Deployments' template
//! labels, so its `weight` is the canary's share of all weighted requests;
//! the baseline's backend matches neither and is counted in the total
//! only, silently (no note, no leak). Its Prometheus has `stable` and
//! `canary` series only, so a whole rollout judged against a baseline
//! cannot run here (the baseline would be no data).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::get;
use common::kubesim::KubeSim;
use serde_json::Value;
use serin::controller::seams::TrafficRouter;
use serin::providers::traffic::kubernetes::{KubeProvider, KubeTarget, KubernetesRouter};
use serin_proxy::Weight;

fn admin(sim: &KubeSim) -> SocketAddr {
    let url = sim.info["admin"].as_str().unwrap();
    url.trim_start_matches("http://").parse().unwrap()
}

/// The sim's evaluation of the routing objects.
fn sim_state(sim: &KubeSim) -> Value {
    let a = get(admin(sim), "/state");
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

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

/// Calls `f` (bounded) until it succeeds.
async fn until_ok<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), serin::error::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment(sim: &KubeSim, name: &str) -> Option<Value> {
    let o = sim.kubectl(&["-n", "shop", "get", "deployment", name, "-o", "json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).unwrap())
}

async fn baseline_on(provider: &str, p: KubeProvider) {
    let sim = KubeSim::start(&["--provider", provider, "--ready-delay", "0.2"]);
    let r = KubernetesRouter::new(sim.client().await, target(p))
        .with_wait(Duration::from_millis(100), Duration::from_secs(30));
    until_ok("ready", || r.check_ready()).await;
    let stable = deployment(&sim, "checkout").expect("the stable Deployment");
    let baseline = deployment(&sim, "checkout-baseline").expect("serin made the baseline");
    assert_eq!(
        baseline["spec"]["template"]["spec"]["containers"][0]["image"],
        stable["spec"]["template"]["spec"]["containers"][0]["image"],
        "the stable's image"
    );
    assert_eq!(
        baseline["spec"]["template"]["metadata"]["labels"]["version"],
        "baseline"
    );
    assert!(
        baseline["status"]["readyReplicas"].as_i64() >= Some(1),
        "{baseline}"
    );

    until_ok("10 %", || {
        r.apply_weight(Weight::from_percent(10.0).unwrap())
    })
    .await;
    let s = sim_state(&sim);
    // The canary's share of all weighted requests: 10 %, the baseline's
    // 10 % counted in the total; nothing selects both versions.
    assert_eq!(s["route"]["weight"].as_f64(), Some(10.0), "{s}");
    assert_eq!(s["route"]["leaks"], serde_json::json!([]), "{s}");
    let sums = s["route"]["sums"].as_array().cloned().unwrap_or_default();
    assert!(
        !sums.is_empty()
            && sums
                .iter()
                .all(|x| x.as_i64() == Some(100) || x.as_i64() == Some(10_000)),
        "three weights summing to the whole: {s}"
    );

    r.apply_weight(Weight::ZERO).await.unwrap();
    assert_eq!(sim_state(&sim)["weight"].as_f64(), Some(0.0));
    let baseline = deployment(&sim, "checkout-baseline").expect("still there");
    assert_eq!(baseline["spec"]["replicas"], 0);

    r.cleanup().await.unwrap();
    assert!(deployment(&sim, "checkout-baseline").is_none(), "deleted");
    let svc = sim.kubectl(&["-n", "shop", "get", "service", "checkout-baseline"]);
    assert!(!svc.status.success(), "the baseline's Service is gone too");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_baseline_against_kubesim() {
    baseline_on("gateway-api", KubeProvider::GatewayApi).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_baseline_against_kubesim() {
    baseline_on("istio", KubeProvider::Istio).await;
}
