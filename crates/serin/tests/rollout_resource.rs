//! The `Rollout` custom resource: the CRD in deploy/kubernetes/ is the one
//! the Rust types generate; a resource's spec accepts exactly what a
//! rollout file does and is refused with the same messages (located in a
//! manifest file, by field path from the API server's JSON); and against
//! kubesim, an API server in a subprocess, the CRD installs, a Rollout is
//! created, `kubectl get` shows its printer columns, and its status is
//! written through the status subresource under a resourceVersion
//! precondition (a stale one answered 409).

mod common;

use std::path::{Path, PathBuf};

use common::kubesim::KubeSim;
use common::serin::serin;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use serin::cluster::resource::{
    Condition, RECONCILING, RecentDecision, Rollout, RolloutStatus, crd_yaml,
};
use serin::spec::{self, SpecError};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const REGENERATE: &str = "cargo run -p serin --example crd > deploy/kubernetes/crd.yaml";

#[test]
fn the_checked_in_crd_is_the_one_the_types_generate() {
    let path = repo().join("deploy/kubernetes/crd.yaml");
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = crd_yaml();
    assert!(
        file == generated,
        "deploy/kubernetes/crd.yaml differs from the CRD crates/serin/src/cluster/resource.rs \
         generates; regenerate it from the repository's root with:\n    {REGENERATE}\n\
         first differing line: {:?}",
        file.lines()
            .zip(generated.lines())
            .find(|(a, b)| a != b)
            .or(Some(("(length)", "(length)")))
    );
    assert!(
        generated.contains(REGENERATE),
        "the file says how to regenerate it"
    );
}

/// The rollout files in examples/, as text and as JSON values.
fn examples() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_saphyr::from_str(&text).unwrap();
            out.push((path.display().to_string(), text, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 5, "{out:?}");
    out
}

/// A rollout file's value as a Rollout resource: `name` becomes
/// metadata.name, and the namespace is the file's Kubernetes namespace
/// (or `default`, where a file's objects are without one).
fn as_resource(file: &Value) -> Value {
    let mut spec = file.clone();
    let name = spec.as_object_mut().unwrap().remove("name").unwrap();
    let namespace = file["traffic"]["kubernetes"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    json!({
        "apiVersion": spec::API_VERSION,
        "kind": spec::KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn messages(e: &SpecError) -> Vec<String> {
    e.problems.iter().map(|p| p.message.clone()).collect()
}

/// Whether a message from the API server's form says what the file's
/// message says, about the same field named from the resource's root.
fn same_message(api: &[String], file: &str) -> bool {
    api.iter().any(|a| {
        *a == format!("spec.{file}")
            || a.ends_with(&format!(".{file}"))
            || a.ends_with(&format!(": {file}"))
    })
}

#[test]
fn every_example_as_a_resource_round_trips_and_checks_as_the_file_does() {
    for (origin, text, value) in examples() {
        let from_file = spec::parse(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
        let manifest = as_resource(&value);
        // Through the CRD's type and back: every field kept as written.
        let typed: Rollout = serde_json::from_value(manifest.clone())
            .unwrap_or_else(|e| panic!("{origin}: the CRD type refuses it: {e}"));
        assert_eq!(serde_json::to_value(&typed).unwrap(), manifest, "{origin}");
        // The typed spec, checked as the API server's JSON.
        assert_eq!(typed.check(), Ok(from_file.clone()), "{origin}");
        // The manifest as a file, checked as rollout files are.
        let manifest_text = serde_saphyr::to_string(&manifest).unwrap();
        assert_eq!(
            spec::parse(&manifest_text, "rollout.yaml"),
            Ok(from_file),
            "{origin}:\n{manifest_text}"
        );
    }
}

/// A rollout file that uses every field the file knows (not a rollout
/// that would run: the checker may refuse how they combine).
const EVERY_FIELD: &str = "\
name: everything
stable: {version: v1, upstream: http://127.0.0.1:9001, image: r/x:v1}
canary: {version: v2, upstream: http://127.0.0.1:9002, image: r/x:v2}
traffic:
  provider: nginx
  listen: 127.0.0.1:8080
  sticky: {cookie: s, header: x-user}
  routes:
    - match: {header: {name: x-canary, value: always}, cookie: {name: c, value: always}}
      version: canary
  nginx: {include: /tmp/i.conf, test: nginx -t, reload: nginx -s reload, accessLog: /tmp/a.log}
  kubernetes: {namespace: shop, deployment: d, service: s, ingress: i, virtualService: v,
               httpRoute: h, scaleWithWeight: true}
steps:
  - setWeight: 5
  - lowerWeight: 1
  - pause: {duration: 1s, until: webhook, url: http://127.0.0.1:9/ok, early: true}
analysis:
  mode: advisory
  interval: 10s
  minRequests: 100
  errorRate: {max: 5%, maxRatioToStable: 2, advisory: true}
  latencyP50: {max: 1s, maxRatioToStable: 1.5, advisory: true}
  latencyP95: {max: 1s, maxRatioToStable: 1.5, advisory: false}
  latencyP99: {max: 1s, maxRatioToStable: 1.5, advisory: true}
  statistics: {method: fixed, confidence: 0.9}
  noDataLimit: 3
  prometheus: {address: http://127.0.0.1:9090, requests: a, errors: b, latencyBuckets: c,
               clientErrors: d}
  custom: [{name: orders, numerator: a, denominator: b, direction: lowerIsBetter, maxRatioToStable: 1.1,
            advisory: true}]
  clientErrorRate: {maxRatioToStable: off, advisory: false}
notifications: [{webhook: http://127.0.0.1:9/n, format: slack}]
preRollout: {url: http://127.0.0.1:9/p}
progressDeadline: 10m
baseline: {upstream: http://127.0.0.1:9003}
";

/// The field paths of an object schema, leaves and sections alike
/// (`analysis.errorRate.max`; a list's items as `custom[]`).
fn schema_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(path.clone());
            schema_paths(v, &path, out);
        }
    }
    if schema["items"].is_object() {
        schema_paths(&schema["items"], &format!("{prefix}[]"), out);
    }
}

/// Whether `value` has `path` (a list's items: any of them).
fn has_path(value: &Value, path: &str) -> bool {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let (key, in_list) = match head.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (head, false),
    };
    let Some(v) = value.get(key) else {
        return false;
    };
    match (in_list, rest) {
        (false, None) => true,
        (false, Some(r)) => has_path(v, r),
        (true, None) => v.is_array(),
        (true, Some(r)) => v
            .as_array()
            .is_some_and(|items| items.iter().any(|i| has_path(i, r))),
    }
}

#[test]
fn the_crd_type_and_the_file_know_the_same_fields() {
    use kube::core::crd::CustomResourceExt;
    // Every field of the file: the file's parser takes them all (what is
    // left are the checker's own problems, each naming its field) ...
    let text = EVERY_FIELD;
    let problems = match spec::parse(text, "every.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => messages(&e),
    };
    for p in &problems {
        let head = p.split(": ").next().unwrap_or("");
        assert!(
            head.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".[]".contains(c)),
            "the file's parser refused a field: {p}"
        );
    }
    // ... and so does the CRD's type, keeping each as written ...
    let value: Value = serde_saphyr::from_str(text).unwrap();
    let manifest = as_resource(&value);
    let typed: Rollout = serde_json::from_value(manifest.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), manifest);
    // ... and checks it as the file is checked (`off` arrives as the
    // boolean false from YAML 1.1 readers, kubectl's among them).
    let from_api = match typed.check() {
        Ok(_) => Vec::new(),
        Err(e) => messages(&e),
    };
    assert_eq!(from_api.len(), problems.len(), "{from_api:?}\n{problems:?}");
    for p in &problems {
        assert!(same_message(&from_api, p), "{p} not in {from_api:?}");
    }
    assert!(
        from_api
            .iter()
            .any(|a| a.starts_with("spec.steps[2].pause: expected one of")),
        "{from_api:?}"
    );
    // ... and the CRD's schema has no field the file lacks.
    let crd = serde_json::to_value(Rollout::crd()).unwrap();
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut paths = Vec::new();
    schema_paths(spec_schema, "", &mut paths);
    assert!(paths.len() > 50, "{paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !has_path(&value, p)).collect();
    assert!(
        missing.is_empty(),
        "the CRD has fields EVERY_FIELD does not use (add them to it, and to the file's raw types): {missing:?}"
    );
}

/// Each edit of an example breaks it; the file, the manifest file and the
/// API server's JSON must refuse it with the same messages.
#[test]
fn broken_examples_are_refused_with_the_same_messages_every_way() {
    let (_, _, checkout) = examples()
        .into_iter()
        .find(|(o, _, _)| o.ends_with("checkout.yaml"))
        .unwrap();
    let (_, _, gateway) = examples()
        .into_iter()
        .find(|(o, _, _)| o.ends_with("gateway-api.yaml"))
        .unwrap();
    type Edit = fn(&mut Value);
    let cases: Vec<(&Value, Edit, &str)> = vec![
        (
            &checkout,
            |v| v["analysis"]["errorRate"]["max"] = json!("500%"),
            "spec.analysis.errorRate.max: expected a percentage",
        ),
        (
            &checkout,
            |v| v["steps"][2] = json!({"setWeight": 101}),
            "spec.steps[2].setWeight: expected a weight",
        ),
        (
            &checkout,
            |v| v["canary"]["version"] = json!("v1.1.0"),
            "spec.canary.version: expected a version other than stable's",
        ),
        (
            &checkout,
            |v| v["analysis"]["errorRate"]["maximum"] = json!("5%"),
            "spec.analysis.errorRate.maximum: unknown field `maximum`",
        ),
        (
            &checkout,
            |v| v["rollback"] = json!("auto"),
            "spec.rollback: unknown field `rollback`",
        ),
        (
            &gateway,
            |v| {
                v["traffic"]["kubernetes"]
                    .as_object_mut()
                    .unwrap()
                    .remove("httpRoute");
            },
            "spec.traffic.kubernetes.httpRoute: expected a name (required by provider gateway-api)",
        ),
        (
            &gateway,
            |v| v["traffic"]["kubernetes"]["deployment"] = json!("Checkout"),
            "spec.traffic.kubernetes.deployment: expected a name",
        ),
    ];
    for (base, edit, want) in cases {
        let mut file = base.clone();
        edit(&mut file);
        let file_text = serde_saphyr::to_string(&file).unwrap();
        let from_file = spec::parse(&file_text, "rollout.yaml").unwrap_err();
        let manifest = as_resource(&file);
        let manifest_text = serde_saphyr::to_string(&manifest).unwrap();
        let from_manifest = spec::parse(&manifest_text, "rollout.yaml").unwrap_err();
        // Same messages, each at its place in the manifest.
        assert_eq!(messages(&from_manifest), messages(&from_file), "{want}");
        for p in &from_manifest.problems {
            assert!(p.line > 0 && p.column > 0, "{from_manifest}");
        }
        // From the API server's JSON: the same messages, by field path.
        let from_api = spec::check_resource(
            manifest["metadata"]["name"].as_str().unwrap(),
            manifest["metadata"]["namespace"].as_str().unwrap(),
            &manifest["spec"],
        )
        .unwrap_err();
        let api = messages(&from_api);
        assert_eq!(
            api.len(),
            from_file.problems.len(),
            "{from_api}\n{from_file}"
        );
        for f in messages(&from_file) {
            assert!(same_message(&api, &f), "{f:?} not in {api:?}");
        }
        assert!(
            api.iter().any(|a| a.starts_with(want)),
            "{want:?} not in {api:?}"
        );
        // The CRD's type reads anything the CRD admits (one bad Rollout
        // must not blind the controller to the others); its check names
        // the unknown field.
        if want.contains("unknown field") {
            let r = serde_json::from_value::<Rollout>(manifest).unwrap();
            let e = r.check().unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{e}");
        }
    }
}

#[test]
fn the_rollout_resource_in_the_docs_is_accepted() {
    let page = std::fs::read_to_string(repo().join("docs/kubernetes.md")).unwrap();
    let start = page
        .find("```yaml\napiVersion: serin.dev/v1alpha1")
        .expect("docs/kubernetes.md shows a Rollout");
    let block = &page[start + "```yaml\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let from_manifest = spec::parse(block, "docs/kubernetes.md").unwrap_or_else(|e| panic!("{e}"));
    let value: Value = serde_saphyr::from_str(block).unwrap();
    let typed: Rollout = serde_json::from_value(value).unwrap();
    assert_eq!(typed.check(), Ok(from_manifest.clone()));
    assert_eq!(from_manifest.traffic.kubernetes.unwrap().namespace, "shop");
}

#[test]
fn serin_run_reads_a_rollout_manifest_and_names_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rollout.yaml");
    std::fs::write(
        &file,
        "apiVersion: serin.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: checkout\nspec:\n  \
         stable: {version: v1, upstream: http://127.0.0.1:9001}\n  \
         canary: {version: v1, upstream: http://127.0.0.1:9002}\n  \
         traffic: {listen: nowhere}\n",
    )
    .unwrap();
    let out = serin()
        .args(["run", &file.display().to_string(), "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let f = file.display();
    // Both problems of the spec at once, at their lines in the manifest.
    assert!(stderr.contains(&format!("{f}:7:")), "{stderr}");
    assert!(
        stderr.contains("canary.version: expected a version other than stable's"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{f}:8:")), "{stderr}");
    assert!(
        stderr.contains("traffic.listen: expected an address"),
        "{stderr}"
    );
    assert!(!dir.path().join("state").join("serin.db").exists());
}

fn kubectl_ok(sim: &KubeSim, args: &[&str]) -> String {
    let out = sim.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sim.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The words of the line of `table` that starts with `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_an_api_server_the_crd_installs_and_status_is_written_under_a_precondition() {
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

    // A Rollout made from examples/gateway-api.yaml, without its namespace:
    // it is the resource's.
    let (_, _, mut file) = examples()
        .into_iter()
        .find(|(o, _, _)| o.ends_with("gateway-api.yaml"))
        .unwrap();
    file["traffic"]["kubernetes"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let mut manifest = as_resource(&file);
    manifest["metadata"]["namespace"] = json!("shop");
    let rollout: Rollout = serde_json::from_value(manifest).unwrap();
    let client = sim.client().await;
    let api: Api<Rollout> = Api::namespaced(client, "shop");
    let created = api.create(&PostParams::default(), &rollout).await.unwrap();
    assert_eq!(
        created.spec, rollout.spec,
        "the API server keeps the spec whole"
    );
    let checked = created.check().unwrap();
    assert_eq!(checked.name, "checkout");
    assert_eq!(checked.traffic.kubernetes.unwrap().namespace, "shop");

    // kubectl finds it by its plural, its group, its short name and its
    // category, with the printer columns.
    let table = kubectl_ok(&sim, &["get", "rollouts.serin.dev", "-n", "shop"]);
    assert_eq!(
        row(&table, "NAME"),
        [
            "NAME", "PHASE", "RUN", "STEP", "WEIGHT", "CANARY", "VERDICT", "AGE"
        ],
        "{table}"
    );
    for name in ["sro", "serin", "rollouts"] {
        let t = kubectl_ok(&sim, &["get", name, "-n", "shop"]);
        assert!(t.contains("checkout"), "kubectl get {name}: {t}");
    }

    // A status written with the resourceVersion it read.
    let read = api.get("checkout").await.unwrap();
    let generation = read.metadata.generation;
    let mut next = read.clone();
    let mut status = RolloutStatus {
        phase: Some("Progressing".into()),
        run: Some(1),
        step: Some(2),
        weight: Some(12.5),
        canary_version: Some("v1.2.0".into()),
        last_verdict: Some("pass".into()),
        last_reason: Some("error rate 0.1 % <= 5 %".into()),
        reason: Some("pausing 1m: 40s left".into()),
        observed_generation: generation,
        ..RolloutStatus::default()
    };
    status.set_condition(Condition {
        type_: RECONCILING.into(),
        status: "True".into(),
        reason: "Progressing".into(),
        message: "step 2 of 8".into(),
        last_transition_time: "2026-12-06T12:00:00Z".into(),
        observed_generation: generation,
    });
    status.record(RecentDecision {
        at: "2026-12-06T12:00:00Z".into(),
        kind: "weight".into(),
        reason: "stage passed".into(),
        weight: Some(12.5),
        step: Some(2),
    });
    next.status = Some(status.clone());
    let written = api
        .replace_status("checkout", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_eq!(written.status.as_ref(), Some(&status));
    assert_eq!(
        written.metadata.generation, generation,
        "status is not the spec"
    );
    assert_ne!(
        written.metadata.resource_version,
        read.metadata.resource_version
    );
    let table = kubectl_ok(&sim, &["get", "sro", "checkout", "-n", "shop"]);
    assert_eq!(
        row(&table, "checkout")[..7],
        [
            "checkout",
            "Progressing",
            "1",
            "2",
            "12.5",
            "v1.2.0",
            "pass"
        ],
        "{table}"
    );
    // kstatus: `kubectl wait` reads the conditions.
    let wait = [
        "wait",
        "-n",
        "shop",
        "sro/checkout",
        "--timeout=10s",
        "--for",
    ];
    kubectl_ok(&sim, &[&wait[..], &["condition=Reconciling"]].concat());
    let wide = kubectl_ok(
        &sim,
        &["get", "sro", "checkout", "-n", "shop", "-o", "wide"],
    );
    assert!(
        wide.contains("REASON") && wide.contains("pausing 1m: 40s left"),
        "{wide}"
    );

    // A writer that read before that write is stale: 409, nothing changed.
    let mut stale = read.clone();
    stale.status = Some(RolloutStatus {
        phase: Some("RolledBack".into()),
        ..RolloutStatus::default()
    });
    match api
        .replace_status("checkout", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a stale resourceVersion was not refused: {other:?}"),
    }
    let now = api.get("checkout").await.unwrap();
    assert_eq!(now.status, Some(status));
    // A status write without a resourceVersion is no precondition at all;
    // the controller never sends one (kubesim answers such a PUT 422).
    let mut unguarded = now.clone();
    unguarded.metadata.resource_version = None;
    assert!(
        api.replace_status("checkout", &PostParams::default(), &unguarded)
            .await
            .is_err()
    );
}
