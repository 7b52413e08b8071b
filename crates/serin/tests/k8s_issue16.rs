//! What a new user found following docs/kubernetes.md against kubesim
//! (issue 16), with `serin serve --kubernetes` end to end (the built
//! binary): two Rollouts naming one Deployment (the older manages it, the
//! newer is refused and does nothing), a route write refused by a field
//! conflict (status, `serin status` and an Event say the weight is not in
//! force; retried once a second; in force after the hand-over), `Ready`
//! only once a promotion is in force, an idle status after git reverts a
//! rolled-back template, and a deleted Rollout unpausing its Deployment.

mod common;

use std::time::{Duration, Instant};

use common::kubesim::KubeSim;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use serin::cluster::resource::Rollout;

use common::controller::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rollouts_on_one_deployment_the_older_manages_it_and_the_newer_does_nothing() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    let first: Rollout = serde_json::from_value(manifest(
        "checkout",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        steps.clone(),
    ))
    .unwrap();
    api.create(&PostParams::default(), &first).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Idle") && condition_is(&s, "Ready", "True")).then_some(())
    })
    .await;

    // A second Rollout names the same Deployment (created a second later:
    // creationTimestamp has seconds): refused, naming the first.
    let created = Instant::now();
    until(limit, &log, async || {
        (created.elapsed() >= Duration::from_secs(1)).then_some(())
    })
    .await;
    let second: Rollout = serde_json::from_value(manifest(
        "checkout-again",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        steps,
    ))
    .unwrap();
    api.create(&PostParams::default(), &second).await.unwrap();
    let refused = until(limit, &log, async || {
        let s = status_of(&api, "checkout-again").await?;
        condition_is(&s, "Stalled", "True").then_some(s)
    })
    .await;
    let stalled = condition(&refused, "Stalled").unwrap();
    assert_eq!(stalled.reason, "DeploymentClaimed", "{refused:?}");
    assert!(
        stalled.message.contains("Rollout shop/checkout "),
        "{stalled:?}"
    );
    assert_eq!(refused.phase.as_deref(), Some("InvalidSpec"));
    assert!(
        refused
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("managed by Rollout shop/checkout"),
        "{refused:?}"
    );
    // The printer columns say it (REASON: status.reason, short).
    let wide = kubectl_ok(&sim, &["get", "sro", "-n", "shop", "-o", "wide"]);
    let row = |name: &str| {
        wide.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {wide}"))
            .to_string()
    };
    assert!(row("checkout").contains(" Idle "), "{wide}");
    assert!(
        row("checkout").contains("no run: the stable Deployment runs its template"),
        "{wide}"
    );
    let again = row("checkout-again");
    assert!(
        again.contains(" InvalidSpec ") && again.contains("Deployment shop/checkout is managed by"),
        "{wide}"
    );
    assert!(
        events(&sim).iter().any(|(t, r, n)| t == "Warning"
            && r == "DeploymentClaimed"
            && n.contains("Rollout shop/checkout ")),
        "{:?}",
        events(&sim)
    );

    // Asked of the refused one: refused, said once, on stderr.
    let (code, out, err) = cli(&sim, &["pause", "checkout-again", "--wait", "20s"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out, "", "a refusal on stdout too");
    assert_eq!(err.matches("no run in progress").count(), 1, "{err}");
    assert!(err.contains("pause refused"), "{err}");

    // A release: the first runs it; the second stays out of it.
    release(&sim, "v1.2.0");
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Paused") && s.weight == Some(20.0)).then_some(())
    })
    .await;
    let (code, out, err) = cli(&sim, &["rollback", "checkout"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let rolled = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack")
            && sim_state(&sim)["weight"].as_f64() == Some(0.0))
        .then_some(s)
    })
    .await;
    assert_eq!(rolled.run, Some(1));
    let other = status_of(&api, "checkout-again").await.unwrap();
    assert_eq!(other.run, None, "the second never ran: {other:?}");
    assert_eq!(other.template_hash, None, "{other:?}");
    assert!(condition_is(&other, "Stalled", "True"), "{other:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        !said.contains("rollout=checkout-again run="),
        "the second Rollout started a run:\n{said}"
    );
    assert_eq!(sim_state(&sim)["weight"].as_f64(), Some(0.0));
}

/// The VirtualService as `kubectl apply` (client-side) keeps it: its
/// `spec.http` owned by `kubectl-client-side-apply`.
const VIRTUAL_SERVICE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: checkout, namespace: shop}
spec:
  hosts: [checkout]
  http:
    - name: primary
      route:
        - {destination: {host: checkout, subset: stable}, weight: 100}
        - {destination: {host: checkout, subset: canary}, weight: 0}
";

/// How many writes the sim logged to the VirtualService.
fn route_writes(sim: &KubeSim) -> usize {
    sim_state(sim)["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["path"]
                .as_str()
                .unwrap_or("")
                .ends_with("/virtualservices/checkout")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_route_write_is_not_in_force_in_status_retried_each_second_and_then_applied() {
    let sim = KubeSim::start(&[
        "--provider",
        "istio",
        "--ssa-conflicts",
        "--ready-delay",
        "0.3",
    ]);
    install_crd(&sim);
    let dir = tempfile::tempdir().unwrap();
    let vs = dir.path().join("vs.yaml");
    std::fs::write(&vs, VIRTUAL_SERVICE).unwrap();
    kubectl_ok(&sim, &["apply", "-f", &vs.display().to_string()]);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let m = manifest(
        "checkout",
        &prom,
        "istio",
        json!({ "deployment": "checkout", "virtualService": "checkout" }),
        json!([{ "setWeight": 20 }, { "pause": {} }]),
    );
    let rollout: Rollout = serde_json::from_value(m).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let (_serin, log) = serve(&sim, &dir.path().join("serve"));
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        status_of(&api, "checkout").await?.template_hash.map(|_| ())
    })
    .await;

    release(&sim, "v1.2.0");
    let refused = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (!s.not_in_force.is_empty()).then_some(s)
    })
    .await;
    let said = refused.not_in_force.join("; ");
    assert!(
        said.contains("weight 20 % not applied yet") && said.contains("conflict"),
        "{refused:?}"
    );
    assert!(condition_is(&refused, "Stalled", "True"), "{refused:?}");
    assert!(condition_is(&refused, "Ready", "False"), "{refused:?}");
    assert_eq!(condition(&refused, "Stalled").unwrap().reason, "Conflict");
    assert!(
        refused
            .reason
            .as_deref()
            .unwrap_or("")
            .starts_with("weight 20 % not applied yet"),
        "{refused:?}"
    );

    // Retried once a second, not on every tick of the driver.
    let before = route_writes(&sim);
    let window = Instant::now();
    until(limit, &log, async || {
        (window.elapsed() >= Duration::from_secs(4)).then_some(())
    })
    .await;
    let during = route_writes(&sim) - before;
    assert!(
        (2..=8).contains(&during),
        "{during} writes to the VirtualService in 4 s"
    );
    let told: Vec<_> = events(&sim)
        .into_iter()
        .filter(|(t, r, _)| t == "Warning" && r == "Conflict")
        .collect();
    assert_eq!(told.len(), 1, "one Event per distinct problem: {told:?}");
    assert!(told[0].2.contains("not applied yet"), "{told:?}");

    // `serin status` says it, with the step of the plan's steps.
    let (code, out, err) = cli(&sim, &["status", "checkout"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("NOT IN FORCE: weight 20 % not applied yet"),
        "{out}"
    );
    assert!(!out.contains("not seen by a controller"), "{out}");
    assert!(out.contains("step 2/2"), "{out}");
    let (code, out, err) = cli(&sim, &["status", "checkout", "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["name"], "checkout", "{doc:#}");
    assert_eq!(doc["steps"], 2, "{doc:#}");
    assert!(
        doc["notInForce"][0]
            .as_str()
            .unwrap()
            .contains("not applied yet"),
        "{doc:#}"
    );
    assert!(
        doc["reason"]
            .as_str()
            .unwrap()
            .starts_with("weight 20 % not applied yet"),
        "{doc:#}"
    );
    assert_eq!(doc["kubernetes"]["namespace"], "shop");

    // The hand-over: serin's value of `spec.http`, applied as serin, forced.
    let handed = VIRTUAL_SERVICE
        .replace("weight: 100}", "weight: 99}")
        .replace("weight: 0}", "weight: 1}");
    let hand = dir.path().join("hand.yaml");
    std::fs::write(&hand, handed).unwrap();
    kubectl_ok(
        &sim,
        &[
            "apply",
            "--server-side",
            "--field-manager=serin",
            "--force-conflicts",
            "-f",
            &hand.display().to_string(),
        ],
    );
    let applied = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.not_in_force.is_empty() && s.phase.as_deref() == Some("Paused")).then_some(s)
    })
    .await;
    assert!(condition_is(&applied, "Stalled", "False"), "{applied:?}");
    assert_eq!(sim_state(&sim)["weight"].as_f64(), Some(20.0));
    assert!(
        events(&sim).iter().any(|(_, r, _)| r == "InForce"),
        "{:?}",
        events(&sim)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_promoted_in_force_idle_after_a_revert_and_unpaused_when_deleted() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.5"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let m = manifest(
        "checkout",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        json!([{ "setWeight": 20 }, { "pause": { "duration": "2s" } }]),
    );
    let rollout: Rollout = serde_json::from_value(m).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let limit = Duration::from_secs(60);
    let fresh = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        condition_is(&s, "Ready", "True").then_some(s)
    })
    .await;
    assert_eq!(fresh.phase.as_deref(), Some("Idle"), "{fresh:?}");
    let (_, out, _) = cli(&sim, &["status", "checkout"]);
    assert!(
        out.contains("Idle") && !out.contains("not seen by a controller"),
        "{out}"
    );

    // Promoted: Ready (what `kubectl wait --for=condition=Ready` reads)
    // only once the stable Deployment has rolled the release out.
    release(&sim, "v1.2.0");
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.run == Some(1)).then_some(())
    })
    .await;
    let mut promoting_seen = false;
    let stable = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        if s.phase.as_deref() == Some("Succeeded") && condition_is(&s, "Ready", "False") {
            promoting_seen = true;
        }
        if !condition_is(&s, "Ready", "True") {
            return None;
        }
        Some(deployment(&client, "checkout").await)
    })
    .await;
    let st = stable.status.clone().unwrap();
    assert_eq!(
        st.updated_replicas, stable.spec.replicas,
        "Ready before the rollout: {st:?}"
    );
    assert_eq!(st.available_replicas, stable.spec.replicas, "{st:?}");
    assert_eq!(
        stable.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example.com/checkout:v1.2.0")
    );
    assert!(
        promoting_seen,
        "no status said the promotion was on its way"
    );

    // A bad release, rolled back; git reverts: idle, no canary, Ready.
    admin_post(
        &sim,
        "/faults",
        json!({ "version": "canary", "errors": 0.5 }),
    );
    release(&sim, "v1.3.0");
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack") && s.run == Some(2)).then_some(())
    })
    .await;
    admin_post(
        &sim,
        "/faults",
        json!({ "version": "canary", "errors": 0.0 }),
    );
    release(&sim, "v1.2.0");
    let idle = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Idle")).then_some(s)
    })
    .await;
    assert!(condition_is(&idle, "Ready", "True"), "{idle:?}");
    assert!(condition_is(&idle, "Stalled", "False"), "{idle:?}");
    assert_eq!(idle.canary_version, None, "{idle:?}");
    assert_eq!(idle.last_verdict, None, "{idle:?}");
    assert!(
        idle.message
            .as_deref()
            .unwrap_or("")
            .contains("back to the running one"),
        "{idle:?}"
    );
    assert!(
        idle.last_run
            .as_deref()
            .unwrap_or("")
            .starts_with("run 2 rolled back"),
        "{idle:?}"
    );

    // Deleted at rest: serin gives up spec.paused; the stable is not paused.
    assert_eq!(
        deployment(&client, "checkout").await.spec.paused,
        Some(true)
    );
    api.delete("checkout", &Default::default()).await.unwrap();
    until(limit, &log, async || {
        api.get_opt("checkout")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let d = deployment(&client, "checkout").await;
    assert_ne!(d.spec.paused, Some(true), "left paused: {:?}", d.spec);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("no longer paused by serin"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_serin_must_not_take_over_stalls_the_run_instead_of_waiting() {
    let sim = KubeSim::start(&[
        "--provider",
        "gateway-api",
        "--ssa-conflicts",
        "--ready-delay",
        "0.3",
    ]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    // An owned route named after the Rollout, where the user's HTTPRoute
    // `checkout` (not serin's) already is.
    let m = manifest(
        "checkout",
        &prom,
        "gateway-api",
        json!({ "deployment": "checkout", "httpRoute": { "parentRefs": [{ "name": "shop-gateway" }] } }),
        json!([{ "setWeight": 20 }, { "pause": {} }]),
    );
    let rollout: Rollout = serde_json::from_value(m).unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        status_of(&api, "checkout").await?.template_hash.map(|_| ())
    })
    .await;
    release(&sim, "v1.2.0");
    let stalled = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        condition_is(&s, "Stalled", "True").then_some(s)
    })
    .await;
    let c = condition(&stalled, "Stalled").unwrap();
    assert_eq!(c.reason, "Conflict", "{stalled:?}");
    assert!(
        c.message
            .contains("HTTPRoute shop/checkout exists and was not created by serin"),
        "{c:?}"
    );
    assert!(
        condition_is(&stalled, "Reconciling", "False"),
        "{stalled:?}"
    );
    assert!(
        events(&sim).iter().any(|(t, r, n)| t == "Warning"
            && r == "Conflict"
            && n.contains("was not created by serin")),
        "{:?}",
        events(&sim)
    );
    let writes = sim_state(&sim)["writes"].as_array().unwrap().clone();
    assert!(
        !writes
            .iter()
            .any(|w| w["path"].as_str().unwrap_or("").contains("httproutes")),
        "the user's route was written"
    );
}
