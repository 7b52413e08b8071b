//! Helpers of the tests that run `serin serve --kubernetes` against
//! kubesim end to end (the built binary): the CRD, a Rollout manifest, the
//! simulator's admin calls, the controller process, `serin … --kubernetes`,
//! and reading status, conditions and Events.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use serin::cluster::resource::{Rollout, RolloutStatus};

use super::kubesim::KubeSim;
use super::nginx::free_port;
use super::serin::{Proc, serin_serve};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn kubectl_ok(sim: &KubeSim, args: &[&str]) -> String {
    let out = sim.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CRD alone, as the docs say for a controller run locally.
pub fn install_crd(sim: &KubeSim) {
    let crd = repo().join("deploy/kubernetes/crd.yaml");
    kubectl_ok(
        sim,
        &["apply", "--server-side", "-f", &crd.display().to_string()],
    );
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

/// A Rollout of `shop/checkout` with `traffic.kubernetes` and `steps`,
/// judged on kubesim's Prometheus series.
pub fn manifest(
    name: &str,
    prometheus: &str,
    provider: &str,
    kubernetes: Value,
    steps: Value,
) -> Value {
    json!({
        "apiVersion": "serin.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": {
            "stable": { "version": "v1" },
            "canary": { "version": "v2" },
            "traffic": { "provider": provider, "kubernetes": kubernetes },
            "steps": steps,
            "analysis": {
                "interval": "1s",
                "minRequests": 20,
                "prometheus": {
                    "address": prometheus,
                    "requests": "sum(http_requests_total{version=\"{{version}}\"})",
                    "errors": "sum(http_requests_total{version=\"{{version}}\",code=~\"5..\"})",
                }
            }
        }
    })
}

pub fn nginx_objects() -> Value {
    json!({ "deployment": "checkout", "service": "checkout", "ingress": "checkout" })
}

pub fn admin(sim: &KubeSim) -> SocketAddr {
    let url = sim.info["admin"].as_str().unwrap();
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

pub fn admin_post(sim: &KubeSim, path: &str, body: Value) {
    let a = super::http::http(
        admin(sim),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    assert_eq!(a.status, 200, "POST {path}: {}", a.body);
}

pub fn sim_state(sim: &KubeSim) -> Value {
    let a = super::http::get(admin(sim), "/state");
    serde_json::from_str(&a.body).unwrap()
}

pub fn release(sim: &KubeSim, version: &str) {
    admin_post(
        sim,
        "/update-template",
        json!({ "image": format!("registry.example.com/checkout:{version}"), "manager": "argocd-controller" }),
    );
}

/// `serin serve --kubernetes --namespace shop`, its log in `log`.
pub fn serve(sim: &KubeSim, state: &Path) -> (Proc, PathBuf) {
    let (p, log, _) = serve_as(sim, state, "serin-0");
    (p, log)
}

/// [`serve`] as the pod `pod` (its Lease holder identity), with the
/// address of its API.
pub fn serve_as(sim: &KubeSim, state: &Path, pod: &str) -> (Proc, PathBuf, SocketAddr) {
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
    .env("POD_NAME", pod)
    .env("RUST_LOG", "info,kube=warn");
    let log = state.join("serve.log");
    std::fs::create_dir_all(state).unwrap();
    let file = std::fs::File::create(&log).unwrap();
    cmd.stderr(file.try_clone().unwrap()).stdout(file);
    let child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
    (Proc { child }, log, api)
}

/// `serin ARGS --kubernetes -n shop`: exit code, stdout, stderr.
pub fn cli(sim: &KubeSim, args: &[&str]) -> (Option<i32>, String, String) {
    let out = super::serin::serin()
        .args(args)
        .args(["--kubernetes", "-n", "shop"])
        .env("KUBECONFIG", sim.kubeconfig())
        .env("USER", "alice")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `what` (bounded) until it gives `Some`.
pub async fn until<T>(limit: Duration, log: &Path, mut what: impl AsyncFnMut() -> Option<T>) -> T {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn status_of(api: &Api<Rollout>, name: &str) -> Option<RolloutStatus> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.status)
}

pub fn condition<'a>(
    s: &'a RolloutStatus,
    type_: &str,
) -> Option<&'a serin::cluster::resource::Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

pub fn condition_is(s: &RolloutStatus, type_: &str, value: &str) -> bool {
    condition(s, type_).is_some_and(|c| c.status == value)
}

pub async fn deployment(client: &kube::Client, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), "shop")
        .get(name)
        .await
        .unwrap()
}

/// serin's Events in `shop`: (type, reason, note).
pub fn events(sim: &KubeSim) -> Vec<(String, String, String)> {
    let text = kubectl_ok(sim, &["get", "events", "-n", "shop", "-o", "json"]);
    let v: Value = serde_json::from_str(&text).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (
                s("type"),
                s("reason"),
                format!("{}{}", s("message"), s("note")),
            )
        })
        .collect()
}

/// Creates the nginx-ingress Rollout `checkout` with `steps` and waits
/// (bounded) until the controller logging to `log` has it at rest (Idle).
pub async fn nginx_rollout_at_rest(sim: &KubeSim, api: &Api<Rollout>, steps: Value, log: &Path) {
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let rollout: Rollout = serde_json::from_value(manifest(
        "checkout",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        steps,
    ))
    .unwrap();
    api.create(&PostParams::default(), &rollout).await.unwrap();
    until(Duration::from_secs(60), log, async || {
        let s = status_of(api, "checkout").await?;
        (s.phase.as_deref() == Some("Idle")).then_some(())
    })
    .await;
}

/// The good Rollout, released and paused at 20 % (an untimed pause).
pub async fn paused_at_20(sim: &KubeSim, api: &Api<Rollout>, steps: Value, log: &Path) {
    nginx_rollout_at_rest(sim, api, steps, log).await;
    let limit = Duration::from_secs(60);
    release(sim, "v1.2.0");
    until(limit, log, async || {
        let s = status_of(api, "checkout").await?;
        (s.phase.as_deref() == Some("Paused") && s.weight == Some(20.0)).then_some(())
    })
    .await;
    // Status is written before the routing (persist, then apply): wait
    // until the split is really in force, so what a test does next meets
    // a set-up route.
    until(limit, log, async || {
        (sim_state(sim)["weight"].as_f64() == Some(20.0)).then_some(())
    })
    .await;
}

/// Creates `object` with kubectl, as a user would (no typed client).
pub fn kubectl_create(sim: &KubeSim, dir: &Path, object: &Value) {
    let file = dir.join("object.json");
    std::fs::write(&file, object.to_string()).unwrap();
    kubectl_ok(sim, &["create", "-f", &file.display().to_string()]);
}

/// Writes the status a controller that saw Rollout `name` and then
/// stopped leaves (phase Idle): the CLI writes requests only on a
/// Rollout some controller has seen.
pub fn mark_seen(sim: &KubeSim, name: &str) {
    kubectl_ok(
        sim,
        &[
            "patch",
            "rollouts.serin.dev",
            name,
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Idle","observedGeneration":1}}"#,
        ],
    );
}
