//! The cluster's Rollouts in the daemon's API, dashboard and `/metrics`
//! (issue 16, "read-only from any replica"): two replicas of
//! `serin serve --kubernetes` against kubesim (the built binary); the one
//! that does not lead shows the Rollout's phase, step and weight as the
//! leader moves it; nothing over HTTP changes a Rollout; a daemon without
//! --kubernetes says it has none. The dashboard's section is checked in
//! headless Chromium, and a screenshot kept.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::chromium::chromium;
use common::http::{get, http};
use common::kubesim::KubeSim;
use common::nginx::free_port;
use common::serin::{serin_serve, wait_for_port};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use serin::cluster::resource::Rollout;

use common::controller::*;

/// `GET path` as JSON, with its status.
fn get_json(api: SocketAddr, path: &str) -> (u16, Value) {
    let a = get(api, path);
    let body = serde_json::from_str(&a.body).unwrap_or(Value::String(a.body.clone()));
    (a.status, body)
}

/// One sample of the text format: its labels, in order, and its value.
type Samples = BTreeMap<String, Vec<(Vec<(String, String)>, f64)>>;

/// Parses `/metrics`: every sample of a `serin_kubernetes_` metric, which
/// must come after its own `# HELP` and `# TYPE ... gauge` lines.
fn kube_metrics(text: &str) -> Samples {
    let mut out = Samples::new();
    let mut helped = Vec::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap().to_string();
            if name.starts_with("serin_kubernetes_") {
                assert_eq!(words.next(), Some("gauge"), "{line}");
            }
            typed.push(name);
            continue;
        }
        if !line.starts_with("serin_kubernetes_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        assert_eq!(helped.last().map(String::as_str), Some(name), "{line}");
        assert_eq!(typed.last().map(String::as_str), Some(name), "{line}");
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.entry(name.to_string())
            .or_default()
            .push((labels, value.parse().unwrap()));
    }
    out
}

/// The value of `metric` for the Rollout shop/checkout (and `extra` labels).
fn checkout(m: &Samples, metric: &str, extra: &[(&str, &str)]) -> Option<f64> {
    m.get(metric)?.iter().find_map(|(labels, v)| {
        let has = |k: &str, want: &str| labels.iter().any(|(lk, lv)| lk == k && lv == want);
        (has("namespace", "shop")
            && has("rollout", "checkout")
            && extra.iter().all(|(k, want)| has(k, want)))
        .then_some(*v)
    })
}

/// Polls a replica's API and `/metrics` until both show checkout at
/// `phase`, `weight` and step `step` (none: no run); returns the API's
/// answer and the metrics.
async fn shows(
    api: SocketAddr,
    log: &Path,
    phase: &str,
    weight: f64,
    step: Option<u64>,
) -> (Value, Samples) {
    until(Duration::from_secs(60), log, async || {
        let (code, one) = get_json(api, "/api/v1/kubernetes/rollouts/shop/checkout");
        if code != 200
            || one["phase"] != phase
            || one["weight"].as_f64().unwrap_or(0.0) != weight
            || one["step"].as_u64() != step
        {
            return None;
        }
        let m = kube_metrics(&get(api, "/metrics").body);
        let in_metrics = checkout(&m, "serin_kubernetes_rollout_weight", &[]) == Some(weight)
            && checkout(&m, "serin_kubernetes_rollout_phase", &[("phase", phase)]) == Some(1.0)
            && checkout(&m, "serin_kubernetes_rollout_step", &[]) == step.map(|s| s as f64);
        in_metrics.then_some((one, m))
    })
    .await
}

/// The leader gauge of a replica's metrics.
fn leader_gauge(m: &Samples) -> Option<f64> {
    m.get("serin_kubernetes_leader")?.first().map(|s| s.1)
}

/// `serin promote checkout --kubernetes -n shop`, answered by the leader.
fn promote(sim: &KubeSim) {
    let (code, out, err) = cli(sim, &["promote", "checkout"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_shows_the_rollout_as_the_leader_moves_it_and_nothing_over_http_changes_it() {
    let sim = KubeSim::start(&["--ready-delay", "0.3"]);
    install_crd(&sim);
    let client = sim.client().await;
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), "shop");
    let prom = sim.info["prometheus"].as_str().unwrap().to_string();
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }, { "setWeight": 50 }, { "pause": {} }]);
    let rollout: Rollout = serde_json::from_value(manifest(
        "checkout",
        &prom,
        "nginx-ingress",
        nginx_objects(),
        steps,
    ))
    .unwrap();
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();

    // Two replicas, as deploy/kubernetes runs them.
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, a_log, a_api) = serve_as(&sim, a_dir.path(), "serin-a");
    let (_b, b_log, b_api) = serve_as(&sim, b_dir.path(), "serin-b");
    wait_for_port(a_api);
    wait_for_port(b_api);
    let limit = Duration::from_secs(60);
    // Who leads, as both replicas' APIs say it.
    let leader = until(limit, &a_log, async || {
        let (_, a) = get_json(a_api, "/api/v1/kubernetes/rollouts");
        let (_, b) = get_json(b_api, "/api/v1/kubernetes/rollouts");
        let (ca, cb) = (&a["controller"], &b["controller"]);
        let leader = ca["leader"].as_str()?;
        (cb["leader"] == leader && ca["leads"] != cb["leads"]).then(|| leader.to_string())
    })
    .await;
    let (leader_api, follower_api, follower, follower_log) = if leader == "serin-a" {
        (a_api, b_api, "serin-b", b_log)
    } else {
        (b_api, a_api, "serin-a", a_log)
    };

    // Idle before any release, on the follower too.
    let (idle, m) = shows(follower_api, &follower_log, "Idle", 0.0, None).await;
    assert_eq!(idle["controller"]["leader"], leader.as_str(), "{idle}");
    assert_eq!(idle["controller"]["thisReplica"], follower, "{idle}");
    assert_eq!(idle["controller"]["leads"], false, "{idle}");
    assert_eq!(leader_gauge(&m), Some(0.0));
    let (_, m) = shows(leader_api, &follower_log, "Idle", 0.0, None).await;
    assert_eq!(leader_gauge(&m), Some(1.0));

    // git commits a new image: the leader moves the run; the follower's
    // API and /metrics follow it step by step.
    release(&sim, "v1.2.0");
    let (paused, m) = shows(follower_api, &follower_log, "Paused", 20.0, Some(2)).await;
    assert_eq!(paused["steps"], 4, "{paused}");
    assert_eq!(paused["run"], 1, "{paused}");
    assert_eq!(paused["canary"]["version"], "v1.2.0", "{paused}");
    assert_eq!(paused["namespace"], "shop", "{paused}");
    assert!(
        paused["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"].as_str().unwrap_or("").contains("20 %")),
        "{paused}"
    );
    let kinds: Vec<&str> = paused["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(kinds.contains(&"Reconciling"), "{paused}");
    assert_eq!(
        paused["generation"], paused["observedGeneration"],
        "{paused}"
    );
    assert_eq!(checkout(&m, "serin_kubernetes_rollout_run", &[]), Some(1.0));
    assert_eq!(
        checkout(
            &m,
            "serin_kubernetes_rollout_phase",
            &[("phase", "Progressing")]
        ),
        Some(0.0)
    );
    // The sim compacts its history: watches from older resourceVersions
    // get 410 Gone (the replicas' watches restart every 2 s), and the view
    // relists; what changes next is still shown.
    admin_post(&sim, "/compact", json!({}));
    promote(&sim);
    let (at_50, _) = shows(follower_api, &follower_log, "Paused", 50.0, Some(4)).await;
    assert_eq!(at_50["inForce"], true, "{at_50}");

    // The list says the same, with who leads.
    let (code, list) = get_json(follower_api, "/api/v1/kubernetes/rollouts");
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["namespace"], "shop", "{list}");
    assert_eq!(list["controller"]["leader"], leader.as_str(), "{list}");
    let items = list["rollouts"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["weight"], 50.0, "{list}");

    // Absent, or outside the namespace watched: 404 naming it.
    let (code, e) = get_json(follower_api, "/api/v1/kubernetes/rollouts/shop/nope");
    assert_eq!(code, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("shop/nope"), "{e}");
    let (code, e) = get_json(follower_api, "/api/v1/kubernetes/rollouts/other/checkout");
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("namespace shop"),
        "{e}"
    );

    // Nothing over HTTP changes a cluster Rollout, on either replica.
    let before = rollouts.get("checkout").await.unwrap();
    for api in [leader_api, follower_api] {
        for (method, path) in [
            ("POST", "/api/v1/kubernetes/rollouts/shop/checkout"),
            ("PUT", "/api/v1/kubernetes/rollouts/shop/checkout"),
            ("PATCH", "/api/v1/kubernetes/rollouts/shop/checkout"),
            ("DELETE", "/api/v1/kubernetes/rollouts/shop/checkout"),
            ("POST", "/api/v1/kubernetes/rollouts"),
        ] {
            let a = http(
                api,
                method,
                path,
                &[("Content-Type", "application/json")],
                r#"{"weight":100}"#,
            );
            assert_eq!(a.status, 405, "{method} {path}: {}", a.body);
            assert!(
                a.body.contains("--kubernetes"),
                "{method} {path}: {}",
                a.body
            );
        }
        // The local API's routes name a local rollout, not the cluster's.
        let a = http(
            api,
            "POST",
            "/api/v1/rollouts/checkout/promote",
            &[("Content-Type", "application/json")],
            "{}",
        );
        assert_eq!(a.status, 404, "{}", a.body);
        // Nor does a rollout file on a Kubernetes provider registered with
        // the local API (outside breaker: `init` + `deploy` on a follower
        // sent 100 % to an unjudged canary of a Deployment a Rollout
        // manages): refused, naming why.
        let file = "name: checkout\nstable: { version: v1 }\ncanary: { version: v9 }\ntraffic:\n  provider: nginx-ingress\n  kubernetes: { namespace: shop, deployment: checkout, ingress: checkout }\nanalysis:\n  prometheus: { address: http://127.0.0.1:9 }\n";
        let a = http(
            api,
            "POST",
            "/api/v1/rollouts",
            &[("Content-Type", "application/yaml")],
            file,
        );
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body
                .contains("this daemon runs the Kubernetes controller"),
            "{}",
            a.body
        );
    }
    // The leader may write its own status meanwhile (a verdict each
    // interval); the spec and where the run stands are what HTTP must not
    // change.
    let after = rollouts.get("checkout").await.unwrap();
    assert_eq!(
        before.metadata.generation, after.metadata.generation,
        "the Rollout's spec was written"
    );
    let stands = |r: &serin::cluster::resource::Rollout| {
        r.status
            .as_ref()
            .map(|s| (s.phase.clone(), s.run, s.step, s.weight))
    };
    assert_eq!(stands(&before), stands(&after), "the run was moved");

    // The dashboard's section, in headless Chromium, on the follower.
    let url = format!("http://{follower_api}/");
    let dom = dump_dom(&url);
    let section = &dom[dom.find(r#"id="kube""#).expect("the section")..];
    assert!(
        !section.starts_with(r#"id="kube" class="card" hidden"#),
        "shown: {section}"
    );
    for said in [
        "Kubernetes Rollouts",
        r#"data-rollout="shop/checkout""#,
        "Paused",
        "4/4",
        "50 %",
        "v1.2.0",
        "serin promote checkout --kubernetes -n shop",
        &format!("led by {leader}"),
    ] {
        assert!(section.contains(said), "`{said}` in {section}");
    }
    // Read-only: no button acts on it.
    let table = &section[..section.find("</section>").unwrap()];
    assert!(!table.contains("<button"), "{table}");
    let png = std::env::temp_dir().join("serin-k8s-view-dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &tempfile::tempdir().unwrap().path().join("profile"),
        &[
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
            "--window-size=1280,900",
            &format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    eprintln!("dashboard screenshot: {}", png.display());

    // Promoted: the follower shows the run's end.
    promote(&sim);
    let (done, _) = until(limit, &follower_log, async || {
        let (_, one) = get_json(follower_api, "/api/v1/kubernetes/rollouts/shop/checkout");
        let phase = one["phase"].as_str()?.to_string();
        (phase == "Idle" || phase == "Succeeded").then_some((one, ()))
    })
    .await;
    assert_eq!(done["run"], 1, "{done}");
}

/// The DOM of `url` after its scripts ran for 3 s of virtual time.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let o = chromium(
        &profile.path().join("profile"),
        &[
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ],
        url,
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_daemon_without_kubernetes_says_so_and_its_dashboard_has_no_such_section() {
    let dir = tempfile::tempdir().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = serin_serve(api, dir.path());
    cmd.env_remove("SERIN_TOKEN");
    let _serin = common::serin::Proc::spawn(cmd, false);
    wait_for_port(api);
    for path in [
        "/api/v1/kubernetes/rollouts",
        "/api/v1/kubernetes/rollouts/shop/checkout",
    ] {
        let (code, e) = get_json(api, path);
        assert_eq!(code, 404, "{path}: {e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("this daemon was not started with --kubernetes"),
            "{path}: {e}"
        );
    }
    let metrics = get(api, "/metrics").body;
    assert!(!metrics.contains("serin_kubernetes_"), "{metrics}");
    let dom = dump_dom(&format!("http://{api}/"));
    assert!(
        dom.contains(r#"id="kube" class="card" hidden"#),
        "the section stays hidden: {dom}"
    );
}
