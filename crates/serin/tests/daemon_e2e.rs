//! `serin serve` end to end: the real daemon binary on 127.0.0.1, driven by
//! the real client commands (`init`, `deploy`, `status`, `traffic`, `pause`,
//! `resume`, `promote`, `rollback`, `history`, `report`, `cleanup`), with real
//! demo apps behind its proxy and real requests through it.
//!
//! Every mutation is tried first without the token (refused, exit 1, nothing
//! changes) and then with it. A daemon killed with SIGKILL in the middle of a
//! rollout comes back from its state directory where it was.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::daemon::{cli, wait_status};
use common::http::{get, wait_until_closed};
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin, serin_serve, text, wait_for_port, write};
use serde_json::Value;

const TOKEN: &str = "s3cret-token-for-tests";

/// Exit code of a client command the daemon refused with 401 (cli/client.rs:
/// an error status other than 400 is a runtime failure).
const UNAUTHORIZED_EXIT: i32 = 1;

// ---------------------------------------------------------------- HTTP

/// Sends `n` requests through the proxy at `addr`; how many were answered by
/// each version (the `x-serin-version` header).
fn split(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let a = get(addr, &format!("/split/{i}"));
        assert_eq!(a.status, 200, "request {i} through the proxy: {}", a.body);
        let v = a
            .headers
            .get("x-serin-version")
            .cloned()
            .unwrap_or_else(|| "(none)".into());
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

fn count(c: &BTreeMap<String, usize>, v: &str) -> usize {
    c.get(v).copied().unwrap_or(0)
}

// ---------------------------------------------------------------- daemon

/// A `serin serve` process and how to talk to it.
struct Daemon {
    proc: Proc,
    addr: SocketAddr,
    state: PathBuf,
}

impl Daemon {
    /// Starts `serin serve` with the token on `addr`, state in `state`.
    fn start(addr: SocketAddr, state: &Path) -> Daemon {
        let mut cmd = serin_serve(addr, state);
        cmd.env("SERIN_TOKEN", TOKEN);
        let proc = Proc::spawn(cmd, false);
        wait_for_port(addr);
        let d = Daemon {
            proc,
            addr,
            state: state.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(addr, "/healthz").status != 200 {
            assert!(Instant::now() < deadline, "daemon not healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// A client command against this daemon, with or without the token.
    fn cli(&self, args: &[&str], token: bool) -> Output {
        cli(self.addr, args, token.then_some(TOKEN))
    }

    /// A client command that must succeed.
    fn ok(&self, args: &[&str]) -> Output {
        let o = self.cli(args, true);
        assert_eq!(o.status.code(), Some(0), "serin {args:?}: {}", text(&o));
        o
    }

    /// A mutation without the token: refused as unauthorized.
    fn refused_without_token(&self, args: &[&str]) {
        let o = self.cli(args, false);
        assert_eq!(
            o.status.code(),
            Some(UNAUTHORIZED_EXIT),
            "serin {args:?} without the token: {}",
            text(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("401") && err.contains("token"),
            "serin {args:?} without the token says why: {err}"
        );
    }

    /// `serin status NAME -o json`, parsed.
    fn status(&self, name: &str) -> Value {
        let o = self.ok(&["status", name, "-o", "json"]);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status -o json is JSON: {e}: {}", text(&o)))
    }

    /// `serin history NAME -o json`, parsed.
    /// The decisions of the rollout's last run.
    fn history(&self, name: &str) -> Vec<Value> {
        let o = self.ok(&["history", name, "-o", "json"]);
        let h = serde_json::from_slice::<Value>(&o.stdout)
            .unwrap_or_else(|e| panic!("history -o json: {e}: {}", text(&o)));
        let runs = h["runs"].as_array().cloned().unwrap_or_default();
        let last = runs.last().unwrap_or_else(|| panic!("no run: {h:#}"));
        last["events"].as_array().cloned().unwrap_or_default()
    }
}

fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or("")
}

fn weight(s: &Value) -> f64 {
    s["weight"].as_f64().unwrap_or(-1.0)
}

/// The status's step, counted from 1.
fn step(s: &Value) -> u64 {
    s["step"].as_u64().unwrap_or(u64::MAX)
}

/// A rollout file for the builtin proxy on `listen` with `steps` (YAML list
/// items, one per line).
fn rollout_file(
    name: &str,
    listen: SocketAddr,
    stable: SocketAddr,
    canary: SocketAddr,
    steps: &[&str],
) -> String {
    let steps: String = steps.iter().map(|s| format!("  - {s}\n")).collect();
    Rollout::new(name, listen, stable, canary)
        .steps(&steps)
        .no_data_limit(20)
        .yaml()
}

/// Asserts that `n` requests through `proxy` split as `pct` % canary, within
/// four standard deviations of the binomial.
fn assert_split(proxy: SocketAddr, n: usize, pct: f64, when: &str) {
    let c = split(proxy, n);
    let v2 = count(&c, "v2") as f64;
    let expected = n as f64 * pct / 100.0;
    let sd = (n as f64 * pct / 100.0 * (1.0 - pct / 100.0)).sqrt();
    assert_eq!(
        count(&c, "v1") + count(&c, "v2"),
        n,
        "{when}: every answer from v1 or v2: {c:?}"
    );
    assert!(
        (v2 - expected).abs() <= 4.0 * sd.max(0.5),
        "{when}: {n} requests at weight {pct} gave {v2} on v2 (expected {expected} ± {:.0}): {c:?}",
        4.0 * sd
    );
}

// ---------------------------------------------------------------- tests

/// The whole operator's life of one rollout through the client commands.
#[test]
fn operator_commands_need_the_token_and_drive_the_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let d = Daemon::start(local(free_port()), &dir.path().join("state"));
    let file = write(
        dir.path(),
        "checkout.yaml",
        &rollout_file(
            "checkout",
            proxy,
            stable,
            canary,
            &[
                "setWeight: 10",
                "pause: { duration: 1h }",
                "setWeight: 40",
                "pause: {}",
            ],
        ),
    );
    let file = file.display().to_string();

    // init: refused without the token, nothing registered.
    d.refused_without_token(&["init", &file]);
    let o = d.ok(&["status", "-o", "json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap(),
        Vec::<Value>::new(),
        "nothing registered without the token"
    );
    assert!(
        TcpStream::connect_timeout(&proxy, Duration::from_millis(200)).is_err(),
        "no proxy started without the token"
    );
    let o = d.ok(&["init", &file]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("registered checkout"),
        "{}",
        text(&o)
    );
    wait_for_port(proxy);
    let s = d.status("checkout");
    assert_eq!(phase(&s), "Initializing", "{s:#}");
    assert_eq!(weight(&s), 0.0);
    assert_eq!(s["stable"]["version"], "v1");
    assert!(s["canary"]["version"].is_null(), "no canary yet: {s:#}");
    let c = split(proxy, 30);
    assert_eq!(
        count(&c, "v1"),
        30,
        "all traffic on stable after init: {c:?}"
    );

    // Light steady load so that the judge has data and the report has lines.
    let _load = load(&format!("http://{proxy}/load"), 40, "120s");

    // deploy.
    d.refused_without_token(&["deploy", "checkout", "v2"]);
    let s = d.status("checkout");
    assert!(s["canary"]["version"].is_null(), "deploy refused: {s:#}");
    assert_eq!(phase(&s), "Initializing");
    d.ok(&["deploy", "checkout", "v2"]);
    let s = wait_status(
        d.addr,
        "checkout",
        "the first step (weight 10, pausing)",
        |s| phase(s) == "Progressing" && step(s) == 2 && weight(s) == 10.0,
    );
    assert_eq!(s["canary"]["version"], "v2");
    // The file it runs, given again while it runs, changes nothing and is
    // no error (a script applying its files again); another file is
    // refused (409) and changes nothing.
    let o = d.ok(&["init", &file]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("checkout unchanged: its run in progress runs this file"),
        "{}",
        text(&o)
    );
    let changed = write(
        dir.path(),
        "checkout-changed.yaml",
        &std::fs::read_to_string(&file)
            .unwrap()
            .replace("setWeight: 40", "setWeight: 45"),
    );
    let o = d.cli(&["init", &changed.display().to_string()], true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("409"),
        "{}",
        text(&o)
    );
    let s = d.status("checkout");
    assert_eq!((phase(&s), step(&s), weight(&s)), ("Progressing", 2, 10.0));

    // status -o json: every SPEC field, with live metrics and a verdict.
    let s = wait_status(d.addr, "checkout", "a verdict", |s| {
        !s["lastVerdict"].is_null()
    });
    let s2 = d.status("checkout");
    for key in [
        "name",
        "phase",
        "step",
        "weight",
        "stable",
        "canary",
        "lastVerdict",
        "metrics",
    ] {
        assert!(s2.get(key).is_some(), "status has `{key}`: {s2:#}");
    }
    assert_eq!(s2["name"], "checkout");
    assert_eq!(s2["stable"]["version"], "v1");
    assert_eq!(s2["canary"]["version"], "v2");
    let v = &s["lastVerdict"];
    assert!(
        ["pass", "fail", "inconclusive"].contains(&v["verdict"].as_str().unwrap_or("")),
        "{v:#}"
    );
    assert!(!v["reason"].as_str().unwrap_or("").is_empty(), "{v:#}");
    assert!(
        v["at"].as_str().unwrap_or("").ends_with('Z'),
        "RFC 3339: {v:#}"
    );
    for side in ["stable", "canary"] {
        let m = &s2["metrics"][side];
        for key in ["requests", "errors", "errorRate", "p50Ms", "p95Ms", "p99Ms"] {
            assert!(m.get(key).is_some(), "metrics.{side}.{key}: {s2:#}");
        }
        assert!(
            m["requests"].as_u64().unwrap_or(0) > 0,
            "{side} served requests: {s2:#}"
        );
        assert_eq!(m["errors"], 0, "{side}: {s2:#}");
    }

    // pause / resume.
    d.refused_without_token(&["pause", "checkout"]);
    assert_eq!(phase(&d.status("checkout")), "Progressing");
    d.ok(&["pause", "checkout"]);
    let s = d.status("checkout");
    assert_eq!(phase(&s), "Paused", "{s:#}");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("operator"),
        "{s:#}"
    );
    assert_eq!(s["pausedBy"], "operator", "{s:#}");
    d.refused_without_token(&["resume", "checkout"]);
    assert_eq!(phase(&d.status("checkout")), "Paused");
    d.ok(&["resume", "checkout"]);
    let s = d.status("checkout");
    assert_eq!(phase(&s), "Progressing", "{s:#}");
    assert_eq!((step(&s), weight(&s)), (2, 10.0), "{s:#}");
    assert!(s["pausedBy"].is_null(), "{s:#}");

    // traffic 30: weight applied, automation held.
    d.refused_without_token(&["traffic", "checkout", "30"]);
    let s = d.status("checkout");
    assert_eq!((phase(&s), weight(&s)), ("Progressing", 10.0), "{s:#}");
    d.ok(&["traffic", "checkout", "30"]);
    let s = d.status("checkout");
    assert_eq!((phase(&s), weight(&s)), ("Paused", 30.0), "{s:#}");
    assert_split(proxy, 400, 30.0, "after `traffic checkout 30`");
    // Several analysis intervals later the automation still holds.
    std::thread::sleep(Duration::from_millis(1500));
    let s = d.status("checkout");
    assert_eq!(
        (phase(&s), step(&s), weight(&s)),
        ("Paused", 2, 30.0),
        "{s:#}"
    );

    // promote: ends the 1 h pause; next step 40 %, then a pause for promote.
    d.refused_without_token(&["promote", "checkout"]);
    let s = d.status("checkout");
    assert_eq!((phase(&s), step(&s), weight(&s)), ("Paused", 2, 30.0));
    d.ok(&["promote", "checkout"]);
    let s = wait_status(
        d.addr,
        "checkout",
        "step 4 waiting for promote at 40 %",
        |s| phase(s) == "Paused" && step(s) == 4 && weight(s) == 40.0,
    );
    assert!(
        s["reason"].as_str().unwrap_or("").contains("promote"),
        "{s:#}"
    );
    assert_eq!(s["pausedBy"], "step", "{s:#}");
    assert_split(proxy, 300, 40.0, "at step 4");

    // rollback.
    d.refused_without_token(&["rollback", "checkout"]);
    let s = d.status("checkout");
    assert_eq!((phase(&s), weight(&s)), ("Paused", 40.0), "{s:#}");
    d.ok(&["rollback", "checkout"]);
    let s = d.status("checkout");
    assert_eq!(phase(&s), "RolledBack", "{s:#}");
    assert_eq!(s["reason"], "rolled back by an operator (the CLI)", "{s:#}");
    assert_eq!(
        s["outcome"],
        serde_json::json!({"kind": "operator", "by": "cli"}),
        "{s:#}"
    );
    assert_eq!(weight(&s), 0.0);
    let c = split(proxy, 40);
    assert_eq!(count(&c, "v1"), 40, "all traffic on stable: {c:?}");
    // The daemon's metrics say the same.
    let m = get(d.addr, "/metrics").body;
    for line in [
        "serin_rollout_phase{rollout=\"checkout\",phase=\"RolledBack\"} 1",
        "serin_rollout_phase{rollout=\"checkout\",phase=\"Paused\"} 0",
        "serin_canary_weight{rollout=\"checkout\"} 0",
    ] {
        assert!(m.contains(line), "/metrics has `{line}`:\n{m}");
    }
    // A finished rollout refuses more commands (409, exit 1).
    let o = d.cli(&["promote", "checkout"], true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("409"),
        "{}",
        text(&o)
    );

    // history: every decision, in order, in text and JSON.
    let events = d.history("checkout");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"deployed"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"rolled-back"), "{kinds:?}");
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "operator")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for expected in [
        "paused by an operator (the CLI)",
        "resumed by an operator (the CLI)",
        "canary weight set to 30 % by hand by an operator (the CLI)",
        "promote: ending the current pause",
        "rollback requested by the CLI",
    ] {
        assert!(
            reasons.contains(&expected),
            "history has `{expected}`: {reasons:?}"
        );
    }
    for e in &events {
        for key in ["at", "kind", "step", "weight"] {
            assert!(e.get(key).is_some(), "event has `{key}`: {e}");
        }
    }
    let o = d.ok(&["history", "checkout"]);
    let out = String::from_utf8_lossy(&o.stdout);
    // The run's header, then one indented line per decision.
    // Steps count from 1 in JSON as in text: the first decision is step 1,
    // and each text line shows the step its JSON event has.
    assert_eq!(events[0]["step"], 1, "{}", events[0]);
    for (line, e) in out.lines().filter(|l| l.starts_with("  20")).zip(&events) {
        let step = format!("step {:<2}", e["step"]);
        assert!(line.contains(&step), "`{step}` in {line}");
    }
    assert!(
        out.contains("run 1  v1 → v2  started ") && out.contains("rolled back by an operator"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  20")).count(),
        events.len(),
        "one line per decision of the run: {out}"
    );
    assert!(out.contains("rolled-back"), "{out}");

    // report --format html: one self-contained file.
    let html_path = dir.path().join("report.html");
    let o = d.ok(&[
        "report",
        "checkout",
        "--format",
        "html",
        "--out",
        &html_path.display().to_string(),
    ]);
    assert!(
        o.stdout.is_empty(),
        "the report went to the file: {}",
        text(&o)
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{}", &html[..80]);
    assert!(html.contains("checkout") && html.contains("RolledBack"));
    assert!(
        html.contains("rolled back by an operator (the CLI)"),
        "the outcome is in the report"
    );
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    assert!(
        html.contains("class=\"line canary\""),
        "the canary has a line"
    );
    for external in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: found {external}");
    }
    let o = d.ok(&["report", "checkout", "-o", "json"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["phase"], "RolledBack");
    assert!(
        !r["samples"].as_array().unwrap().is_empty(),
        "intervals sampled"
    );

    // cleanup.
    d.refused_without_token(&["cleanup", "checkout"]);
    assert_eq!(phase(&d.status("checkout")), "RolledBack", "still there");
    let o = d.ok(&["cleanup", "checkout"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("removed"),
        "{}",
        text(&o)
    );
    let o = d.cli(&["status", "checkout"], false);
    assert_eq!(o.status.code(), Some(1), "gone: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("404"),
        "{}",
        text(&o)
    );
    wait_until_closed(proxy);
    drop(d);
}

/// SPEC: "the daemon refuses to listen on a non-loopback address without" a token.
#[test]
fn a_daemon_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let o = serin()
        .args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--state-dir",
            &state.display().to_string(),
        ])
        .env_remove("SERIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--listen") && err.contains("token"),
        "says why: {err}"
    );
    assert!(!state.exists(), "no state created");
    // An empty token is no token.
    let o = serin()
        .args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--state-dir",
            &state.display().to_string(),
        ])
        .env("SERIN_TOKEN", "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// SIGKILL in the middle of a rollout; the next daemon on the same state
/// directory has the same phase, step and weight, its proxy splits as before,
/// the history is kept, and the rollout can be finished.
#[test]
fn a_killed_daemon_comes_back_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());
    let file = write(
        dir.path(),
        "cart.yaml",
        &rollout_file(
            "cart",
            proxy,
            stable,
            canary,
            &["setWeight: 25", "pause: {}", "setWeight: 60", "pause: {}"],
        ),
    );
    let mut d = Daemon::start(api, &state);
    d.ok(&["init", &file.display().to_string()]);
    d.ok(&["deploy", "cart", "v2"]);
    let before = wait_status(d.addr, "cart", "step 2 at 25 % waiting for promote", |s| {
        phase(s) == "Paused" && step(s) == 2 && weight(s) == 25.0
    });
    wait_for_port(proxy);
    assert_split(proxy, 200, 25.0, "before the crash");
    let history_before = d.history("cart");
    assert!(history_before.len() >= 3, "{history_before:?}");

    d.proc.kill();
    wait_until_closed(proxy);
    wait_until_closed(api);

    let d = Daemon::start(api, &d.state);
    let after = d.status("cart");
    for key in ["phase", "step", "weight", "stable", "canary", "reason"] {
        assert_eq!(after[key], before[key], "`{key}` survives the crash");
    }
    // Its figures count from the restart, and say so (not "this run").
    assert_eq!(before["metrics"]["window"], "this run", "{before:#}");
    let window = after["metrics"]["window"].as_str().unwrap_or_default();
    assert!(
        window.starts_with("since ") && window.contains("run 1 began earlier"),
        "{after:#}"
    );
    let o = d.ok(&["status", "cart"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("figures {window}:")) && !out.contains("this run"),
        "{out}"
    );
    wait_for_port(proxy);
    assert_split(proxy, 200, 25.0, "after the restart");
    let history_after = d.history("cart");
    assert!(
        history_after.len() >= history_before.len(),
        "history kept: {} then {}",
        history_before.len(),
        history_after.len()
    );
    assert_eq!(
        &history_after[..history_before.len()],
        &history_before[..],
        "the same decisions, in the same order"
    );

    d.refused_without_token(&["promote", "cart", "--full"]);
    assert_eq!(phase(&d.status("cart")), "Paused");
    d.ok(&["promote", "cart", "--full"]);
    let s = d.status("cart");
    assert_eq!(phase(&s), "Succeeded", "{s:#}");
    assert_eq!(s["stable"]["version"], "v2", "the canary is the new stable");
    let c = split(proxy, 40);
    assert_eq!(
        count(&c, "v2"),
        40,
        "after promotion every request goes to v2: {c:?}"
    );
    // A second crash after the promotion: the new stable stays in force.
    let mut d = d;
    d.proc.kill();
    wait_until_closed(proxy);
    let d = Daemon::start(api, &state);
    let s = d.status("cart");
    assert_eq!(
        (phase(&s), s["stable"]["version"].as_str()),
        ("Succeeded", Some("v2")),
        "{s:#}"
    );
    wait_for_port(proxy);
    let c = split(proxy, 40);
    assert_eq!(count(&c, "v2"), 40, "after a restart too: {c:?}");
    let kinds: Vec<String> = d
        .history("cart")
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("promoted"),
        "{kinds:?}"
    );
}

/// A run's figures ("this run") stop at its end: after a promotion all
/// traffic goes to the former canary, now stable, and counting on would
/// credit the old stable's row with the new version's requests.
#[test]
fn a_finished_runs_figures_stop_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let d = Daemon::start(local(free_port()), &dir.path().join("state"));
    let file = write(
        dir.path(),
        "ended.yaml",
        &rollout_file(
            "ended",
            proxy,
            stable,
            canary,
            &["setWeight: 50", "pause: {}"],
        ),
    );
    d.ok(&["init", &file.display().to_string()]);
    wait_for_port(proxy);
    d.ok(&["deploy", "ended", "v2"]);
    wait_status(d.addr, "ended", "paused at 50 %", |s| {
        phase(s) == "Paused" && weight(s) == 50.0
    });
    let c = split(proxy, 100);
    assert_eq!(count(&c, "v1") + count(&c, "v2"), 100, "{c:?}");
    let total = |s: &Value| {
        s["metrics"]["stable"]["requests"].as_u64().unwrap_or(0)
            + s["metrics"]["canary"]["requests"].as_u64().unwrap_or(0)
    };
    wait_status(d.addr, "ended", "the 100 requests counted", |s| {
        total(s) >= 100
    });
    d.ok(&["promote", "ended", "--full"]);
    let ended = wait_status(d.addr, "ended", "promoted", |s| phase(s) == "Succeeded");
    assert_eq!(ended["metrics"]["window"], "this run", "{ended:#}");
    // The figures keep the run's roles; they say whose they are, and the
    // text says the canary row is the stable now.
    assert_eq!(
        (
            ended["metrics"]["stableVersion"].as_str(),
            ended["metrics"]["canaryVersion"].as_str(),
            ended["stable"]["version"].as_str()
        ),
        (Some("v1"), Some("v2"), Some("v2")),
        "{ended:#}"
    );
    let text = String::from_utf8_lossy(&d.ok(&["status", "ended"]).stdout).to_string();
    assert!(
        text.contains("the run's roles: stable was v1, canary v2 is the stable now"),
        "{text}"
    );
    // The daemon's /metrics counts on (since the proxy started): wait until
    // it has the next 50, then status must not have moved.
    let counted = || -> u64 {
        get(d.addr, "/metrics")
            .body
            .lines()
            .filter(|l| l.starts_with("serin_requests_total{rollout=\"ended\","))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = counted();
    let c = split(proxy, 50);
    assert_eq!(count(&c, "v2"), 50, "all on the promoted version: {c:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted() < before + 50 {
        assert!(Instant::now() < deadline, "/metrics never counted the 50");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = d.status("ended");
    assert_eq!(after["metrics"], ended["metrics"], "{after:#}");
}

/// A deploy without `--upstream` sends the canary to the file's
/// `canary.upstream`, never to one an earlier deploy gave (after that one's
/// promotion, stable's own server: serin compared a server with itself);
/// and a canary that would land on stable's server is refused.
#[test]
fn a_deploy_never_reuses_an_earlier_runs_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let (_third, third) = demo_app("v3", &[]);
    let proxy = local(free_port());
    let d = Daemon::start(local(free_port()), &dir.path().join("state"));
    let file = write(
        dir.path(),
        "up.yaml",
        &rollout_file("up", proxy, stable, canary, &["setWeight: 20", "pause: {}"]),
    );
    d.ok(&["init", &file.display().to_string()]);
    wait_for_port(proxy);
    let promoted = |version: &str| {
        d.ok(&["promote", "up", "--full"]);
        wait_status(d.addr, "up", "promoted", |s| {
            phase(s) == "Succeeded" && s["stable"]["version"] == version
        });
    };
    // v3 on a server of its own, promoted: stable is now that server.
    d.ok(&[
        "deploy",
        "up",
        "v3",
        "--upstream",
        &format!("http://{third}"),
    ]);
    wait_status(d.addr, "up", "at 20 %", |s| phase(s) == "Paused");
    promoted("v3");
    // A plain deploy goes to the file's canary.upstream (v2's), not v3's.
    d.ok(&["deploy", "up", "v2"]);
    wait_status(d.addr, "up", "at 20 %", |s| phase(s) == "Paused");
    let c = split(proxy, 200);
    assert!(count(&c, "v2") > 0 && count(&c, "v3") > 0, "{c:?}");
    promoted("v2");
    // Now the file's canary.upstream is stable's own: refused, said why.
    let o = d.cli(&["deploy", "up", "v4"], true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("stable's own server"), "{}", text(&o));
    assert_eq!(phase(&d.status("up")), "Succeeded", "nothing changed");
}
