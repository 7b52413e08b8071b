//! The third round of outside reports on the Kubernetes controller (issue
//! 16): a Rollout whose status this version cannot read is skipped and
//! named while the others stay controlled. `serin serve --kubernetes` end
//! to end against kubesim.

mod common;

use std::time::Duration;

use common::kubesim::KubeSim;
use kube::api::Api;
use serde_json::json;
use serin::cluster::resource::Rollout;

use common::controller::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_an_unreadable_status_is_skipped_and_the_others_stay_controlled() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (serin, log) = serve(&sim, &dir.path().join("a"));
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    paused_at_20(&sim, &api, steps, &log).await;

    // Mid-run, another Rollout gets a status the typed struct rejects
    // (`run: -1`: kubesim, like a lenient server, does not enforce the
    // schema's minimum), seen by the running controller's watch, then
    // listed afresh by a restarted one.
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let mut ghost = manifest(
        "ghost",
        &prom,
        "nginx-ingress",
        json!({ "deployment": "other", "service": "other", "ingress": "other" }),
        json!([{ "setWeight": 20 }]),
    );
    ghost["metadata"]["name"] = "ghost".into();
    kubectl_create(&sim, dir.path(), &ghost);
    kubectl_ok(
        &sim,
        &[
            "patch",
            "rollouts.serin.dev",
            "ghost",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"run":-1,"phase":"Idle"}}"#,
        ],
    );
    let limit = Duration::from_secs(60);
    until(limit, &log, async || {
        let said = std::fs::read_to_string(&log).ok()?;
        said.contains("status fields this version of serin cannot read")
            .then_some(())
    })
    .await;
    drop(serin);
    let (_serin, log, addr) = serve_as(&sim, &dir.path().join("b"), "serin-0");

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

    // The bad one is named, once, in one bounded line; never the list.
    let said = std::fs::read_to_string(&log).unwrap();
    let warned: Vec<&str> = said.lines().filter(|l| l.contains("cannot read")).collect();
    assert_eq!(warned.len(), 1, "{said}");
    assert!(
        warned[0].contains("ghost") && warned[0].contains("run: "),
        "{}",
        warned[0]
    );
    assert!(!said.contains("listing Rollouts"), "{said}");
    assert!(
        said.lines().all(|l| l.len() < 2000),
        "a line over 2000 bytes:\n{said}"
    );
    // Its status is left as written (not controlled, not overwritten), and
    // a Warning Event says why.
    let raw = kubectl_ok(
        &sim,
        &[
            "get",
            "rollouts.serin.dev",
            "ghost",
            "-n",
            "shop",
            "-o",
            "json",
        ],
    );
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["status"]["run"], -1, "{raw}");
    assert!(
        events(&sim).iter().any(|(t, reason, note)| t == "Warning"
            && reason == "StatusUnreadable"
            && note.contains("run")),
        "{:?}",
        events(&sim)
    );
    // The view shows what it can read of it, and why it is not controlled.
    let view = common::http::get(addr, "/api/v1/kubernetes/rollouts/shop/ghost");
    assert_eq!(view.status, 200, "{}", view.body);
    let v: serde_json::Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(v["phase"], "Idle", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not controlled"),
        "{v}"
    );
}
