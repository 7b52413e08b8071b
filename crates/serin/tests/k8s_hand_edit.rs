//! A hand edit of the canary's weight made before serin's first weight
//! apply of a run (between the set-up of the canary Ingress and the first
//! step), then an operator's rollback: the rollback wins, and status never
//! says "in force" while the canary gets the traffic. `serin serve
//! --kubernetes` end to end against kubesim.

mod common;

use std::time::Duration;

use common::kubesim::KubeSim;
use kube::api::{Api, PostParams};
use serde_json::json;
use serin::cluster::resource::Rollout;

use common::controller::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_before_the_first_weight_then_a_rollback_is_never_called_in_force_wrongly() {
    // Pods take 4 s to be ready: the canary Ingress is set up at weight 0
    // well before the first step's weight can be applied.
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "4"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, &dir.path().join("a"));
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let good: Rollout = serde_json::from_value(manifest(
        "checkout",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        json!([{ "setWeight": 20 }, { "pause": {} }]),
    ))
    .unwrap();
    api.create(&PostParams::default(), &good).await.unwrap();
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Idle")).then_some(())
    })
    .await;
    release(&sim, "v1.2.0");
    // The canary Ingress exists (set up at weight 0) while the canary's
    // pods are not ready yet.
    until(limit, &log, async || {
        let s = sim_state(&sim);
        let ingresses = s["objects"]["ingresses.networking.k8s.io"]
            .as_array()?
            .clone();
        ingresses
            .iter()
            .any(|i| i["metadata"]["name"] == "checkout-canary")
            .then_some(())
    })
    .await;
    kubectl_ok(
        &sim,
        &[
            "annotate",
            "-n",
            "shop",
            "ingress",
            "checkout-canary",
            "nginx.ingress.kubernetes.io/canary-weight=10000",
            "--overwrite",
        ],
    );
    until(limit, &log, async || {
        (sim_state(&sim)["weight"].as_f64() == Some(100.0)).then_some(())
    })
    .await;
    let (code, out, err) = cli(&sim, &["rollback", "checkout"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // From here on, whenever status says the run is rolled back with
    // nothing out of force, the canary gets no traffic.
    let deadline = std::time::Instant::now() + limit;
    loop {
        let s = status_of(&api, "checkout").await;
        let weight = sim_state(&sim)["weight"].as_f64();
        if let Some(s) = &s
            && s.phase.as_deref() == Some("RolledBack")
            && s.not_in_force.is_empty()
        {
            assert_eq!(weight, Some(0.0), "status says in force: {s:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rolled back in force: {s:?}, weight {weight:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the answer to the rollback did not claim it either.
    let s = status_of(&api, "checkout").await.unwrap();
    if let Some(answer) = &s.last_request {
        assert!(answer.accepted, "{answer:?}");
    }
}
