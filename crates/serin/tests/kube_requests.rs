//! The operator's commands on a Rollout resource (`serin status|pause|
//! promote|rollback|traffic NAME --kubernetes`), against kubesim, the CLI
//! side: what they write (the `serin.dev/request` annotation, nothing in
//! spec or status), one pending request at a time except a rollback, an
//! answer waited for and its absence said, and status read from the
//! cluster. The controller's side is tested with `serin serve
//! --kubernetes` in tests/k8s_controller.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::kubesim::KubeSim;
use common::serin::serin;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_ok(sim: &KubeSim, args: &[&str]) -> String {
    let out = sim.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli(sim: &KubeSim, args: &[&str]) -> Output {
    serin()
        .args(args)
        .env("KUBECONFIG", sim.kubeconfig())
        .env("USER", "alice")
        .output()
        .expect("serin runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// kubesim with the CRD and a Rollout `shop/checkout` (never seen by a
/// controller).
fn cluster() -> KubeSim {
    let sim = KubeSim::start(&[]);
    let crd = repo().join("deploy/kubernetes/crd.yaml");
    kubectl_ok(&sim, &["apply", "-f", &crd.display().to_string()]);
    kubectl_ok(
        &sim,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/rollouts.serin.dev",
            "--timeout=10s",
        ],
    );
    let rollout = json!({
        "apiVersion": "serin.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "stable": {"version": "v1"},
            "traffic": {"provider": "nginx-ingress", "kubernetes": {
                "deployment": "checkout", "service": "checkout", "ingress": "checkout"}},
            "analysis": {"prometheus": {"address": "http://127.0.0.1:9"}},
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollout.json");
    std::fs::write(&path, rollout.to_string()).unwrap();
    kubectl_ok(&sim, &["create", "-f", &path.display().to_string()]);
    sim
}

fn rollout(sim: &KubeSim) -> Value {
    serde_json::from_str(&kubectl_ok(
        sim,
        &[
            "get",
            "rollouts.serin.dev",
            "checkout",
            "-n",
            "shop",
            "-o",
            "json",
        ],
    ))
    .unwrap()
}

fn request(sim: &KubeSim) -> Option<Value> {
    rollout(sim)["metadata"]["annotations"]["serin.dev/request"]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
}

/// A status as a controller that saw the Rollout writes it (then
/// stopped): phase Idle.
fn seen_once(sim: &KubeSim) {
    kubectl_ok(
        sim,
        &[
            "patch",
            "rollouts.serin.dev",
            "checkout",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Idle","observedGeneration":1}}"#,
        ],
    );
}

#[test]
fn a_request_on_a_rollout_no_controller_has_seen_is_refused_before_anything_is_written() {
    let sim = cluster();
    let before = rollout(&sim);
    let out = cli(
        &sim,
        &[
            "promote",
            "checkout",
            "--kubernetes",
            "-n",
            "shop",
            "--wait",
            "1s",
        ],
    );
    let err = text(&out.stderr);
    // Unavailable (exit 1), naming why and the namespace; not the Lease's
    // "no serin controller answered".
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Rollout shop/checkout: no serin controller has seen this Rollout")
            && err.contains("namespace shop"),
        "{err}"
    );
    assert!(!err.contains("answered"), "{err}");
    assert_eq!(request(&sim), None);
    assert_eq!(
        rollout(&sim)["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
}

#[test]
fn requests_are_an_annotation_waited_for_and_only_a_rollback_replaces_one() {
    let sim = cluster();
    seen_once(&sim);
    let before = rollout(&sim);

    // No controller runs now: the request is written, and the wait ends
    // saying nobody answered (exit 1), naming what to look at.
    let out = cli(
        &sim,
        &[
            "pause",
            "checkout",
            "--kubernetes",
            "-n",
            "shop",
            "--wait",
            "1s",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no serin controller answered") && err.contains("serin serve --kubernetes"),
        "{err}"
    );
    let pause = request(&sim).expect("the request annotation");
    assert_eq!(pause["action"], "pause");
    assert!(
        pause["by"].as_str().unwrap().starts_with("alice"),
        "{pause}"
    );
    // Only the annotation changed: not spec, not status.
    let after = rollout(&sim);
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["status"], before["status"]);
    assert_eq!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );

    // A second request while the first is unanswered: refused, changing
    // nothing.
    let out = cli(
        &sim,
        &[
            "promote",
            "checkout",
            "--kubernetes",
            "-n",
            "shop",
            "--wait",
            "1s",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pause request by alice"), "{err}");
    assert!(err.contains("not answered yet"), "{err}");
    assert_eq!(request(&sim).unwrap()["id"], pause["id"]);

    // A rollback is never queued behind it.
    let out = cli(
        &sim,
        &[
            "rollback",
            "checkout",
            "--kubernetes",
            "-n",
            "shop",
            "--wait",
            "1s",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rollback = request(&sim).unwrap();
    assert_eq!(rollback["action"], "rollback");
    assert_ne!(rollback["id"], pause["id"]);

    // No such Rollout in another namespace: said so.
    let out = cli(
        &sim,
        &[
            "pause",
            "checkout",
            "--kubernetes",
            "-n",
            "default",
            "--wait",
            "1s",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Rollout default/checkout") && err.contains("no such Rollout"),
        "{err}"
    );

    // A bad weight is refused before anything is written (exit 2).
    let out = cli(
        &sim,
        &["traffic", "checkout", "140", "--kubernetes", "-n", "shop"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(request(&sim).unwrap()["id"], rollback["id"]);
}

#[test]
fn status_reads_the_rollout_from_the_cluster() {
    let sim = cluster();
    let out = cli(
        &sim,
        &[
            "status",
            "checkout",
            "--kubernetes",
            "-n",
            "shop",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The API's status object (docs/api.md), and what only the cluster has.
    assert_eq!(doc["name"], "checkout");
    assert_eq!(doc["phase"], "NotSeen", "{doc:#}");
    assert_eq!(doc["run"], 0, "{doc:#}");
    assert!(doc["notInForce"].as_array().unwrap().is_empty(), "{doc:#}");
    assert_eq!(doc["kubernetes"]["namespace"], "shop");
    assert_eq!(doc["kubernetes"]["generation"], 1);

    // Without -n: the kubeconfig context's namespace (kubesim's is shop).
    assert_eq!(sim.info["namespace"], "shop");
    let out = cli(&sim, &["status", "--kubernetes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("checkout (shop)  not seen by a controller yet"),
        "{stdout}"
    );

    let out = cli(&sim, &["status", "--kubernetes", "-n", "elsewhere"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no Rollouts in namespace elsewhere"),
        "{}",
        text(&out.stdout)
    );
}
