//! A hand edit of the canary's weight made before serin's first weight
//! apply of a run (between the set-up of the canary Ingress and the first
//! step), then an operator's rollback: the rollback wins, and status never
//! says "in force" while the canary gets the traffic. `serin serve
//! --kubernetes` end to end against kubesim.

mod common;

use std::time::Duration;

use common::kubesim::KubeSim;
use kube::api::Api;
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
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    nginx_rollout_at_rest(&sim, &api, steps, &log).await;
    let limit = Duration::from_secs(60);
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
    // Persist, then apply: the status shows the rollback a moment before
    // the route has it (and before a refused apply is reported), so what
    // must hold is that it settles: rolled back, nothing out of force, and
    // the canary at 0 % ...
    let deadline = std::time::Instant::now() + limit;
    loop {
        let s = status_of(&api, "checkout").await;
        let weight = sim_state(&sim)["weight"].as_f64();
        if let Some(s) = &s
            && s.phase.as_deref() == Some("RolledBack")
            && s.not_in_force.is_empty()
            && weight == Some(0.0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rolled back in force: {s:?}, weight {weight:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and stays so: the hand edit does not win back, and status never
    // claims in force while the canary gets traffic (3 s, polled).
    let settled = std::time::Instant::now();
    while settled.elapsed() < Duration::from_secs(3) {
        let s = status_of(&api, "checkout").await.unwrap();
        let weight = sim_state(&sim)["weight"].as_f64();
        if s.not_in_force.is_empty() {
            assert_eq!(weight, Some(0.0), "status says in force: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the answer to the rollback did not claim it either.
    let s = status_of(&api, "checkout").await.unwrap();
    let answer = s.last_request.expect("the rollback is answered");
    assert!(answer.accepted, "{answer:?}");
    // The real answer, not the provisional one written with the decision.
    assert_ne!(
        answer.message,
        serin::cluster::requests::ACTED_UNANSWERED,
        "{answer:?}"
    );
}
