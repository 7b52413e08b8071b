//! Routes serin owns whole (`traffic.kubernetes.httpRoute` /
//! `virtualService` given as a mapping), through the real `serin` binary
//! against kubesim (an API server with real server-side-apply conflicts and
//! the traffic split Gateway API and Istio would make of the objects):
//!
//! - an owned HTTPRoute and an owned VirtualService (with its
//!   DestinationRule) are created, named after the rollout; the split the
//!   sim reads from them follows the steps, the header route sends
//!   `x-canary: always` to the canary, a rollback leaves the route in place
//!   at 0 %;
//! - a GitOps tool (field manager `argocd-controller`) re-applying what git
//!   holds (the Deployment, the Service, the Gateway) while serin moves the
//!   weights: no 409, nothing forced, the route has one manager, serin;
//! - `serin cleanup` (daemon mode) leaves the owned route in place at 0 %
//!   without the header rule: the service keeps answering through it;
//! - a route of that name serin did not create is refused, untouched;
//! - a route given by name is edited in place as before: another manager's
//!   `spec.rules` is a conflict; handed over (the docs' command) serin
//!   writes only `spec.rules` and leaves the rest of the route alone.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::daemon::cli;
use common::http::{get, http};
use common::kubesim::KubeSim;
use common::nginx::{free_port, local};
use common::serin::{Proc, serin, serin_serve, text, wait_for_port, write};
use serde_json::{Value, json};

/// A rollout named `checkout` (the sim's app) with a header route, two
/// steps that wait for `serin promote`, and queries for the sim's
/// Prometheus; `route` is the provider's lines under `kubernetes:`.
fn rollout(sim: &KubeSim, provider: &str, route: &str) -> String {
    let prometheus = sim.info["prometheus"].as_str().unwrap();
    format!(
        "name: checkout
stable: {{version: v1.1.0}}
canary: {{version: v1.2.0, image: registry.example.com/checkout:v1.2.0}}
traffic:
  provider: {provider}
  routes:
    - match: {{header: {{name: x-canary, value: always}}}}
      version: canary
  kubernetes:
    namespace: shop
    deployment: checkout
{route}steps:
  - setWeight: 20
  - pause: {{until: promoted}}
  - setWeight: 50
  - pause: {{until: promoted}}
analysis:
  interval: 1s
  minRequests: 20
  prometheus:
    address: {prometheus}
    requests: sum(http_requests_total{{version=\"{{{{version}}}}\"}})
    errors: sum(http_requests_total{{version=\"{{{{version}}}}\",code=\"500\"}})
    latencyBuckets: sum by (le) (http_request_duration_seconds_bucket{{version=\"{{{{version}}}}\"}})
"
    )
}

/// `serin run FILE` against the sim, in the background.
struct Run {
    proc: Proc,
    state: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn start(sim: &KubeSim, file_text: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "rollout.yaml", file_text);
        let state = dir.path().join("state");
        let mut cmd = serin();
        cmd.arg("run")
            .arg(&file)
            .arg("--state-dir")
            .arg(&state)
            .env("KUBECONFIG", sim.kubeconfig());
        Run {
            proc: Proc::spawn(cmd, true),
            state,
            kubeconfig: sim.kubeconfig(),
            _dir: dir,
        }
    }

    /// `serin VERB checkout` on this run's state dir.
    fn command(&self, verb: &str) -> Output {
        serin()
            .args([verb, "checkout", "--state-dir"])
            .arg(&self.state)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap()
    }

    fn finish(self) -> Output {
        self.proc.wait_output(Duration::from_secs(60))
    }
}

fn admin(sim: &KubeSim) -> SocketAddr {
    let url = sim.info["admin"].as_str().unwrap();
    url.trim_start_matches("http://").parse().unwrap()
}

/// The sim's record: weight, route (hdr), objects, writes.
fn state(sim: &KubeSim) -> Value {
    let a = get(admin(sim), "/state");
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

/// Polls the sim's state until `ok` holds (bounded).
fn wait_state(sim: &KubeSim, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = state(sim);
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; sim state: weight {} route {}\nwrites: {}",
            s["weight"],
            s["route"],
            codes(&s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn weight_is(w: f64) -> impl Fn(&Value) -> bool {
    move |s| s["weight"].as_f64() == Some(w)
}

/// Method, path and code of each write, for messages.
fn codes(s: &Value) -> String {
    s["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("{} {} {}", w["method"], w["path"], w["code"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// No write was refused and none was forced.
fn assert_no_conflict_and_no_force(s: &Value) {
    for w in s["writes"].as_array().unwrap() {
        assert_ne!(w["code"], 409, "a conflict: {w}");
        let query = w["query"].to_string();
        assert!(!query.contains("force"), "a forced write: {w}");
    }
}

/// The live object `plural.group` `name` in `shop`, from the sim's record.
fn object(s: &Value, kind: &str, name: &str) -> Option<Value> {
    s["objects"][kind]
        .as_array()
        .and_then(|os| {
            os.iter()
                .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == "shop")
        })
        .cloned()
}

/// The managers of an object's fields, by kubectl (managedFields).
fn managers(sim: &KubeSim, kind: &str, name: &str) -> Vec<(String, Value)> {
    let o = sim.kubectl(&[
        "-n",
        "shop",
        "get",
        kind,
        name,
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_string(),
                m["fieldsV1"].clone(),
            )
        })
        .collect()
}

fn kubectl_ok(sim: &KubeSim, args: &[&str]) {
    let o = sim.kubectl(args);
    assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
}

/// A GitOps re-sync: `argocd-controller` applies, forced as Argo CD and
/// Flux do, what git holds of the app (not the route: git holds the
/// rollout, and serin the route).
fn gitops_resync(sim: &KubeSim, extra: &[Value]) {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "checkout", "namespace": "shop", "labels": {"app": "checkout"}},
               "spec": {"selector": {"app": "checkout", "version": "stable"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "checkout", "namespace": "shop",
                            "labels": {"app": "checkout", "version": "stable"}},
               "spec": {"replicas": 4,
                        "selector": {"matchLabels": {"app": "checkout", "version": "stable"}},
                        "template": {"metadata": {"labels": {"app": "checkout", "version": "stable"}},
                                     "spec": {"containers": [{"name": "checkout",
                                         "image": "registry.example.com/checkout:v1.1.0",
                                         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]}}}}),
    ];
    objects.extend_from_slice(extra);
    for o in objects {
        let body = json!({"manager": "argocd-controller", "object": o}).to_string();
        let a = http(
            admin(sim),
            "POST",
            "/apply-as",
            &[("content-type", "application/json")],
            &body,
        );
        assert_eq!(a.status, 200, "apply-as {o}: {}", a.body);
    }
}

/// Promote to 50 %, roll back to 0 %: the run ends rolled back (exit 4).
fn promote_then_roll_back(sim: &KubeSim, run: Run) -> Value {
    let o = run.command("promote");
    assert!(o.status.success(), "{}", text(&o));
    wait_state(sim, "50 %", weight_is(50.0));
    let o = run.command("rollback");
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_state(sim, "0 % after the rollback", weight_is(0.0));
    let out = run.finish();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    s
}

#[test]
fn an_owned_httproute_is_created_moved_and_never_fought_over() {
    let sim = KubeSim::start(&[
        "--provider",
        "gateway-api",
        "--ssa-conflicts",
        "--ready-delay",
        "0.2",
    ]);
    // Git held the route; now it holds the rollout, and the route goes.
    kubectl_ok(&sim, &["-n", "shop", "delete", "httproute", "checkout"]);
    let run = Run::start(
        &sim,
        &rollout(
            &sim,
            "gateway-api",
            "    httpRoute:\n      parentRefs: [{name: shop-gateway}]\n      hostnames: [checkout.example.com]\n",
        ),
    );
    let s = wait_state(&sim, "20 % through the owned route", weight_is(20.0));
    assert_eq!(s["route"]["hdr"], "canary", "{}", s["route"]);
    let route = object(&s, "httproutes.gateway.networking.k8s.io", "checkout").unwrap();
    assert_eq!(
        route["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "serin"
    );
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"name": "shop-gateway"}])
    );
    assert_eq!(route["spec"]["hostnames"], json!(["checkout.example.com"]));
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(
        rules[1]["backendRefs"],
        json!([{"name": "checkout", "port": 80, "weight": 8000},
               {"name": "checkout-canary", "port": 80, "weight": 2000}])
    );

    // Argo CD re-syncs what git holds, Gateway included, mid-run.
    let gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "shop-gateway", "namespace": "shop"},
        "spec": {"gatewayClassName": "example",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}});
    gitops_resync(&sim, &[gateway]);
    let s = promote_then_roll_back(&sim, run);
    assert_no_conflict_and_no_force(&s);
    // The route stays, at 0 %: the service keeps answering through it.
    let route = object(&s, "httproutes.gateway.networking.k8s.io", "checkout").unwrap();
    let weighted = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        weighted["backendRefs"],
        json!([{"name": "checkout", "port": 80, "weight": 10000},
               {"name": "checkout-canary", "port": 80, "weight": 0}])
    );
    let m = managers(&sim, "httproute", "checkout");
    assert_eq!(
        m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["serin"],
        "{m:?}"
    );
}

#[test]
fn an_owned_virtual_service_is_created_with_its_destination_rule_and_moved() {
    let sim = KubeSim::start(&[
        "--provider",
        "istio",
        "--ssa-conflicts",
        "--ready-delay",
        "0.2",
    ]);
    kubectl_ok(
        &sim,
        &["-n", "shop", "delete", "virtualservice", "checkout"],
    );
    kubectl_ok(
        &sim,
        &["-n", "shop", "delete", "destinationrule", "checkout"],
    );
    let run = Run::start(
        &sim,
        &rollout(
            &sim,
            "istio",
            "    virtualService: {hosts: [checkout.shop.svc.cluster.local, checkout]}\n",
        ),
    );
    let s = wait_state(
        &sim,
        "20 % through the owned VirtualService",
        weight_is(20.0),
    );
    assert_eq!(s["route"]["hdr"], "canary", "{}", s["route"]);
    let vs = object(&s, "virtualservices.networking.istio.io", "checkout").unwrap();
    assert_eq!(
        vs["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "serin"
    );
    assert_eq!(
        vs["spec"]["hosts"],
        json!(["checkout.shop.svc.cluster.local", "checkout"])
    );
    assert_eq!(vs["spec"]["http"].as_array().unwrap().len(), 2, "{vs}");
    let dr = object(&s, "destinationrules.networking.istio.io", "checkout").unwrap();
    assert_eq!(
        dr["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "serin"
    );
    assert_eq!(
        dr["spec"]["subsets"],
        json!([{"name": "stable", "labels": {"version": "stable"}},
               {"name": "canary", "labels": {"version": "canary"}}])
    );
    gitops_resync(&sim, &[]);
    let s = promote_then_roll_back(&sim, run);
    assert_no_conflict_and_no_force(&s);
    assert!(object(&s, "virtualservices.networking.istio.io", "checkout").is_some());
    for kind in ["virtualservice", "destinationrule"] {
        let m = managers(&sim, kind, "checkout");
        assert_eq!(
            m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec!["serin"],
            "{kind}: {m:?}"
        );
    }
}

#[test]
fn an_owned_route_never_takes_over_a_route_serin_did_not_create() {
    let sim = KubeSim::start(&["--provider", "gateway-api", "--ssa-conflicts"]);
    let before = object(
        &state(&sim),
        "httproutes.gateway.networking.k8s.io",
        "checkout",
    );
    let run = Run::start(
        &sim,
        &rollout(
            &sim,
            "gateway-api",
            "    httpRoute: {parentRefs: [{name: shop-gateway}]}\n",
        ),
    );
    let out = run.finish();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTPRoute shop/checkout exists and was not created by serin"),
        "{err}"
    );
    let s = state(&sim);
    assert_eq!(
        object(&s, "httproutes.gateway.networking.k8s.io", "checkout"),
        before
    );
    assert!(
        !s["writes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["path"].as_str().unwrap_or("").contains("httproutes")),
        "{}",
        codes(&s)
    );
}

#[test]
fn a_route_by_name_is_edited_in_place_as_before() {
    let sim = KubeSim::start(&[
        "--provider",
        "gateway-api",
        "--ssa-conflicts",
        "--ready-delay",
        "0.2",
    ]);
    let file = rollout(&sim, "gateway-api", "    httpRoute: checkout\n");
    // Another manager holds spec.rules: a conflict, reported, not forced.
    let out = Run::start(&sim, &file).finish();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTPRoute shop/checkout: conflict, not forced"),
        "{err}"
    );
    // Handed over as docs/kubernetes.md says: serin's rules at 0 %.
    let dir = tempfile::tempdir().unwrap();
    let handover = write(
        dir.path(),
        "rules.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: checkout, namespace: shop}
spec:
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs:
        - {name: checkout, port: 80, weight: 10000}
        - {name: checkout-canary, port: 80, weight: 0}
",
    );
    kubectl_ok(
        &sim,
        &[
            "apply",
            "--server-side",
            "--field-manager=serin",
            "--force-conflicts",
            "-f",
            &handover.display().to_string(),
        ],
    );
    let since = state(&sim)["writes"].as_array().unwrap().len();
    let run = Run::start(&sim, &file);
    let s = wait_state(&sim, "20 % on the user's route", weight_is(20.0));
    assert_eq!(s["route"]["hdr"], "canary", "{}", s["route"]);
    let s = promote_then_roll_back(&sim, run);
    let writes = &s["writes"].as_array().unwrap()[since..];
    assert!(writes.iter().all(|w| w["code"] != 409), "{}", codes(&s));
    // The user's route: its name, parentRefs and hostnames as they were,
    // no label of serin's; serin manages spec.rules alone.
    let route = object(&s, "httproutes.gateway.networking.k8s.io", "checkout").unwrap();
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"name": "shop-gateway"}])
    );
    assert_eq!(route["spec"]["hostnames"], json!(["checkout.example.com"]));
    assert!(
        route["metadata"]["labels"]
            .get("app.kubernetes.io/managed-by")
            .is_none()
    );
    let m = managers(&sim, "httproute", "checkout");
    let serin_fields = m.iter().find(|(n, _)| n == "serin").unwrap().1.clone();
    assert_eq!(serin_fields, json!({"f:spec": {"f:rules": {}}}), "{m:?}");
}

#[test]
fn cleanup_leaves_the_owned_route_at_zero_so_the_service_keeps_answering() {
    let sim = KubeSim::start(&[
        "--provider",
        "gateway-api",
        "--ssa-conflicts",
        "--ready-delay",
        "0.2",
    ]);
    kubectl_ok(&sim, &["-n", "shop", "delete", "httproute", "checkout"]);
    let since = state(&sim)["writes"].as_array().unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout(
            &sim,
            "gateway-api",
            "    httpRoute: {parentRefs: [{name: shop-gateway}]}\n",
        ),
    );
    let api = local(free_port());
    let mut cmd = serin_serve(api, &dir.path().join("state"));
    cmd.env("SERIN_TOKEN", "t0ken")
        .env("KUBECONFIG", sim.kubeconfig());
    let _daemon = Proc::spawn(cmd, false);
    wait_for_port(api);
    // Registered: the route is created at 0 %, the header rule ahead.
    let o = cli(api, &["init", &file.display().to_string()], Some("t0ken"));
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_state(&sim, "the owned route with its header rule", |s| {
        s["route"]["hdr"] == "canary"
    });
    assert_eq!(s["weight"], 0.0);
    let o = cli(api, &["cleanup", "checkout"], Some("t0ken"));
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_state(&sim, "the header rule dropped", |s| {
        s["route"]["hdr"].is_null()
    });
    assert_eq!(s["weight"], 0.0);
    assert_no_conflict_and_no_force(&s);
    // Still there, everything to the stable Service.
    let route = object(&s, "httproutes.gateway.networking.k8s.io", "checkout").unwrap();
    assert_eq!(
        route["spec"]["rules"],
        json!([{"backendRefs": [{"name": "checkout", "port": 80, "weight": 10000},
                                {"name": "checkout-canary", "port": 80, "weight": 0}]}])
    );
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"name": "shop-gateway"}])
    );
    assert!(
        !s["writes"].as_array().unwrap()[since..]
            .iter()
            .any(|w| w["method"] == "DELETE"),
        "{}",
        codes(&s)
    );
}
