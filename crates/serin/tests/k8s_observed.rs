//! A Rollout's spec edited while no run is going (Idle) is observed:
//! `status.observedGeneration` follows `metadata.generation`, so `kubectl
//! wait`, Flux and Argo CD do not wait for ever (outside new user: it
//! stayed one behind). `serin serve --kubernetes` end to end on kubesim.

mod common;

use std::time::Duration;

use common::kubesim::KubeSim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use serin::cluster::resource::Rollout;

use common::controller::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_edited_at_rest_is_observed() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, &dir.path().join("a"));
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    nginx_rollout_at_rest(&sim, &api, steps, &log).await;
    let limit = Duration::from_secs(60);
    api.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "progressDeadline": "30m" } })),
    )
    .await
    .unwrap();
    let generation = api.get("checkout").await.unwrap().metadata.generation;
    assert!(generation >= Some(2), "{generation:?}");
    let s = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.observed_generation == generation).then_some(s)
    })
    .await;
    assert_eq!(s.phase.as_deref(), Some("Idle"), "{s:?}");
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == generation),
        "{:?}",
        s.conditions
    );
}
