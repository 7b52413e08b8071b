//! Split verification on Kubernetes (`nginx-ingress`) against kubesim: the
//! real `serin run` moves the canary Ingress's weight, kubesim's router
//! decides what the weight means (as ingress-nginx would) and its
//! Prometheus counts each version's requests, which serin's judge reads.
//!
//! A GitOps sync moves the app to a new host while the canary Ingress serin
//! derived at the start still names the old one: ingress-nginx ignores a
//! canary Ingress whose host does not match the primary's, so the canary
//! gets nothing while serin asks 20 %. serin sees the split far from the
//! weight, holds the step saying so, and past `progressDeadline` rolls back.
//! Without the sync the same rollout is never held and is promoted.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::http::{get, http};
use common::kubesim::KubeSim;
use common::serin::{Proc, serin, text, write};
use serde_json::{Value, json};

/// The sim's app (`shop/checkout`) behind its Ingress, a first pause at
/// 0 % (for the test to act before the weight moves), 20 % for 2 s, then
/// 100 %; judged every second on the sim's Prometheus; no-data intervals
/// never roll back (the progress deadline of 6 s does).
fn rollout(sim: &KubeSim) -> String {
    let prometheus = sim.info["prometheus"].as_str().unwrap();
    format!(
        "name: checkout
stable: {{version: v1.1.0}}
canary: {{version: v1.2.0, image: registry.example.com/checkout:v1.2.0}}
traffic:
  provider: nginx-ingress
  kubernetes:
    namespace: shop
    deployment: checkout
    ingress: checkout
steps:
  - pause: {{}}
  - setWeight: 20
  - pause: {{duration: 2s}}
  - setWeight: 100
analysis:
  interval: 1s
  minRequests: 20
  noDataLimit: 1000
  prometheus:
    address: {prometheus}
    requests: sum(http_requests_total{{version=\"{{{{version}}}}\"}})
    errors: sum(http_requests_total{{version=\"{{{{version}}}}\",code=\"500\"}})
    latencyBuckets: sum by (le) (http_request_duration_seconds_bucket{{version=\"{{{{version}}}}\"}})
progressDeadline: 6s
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
    fn start(sim: &KubeSim) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "rollout.yaml", &rollout(sim));
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

    /// `serin ARGS... checkout` on this run's state dir.
    fn command(&self, args: &[&str]) -> Output {
        serin()
            .args(args)
            .arg("checkout")
            .arg("--state-dir")
            .arg(&self.state)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap()
    }

    fn status(&self) -> Value {
        let o = self.command(&["status", "-o", "json"]);
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    }

    /// Polls `serin status` (bounded) until `ok` holds.
    fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: not reached: {s:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) for the run to end: its output and history.
    fn finish(self) -> (Output, String) {
        let state = self.state.clone();
        let out = self.proc.wait_output(Duration::from_secs(60));
        let history = serin()
            .args(["history", "checkout", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        (out, String::from_utf8_lossy(&history.stdout).into_owned())
    }
}

fn admin(sim: &KubeSim) -> SocketAddr {
    let url = sim.info["admin"].as_str().unwrap();
    url.trim_start_matches("http://").parse().unwrap()
}

/// The sim's record: the weight its router makes of the objects, notes.
fn sim_state(sim: &KubeSim) -> Value {
    let a = get(admin(sim), "/state");
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

/// Polls the sim (bounded) until `ok` holds.
fn wait_sim(sim: &KubeSim, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = sim_state(sim);
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; sim weight {} route {}",
            s["weight"],
            s["route"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The canary Ingress's `canary-weight`, once serin has written it.
fn canary_ingress_weight(sim: &KubeSim) -> Option<String> {
    let o = sim.kubectl(&[
        "-n",
        "shop",
        "get",
        "ingress",
        "checkout-canary",
        "-o",
        "json",
    ]);
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"]
        .as_str()
        .map(str::to_string)
}

/// Argo CD syncs what git now holds of the primary Ingress: the app moved
/// to a new host.
fn gitops_moves_the_host(sim: &KubeSim) {
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "checkout", "namespace": "shop", "labels": {"app": "checkout"}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "checkout", "port": {"number": 80}}}}]}}]}
    });
    let body = json!({"manager": "argocd-controller", "object": ingress}).to_string();
    let a = http(
        admin(sim),
        "POST",
        "/apply-as",
        &[("content-type", "application/json")],
        &body,
    );
    assert_eq!(a.status, 200, "apply-as: {}", a.body);
}

fn start() -> (KubeSim, Run) {
    let sim = KubeSim::start(&["--provider", "nginx-ingress", "--ready-delay", "0.2"]);
    let run = Run::start(&sim);
    // Set up at 0 %: the canary Ingress exists, the first pause waits.
    run.wait_status("the first pause", |s| s["phase"] == "Paused");
    let deadline = Instant::now() + Duration::from_secs(20);
    while canary_ingress_weight(&sim).is_none() {
        assert!(Instant::now() < deadline, "no canary Ingress");
        std::thread::sleep(Duration::from_millis(100));
    }
    (sim, run)
}

#[test]
fn a_canary_ingress_the_controller_ignores_holds_the_step_then_rolls_back() {
    let (sim, run) = start();
    gitops_moves_the_host(&sim);
    let o = run.command(&["promote"]);
    assert!(o.status.success(), "{}", text(&o));
    // serin wrote 20 %; the router ignores it and says why.
    let deadline = Instant::now() + Duration::from_secs(20);
    // In hundredths of a per cent (canary-weight-total 10000).
    while canary_ingress_weight(&sim).as_deref() != Some("2000") {
        assert!(Instant::now() < deadline, "serin never wrote 20 %");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = sim_state(&sim);
    assert_eq!(s["weight"].as_f64(), Some(0.0), "{s}");
    assert!(
        s["route"]["notes"]
            .to_string()
            .contains("do not match the primary Ingress"),
        "{}",
        s["route"]["notes"]
    );
    // Held, with the numbers.
    let held = run.wait_status("held on the split", |s| {
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("canary got ") && r.contains("20 % requested"))
    });
    assert_eq!(held["weight"].as_f64(), Some(20.0), "{held:#}");
    let (out, history) = run.finish();
    assert_eq!(out.status.code(), Some(3), "{}\n{history}", text(&out));
    let rolled: Vec<_> = history
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "rolled-back"))
        .collect();
    assert_eq!(rolled.len(), 1, "{history}");
    assert!(
        rolled[0].contains("no progress within the progress deadline (6s): canary got ")
            && rolled[0].contains("20 % requested"),
        "{history}"
    );
    // Rolled back: the canary Ingress at 0 %.
    wait_sim(&sim, "0 % after the rollback", |s| {
        s["weight"].as_f64() == Some(0.0)
    });
    assert_eq!(canary_ingress_weight(&sim).as_deref(), Some("0"));
}

#[test]
fn a_split_the_router_follows_is_never_held_on_kubernetes() {
    let (sim, run) = start();
    let o = run.command(&["promote"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_sim(&sim, "20 % in the router", |s| {
        s["weight"].as_f64() == Some(20.0)
    });
    let (out, history) = run.finish();
    assert_eq!(out.status.code(), Some(0), "{}\n{history}", text(&out));
    assert!(history.contains("promoted"), "{history}");
    assert!(!history.contains("canary got"), "{history}");
    // The split was tested: the judge's verdicts in the 20 % step passed on
    // the canary's requests from the sim's Prometheus.
    assert!(
        history
            .lines()
            .any(|l| l.contains("verdict") && l.contains("pass")),
        "{history}"
    );
}
