//! Runs under `serin serve`, end to end: every deploy is a run of its own
//! (numbered per rollout name), ended with a typed outcome that says who or
//! what ended it (the CLI, the dashboard, `serin monitor --auto-rollback`
//! with its threshold and value); registration and deploy are in the
//! history with who did them; `serin history` and `serin report` show one
//! run at a time; `serin cleanup` keeps the runs and `--purge` deletes them.

mod common;

use std::net::SocketAddr;
use std::process::Output;

use common::daemon::{cli, wait_status};
use common::http::{get, http};
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin_serve, text, wait_for_port, write};
use serde_json::{Value, json};

fn ok(api: SocketAddr, args: &[&str]) -> Output {
    let o = cli(api, args, None);
    assert_eq!(o.status.code(), Some(0), "serin {args:?}: {}", text(&o));
    o
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {}", text(o)))
}

/// Deploys v2 and waits until its `pause: {}` holds it at 10 %.
fn deploy_and_hold(api: SocketAddr, run: u64) {
    ok(api, &["deploy", "checkout", "v2"]);
    wait_status(api, "checkout", &format!("run {run} held at 10 %"), |s| {
        s["phase"] == "Paused" && s["weight"] == 10.0 && s["run"] == run
    });
}

#[test]
fn every_deploy_is_a_run_with_a_typed_outcome_kept_after_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());
    let _daemon = Proc::spawn(serin_serve(api, &dir.path().join("state")), false);
    wait_for_port(api);
    let steps = "  - setWeight: 10\n  - pause: {}\n";
    let file = write(
        dir.path(),
        "checkout.yaml",
        &Rollout::new("checkout", proxy, stable, canary)
            .steps(steps)
            .no_data_limit(50)
            .yaml(),
    );
    ok(api, &["init", &file.display().to_string()]);
    wait_for_port(proxy);
    // Before any run: figures since the proxy started.
    for i in 0..60 {
        assert_eq!(get(proxy, &format!("/before/{i}")).status, 200);
    }
    let requests = |s: &Value| s["metrics"]["stable"]["requests"].as_u64().unwrap_or(0);
    let s = json_of(&ok(api, &["status", "checkout", "-o", "json"]));
    assert!(requests(&s) >= 60, "{s:#}");
    // A run's figures start from zero.
    let s = json_of(&ok(api, &["deploy", "checkout", "v2", "-o", "json"]));
    assert_eq!(s["run"], 1, "{s:#}");
    let s = json_of(&ok(api, &["status", "checkout", "-o", "json"]));
    assert!(requests(&s) < 60, "the run counts from its deploy: {s:#}");
    let _load = load(&format!("http://{proxy}/load"), 40, "120s");

    // Run 1: rolled back from the CLI.
    wait_status(api, "checkout", "run 1 held at 10 %", |s| {
        s["phase"] == "Paused" && s["weight"] == 10.0
    });
    ok(api, &["rollback", "checkout"]);
    let s = json_of(&ok(api, &["status", "checkout", "-o", "json"]));
    assert_eq!(
        s["outcome"],
        json!({"kind": "operator", "by": "cli"}),
        "{s:#}"
    );

    // Run 2: rolled back from the dashboard (as its page sends it).
    deploy_and_hold(api, 2);
    let a = http(
        api,
        "POST",
        "/api/v1/rollouts/checkout/rollback",
        &[
            ("content-type", "application/json"),
            ("x-serin-actor", "dashboard"),
        ],
        "{}",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let s: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        s["outcome"],
        json!({"kind": "operator", "by": "dashboard"}),
        "{s:#}"
    );

    // Run 3: rolled back by `serin monitor --auto-rollback`, with the
    // threshold it used and the value it saw.
    deploy_and_hold(api, 3);
    let o = cli(
        api,
        &[
            "monitor",
            "checkout",
            "--auto-rollback",
            "--latency-threshold",
            "0.001",
            "--duration",
            "30s",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let s = json_of(&ok(api, &["status", "checkout", "-o", "json"]));
    let outcome = &s["outcome"];
    assert_eq!(outcome["kind"], "monitor", "{s:#}");
    assert_eq!(outcome["breach"]["metric"], "p95", "{s:#}");
    assert_eq!(outcome["breach"]["threshold"], 0.001, "{s:#}");
    assert!(
        outcome["breach"]["value"].as_f64().unwrap() > 0.001,
        "{s:#}"
    );
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("rolled back by serin monitor --auto-rollback"),
        "{s:#}"
    );

    // Watching the ended run again: its numbers are shown, never an alert.
    let o = cli(
        api,
        &[
            "monitor",
            "checkout",
            "--alert-on-error",
            "--latency-threshold",
            "0.001",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("run 3 (ended: rolled back by serin monitor")
            && !text(&o).contains("ALERT"),
        "{}",
        text(&o)
    );

    // The history: three runs, oldest first, each with its own decisions,
    // the first of which is its deploy (with who); the registration apart.
    let h = json_of(&ok(api, &["history", "checkout", "-o", "json"]));
    let runs = h["runs"].as_array().unwrap();
    let numbers: Vec<_> = runs.iter().map(|r| r["run"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3], "{h:#}");
    let kinds: Vec<_> = runs
        .iter()
        .map(|r| r["outcome"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["operator", "operator", "monitor"], "{h:#}");
    for r in runs {
        let events = r["events"].as_array().unwrap();
        assert_eq!(events[0]["kind"], "deployed", "{r:#}");
        assert!(
            events[0]["reason"].as_str().unwrap().contains("by the CLI"),
            "{r:#}"
        );
        assert!(events.iter().all(|e| e["run"] == r["run"]), "{r:#}");
        assert!(
            r["ended"].is_string() && r["canaryVersion"] == "v2",
            "{r:#}"
        );
    }
    let registered = &h["registrations"][0];
    assert_eq!(registered["kind"], "registered", "{h:#}");
    assert!(
        registered["reason"]
            .as_str()
            .unwrap()
            .contains("by the CLI"),
        "{h:#}"
    );
    let out = String::from_utf8_lossy(&ok(api, &["history", "checkout"]).stdout).to_string();
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("`{s}` in: {out}"));
    assert!(
        at("registered by the CLI") < at("\nrun 1  v1 → v2"),
        "{out}"
    );
    assert!(at("\nrun 1  v1 → v2") < at("\nrun 2  v1 → v2"), "{out}");
    assert!(at("\nrun 2  v1 → v2") < at("\nrun 3  v1 → v2"), "{out}");
    assert!(
        out.contains("rolled back by an operator (the dashboard)"),
        "{out}"
    );
    let one = json_of(&ok(
        api,
        &["history", "checkout", "--run", "2", "-o", "json"],
    ));
    assert_eq!(one["runs"].as_array().unwrap().len(), 1, "{one:#}");
    assert_eq!(one["runs"][0]["run"], 2, "{one:#}");
    assert_eq!(one["runsTotal"], 3, "{one:#}");
    let second = String::from_utf8_lossy(&ok(api, &["history", "checkout", "--run", "2"]).stdout)
        .to_string();
    assert!(second.starts_with("checkout: run 2 of 3"), "{second}");

    // A report covers one run: the last by default, any with --run.
    let last = json_of(&ok(api, &["report", "checkout"]));
    assert_eq!(
        (last["run"].as_u64(), last["outcome"]["kind"].as_str()),
        (Some(3), Some("monitor"))
    );
    let first = json_of(&ok(api, &["report", "checkout", "--run", "1"]));
    assert_eq!(first["run"], 1);
    assert_eq!(first["outcome"], json!({"kind": "operator", "by": "cli"}));
    assert!(
        first["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["run"] == 1),
        "{first:#}"
    );
    // A run number that does not read is the API's JSON 400, naming it.
    for bad in ["abc", "-1", "", "1.5"] {
        let a = http(
            api,
            "GET",
            &format!("/api/v1/rollouts/checkout/history?run={bad}"),
            &[],
            "",
        );
        assert_eq!(a.status, 400, "?run={bad}: {}", a.body);
        let e: Value = serde_json::from_str(&a.body)
            .unwrap_or_else(|e| panic!("?run={bad}: not JSON ({e}): {}", a.body));
        assert!(
            e["error"]
                .as_str()
                .unwrap_or("")
                .contains("`run` is a run number"),
            "{e}"
        );
    }
    let o = cli(api, &["report", "checkout", "--run", "9"], None);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o).contains("no run 9") && text(&o).contains("1 to 3"),
        "{}",
        text(&o)
    );

    // cleanup unregisters and keeps the runs: history and reports still read.
    let o = ok(api, &["cleanup", "checkout"]);
    assert!(text(&o).contains("runs are kept"), "{}", text(&o));
    let after = json_of(&ok(api, &["history", "checkout", "-o", "json"]));
    assert_eq!(after["registered"], false, "{after:#}");
    assert_eq!(after["runs"].as_array().unwrap().len(), 3, "{after:#}");
    let kept = json_of(&ok(api, &["report", "checkout", "--run", "2"]));
    assert_eq!(
        kept["outcome"],
        json!({"kind": "operator", "by": "dashboard"})
    );
    // --purge deletes them, and says so.
    let o = ok(api, &["cleanup", "checkout", "--purge"]);
    assert!(text(&o).contains("purged: its 3 run(s)"), "{}", text(&o));
    let o = cli(api, &["history", "checkout"], None);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("no rollout named checkout"),
        "{}",
        text(&o)
    );
}

/// `serin run` stopped by SIGTERM: exit 4 because the outcome is
/// `interrupted` (not because a reason reads "manual"), and the run's final
/// JSON document and report say which signal.
#[test]
fn serin_run_interrupted_by_a_signal_says_so_in_its_outcome() {
    interrupted_by("SIGTERM");
}

/// A closed terminal (SIGHUP) stops `serin run` as Ctrl-C does: rolled
/// back, exit 4, the outcome saying so (it died with the rollout in
/// progress before).
#[test]
fn serin_run_whose_terminal_closes_rolls_back_and_says_so() {
    interrupted_by("SIGHUP");
}

fn interrupted_by(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let file = write(
        dir.path(),
        "checkout.yaml",
        &Rollout::new("checkout", proxy, stable, canary)
            .steps("  - setWeight: 50\n  - pause: {}\n")
            .no_data_limit(50)
            .yaml(),
    );
    let report = dir.path().join("report.html");
    let mut cmd = common::serin::serin_run(&file, dir.path());
    cmd.args(["--report", &report.display().to_string(), "-o", "json"]);
    let run = Proc::spawn(cmd, true);
    wait_for_port(proxy);
    // The canary serves: the run is under way.
    let mut i = 0;
    while get(proxy, &format!("/wait/{i}"))
        .headers
        .get("x-serin-version")
        != Some(&"v2".into())
    {
        i += 1;
        assert!(i < 2000, "the canary never answered");
    }
    // Its dashboard's action without the token says where this run's
    // token is and where to paste it (user L3: it spoke of `--state-dir`).
    let published = dir.path().join("state/api.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let api = loop {
        let read = std::fs::read_to_string(&published).ok();
        if let Some(api) = read
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| {
                v["url"]
                    .as_str()?
                    .trim_start_matches("http://")
                    .parse::<SocketAddr>()
                    .ok()
            })
        {
            break api;
        }
        assert!(std::time::Instant::now() < deadline, "no api.json");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let refused = http(
        api,
        "POST",
        "/api/v1/rollouts/checkout/pause",
        &[
            ("content-type", "application/json"),
            ("x-serin-actor", "dashboard"),
        ],
        "{}",
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("this action needs a token")
            && refused.body.contains("api.json")
            && refused.body.contains("into the token field")
            && !refused.body.contains("--state-dir"),
        "{}",
        refused.body
    );
    let pid = run.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{}", &signal[3..]), &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = run.wait_output(std::time::Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let start = out.rfind("\n{").map_or(0, |i| i + 1);
    let last: Value = serde_json::from_str(&out[start..])
        .unwrap_or_else(|e| panic!("the final document: {e}: {out}"));
    assert_eq!(
        last["outcome"],
        json!({"kind": "interrupted", "signal": signal}),
        "{last:#}"
    );
    assert_eq!(last["run"], 1, "{last:#}");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains(&format!("serin run interrupted ({signal})")),
        "the report says it"
    );
}

/// `serin cleanup` of a run in progress ends it in its history too: a
/// rolled-back decision saying the cleanup did it, and who.
#[test]
fn a_cleanup_of_a_run_in_progress_is_its_last_decision_with_who() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());
    let _daemon = Proc::spawn(serin_serve(api, &dir.path().join("state")), false);
    wait_for_port(api);
    let file = write(
        dir.path(),
        "checkout.yaml",
        &Rollout::new("checkout", proxy, stable, canary)
            .steps("  - setWeight: 10\n  - pause: {}\n")
            .no_data_limit(1000)
            .yaml(),
    );
    ok(api, &["init", &file.display().to_string()]);
    deploy_and_hold(api, 1);
    ok(api, &["cleanup", "checkout"]);
    let history = json_of(&ok(api, &["history", "checkout", "-o", "json"]));
    let run = &history["runs"][0];
    assert_eq!(
        run["outcome"],
        json!({"kind": "operator", "by": "cli"}),
        "{history:#}"
    );
    let last = run["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["kind"], "rolled-back", "{history:#}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("ended by serin cleanup"),
        "{history:#}"
    );
}

/// A dashboard action the daemon's token refuses says so in the
/// dashboard's words (user L3): with no token, that one is needed; with a
/// wrong one, that the token typed was rejected; both say where the token
/// is and to paste it into the token field (not `--state-dir` or
/// `SERIN_TOKEN` as for the CLI). Nothing changes.
#[test]
fn a_dashboard_action_without_the_token_says_what_to_paste_where() {
    const TOKEN: &str = "s3cret-dashboard-token";
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());
    let mut serve = serin_serve(api, &dir.path().join("state"));
    serve.env("SERIN_TOKEN", TOKEN);
    let _daemon = Proc::spawn(serve, false);
    wait_for_port(api);
    let file = write(
        dir.path(),
        "checkout.yaml",
        &Rollout::new("checkout", proxy, stable, canary)
            .steps("  - setWeight: 10\n  - pause: {}\n")
            .no_data_limit(1000)
            .yaml(),
    );
    let o = cli(api, &["init", &file.display().to_string()], Some(TOKEN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = cli(api, &["deploy", "checkout", "v2"], Some(TOKEN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    wait_status(api, "checkout", "run 1 held at 10 %", |s| {
        s["phase"] == "Paused" && s["weight"] == 10.0
    });
    let rollback = |auth: Option<&str>| {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-serin-actor", "dashboard"),
        ];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        http(
            api,
            "POST",
            "/api/v1/rollouts/checkout/rollback",
            &headers,
            "{}",
        )
    };
    let none = rollback(None);
    assert_eq!(none.status, 401, "{}", none.body);
    let e: Value = serde_json::from_str(&none.body).unwrap();
    let e = e["error"].as_str().unwrap_or_default();
    assert!(e.starts_with("this action needs a token"), "{e}");
    assert!(e.contains("into the token field"), "{e}");
    assert!(e.contains("--token"), "where the daemon's token is: {e}");
    assert!(!e.contains("Authorization: Bearer"), "{e}");
    let wrong = rollback(Some("not-the-token"));
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let e: Value = serde_json::from_str(&wrong.body).unwrap();
    let e = e["error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with("the token in the token field was rejected"),
        "{e}"
    );
    assert!(e.contains("into the token field"), "{e}");
    // The CLI's wording stays the CLI's.
    let o = cli(api, &["rollback", "checkout"], Some("not-the-token"));
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("SERIN_TOKEN"), "{}", text(&o));
    // Nothing changed.
    let s = get(api, "/api/v1/rollouts/checkout");
    let s: Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(s["phase"], "Paused", "{s:#}");
    // The right token acts.
    let right = rollback(Some(TOKEN));
    assert_eq!(right.status, 200, "{}", right.body);
}
