//! `serin run` end to end: real demo apps, real load through serin's proxy,
//! the real judge and state. Steps are short so each test takes seconds.

mod common;

use std::time::Duration;

use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin, serin_run, text, write};

/// A rollout file with short steps, for `stable` and `canary` addresses.
fn rollout(
    name: &str,
    listen: u16,
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
) -> String {
    Rollout::new(name, local(listen), stable, canary)
        .latency_p95("200ms")
        .yaml()
}

struct Outcome {
    code: Option<i32>,
    out: String,
    stdout: Vec<u8>,
}

/// Runs the rollout with load on its proxy; returns exit code and output.
fn run_with_load(name: &str, canary_flags: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    run_with_load_in(dir.path(), name, canary_flags, &[])
}

/// The same in `dir`, with more flags for `serin run`.
fn run_with_load_in(
    dir: &std::path::Path,
    name: &str,
    canary_flags: &[&str],
    run_flags: &[&str],
) -> Outcome {
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", canary_flags);
    let port = free_port();
    let file = write(dir, "rollout.yaml", &rollout(name, port, stable, canary));
    let mut cmd = serin_run(&file, dir);
    cmd.args(run_flags);
    let run = Proc::spawn(cmd, true);
    common::serin::wait_for_port(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let _load = load(&format!("http://127.0.0.1:{port}/"), 200, "30s");
    let output = run.wait_output(Duration::from_secs(60));
    Outcome {
        code: output.status.code(),
        out: text(&output),
        stdout: output.stdout,
    }
}

#[test]
fn a_healthy_canary_is_promoted() {
    let o = run_with_load("healthy", &[]);
    assert_eq!(o.code, Some(0), "{}", o.out);
    assert!(o.out.contains("promoted"), "{}", o.out);
    // A promotion on its way to the proxy is not news, and the canary's
    // 0 % after it (it is the stable) is not a weight it was promoted at.
    assert!(!o.out.contains("not applied yet"), "{}", o.out);
    assert!(!o.out.contains("weight 0 % promoted"), "{}", o.out);
}

#[test]
fn a_canary_with_30_percent_errors_is_rolled_back_on_its_error_rate() {
    // With `-o json`: one document on stdout with the outcome and the
    // report's path; the decisions still go to stderr.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("errors.html");
    let report_arg = report.display().to_string();
    let o = run_with_load_in(
        dir.path(),
        "errors",
        &["--error-rate", "0.3"],
        &["-o", "json", "--report", &report_arg],
    );
    assert_eq!(o.code, Some(3), "{}", o.out);
    assert!(o.out.contains("rolled back"), "{}", o.out);
    assert!(
        o.out.contains("error rate"),
        "the reason names the error rate: {}",
        o.out
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("one JSON document on stdout: {e}: {}", o.out));
    assert_eq!(doc["outcome"]["kind"], "analysis", "{doc:#}");
    assert_eq!(doc["run"], 1, "{doc:#}");
    assert_eq!(doc["exit"], 3, "{doc:#}");
    assert_eq!(doc["report"], report_arg.as_str(), "{doc:#}");
    assert!(report.exists(), "the report was written");
    assert!(
        doc["reason"].as_str().unwrap_or("").contains("error rate"),
        "{doc:#}"
    );
    assert_eq!(doc["status"]["phase"], "RolledBack", "{doc:#}");
    let step = doc["status"]["step"].as_u64().unwrap_or(0);
    assert!(step >= 1, "steps count from 1: {doc:#}");
    // The finished run's own figures, from its intervals (they were null).
    let metrics = &doc["status"]["metrics"];
    assert!(
        metrics["window"]
            .as_str()
            .is_some_and(|w| w.starts_with("this run")),
        "{doc:#}"
    );
    assert!(
        metrics["canary"]["errors"].as_u64().unwrap_or(0) > 0,
        "{doc:#}"
    );
}

#[test]
fn a_slow_canary_is_rolled_back_on_latency() {
    let o = run_with_load("slow", &["--latency-ms", "400"]);
    assert_eq!(o.code, Some(3), "{}", o.out);
    assert!(
        o.out.to_lowercase().contains("p95") || o.out.contains("latency"),
        "{}",
        o.out
    );
}

/// A canary that gets no traffic at all is never judged; with a progress
/// deadline its pause does not wait for ever: rolled back, exit 3, the
/// reason names the deadline.
#[test]
fn a_step_that_never_gets_enough_requests_rolls_back_at_the_progress_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let yaml = Rollout::new("idle", local(port), stable, canary)
        .steps("  - setWeight: 20\n  - pause: { duration: 1s }\n")
        .rest("progressDeadline: 2s\n")
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let output =
        Proc::spawn(serin_run(&file, dir.path()), true).wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(
        out.contains("no progress within the progress deadline (2s)"),
        "{out}"
    );
}

/// Every kind of bad rollout file: exit 2, the file's name with the line of
/// the problem and what was expected, and no state created.
#[test]
fn bad_rollout_files_are_refused_with_their_location_and_change_nothing() {
    let good = rollout(
        "bad",
        free_port(),
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let empty_steps = {
        let a = good.find("steps:").unwrap();
        let b = good.find("analysis:").unwrap();
        format!("{}steps: []\n{}", &good[..a], &good[b..])
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace("  - setWeight: 20", "  - setWeight: 150"),
            ":12:",
            "0 to 100",
        ),
        (
            good.replace("  listen:", "  lissen: x\n  listen:"),
            ":10:",
            "unknown field `lissen`",
        ),
        (
            good.replace("interval: 500ms", "interval: often"),
            ":19:",
            "duration",
        ),
        (
            good.replace("max: 5%", "max: 0.05"),
            ":21:",
            "percentage like 5%",
        ),
        (empty_steps, ":11:", "at least one step"),
        (
            good.replace("minRequests: 20", "minRequests: many"),
            ":20:",
            "many",
        ),
        (
            good.replace("upstream: http://127.0.0.1:1", "upstream: ftp://x"),
            ":4:",
            "stable.upstream",
        ),
        (
            good.replace("name: bad", "name: Bad_Name"),
            ":1:",
            "a-z, 0-9",
        ),
        ("name: [unclosed\n".to_string(), ":", ""),
    ];
    for (i, (yaml, line, expected)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "bad.yaml", yaml);
        let state = dir.path().join("state");
        let o = serin_run(&file, dir.path()).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "case {i}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("bad.yaml{line}")),
            "case {i}: names the file and line {line}: {err}"
        );
        assert!(err.contains(expected), "case {i}: says `{expected}`: {err}");
        assert!(!state.exists(), "case {i}: nothing was created");
    }
}

/// A listen address another program holds is the machine's state, not the
/// file's fault: exit 1 (runtime failure, not 2 "invalid input"), with a
/// message naming the address and the cause.
#[test]
fn a_listen_port_in_use_is_exit_1_naming_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let file = write(
        dir.path(),
        "rollout.yaml",
        &Rollout::new("taken", addr, local(free_port()), local(free_port())).yaml(),
    );
    let o = Proc::spawn(serin_run(&file, dir.path()), true).wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("traffic.listen {addr}")) && err.contains("in use"),
        "names the address and why: {err}"
    );
    // A run that never started leaves nothing behind ("run 1 in progress"
    // before): its store has no such rollout.
    let state = dir.path().join("state").display().to_string();
    let o = Proc::spawn(
        {
            let mut c = serin();
            c.args(["history", "taken", "--state-dir", &state]);
            c
        },
        true,
    )
    .wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no rollout named taken"), "{}", text(&o));
    // The daemon's own --listen likewise: exit 1, not "invalid input".
    let mut serve = serin();
    serve.args([
        "serve",
        "--listen",
        &addr.to_string(),
        "--state-dir",
        &dir.path().join("daemon").display().to_string(),
    ]);
    let o = Proc::spawn(serve, true).wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("--listen {addr}")) && err.contains("address already in use"),
        "names the address and why: {err}"
    );
}

/// The phase in the state database, read beside whoever holds it.
fn stored_phase(db: &rusqlite::Connection, name: &str) -> Option<String> {
    db.query_row("SELECT phase FROM rollouts WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .ok()
}

/// A backup tool (or an sqlite3 shell) holds the state database while the
/// canary starts failing: the controller survives, takes all traffic off
/// the canary at once, and writes the rollback once the database answers.
#[test]
fn a_locked_state_database_does_not_keep_a_failing_canary_in_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let yaml = Rollout::new("locked", local(port), stable, canary)
        .steps("  - setWeight: 30\n  - pause: { duration: 10m }\n")
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = Proc::spawn(serin_run(&file, dir.path()), true);
    common::serin::wait_for_port(proxy);
    let _load = load(&format!("http://{proxy}/"), 100, "60s");
    let db = rusqlite::Connection::open(dir.path().join("state/serin.db")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored_phase(&db, "locked").as_deref() != Some("Progressing") {
        assert!(std::time::Instant::now() < deadline, "the rollout started");
        std::thread::sleep(Duration::from_millis(50));
    }
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let faults = common::http::http(
        canary,
        "POST",
        "/faults",
        &[("Content-Type", "application/json")],
        r#"{"errorRate":1.0}"#,
    );
    assert_eq!(faults.status, 200);
    // 60 answers in a row from stable: at 30 % on the canary that happens
    // by chance once in 2 billion tries.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut from_stable = 0;
    while from_stable < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the failing canary kept its traffic while the database was locked"
        );
        match common::prometheus::get(proxy, "/") {
            Some((200, body)) if body.contains("v1") => from_stable += 1,
            _ => from_stable = 0,
        }
    }
    assert_eq!(
        stored_phase(&db, "locked").as_deref(),
        Some("Progressing"),
        "not written while the database is held"
    );
    db.execute_batch("COMMIT").unwrap();
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(stored_phase(&db, "locked").as_deref(), Some("RolledBack"));
}

/// One run, three views, each saying its window: `serin status` ("this
/// run"), the API's /metrics (since the proxy started: under `serin run`,
/// the run's start) and the report (the run's sampled intervals). Where the
/// windows are the same, so are the numbers.
#[test]
fn status_metrics_and_report_say_their_windows_and_agree_on_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let proxy = local(port);
    let yaml = Rollout::new("windows", proxy, stable, canary)
        .steps("  - setWeight: 50\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let _run = Proc::spawn(serin_run(&file, dir.path()), false);
    common::serin::wait_for_port(proxy);
    let state = dir.path().join("state");
    let json = |args: &[&str]| -> serde_json::Value {
        let o = serin()
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .args(["-o", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    };
    for i in 0..200 {
        assert_eq!(common::http::get(proxy, &format!("/w/{i}")).status, 200);
    }
    let total = |m: &serde_json::Value| {
        m["stable"]["requests"].as_u64().unwrap_or(0)
            + m["canary"]["requests"].as_u64().unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = json(&["status", "windows"]);
        if total(&s["metrics"]) >= 200 {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "{s:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["metrics"]["window"], "this run", "{status:#}");
    // /metrics of serin run's API: since the proxy started, which is this run's start.
    let api: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("api.json")).unwrap()).unwrap();
    let api: std::net::SocketAddr = api["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let page = common::http::get(api, "/metrics").body;
    assert!(
        page.contains("# HELP serin_requests_total Requests answered since the proxy started"),
        "{page}"
    );
    for version in ["stable", "canary"] {
        let prefix = format!("serin_requests_total{{rollout=\"windows\",version=\"{version}\",");
        let counted: u64 = page
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(
            Some(counted),
            status["metrics"][version]["requests"].as_u64(),
            "{version}: /metrics and status count the same window\n{page}\n{status:#}"
        );
    }
    // The report's totals: the run's sampled intervals, and it says so.
    let report = json(&["report", "windows"]);
    let window = report["summary"]["window"].as_str().unwrap_or_default();
    assert!(
        window.starts_with("this run's ") && window.contains("sampled interval"),
        "{report:#}"
    );
    // It starts where the run started, not at the end of its first interval.
    let started = report["started"].as_str().unwrap_or("(no start)");
    let sampled = report["samples"].as_array().map_or(0, Vec::len);
    assert!(
        sampled == 0 || window.contains(&format!("from {started} to ")),
        "{report:#}"
    );
    assert!(
        total(&report["summary"]) <= total(&status["metrics"]),
        "{report:#}"
    );
}

/// `serin run` writes its own token beside its address; a SERIN_TOKEN
/// exported for a `serin serve` elsewhere does not replace it (it was sent
/// and refused, 401), while a `--token` flag still wins.
#[test]
fn an_exported_serin_token_does_not_replace_serin_runs_own() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let yaml = Rollout::new("owntoken", proxy, stable, canary)
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = Proc::spawn(serin_run(&file, dir.path()), false);
    common::serin::wait_for_port(proxy);
    let state = dir.path().join("state");
    let cmd = |args: &[&str]| {
        serin()
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .env("SERIN_TOKEN", "the-serve-daemons-token")
            .output()
            .unwrap()
    };
    let o = cmd(&["pause", "owntoken", "--token", "a-wrong-token"]);
    assert_eq!(o.status.code(), Some(1), "the flag is sent: {}", text(&o));
    assert!(
        text(&o).contains("401") && text(&o).contains("this serin run's own token"),
        "{}",
        text(&o)
    );
    // Promoted once the run has started (before its health checks pass it
    // is refused: nothing to promote yet).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !text(&cmd(&["status", "owntoken", "-o", "json"])).contains("\"phase\": \"Paused\"") {
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = cmd(&["promote", "owntoken", "--full"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = run.wait_output(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A `serin run` killed and started again carries its run on; its proxy
/// counts from the new start, and status says so instead of "this run".
#[test]
fn a_run_carried_on_says_its_figures_count_from_the_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let yaml = Rollout::new("again", proxy, stable, canary)
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let state = dir.path().join("state");
    let status = || -> serde_json::Value {
        let o = serin()
            .args(["status", "again", "--state-dir"])
            .arg(&state)
            .args(["-o", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    };
    let wait = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = status();
            if ok(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {s:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = Proc::spawn(serin_run(&file, dir.path()), false);
    common::serin::wait_for_port(proxy);
    let s = wait("paused at 20 %", &|s| s["phase"] == "Paused");
    assert_eq!(s["metrics"]["window"], "this run", "{s:#}");
    first.kill();
    let _second = Proc::spawn(serin_run(&file, dir.path()), false);
    let s = wait("carried on, served again", &|s| {
        s["phase"] == "Paused" && s["proxy"].is_string()
    });
    let window = s["metrics"]["window"].as_str().unwrap_or_default();
    assert!(
        window.starts_with("since ") && window.contains("run 1 began earlier"),
        "{s:#}"
    );
}
