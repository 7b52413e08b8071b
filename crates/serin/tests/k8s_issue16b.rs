//! The breaker's second round on the Kubernetes controller (issue 16):
//! a malformed Rollout does not blind the controller to the others; an
//! operator's rollback asked while no controller ran is applied after a
//! restart; a run resumed after its steps were edited keeps the steps it
//! started with. `serin serve --kubernetes` end to end against kubesim.

mod common;

use std::time::Duration;

use common::kubesim::KubeSim;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use serin::cluster::resource::Rollout;

use common::controller::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_rollout_is_refused_by_field_and_the_others_stay_controlled() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (serin, log) = serve(&sim, &dir.path().join("a"));
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    paused_at_20(&sim, &api, steps, &log).await;

    // Mid-run, two Rollouts the typed list cannot read (a weight as a
    // list; no stable), then a restart: the controller lists them all.
    kubectl_create(
        &sim,
        dir.path(),
        &json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "broken", "namespace": "shop" },
            "spec": {
                "stable": { "version": "v1" }, "canary": { "version": "v2" },
                "traffic": { "provider": "nginx-ingress", "kubernetes": { "deployment": "other", "ingress": "other" } },
                "steps": [{ "setWeight": [1, 2] }]
            }
        }),
    );
    kubectl_create(
        &sim,
        dir.path(),
        &json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "no-stable", "namespace": "shop" },
            "spec": {
                "canary": { "version": "v2" },
                "traffic": { "provider": "nginx-ingress", "kubernetes": { "deployment": "other", "ingress": "other" } }
            }
        }),
    );
    drop(serin);
    let (_serin, log) = serve(&sim, &dir.path().join("b"));
    let limit = Duration::from_secs(60);
    for (name, field) in [
        ("broken", "spec.steps[0].setWeight"),
        ("no-stable", "spec.stable"),
    ] {
        let s = until(limit, &log, async || {
            let s = status_of(&api, name).await?;
            (s.phase.as_deref() == Some("InvalidSpec")).then_some(s)
        })
        .await;
        let stalled = condition(&s, "Stalled").unwrap();
        assert_eq!(stalled.reason, "InvalidSpec", "{s:?}");
        assert!(stalled.message.contains(field), "{name}: {s:?}");
    }
    // The good one is still controlled: its failing canary rolls back.
    admin_post(
        &sim,
        "/faults",
        json!({ "version": "canary", "errors": 0.5 }),
    );
    let s = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack")
            && sim_state(&sim)["weight"].as_f64() == Some(0.0))
        .then_some(s)
    })
    .await;
    assert_eq!(s.weight, Some(0.0), "{s:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("did not match any variant"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_asked_while_no_controller_ran_is_applied_after_a_restart() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (serin, log) = serve(&sim, &dir.path().join("a"));
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }, { "setWeight": 50 }, { "pause": {} }]);
    paused_at_20(&sim, &api, steps, &log).await;
    drop(serin);
    // Asked with no controller: no answer within the wait, the request stays.
    let (code, out, err) = cli(&sim, &["rollback", "checkout", "--wait", "1s"]);
    assert_ne!(code, Some(0), "{out}{err}");
    let (_serin, log) = serve(&sim, &dir.path().join("b"));
    let limit = Duration::from_secs(60);
    let s = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        s.last_request.as_ref()?;
        Some(s)
    })
    .await;
    let answer = s.last_request.clone().unwrap();
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(answer.action, "rollback", "{answer:?}");
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack")
            && sim_state(&sim)["weight"].as_f64() == Some(0.0))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_resumed_after_its_steps_were_edited_keeps_the_steps_it_started_with() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (serin, log) = serve(&sim, &dir.path().join("a"));
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }, { "setWeight": 50 }, { "pause": {} }]);
    paused_at_20(&sim, &api, steps, &log).await;
    drop(serin);
    // Steps edited while no controller runs: index 1 is now 100 %.
    let edit = json!({ "spec": { "steps": [{ "setWeight": 20 }, { "setWeight": 100 }] } });
    api.patch("checkout", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let (_serin, log) = serve(&sim, &dir.path().join("b"));
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("resuming the run")
            .then_some(())
    })
    .await;
    // The pause (the run's step 2) ends on promote: next is 50 %, not 100 %.
    let (code, out, err) = cli(&sim, &["promote", "checkout"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let s = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        assert_ne!(
            s.phase.as_deref(),
            Some("Succeeded"),
            "new steps applied: {s:?}"
        );
        assert_ne!(s.weight, Some(100.0), "new steps applied: {s:?}");
        (s.weight == Some(50.0) && s.phase.as_deref() == Some("Paused")).then_some(s)
    })
    .await;
    assert_eq!(s.step, Some(4), "{s:?}");
    until(limit, &log, async || {
        (sim_state(&sim)["weight"].as_f64() == Some(50.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_meeting_a_hand_edited_route_wins_over_it() {
    let sim = KubeSim::start(&["--ssa-conflicts", "--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, &dir.path().join("a"));
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    paused_at_20(&sim, &api, steps, &log).await;
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
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        (sim_state(&sim)["weight"].as_f64() == Some(100.0)).then_some(())
    })
    .await;
    let (code, out, err) = cli(&sim, &["rollback", "checkout"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // Either the rollback is in force, or status says it is not.
    let s = until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        let weight = sim_state(&sim)["weight"].as_f64();
        (s.phase.as_deref() == Some("RolledBack")
            && (weight == Some(0.0) || !s.not_in_force.is_empty()))
        .then_some((s, weight))
    })
    .await;
    // The rollback wins over the hand edit (the routing at 0 is forced).
    assert_eq!(s.1, Some(0.0), "{:?}", s.0);
    let answer = s.0.last_request.clone().unwrap();
    assert!(answer.accepted, "{answer:?}");
    assert!(!answer.message.contains("NOT in force"), "{answer:?}");
    until(limit, &log, async || {
        let s = status_of(&api, "checkout").await?;
        s.not_in_force.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_naming_a_missing_deployment_is_stalled_saying_so() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let ghost: Rollout = serde_json::from_value(manifest(
        "ghost",
        &prom,
        "nginx-ingress",
        json!({ "deployment": "ghost", "service": "ghost", "ingress": "ghost" }),
        json!([{ "setWeight": 20 }]),
    ))
    .unwrap();
    api.create(&PostParams::default(), &ghost).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, dir.path());
    let s = until(Duration::from_secs(60), &log, async || {
        let s = status_of(&api, "ghost").await?;
        condition_is(&s, "Stalled", "True").then_some(s)
    })
    .await;
    let stalled = condition(&s, "Stalled").unwrap();
    assert_eq!(stalled.reason, "DeploymentNotFound", "{s:?}");
    assert!(
        stalled.message.contains("Deployment shop/ghost not found"),
        "{s:?}"
    );
    assert!(
        events(&sim).iter().any(|(t, r, n)| t == "Warning"
            && r == "DeploymentNotFound"
            && n.contains("Deployment shop/ghost not found")),
        "{:?}",
        events(&sim)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_waiting_for_an_answer_says_the_request_is_still_pending() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let r: Rollout = serde_json::from_value(manifest(
        "checkout",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        json!([{ "setWeight": 20 }]),
    ))
    .unwrap();
    api.create(&PostParams::default(), &r).await.unwrap();
    mark_seen(&sim, "checkout");
    // No controller runs now: the CLI waits; Ctrl-C once the request is
    // written.
    let child = common::serin::serin()
        .args([
            "pause",
            "checkout",
            "--wait",
            "60s",
            "--kubernetes",
            "-n",
            "shop",
        ])
        .env("KUBECONFIG", sim.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("none.log");
    until(Duration::from_secs(30), &log, async || {
        let r = api.get("checkout").await.ok()?;
        r.metadata
            .annotations?
            .contains_key("serin.dev/request")
            .then_some(())
    })
    .await;
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("still pending"), "{err}");
    assert!(err.contains("the controller will act on it"), "{err}");
}
