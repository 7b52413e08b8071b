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

/// SIGCONT for a sim stopped with SIGSTOP, also when the test fails.
struct Stopped(String);

impl Stopped {
    fn stop(sim: &KubeSim) -> Stopped {
        let pid = sim.info["pid"].as_u64().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

fn controller_of(v: &serde_json::Value) -> (Option<String>, bool) {
    (
        v["controller"]["leader"].as_str().map(str::to_string),
        v["controller"]["leads"].as_bool().unwrap_or(false),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_api_server_hangs_the_view_says_it_is_stale_and_names_no_leader() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log, addr) = serve_as(&sim, &dir.path().join("a"), "serin-0");
    nginx_rollout_at_rest(&sim, &api, json!([{ "setWeight": 20 }]), &log).await;
    let list = |addr| {
        let a = common::http::get(addr, "/api/v1/kubernetes/rollouts");
        assert_eq!(a.status, 200, "{}", a.body);
        serde_json::from_str::<serde_json::Value>(&a.body).unwrap()
    };
    let limit = Duration::from_secs(40);
    until(limit, &log, async || {
        let v = list(addr);
        (v["watchError"].is_null() && controller_of(&v) == (Some("serin-0".into()), true))
            .then_some(())
    })
    .await;

    // The API server hangs (its sockets accept, nothing answers).
    let stopped = Stopped::stop(&sim);
    let stale = until(limit, &log, async || {
        let v = list(addr);
        let (leader, leads) = controller_of(&v);
        // Never "led by serin-0" on a replica that says it does not lead.
        assert!(leads || leader.is_none(), "{v}");
        let error = v["watchError"].as_str()?.to_string();
        (!leads && leader.is_none()).then_some(error)
    })
    .await;
    assert!(stale.contains("no answer from the API server"), "{stale}");
    // The Rollouts are still shown, as last seen.
    assert_eq!(list(addr)["rollouts"][0]["name"], "checkout");
    drop(stopped);

    // Back: fresh again, and this replica leads and says so.
    until(Duration::from_secs(60), &log, async || {
        let v = list(addr);
        (v["watchError"].is_null() && controller_of(&v) == (Some("serin-0".into()), true))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_another_manager_owns_is_said_at_rest_before_any_release() {
    // kubesim's HTTPRoute was created by kubectl (client-side apply): its
    // rules are kubectl's, and serin's weight 0 would meet a 409.
    let sim = KubeSim::start(&["--provider", "gateway-api", "--ssa-conflicts"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let dir = tempfile::tempdir().unwrap();
    let (_serin, log) = serve(&sim, &dir.path().join("a"));
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let rollout: Rollout = serde_json::from_value(manifest(
        "checkout",
        &prom,
        "gateway-api",
        json!({ "deployment": "checkout", "service": "checkout", "httpRoute": "checkout" }),
        json!([{ "setWeight": 20 }]),
    ))
    .unwrap();
    api.create(&kube::api::PostParams::default(), &rollout)
        .await
        .unwrap();
    // Idle, Ready, and saying why the next release would stop, naming
    // the route and the hand-over.
    let s = until(Duration::from_secs(60), &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Idle")
            && s.message.as_deref().is_some_and(|m| m.contains("weight 0")))
        .then_some(s)
    })
    .await;
    let message = s.message.clone().unwrap();
    assert!(
        message.contains("HTTPRoute shop/checkout") && message.contains("Field ownership"),
        "{message}"
    );
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "RouteConflict"),
        "{s:?}"
    );
    assert!(
        s.reason.as_deref().unwrap_or("").contains("weight 0"),
        "{s:?}"
    );
    assert!(
        events(&sim).iter().any(|(t, reason, note)| t == "Warning"
            && reason == "RouteConflict"
            && note.contains("HTTPRoute")),
        "{:?}",
        events(&sim)
    );
    // Found by a dry run: nothing was written to the route, and no run began.
    let state = sim_state(&sim);
    let route_writes: Vec<&serde_json::Value> = state["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["path"].as_str().unwrap_or("").contains("httproutes"))
        .filter(|w| !w["query"].to_string().contains("dryRun"))
        .collect();
    assert!(route_writes.is_empty(), "{route_writes:?}");
    assert_eq!(s.run, None, "{s:?}");

    // The documented hand-over ("A route by name under Argo CD or Flux"):
    // the next look at rest finds the route writable and says so.
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "checkout", "namespace": "shop" },
            "spec": { "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                "backendRefs": [
                    { "name": "checkout", "port": 80, "weight": 10000 },
                    { "name": "checkout-canary", "port": 80, "weight": 0 }
                ]
            }] }
        })
        .to_string(),
    )
    .unwrap();
    kubectl_ok(
        &sim,
        &[
            "apply",
            "--server-side",
            "--field-manager=serin",
            "--force-conflicts",
            "-f",
            &rules.display().to_string(),
        ],
    );
    let s = until(Duration::from_secs(40), &log, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("Idle")
            && s.message
                .as_deref()
                .is_some_and(|m| !m.contains("weight 0")))
        .then_some(s)
    })
    .await;
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Idle"),
        "{s:?}"
    );
}

/// SIGSTOP for a serin process, SIGCONT on drop (also when the test fails).
struct Frozen(String);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        let pid = pid.to_string();
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// kubesim's successful writes after `seq` that only a stale run of
/// serin-a could make: a status it wrote (its identity is the status'
/// writer), an object created (the canary Ingress re-created), the canary
/// Deployment scaled up.
fn stale_writes_after(sim: &KubeSim, seq: u64) -> Vec<String> {
    sim_state(sim)["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["seq"].as_u64().unwrap_or(0) > seq)
        .filter(|w| (200..300).contains(&w["code"].as_u64().unwrap_or(0)))
        .filter(|w| {
            let path = w["path"].as_str().unwrap_or("");
            let body = match &w["body"] {
                serde_json::Value::String(t) => serde_json::from_str(t).unwrap_or_default(),
                other => other.clone(),
            };
            let plane = ["deployments", "services", "ingresses"]
                .iter()
                .any(|k| path.contains(&format!("/{k}/")));
            (path.contains("/rollouts/") && body.to_string().contains("\"serin-a\""))
                || (plane && w["code"].as_u64() == Some(201))
                || (path.contains("/deployments/checkout-canary")
                    && body["spec"]["replicas"].as_i64().unwrap_or(0) > 0)
        })
        .map(|w| w.to_string().chars().take(300).collect())
        .collect()
}

fn last_seq(sim: &KubeSim) -> u64 {
    sim_state(sim)["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stalled_past_its_lease_writes_nothing_after_it_resumes() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "shop");
    let holder = async || {
        leases
            .get_opt("serin")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, log_a, _) = serve_as(&sim, &dir.path().join("a"), "serin-a");
    until(Duration::from_secs(30), &log_a, async || {
        (holder().await.as_deref() == Some("serin-a")).then_some(())
    })
    .await;
    let (_b, log_b, _) = serve_as(&sim, &dir.path().join("b"), "serin-b");
    paused_at_20(
        &sim,
        &api,
        json!([{ "setWeight": 20 }, { "pause": {} }]),
        &log_a,
    )
    .await;

    // The leader stalls (a paused process) past its lease; serin-b takes
    // over and rolls the run back on an operator's word.
    let frozen = Frozen::freeze(a.child.id());
    until(Duration::from_secs(60), &log_b, async || {
        (holder().await.as_deref() == Some("serin-b")).then_some(())
    })
    .await;
    let (code, _, err) = cli(&sim, &["rollback", "checkout", "--wait", "30s"]);
    assert_eq!(code, Some(0), "{err}");
    until(Duration::from_secs(30), &log_b, async || {
        let s = status_of(&api, "checkout").await?;
        (s.phase.as_deref() == Some("RolledBack")
            && sim_state(&sim)["weight"].as_f64() == Some(0.0))
        .then_some(())
    })
    .await;
    let settled = last_seq(&sim);
    let before_resume = std::fs::read_to_string(&log_a).unwrap().len();

    // serin-a resumes: it finds it no longer leads and follows.
    drop(frozen);
    until(Duration::from_secs(30), &log_a, async || {
        let said = std::fs::read_to_string(&log_a).ok()?;
        said[before_resume.min(said.len())..]
            .contains("held by serin-b; this replica follows")
            .then_some(())
    })
    .await;
    // Whatever its stale reconciles were doing, it wrote nothing that took:
    // no status of its own, no canary object re-created or scaled up, and
    // the split stays on stable. Checked over two of its retry periods
    // after it said it follows.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        let writes = stale_writes_after(&sim, settled);
        assert!(
            writes.is_empty(),
            "writes after the takeover: {writes:?}\nserin-a:\n{}",
            std::fs::read_to_string(&log_a).unwrap_or_default()
        );
        assert_eq!(sim_state(&sim)["weight"].as_f64(), Some(0.0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(holder().await.as_deref(), Some("serin-b"));
}
