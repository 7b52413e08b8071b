//! The Kubernetes controller against kubesim (an in-memory API server with
//! server-side apply conflicts, resourceVersion preconditions, a Deployment
//! controller that honours `spec.paused`, Events and 410 on compacted
//! watches): the Rollout's status as the run's store (two writers: the
//! stale one gets 409 and stops), and `serin serve --kubernetes` end to end
//! (the built binary): a GitOps release promoted with no 409 and no forced
//! apply, a watch that meets 410, a bad release rolled back with the stable
//! untouched and still paused, git reverting to the running template, an
//! invalid Rollout, and a Rollout deleted mid-run.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::kubesim::KubeSim;
use common::nginx::free_port;
use common::serin::{Proc, serin_serve};
use k8s_openapi::api::apps::v1::Deployment;
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

/// An operator's request handed to the driver: the decision it makes is
/// written with the request's id as its (provisional) answer, so a
/// controller killed before it writes the real answer is never followed by
/// one that acts on the same request again (outside new user: a `serin
/// promote` and a kill -9 0.25 s later ended the next pause too, after the
/// failover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_a_request_makes_is_written_with_its_id() {
    let sim = KubeSim::start(&[]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let rollout: Rollout = serde_json::from_value(rollout_manifest("checkout", &prom)).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let store = StatusStore::open(client.clone(), "shop", "checkout", "a")
        .await
        .unwrap();
    let acting = serin::cluster::requests::Answer {
        id: "r-1".into(),
        action: "promote".into(),
        by: "alice".into(),
        accepted: true,
        message: "acted on".into(),
        at: "2026-12-06T23:00:00Z".into(),
    };
    store.set_acting_on(Some(acting.clone()));
    let mut record = store.record().await;
    record.run = 1;
    record.state.phase = Phase::Progressing;
    store
        .save(
            record,
            vec![decision(DecisionKind::Step, "pause ended by an operator")],
            Millis(0),
        )
        .await
        .unwrap();
    store.set_acting_on(None);
    let status = api.get("checkout").await.unwrap().status.unwrap();
    assert_eq!(
        status.last_request.as_ref().map(|a| a.id.as_str()),
        Some("r-1")
    );
    // A request answered (by id) is not pending for the next controller.
    let annotation =
        json!({ "id": "r-1", "action": "promote", "by": "alice", "at": 0 }).to_string();
    assert!(
        serin::cluster::requests::pending(
            Some(&annotation),
            status.last_request.as_ref(),
            "Rollout shop/checkout"
        )
        .is_none()
    );
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

// ---------------------------------------------------------------------------
// `serin serve --kubernetes` end to end.

/// The sim's admin endpoint.
fn admin(sim: &KubeSim) -> SocketAddr {
    let url = sim.info["admin"].as_str().unwrap();
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

fn admin_post(sim: &KubeSim, path: &str, body: Value) -> Value {
    let a = common::http::http(
        admin(sim),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    assert_eq!(a.status, 200, "POST {path}: {}", a.body);
    serde_json::from_str(&a.body).unwrap_or(Value::Null)
}

fn sim_state(sim: &KubeSim) -> Value {
    let a = common::http::get(admin(sim), "/state");
    serde_json::from_str(&a.body).unwrap()
}

/// A Rollout whose analysis reads kubesim's Prometheus series.
fn gitops_rollout(name: &str, prometheus: &str) -> Value {
    let mut m = rollout_manifest(name, prometheus);
    m["spec"]["analysis"]["prometheus"] = json!({
        "address": prometheus,
        "requests": "sum(http_requests_total{version=\"{{version}}\"})",
        "errors": "sum(http_requests_total{version=\"{{version}}\",code=~\"5..\"})",
    });
    m
}

/// `serin serve --kubernetes --namespace shop` against the sim, its log in
/// `log`.
fn serve(sim: &KubeSim, state: &std::path::Path) -> (Proc, PathBuf) {
    serve_as(sim, state, "serin-0")
}

/// [`serve`] as the pod `pod` (its Lease holder identity).
fn serve_as(sim: &KubeSim, state: &std::path::Path, pod: &str) -> (Proc, PathBuf) {
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = serin_serve(api, state);
    cmd.args([
        "--kubernetes",
        "--namespace",
        "shop",
        "--watch-timeout",
        "2",
    ])
    .env("KUBECONFIG", sim.kubeconfig())
    // A restart as the same pod (its container again) waits out the Lease
    // it held like any other pod: the renewals were not this process's.
    .env("POD_NAME", pod)
    .env("RUST_LOG", "info,kube=warn");
    let log = state.join("serve.log");
    std::fs::create_dir_all(state).unwrap();
    let file = std::fs::File::create(&log).unwrap();
    cmd.stderr(file.try_clone().unwrap()).stdout(file);
    let child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
    (Proc { child }, log)
}

/// Polls `what` (bounded) until it gives `Some`.
async fn until<T>(
    limit: Duration,
    log: &std::path::Path,
    mut what: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = what().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "not within {limit:?}; serin's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(
    api: &Api<Rollout>,
    name: &str,
) -> Option<serin::cluster::resource::RolloutStatus> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.status)
}

/// Every write the sim logged from serin: (method, path, query, body, code).
fn serin_writes(state: &Value) -> Vec<&Value> {
    state["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["query"]
                .as_str()
                .unwrap_or("")
                .contains("fieldManager=serin")
                || w["path"].as_str().unwrap_or("").contains("rollouts")
                || w["path"].as_str().unwrap_or("").contains("deployments")
        })
        .collect()
}

/// What serin wrote to the stable Deployment is `spec.paused` alone, never
/// forced, and nothing answered 409.
fn assert_only_paused_written(state: &Value) {
    for w in state["writes"].as_array().unwrap() {
        assert_ne!(w["code"], 409, "a conflict: {w}");
    }
    assert_only_paused_written_to_the_stable(state);
}

/// No forced apply, and nothing but `spec.paused` written to the stable.
fn assert_only_paused_written_to_the_stable(state: &Value) {
    for w in state["writes"].as_array().unwrap() {
        let query = w["query"].as_str().unwrap_or("");
        assert!(!query.contains("force=true"), "a forced apply: {w}");
        let path = w["path"].as_str().unwrap_or("");
        if path.ends_with("/deployments/checkout") {
            let body = &w["body"];
            let spec = body["spec"].as_object().cloned().unwrap_or_default();
            let keys: Vec<&String> = spec.keys().collect();
            assert_eq!(
                keys,
                ["paused"],
                "serin wrote more than spec.paused to the stable: {w}"
            );
            assert!(body.get("status").is_none(), "{w}");
        }
    }
}

async fn deployment(client: &kube::Client, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), "shop")
        .get(name)
        .await
        .unwrap()
}

fn image_of(d: &Deployment) -> String {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

fn condition_is(
    status: &serin::cluster::resource::RolloutStatus,
    type_: &str,
    value: &str,
) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == value)
}

/// Ready pods per image of a Deployment, from the sim's last state.
fn canary_replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitops_release_is_promoted_a_bad_one_rolled_back_and_a_410_loses_nothing() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let rollout: Rollout = serde_json::from_value(gitops_rollout("checkout", &prom)).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let limit = Duration::from_secs(60);

    // At rest: the running template recorded, the stable kept paused.
    let running = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        let paused = deployment(&client, "checkout").await.spec.paused == Some(true);
        (paused && condition_is(&s, "Ready", "True")).then_some(s.template_hash?)
    })
    .await;

    // git commits v1.2.0 (Argo CD's server-side apply): a run starts from
    // the new, not rolled out template, and is promoted.
    admin_post(
        &sim,
        "/update-template",
        json!({ "image": "registry.example.com/checkout:v1.2.0", "manager": "argocd-controller" }),
    );
    let promoted = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Succeeded") && s.template_hash != Some(running.clone()))
            .then_some(s)
    })
    .await;
    assert_eq!(promoted.run, Some(1));
    assert_eq!(
        promoted.canary_version, None,
        "promoted: the canary is the stable"
    );
    assert_eq!(promoted.stable_version.as_deref(), Some("v1.2.0"));
    assert!(condition_is(&promoted, "Ready", "True"), "{promoted:?}");
    let stable = deployment(&client, "checkout").await;
    assert_eq!(image_of(&stable), "registry.example.com/checkout:v1.2.0");
    assert_eq!(
        stable.spec.paused,
        Some(true),
        "paused again after the promotion"
    );
    let rolled = stable.status.clone().unwrap();
    assert_eq!(rolled.updated_replicas, stable.spec.replicas, "{rolled:?}");
    let canary = deployment(&client, "checkout-canary").await;
    assert_eq!(canary_replicas(&canary), 0);
    assert_eq!(
        image_of(&canary),
        "registry.example.com/checkout:v1.2.0",
        "git's template, image untouched"
    );
    let state = sim_state(&sim);
    assert_eq!(state["weight"].as_f64(), Some(0.0), "{}", state["route"]);
    assert_only_paused_written(&state);
    assert!(!serin_writes(&state).is_empty());

    // Watches made from now on from an older resourceVersion get 410 (the
    // watch requests last 2 s): the next commit is still seen.
    admin_post(&sim, "/compact", json!({}));
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A bad release: the canary fails; the run is rolled back, the stable
    // keeps its v1.2.0 pods, paused, with git's v1.3.0 not rolled out.
    admin_post(
        &sim,
        "/faults",
        json!({ "version": "canary", "errors": 0.5 }),
    );
    admin_post(
        &sim,
        "/update-template",
        json!({ "image": "registry.example.com/checkout:v1.3.0", "manager": "argocd-controller" }),
    );
    let rolled_back = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack") && s.run == Some(2)).then_some(s)
    })
    .await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("too old resource version"),
        "no watch met a 410 (relisted):\n{said}"
    );
    assert!(
        condition_is(&rolled_back, "Stalled", "True"),
        "{rolled_back:?}"
    );
    assert!(
        rolled_back
            .message
            .as_deref()
            .unwrap_or("")
            .contains("fixed or reverted"),
        "{rolled_back:?}"
    );
    let stable = until(limit, &log, async || {
        let d = deployment(&client, "checkout-canary").await;
        (canary_replicas(&d) == 0).then_some(())?;
        Some(deployment(&client, "checkout").await)
    })
    .await;
    assert_eq!(stable.spec.paused, Some(true));
    assert_eq!(
        image_of(&stable),
        "registry.example.com/checkout:v1.3.0",
        "git's template stays"
    );
    let st = stable.status.clone().unwrap();
    assert_eq!(
        st.updated_replicas.unwrap_or(0),
        0,
        "nothing of v1.3.0 rolled out: {st:?}"
    );
    assert_eq!(
        st.available_replicas, stable.spec.replicas,
        "the old pods serve: {st:?}"
    );
    let state = sim_state(&sim);
    assert_eq!(state["weight"].as_f64(), Some(0.0));
    assert_only_paused_written(&state);

    // git reverts to v1.2.0, the running template: nothing runs, Ready.
    admin_post(
        &sim,
        "/faults",
        json!({ "version": "canary", "errors": 0.0 }),
    );
    admin_post(
        &sim,
        "/update-template",
        json!({ "image": "registry.example.com/checkout:v1.2.0", "manager": "argocd-controller" }),
    );
    let quiet = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        condition_is(&s, "Ready", "True").then_some(s)
    })
    .await;
    assert_eq!(quiet.run, Some(2), "no new run: {quiet:?}");
    assert_only_paused_written(&sim_state(&sim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rollout_stalls_naming_the_field_and_a_deleted_one_puts_traffic_back() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let limit = Duration::from_secs(60);

    // An invalid Rollout: Stalled and a Warning Event naming the field;
    // nothing else done (the stable is not paused for it).
    let mut bad = gitops_rollout("broken", &prom);
    bad["spec"]["steps"][0]["setWeight"] = json!(150);
    let bad: Rollout = serde_json::from_value(bad).unwrap();
    api.create(&PostParams::default(), &bad).await.unwrap();
    let stalled = until(limit, &log, async || {
        let s = status_of(&api, "broken").await?;
        condition_is(&s, "Stalled", "True").then_some(s)
    })
    .await;
    let c = stalled
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(c.reason, "InvalidSpec");
    assert!(c.message.contains("spec.steps[0].setWeight"), "{c:?}");
    let events = kubectl_ok(&sim, &["get", "events", "-n", "shop", "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let named = events["items"].as_array().unwrap().iter().any(|e| {
        e["reason"] == "InvalidSpec"
            && e["type"] == "Warning"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("spec.steps[0].setWeight")
    });
    assert!(named, "{events:#}");
    assert_ne!(
        deployment(&client, "checkout").await.spec.paused,
        Some(true)
    );

    // A valid one; a release; deleted mid-run: traffic back to stable,
    // the canary at 0, then it goes.
    let mut good = gitops_rollout("checkout", &prom);
    good["spec"]["steps"] = json!([{ "setWeight": 20 }, { "pause": { "until": "promoted" } }]);
    let good: Rollout = serde_json::from_value(good).unwrap();
    api.create(&PostParams::default(), &good).await.unwrap();
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        s.template_hash.map(|_| ())
    })
    .await;
    admin_post(
        &sim,
        "/update-template",
        json!({ "image": "registry.example.com/checkout:v1.2.0", "manager": "argocd-controller" }),
    );
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Paused") && s.weight == Some(20.0)).then_some(())
    })
    .await;
    until(limit, &log, async || {
        (sim_state(&sim)["weight"].as_f64() == Some(20.0)).then_some(())
    })
    .await;
    api.delete("checkout", &Default::default()).await.unwrap();
    until(limit, &log, async || {
        api.get_opt("checkout")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let state = sim_state(&sim);
    assert_eq!(state["weight"].as_f64(), Some(0.0), "{}", state["route"]);
    assert_eq!(
        canary_replicas(&deployment(&client, "checkout-canary").await),
        0
    );
    assert_only_paused_written(&state);
}

/// Once the controller has seen the stable's template, git commits a new
/// image; waits until the run is `served_ms` into its pause (step 2, at
/// 20 %) and returns when that pause began (ms since the epoch).
async fn release_into_the_pause(
    sim: &KubeSim,
    api: &Api<Rollout>,
    log: &std::path::Path,
    served_ms: u64,
) -> u64 {
    let limit = Duration::from_secs(60);
    until(limit, log, async || {
        status_of(api, "checkout").await?.template_hash.map(|_| ())
    })
    .await;
    admin_post(
        sim,
        "/update-template",
        json!({ "image": "registry.example.com/checkout:v1.2.0", "manager": "argocd-controller" }),
    );
    let pause_started = until(limit, log, async || {
        let s = status_of(api, "checkout").await?;
        let st = s.state?;
        (st.step_index == 1 && s.weight == Some(20.0)).then_some(st.step_started_ms)
    })
    .await;
    until(limit, log, async || {
        (epoch_ms() >= pause_started + served_ms).then_some(())
    })
    .await;
    pause_started
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_the_run_from_status_without_restarting_the_pause() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let mut m = gitops_rollout("checkout", &prom);
    m["spec"]["steps"] = json!([
        { "setWeight": 20 }, { "pause": { "duration": "20s" } },
        { "setWeight": 50 }, { "pause": { "duration": "1s" } }
    ]);
    let rollout: Rollout = serde_json::from_value(m).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let first_dir = tempfile::tempdir().unwrap();
    let (mut first, log) = serve(&sim, first_dir.path());
    let limit = Duration::from_secs(60);
    // In the 20 s pause at 20 %, 2 s served: kill -9.
    let pause_started = release_into_the_pause(&sim, &api, &log, 2000).await;
    let killed_at = epoch_ms();
    first.kill();
    let at_kill = status_of(&api, "checkout").await.unwrap();
    assert_eq!(at_kill.state.as_ref().unwrap().step_index, 1, "{at_kill:?}");

    // Another serin (a restart as the same pod) waits out the Lease it
    // held (its renewals were not this process's), then resumes from the
    // status: the same run, the pause ends 20 s after it began, not 20 s
    // after the takeover.
    let second_dir = tempfile::tempdir().unwrap();
    let (_second, log) = serve(&sim, second_dir.path());
    until(limit, &log, async || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains(" now leads (").then_some(())
    })
    .await;
    let took_over = epoch_ms() - killed_at;
    let next_step_at = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.state?.step_index >= 2).then(epoch_ms)
    })
    .await;
    let waited = next_step_at - pause_started;
    assert!(waited >= 20_000, "the pause was cut short: {waited} ms");
    assert!(
        waited < 2000 + took_over + 20_000,
        "the pause lasted {waited} ms from its start; the takeover came {took_over} ms after the kill (a restart from zero ends 20 s after it)"
    );
    let done = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Succeeded")).then_some(s)
    })
    .await;
    assert_eq!(done.run, Some(1), "the same run: {done:?}");
    let started = done
        .decisions
        .iter()
        .filter(|d| d.kind == "started")
        .count();
    assert_eq!(started, 1, "the run started once: {:?}", done.decisions);
    // No step done twice: each weight set once, the pause entered once.
    for said in [
        "canary weight set to 20 %",
        "canary weight set to 50 %",
        "pausing 20s",
    ] {
        let n = done
            .decisions
            .iter()
            .filter(|d| d.reason.starts_with(said))
            .count();
        assert_eq!(n, 1, "`{said}` {n} times: {:?}", done.decisions);
    }
    assert_only_paused_written(&sim_state(&sim));
}

/// `serin ACTION checkout --kubernetes -n shop` (the built binary), with
/// its output.
fn operator(sim: &KubeSim, args: &[&str]) -> (Option<i32>, String) {
    let out = common::serin::serin()
        .args(args)
        .args(["--kubernetes", "-n", "shop", "--wait", "20s"])
        .env("KUBECONFIG", sim.kubeconfig())
        .env("USER", "alice")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_act_through_the_rollout_and_a_gitops_resync_undoes_nothing() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let mut m = gitops_rollout("checkout", &prom);
    m["spec"]["steps"] = json!([{ "setWeight": 20 }, { "pause": {} }, { "setWeight": 50 }]);
    let rollout: Rollout = serde_json::from_value(m.clone()).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let limit = Duration::from_secs(60);

    // No run yet: a request is answered, refused, saying why.
    until(limit, &log, async || {
        status_of(&api, "checkout").await?.template_hash.map(|_| ())
    })
    .await;
    let (code, said) = operator(&sim, &["pause", "checkout"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("refused") && said.contains("no run in progress"),
        "{said}"
    );

    admin_post(
        &sim,
        "/update-template",
        json!({ "image": "registry.example.com/checkout:v1.2.0", "manager": "argocd-controller" }),
    );
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Paused") && s.weight == Some(20.0)).then_some(())
    })
    .await;

    // The weight by hand: done, recorded with who asked.
    let (code, said) = operator(&sim, &["traffic", "checkout", "30"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("traffic done"), "{said}");
    let s = status_of(&api, "checkout").await.unwrap();
    assert_eq!(s.weight, Some(30.0), "{s:?}");
    let answer = s.last_request.clone().unwrap();
    assert!(
        answer.accepted && answer.by.starts_with("alice"),
        "{answer:?}"
    );
    assert_eq!(sim.info["namespace"], "shop");

    // Argo CD re-syncs the Rollout as git holds it: the request and what
    // it did stay (the annotation and status are not git's).
    let mut git = m.clone();
    git.as_object_mut().unwrap().remove("status");
    admin_post(
        &sim,
        "/apply-as",
        json!({"manager": "argocd-controller", "object": git, "group": "serin.dev", "plural": "rollouts", "namespace": "shop"}),
    );
    let after = api.get("checkout").await.unwrap();
    assert!(
        after
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("serin.dev/request")),
        "{:?}",
        after.metadata
    );
    let s = after.status.unwrap();
    assert_eq!(s.weight, Some(30.0));
    assert_eq!(s.last_request.as_ref().map(|a| &a.id), Some(&answer.id));

    // A request older than five minutes (asked while no controller ran) is
    // refused as expired, not acted on.
    let old = json!({"id": "0123456789abcdef", "action": "promote", "by": "bob@old",
                     "atMillis": epoch_ms() - 600_000});
    api.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"serin.dev/request": old.to_string()}}})),
    )
    .await
    .unwrap();
    let expired = until(limit, &log, async || {
        let a = status_of(&api, "checkout").await?.last_request?;
        (a.id == "0123456789abcdef").then_some(a)
    })
    .await;
    assert!(
        !expired.accepted && expired.message.starts_with("expired"),
        "{expired:?}"
    );
    assert_eq!(
        status_of(&api, "checkout").await.unwrap().phase.as_deref(),
        Some("Paused")
    );

    // A rollback: all traffic on stable, the stable Deployment untouched.
    let (code, said) = operator(&sim, &["rollback", "checkout"]);
    assert_eq!(
        code,
        Some(0),
        "{said}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let s = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack")).then_some(s)
    })
    .await;
    assert_eq!(s.weight, Some(0.0), "{s:?}");
    let (code, said) = operator(&sim, &["status", "checkout"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("RolledBack") && said.contains("last request: rollback by alice"),
        "{said}"
    );

    // Each answer went out as an Event.
    let events = kubectl_ok(&sim, &["get", "events", "-n", "shop", "-o", "json"]);
    let requests = events.matches("OperatorRequest").count();
    assert!(
        requests >= 4,
        "{requests} OperatorRequest events:\n{events}"
    );
    // (A request written while status changed met a 409 and was written
    // again: the CLI's retry, not a conflict with git.)
    assert_only_paused_written_to_the_stable(&sim_state(&sim));
}

/// Who holds the Lease `shop/serin`, and its renewTime, as the sim has it.
fn lease_holder(sim: &KubeSim) -> Option<String> {
    let out = sim.kubectl(&["get", "lease", "serin", "-n", "shop", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_step_is_replaced_and_the_run_goes_on_from_status() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let mut m = gitops_rollout("checkout", &prom);
    m["spec"]["steps"] = json!([
        { "setWeight": 20 }, { "pause": { "duration": "20s" } },
        { "setWeight": 50 }, { "pause": { "duration": "1s" } }
    ]);
    let rollout: Rollout = serde_json::from_value(m).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();

    // Two replicas, as deploy/kubernetes runs them.
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, a_log) = serve_as(&sim, a_dir.path(), "serin-a");
    let (b, b_log) = serve_as(&sim, b_dir.path(), "serin-b");
    let limit = Duration::from_secs(60);
    let leader = until(limit, &a_log, async || lease_holder(&sim)).await;
    let (mut leader_proc, follower, follower_log) = if leader == "serin-a" {
        (a, "serin-b", b_log)
    } else {
        (b, "serin-a", a_log)
    };
    // In the 20 s pause at 20 %, 3 s served: the leader is killed (-9: no
    // release of the Lease, no last write).
    let pause_started = release_into_the_pause(&sim, &api, &follower_log, 3000).await;
    let killed_at = epoch_ms();
    leader_proc.kill();
    let at_kill = status_of(&api, "checkout").await.unwrap();
    assert_eq!(at_kill.state.as_ref().unwrap().step_index, 1, "{at_kill:?}");
    assert_eq!(
        at_kill
            .state
            .as_ref()
            .unwrap()
            .writer
            .as_deref()
            .map(|w| w.starts_with(&leader)),
        Some(true),
        "{at_kill:?}"
    );

    // The other replica takes the Lease once it has run out (15 s after
    // the last renewal it saw), not before, and goes on from the status.
    until(limit, &follower_log, async || {
        (lease_holder(&sim).as_deref() == Some(follower)).then_some(())
    })
    .await;
    let took_over = epoch_ms() - killed_at;
    eprintln!("failover: the Lease changed hands {took_over} ms after the kill -9");
    let next_step_at = until(limit, &follower_log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.state?.step_index >= 2).then(epoch_ms)
    })
    .await;
    let paused = next_step_at - pause_started;
    eprintln!("failover: the 20 s pause ended {paused} ms after it began");
    // Not restarted from zero (that would end 20 s after the takeover).
    assert!(
        paused < took_over + 3000 + 20_000,
        "the pause lasted {paused} ms from its start; the takeover came {took_over} ms after the kill"
    );
    assert!(paused >= 20_000, "the pause was cut short: {paused} ms");
    let done = until(limit, &follower_log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Succeeded")).then_some(s)
    })
    .await;
    assert_eq!(done.run, Some(1), "the same run: {done:?}");
    assert_eq!(
        done.state
            .as_ref()
            .and_then(|s| s.writer.as_deref())
            .map(|w| w.starts_with(follower)),
        Some(true),
        "{done:?}"
    );
    let started = done
        .decisions
        .iter()
        .filter(|d| d.kind == "started")
        .count();
    assert_eq!(started, 1, "the run started once: {:?}", done.decisions);
    for said in [
        "canary weight set to 20 %",
        "canary weight set to 50 %",
        "pausing 20s",
    ] {
        let n = done
            .decisions
            .iter()
            .filter(|d| d.reason.starts_with(said))
            .count();
        assert_eq!(n, 1, "`{said}` {n} times: {:?}", done.decisions);
    }
    // Never two writers of the Rollout: no write to it answered 409 (the
    // replicas' race for the Lease may); the stable got `spec.paused` alone.
    let state = sim_state(&sim);
    for w in state["writes"].as_array().unwrap() {
        let path = w["path"].as_str().unwrap_or("");
        if path.contains("/rollouts/") || path.contains("/deployments/") {
            assert_ne!(w["code"], 409, "a conflict: {w}");
        }
    }
    assert_only_paused_written_to_the_stable(&state);
}
