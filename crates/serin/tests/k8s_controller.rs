//! The Kubernetes controller against kubesim (an in-memory API server with
//! server-side apply conflicts, resourceVersion preconditions, a Deployment
//! controller that honours `spec.paused`, Events and 410 on compacted
//! watches): the Rollout's status as the run's store (two writers: the
//! stale one gets 409 and stops).

mod common;

use std::path::PathBuf;

use common::kubesim::KubeSim;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use serin::cluster::resource::{Rollout, STALLED};
use serin::cluster::status::{REPORTING_CONTROLLER, StatusStore};
use serin::controller::seams::RolloutStore;
use serin::rollout::{Decision, DecisionKind, Phase};
use serin::store::StoreError;
use serin::time::Millis;
use serin_proxy::Weight;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_ok(sim: &KubeSim, args: &[&str]) -> String {
    let out = sim.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CRD installed and established.
fn install_crd(sim: &KubeSim) {
    let crd = repo().join("deploy/kubernetes/crd.yaml");
    kubectl_ok(sim, &["apply", "-f", &crd.display().to_string()]);
    kubectl_ok(
        sim,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/rollouts.serin.dev",
            "--timeout=10s",
        ],
    );
}

/// A Rollout of the seeded `shop/checkout` (nginx-ingress), short steps.
fn rollout_manifest(name: &str, prometheus: &str) -> Value {
    json!({
        "apiVersion": "serin.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": {
            "stable": { "version": "v1" },
            "canary": { "version": "v2" },
            "traffic": {
                "provider": "nginx-ingress",
                "kubernetes": { "deployment": "checkout", "service": "checkout", "ingress": "checkout" }
            },
            "steps": [
                { "setWeight": 20 }, { "pause": { "duration": "2s" } },
                { "setWeight": 50 }, { "pause": { "duration": "2s" } }
            ],
            "analysis": {
                "interval": "1s",
                "minRequests": 20,
                "prometheus": { "address": prometheus }
            }
        }
    })
}

fn decision(kind: DecisionKind, reason: &str) -> Decision {
    Decision {
        at: Millis(1_700_000_000_000),
        kind,
        step: 0,
        weight: Weight::from_hundredths(2000).unwrap(),
        phase: Phase::Progressing,
        verdict: None,
        reason: reason.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_is_the_store_and_a_stale_writer_gets_409_and_stops() {
    let sim = KubeSim::start(&[]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let rollout: Rollout = serde_json::from_value(rollout_manifest("checkout", &prom)).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();

    let a = StatusStore::open(client.clone(), "shop", "checkout", "a")
        .await
        .unwrap();
    let b = StatusStore::open(client.clone(), "shop", "checkout", "b")
        .await
        .unwrap();

    // A writes the run's first decision.
    let mut record = a.record().await;
    record.run = 1;
    record.stable_version = "v1".into();
    record.canary_version = Some("v2".into());
    record.state.phase = Phase::Progressing;
    record.state.weight = Weight::from_hundredths(2000).unwrap();
    let generation = a
        .save(
            record.clone(),
            vec![decision(DecisionKind::Step, "step 1: weight 20 %")],
            Millis(0),
        )
        .await
        .unwrap();
    assert_eq!(generation, record.generation + 1);

    // B read the Rollout before A wrote: its write is refused (409 on the
    // resourceVersion), it is not written over A's, and B writes no more.
    let stale = b.record().await;
    let mut b_record = stale.clone();
    b_record.state.phase = Phase::RolledBack;
    let answer = b.save(b_record.clone(), vec![], Millis(0)).await;
    assert!(matches!(answer, Err(StoreError::Conflict(_))), "{answer:?}");
    assert!(b.is_fenced().await);
    let again = b
        .save(b.record().await, vec![], Millis(0))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");
    let stored = api.get("checkout").await.unwrap();
    let status = stored.status.clone().unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Progressing"),
        "A's status stays"
    );
    assert_eq!(status.weight, Some(20.0));
    assert_eq!(status.decisions.len(), 1);
    assert_eq!(status.observed_generation, stored.metadata.generation);
    let reconciling = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .unwrap();
    assert_eq!(reconciling.status, "True");

    // The spec changes (a person edits the Rollout): A's next write is
    // taken, its status being still A's; the record reads back the same.
    api.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "progressDeadline": "30m" } })),
    )
    .await
    .unwrap();
    let mut next = a.record().await;
    assert_eq!(next.state, record.state);
    next.state.phase = Phase::RolledBack;
    next.state.reason = "error rate 30 % > 5 %".into();
    a.save(
        next,
        vec![decision(DecisionKind::RolledBack, "error rate 30 % > 5 %")],
        Millis(0),
    )
    .await
    .unwrap();
    let status = api.get("checkout").await.unwrap().status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("RolledBack"));
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == STALLED)
        .unwrap();
    assert_eq!(stalled.status, "True");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("fixed or reverted"),
        "{status:?}"
    );

    // Each decision went out as an Event regarding the Rollout.
    let events: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client,
        "shop",
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "events.k8s.io",
            "v1",
            "Event",
        )),
    );
    let list = events.list(&ListParams::default()).await.unwrap();
    let ours: Vec<Value> = list
        .items
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["reportingController"] == REPORTING_CONTROLLER)
        .collect();
    let mut reasons: Vec<&str> = ours.iter().filter_map(|e| e["reason"].as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["RolledBack", "Step"], "{ours:#?}");
    let rollback = ours.iter().find(|e| e["reason"] == "RolledBack").unwrap();
    assert_eq!(rollback["type"], "Warning");
    assert_eq!(rollback["regarding"]["kind"], "Rollout");
    assert_eq!(rollback["regarding"]["name"], "checkout");
}
