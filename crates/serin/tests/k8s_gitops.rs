//! What docs/kubernetes.md gives GitOps tools works on the status serin
//! writes: the Argo CD health check (Lua, taken from the page) run with Lua
//! 5.1 (Argo CD's gopher-lua speaks 5.1) on sample Rollouts, and the page's
//! `kubectl wait --for=condition=Ready` line run against kubesim.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kubesim::KubeSim;
use serde_json::{Value, json};
use serin::cluster::resource::{Condition, RolloutStatus};

fn page() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/kubernetes.md");
    std::fs::read_to_string(path).unwrap()
}

/// The fenced blocks of `lang` in the page.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        let t = line.trim_start();
        match &mut current {
            None if t.starts_with("```") && t[3..].trim() == lang => current = Some(Vec::new()),
            Some(lines) if t.starts_with("```") => {
                out.push(lines.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
            None => {}
        }
    }
    out
}

const KEY: &str = "resource.customizations.health.serin.dev_Rollout";

fn health_script() -> String {
    let docs: Vec<Value> = blocks(&page(), "yaml")
        .iter()
        .filter(|b| b.contains(KEY))
        .map(|b| serde_saphyr::from_str(b).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "one argocd-cm block");
    assert_eq!(docs[0]["kind"], "ConfigMap");
    assert_eq!(docs[0]["metadata"]["name"], "argocd-cm");
    docs[0]["data"][KEY].as_str().unwrap().to_string()
}

/// A JSON value as a Lua table constructor.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// (status, message) of the health check on `obj`.
fn health(script: &str, obj: &Value) -> (String, String) {
    let program = format!(
        "local obj = {}\nlocal function check()\n{script}\nend\nlocal hs = check()\nprint(hs.status)\nprint(hs.message)\n",
        lua(obj)
    );
    let mut child = Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lua5.1 runs (scripts/install-test-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lua: {}\n{program}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap_or("").to_string(),
        lines.next().unwrap_or("").to_string(),
    )
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: "2026-12-06T10:00:00Z".into(),
        observed_generation: Some(3),
    }
}

/// A Rollout at generation 3 with `status` as serin's types write it.
fn rollout(status: Option<RolloutStatus>) -> Value {
    let mut obj = json!({
        "apiVersion": "serin.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "checkout", "namespace": "shop", "generation": 3},
        "spec": {},
    });
    if let Some(s) = status {
        obj["status"] = serde_json::to_value(s).unwrap();
    }
    obj
}

fn status(phase: &str, conditions: Vec<Condition>) -> RolloutStatus {
    RolloutStatus {
        phase: Some(phase.into()),
        run: Some(4),
        step: Some(2),
        weight: Some(25.0),
        canary_version: Some("v1.3.0".into()),
        last_verdict: Some("pass".into()),
        last_reason: Some("error rate 0.1% vs 0.2%".into()),
        observed_generation: Some(3),
        conditions,
        ..RolloutStatus::default()
    }
}

#[test]
fn the_argo_cd_health_check_reads_serins_status() {
    let script = health_script();
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "no status yet",
            rollout(None),
            "Progressing",
            "Waiting for serin",
        ),
        (
            "a generation serin has not seen",
            rollout(Some(RolloutStatus {
                observed_generation: Some(2),
                ..status(
                    "Succeeded",
                    vec![condition("Ready", true, "Succeeded", "v1.2.0")],
                )
            })),
            "Progressing",
            "generation 3",
        ),
        (
            "a run in progress",
            rollout(Some(status(
                "Progressing",
                vec![
                    condition("Ready", false, "Progressing", "run 4"),
                    condition("Reconciling", true, "Progressing", "run 4"),
                ],
            ))),
            "Progressing",
            "Step 2, canary weight 25",
        ),
        (
            "paused",
            rollout(Some(status(
                "Paused",
                vec![condition("Reconciling", true, "Paused", "held by alice")],
            ))),
            "Suspended",
            "Paused",
        ),
        (
            "promoted",
            rollout(Some(status(
                "Succeeded",
                vec![
                    condition("Ready", true, "Succeeded", "v1.3.0 promoted"),
                    condition("Reconciling", false, "Succeeded", ""),
                ],
            ))),
            "Healthy",
            "v1.3.0 promoted",
        ),
        (
            "rolled back (serin also sets Stalled)",
            rollout(Some(status(
                "RolledBack",
                vec![
                    condition("Ready", false, "RolledBack", "rolled back"),
                    condition(
                        "Stalled",
                        true,
                        "RolledBack",
                        "error rate 4% vs 0.2%: fix or revert the pod template in git",
                    ),
                ],
            ))),
            "Degraded",
            "fix or revert",
        ),
        (
            "rolled back, no Stalled condition",
            rollout(Some(status(
                "RolledBack",
                vec![condition("Ready", false, "RolledBack", "rolled back")],
            ))),
            "Degraded",
            "Rolled back: error rate 0.1% vs 0.2%",
        ),
        (
            "an invalid spec",
            rollout(Some(RolloutStatus {
                phase: None,
                ..status(
                    "",
                    vec![
                        condition(
                            "Stalled",
                            true,
                            "InvalidSpec",
                            "spec.steps[0].setWeight: expected a weight",
                        ),
                        condition("Ready", false, "InvalidSpec", "invalid"),
                    ],
                )
            })),
            "Degraded",
            "spec.steps[0].setWeight",
        ),
        (
            "promoted but not in force yet (the stable still rolling out)",
            rollout(Some(status(
                "Succeeded",
                vec![
                    condition("Ready", false, "Promoting", "promoted at step 2"),
                    condition("Reconciling", true, "Promoting", "promoted at step 2"),
                ],
            ))),
            "Progressing",
            "Promoting",
        ),
        (
            "git reverted to the running template after a rollback: idle",
            rollout(Some(RolloutStatus {
                phase: Some("Idle".into()),
                run: Some(4),
                observed_generation: Some(3),
                message: Some(
                    "the pod template is back to the running one: no run, nothing rolled out"
                        .into(),
                ),
                last_run: Some("run 4 rolled back: error rate 30 % > 5 %".into()),
                reason: Some("the pod template is back to the running one".into()),
                conditions: vec![
                    condition(
                        "Ready",
                        true,
                        "Idle",
                        "the pod template is back to the running one",
                    ),
                    condition(
                        "Stalled",
                        false,
                        "Idle",
                        "the pod template is back to the running one",
                    ),
                    condition(
                        "Reconciling",
                        false,
                        "Idle",
                        "the pod template is back to the running one",
                    ),
                ],
                ..RolloutStatus::default()
            })),
            "Healthy",
            "back to the running one",
        ),
        (
            "a weight refused by a field conflict (Stalled)",
            rollout(Some(RolloutStatus {
                not_in_force: vec!["weight 20 % not applied yet: conflict".into()],
                ..status(
                    "Progressing",
                    vec![
                        condition(
                            "Ready",
                            false,
                            "Conflict",
                            "weight 20 % not applied yet: conflict",
                        ),
                        condition(
                            "Stalled",
                            true,
                            "Conflict",
                            "weight 20 % not applied yet: conflict",
                        ),
                    ],
                )
            })),
            "Degraded",
            "not applied yet",
        ),
        (
            "idle and ready, no run yet",
            rollout(Some(RolloutStatus {
                phase: None,
                observed_generation: Some(3),
                conditions: vec![condition("Ready", true, "Idle", "v1.2.0 running")],
                ..RolloutStatus::default()
            })),
            "Healthy",
            "v1.2.0 running",
        ),
    ];
    for (what, obj, want, says) in cases {
        let (got, message) = health(&script, &obj);
        assert_eq!(got, want, "{what}: {message}");
        assert!(
            message.contains(says),
            "{what}: message {message:?} lacks {says:?}"
        );
    }
}

#[test]
fn kubectl_waits_for_the_ready_condition_as_the_page_says() {
    let text = page();
    let line = blocks(&text, "sh")
        .into_iter()
        .flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
        .find(|l| l.contains("wait --for=condition=Ready"))
        .expect("the page's kubectl wait line");
    let sim = KubeSim::start(&[]);
    let crd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/crd.yaml");
    let out = sim.kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rollout.json");
    std::fs::write(&file, rollout(None).to_string()).unwrap();
    let out = sim.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set_status = |s: RolloutStatus| {
        let patch = json!({"status": serde_json::to_value(s).unwrap()}).to_string();
        let out = sim.kubectl(&[
            "-n",
            "shop",
            "patch",
            "rollout.serin.dev/checkout",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set_status(status(
        "Progressing",
        vec![condition("Ready", false, "Progressing", "run 4")],
    ));
    let wait = |line: &str| {
        Command::new("sh")
            .args(["-c", line])
            .env("KUBECONFIG", sim.kubeconfig())
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // During the run it does not return.
    let short = line.replace("--timeout=30m", "--timeout=2s");
    assert_ne!(short, line, "the page's line has --timeout=30m");
    let out = wait(&short).wait_with_output().unwrap();
    assert!(!out.status.success(), "kubectl wait returned during a run");

    // The page's line, as written, returns once serin says Ready.
    let mut child = wait(&line);
    set_status(status(
        "Succeeded",
        vec![condition("Ready", true, "Succeeded", "v1.3.0 promoted")],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{line}: not done 30 s after Ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        code.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}
