//! Webhooks and promotion gates end to end: `serin run` with a local
//! receiver on 127.0.0.1 as its notification targets (JSON and Slack
//! format), its pre-rollout check and its gate. The pre-rollout check and
//! the gate hold the rollout until they answer 2xx; every phase change and
//! every failed verdict and every "would have rolled back" reaches every
//! target.

mod common;

use common::hooks;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin_run, text, wait_for_port, write};
use hooks::{Hooks, Received};

fn rollout(
    name: &str,
    port: u16,
    stable: SocketAddr,
    canary: SocketAddr,
    hooks: &Hooks,
    steps: &str,
) -> String {
    Rollout::new(name, local(port), stable, canary)
        .steps(steps)
        .latency_p95("200ms")
        .rest(&format!(
            "notifications:
  - webhook: {json}
    format: json
  - webhook: {slack}
    format: slack
preRollout:
  url: {pre}
",
            json = hooks.url("/notify"),
            slack = hooks.url("/slack"),
            pre = hooks.url("/pre"),
        ))
        .yaml()
}

fn spawn_run(dir: &std::path::Path, yaml: &str, port: u16) -> Proc {
    let file = write(dir, "rollout.yaml", yaml);
    let run = Proc::spawn(serin_run(&file, dir), true);
    wait_for_port(local(port));
    run
}

/// `(event, phase)` of each JSON notification.
fn events(got: &[Received]) -> Vec<(String, String)> {
    got.iter()
        .map(|r| {
            (
                r.body["event"].as_str().unwrap_or("?").to_string(),
                r.body["phase"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// Waits (bounded) until `path` has `n` requests, and a moment more to
/// catch any extra; returns them all.
fn settle(hooks: &Hooks, path: &str, n: usize) -> Vec<Received> {
    hooks.wait_for(path, n, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    hooks.received(path)
}

#[test]
fn the_pre_rollout_check_and_a_gate_hold_until_they_answer_2xx_and_every_notification_arrives() {
    let hooks = Hooks::start();
    hooks.set_status("/pre", 503);
    hooks.set_status("/gate", 503);
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let steps = format!(
        "  - setWeight: 20\n  - pause: {{ duration: 1s }}\n  - pause: {{ until: webhook, url: {} }}\n  \
         - setWeight: 100\n  - pause: {{ duration: 1s }}\n",
        hooks.url("/gate")
    );
    let mut run = spawn_run(
        dir.path(),
        &rollout("gated", port, stable, canary, &hooks, &steps),
        port,
    );
    let _load = load(&format!("http://127.0.0.1:{port}/"), 150, "40s");

    // The pre-rollout check answers 503: asked again and again, nothing starts.
    let pre = hooks.wait_for("/pre", 2, Duration::from_secs(15));
    assert_eq!(pre[0].body["rollout"], "gated", "{:?}", pre[0].body);
    assert_eq!(pre[0].body["phase"], "Initializing");
    assert_eq!(pre[0].body["canaryVersion"], "v2");
    assert!(hooks.received("/notify").is_empty(), "nothing started yet");
    assert!(hooks.received("/gate").is_empty());

    // It answers 200: the rollout starts, and holds at the gate (503).
    hooks.set_status("/pre", 200);
    let gate = hooks.wait_for("/gate", 3, Duration::from_secs(20));
    for g in &gate {
        assert_eq!(g.answered, 503);
        assert_eq!(g.body["weight"], 20.0, "held at 20 %: {:?}", g.body);
        assert_eq!(g.body["rollout"], "gated");
        // The gate is the third step, counted from 1 as everywhere.
        assert_eq!(g.body["step"], 3, "{:?}", g.body);
    }
    let asked = hooks.received("/gate").len();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        hooks.received("/gate").len() > asked,
        "the gate is asked again while it is closed"
    );
    assert!(
        matches!(run.child.try_wait(), Ok(None)),
        "serin run did not go past a closed gate"
    );
    assert_eq!(
        events(&hooks.received("/notify")),
        [("phase-changed".to_string(), "Progressing".to_string())],
        "started, not finished"
    );

    // The gate opens: on to 100 % and promotion.
    let opened = Instant::now();
    hooks.set_status("/gate", 200);
    let output = run.wait_output(Duration::from_secs(30));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("gate open"), "{out}");

    // Every phase change, to both targets, in order; none after the end.
    let json = settle(&hooks, "/notify", 2);
    assert_eq!(
        events(&json),
        [
            ("phase-changed".to_string(), "Progressing".to_string()),
            ("phase-changed".to_string(), "Succeeded".to_string()),
        ],
        "{out}"
    );
    assert!(json[1].at > opened, "promotion came after the gate opened");
    assert_eq!(json[1].body["weight"], 0.0, "{:?}", json[1].body);
    assert_eq!(json[1].body["stableVersion"], "v2", "{:?}", json[1].body);
    let slack = settle(&hooks, "/slack", 2);
    assert_eq!(slack.len(), 2, "{slack:?}");
    let last = slack[1].body["text"].as_str().unwrap_or("");
    assert!(
        last.starts_with(":white_check_mark: *gated* Succeeded"),
        "{last}"
    );
}

#[test]
fn a_rolled_back_rollout_notifies_its_failed_verdict_and_the_rollback() {
    let hooks = Hooks::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &["--error-rate", "0.3"]);
    let port = free_port();
    let steps = "  - setWeight: 20\n  - pause: { duration: 3s }\n  - setWeight: 100\n";
    let run = spawn_run(
        dir.path(),
        &rollout("failing", port, stable, canary, &hooks, steps),
        port,
    );
    let _load = load(&format!("http://127.0.0.1:{port}/"), 150, "40s");
    let output = run.wait_output(Duration::from_secs(40));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");

    let json = settle(&hooks, "/notify", 3);
    assert_eq!(
        events(&json),
        [
            ("phase-changed".to_string(), "Progressing".to_string()),
            ("verdict-failed".to_string(), "RolledBack".to_string()),
            ("phase-changed".to_string(), "RolledBack".to_string()),
        ],
        "{out}"
    );
    let reason = json[1].body["reason"].as_str().unwrap_or("");
    assert!(reason.contains("canary error rate"), "{reason}");
    assert_eq!(json[2].body["weight"], 0.0, "{:?}", json[2].body);
    // The rollback carries its run and typed outcome: the failing check.
    assert_eq!(json[2].body["run"], 1, "{:?}", json[2].body);
    assert_eq!(
        json[2].body["outcome"]["kind"], "analysis",
        "{:?}",
        json[2].body
    );
    assert!(
        json[2].body["outcome"]["check"]
            .as_str()
            .unwrap_or("")
            .contains("canary error rate"),
        "{:?}",
        json[2].body
    );
    assert!(json[0].body["outcome"].is_null(), "{:?}", json[0].body);
    let slack = settle(&hooks, "/slack", 3);
    assert_eq!(slack.len(), 3, "{slack:?}");
    for s in &slack[1..] {
        let t = s.body["text"].as_str().unwrap_or("");
        assert!(
            t.starts_with(":rotating_light: *failing* RolledBack"),
            "{t}"
        );
    }
    // The pre-rollout check answered 200 at once.
    assert!(!hooks.received("/pre").is_empty());
}

/// An advisory rollout (`analysis.mode: advisory`) with a canary failing
/// 30 % of its requests: every failed verdict is still notified, the judge's
/// "would have rolled back" is an event of its own (`would-roll-back`, once
/// per episode), and the rollout is promoted (exit 0) with the summary
/// counting what the judge would have done.
#[test]
fn an_advisory_rollout_with_a_failing_canary_notifies_would_roll_back_and_is_promoted() {
    let hooks = Hooks::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &["--error-rate", "0.3"]);
    let port = free_port();
    let steps = "  - setWeight: 20\n  - pause: { duration: 3s }\n  - setWeight: 50\n  - pause: { duration: 2s }\n";
    let yaml = Rollout::new("advised", local(port), stable, canary)
        .steps(steps)
        .latency_p95("200ms")
        .analysis("  mode: advisory\n")
        .rest(&format!(
            "notifications:\n  - webhook: {json}\n    format: json\n  - webhook: {slack}\n    format: slack\n",
            json = hooks.url("/notify"),
            slack = hooks.url("/slack"),
        ))
        .yaml();
    let run = spawn_run(dir.path(), &yaml, port);
    let _load = load(&format!("http://127.0.0.1:{port}/"), 150, "40s");
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "promoted: {out}");
    assert!(
        out.contains("advisory: would have rolled back"),
        "the summary counts them: {out}"
    );
    hooks.wait_for("/notify", 3, Duration::from_secs(10));
    let json = settle(&hooks, "/notify", 3);
    let got = events(&json);
    let would: Vec<&Received> = json
        .iter()
        .filter(|r| r.body["event"] == "would-roll-back")
        .collect();
    assert!(!would.is_empty(), "a would-roll-back event: {got:?} {out}");
    for w in &would {
        let reason = w.body["reason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with("would have rolled back: ") && reason.contains("canary error rate"),
            "{reason}"
        );
        // Never a rollback: the rollout goes on.
        assert_ne!(w.body["phase"], "RolledBack", "{:?}", w.body);
    }
    // Once per episode: no more of them than failed verdicts.
    let failed = got.iter().filter(|(e, _)| e == "verdict-failed").count();
    assert!(failed >= would.len(), "{got:?}");
    assert_eq!(
        got.last(),
        Some(&("phase-changed".to_string(), "Succeeded".to_string())),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|(_, phase)| phase == "RolledBack"),
        "{got:?}"
    );
    let slack = hooks.received("/slack");
    assert!(
        slack.iter().any(|s| s.body["text"]
            .as_str()
            .unwrap_or("")
            .starts_with(":warning: *advised*")),
        "{slack:?}"
    );
}

/// A receiver that accepts connections and never answers: it holds each one
/// open, unread, until dropped. Counts what it accepted.
struct Silent {
    addr: SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                // Bounded: at most two minutes, like any test.
                let end = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            held.push(stream);
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Silent {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One slow webhook never delays another: with a receiver that accepts and
/// never answers listed first, the good one still gets every phase change
/// of the run, and `serin run` still ends (its wait for the last
/// notifications is bounded). Fails before this change: targets were
/// served one after another, so the good receiver got nothing in the whole
/// run.
#[test]
fn a_receiver_that_never_answers_does_not_hold_up_the_others() {
    let hooks = Hooks::start();
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let yaml = Rollout::new("slow-hook", local(port), stable, canary)
        .steps("  - setWeight: 20\n  - pause: { duration: 1s }\n  - setWeight: 100\n")
        .latency_p95("200ms")
        .rest(&format!(
            "notifications:
  - webhook: http://{silent}/hang
    format: json
  - webhook: {good}
    format: json
",
            silent = silent.addr,
            good = hooks.url("/notify"),
        ))
        .yaml();
    let run = spawn_run(dir.path(), &yaml, port);
    let _load = load(&format!("http://127.0.0.1:{port}/"), 150, "40s");
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        silent.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the silent receiver was tried"
    );
    let json = settle(&hooks, "/notify", 2);
    assert_eq!(
        events(&json),
        [
            ("phase-changed".to_string(), "Progressing".to_string()),
            ("phase-changed".to_string(), "Succeeded".to_string()),
        ],
        "{out}"
    );
}
