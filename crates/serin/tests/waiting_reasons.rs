//! What a waiting rollout says it waits for, as `serin serve`'s status and
//! log say it: the real daemon, real demo apps and load on 127.0.0.1.
//!
//! - a canary that does not answer its health check: its version, URL and
//!   error (before, status said "waiting for health checks" and only the
//!   daemon's log had the cause);
//! - a timed pause: until when, and the time left;
//! - a pause whose stage has too few canary requests: how many are needed
//!   and how many so far;
//! - `serin traffic`: held by an operator, with the command and the time
//!   (UTC), and that analysis continues;
//! - the log says a reason when it changes other than in its numbers, and
//!   again every 30 s, not on every tick.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::daemon::{cli, status, wait_status};
use common::hooks::Hooks;
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin, serin_serve, text, wait_for_port, write};

const TOKEN: &str = "waiting-token";

fn reason(s: &serde_json::Value) -> String {
    s["reason"].as_str().unwrap_or_default().to_string()
}

/// `HH:MM:SS UTC` somewhere in `text`.
fn has_utc_clock(text: &str) -> bool {
    text.as_bytes().windows(12).any(|w| {
        w.iter().enumerate().all(|(i, b)| match i {
            2 | 5 => *b == b':',
            8 => *b == b' ',
            9..=11 => &w[9..12] == b"UTC",
            _ => b.is_ascii_digit(),
        })
    })
}

#[test]
fn a_waiting_rollout_says_what_for_in_status_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    // The canary's address, with nothing listening yet.
    let canary = local(free_port());
    let proxy = local(free_port());
    let api = local(free_port());
    let log_path = dir.path().join("serve.log");
    let mut cmd = serin_serve(api, &dir.path().join("state"));
    cmd.env("SERIN_TOKEN", TOKEN).env("RUST_LOG", "info");
    let log = File::create(&log_path).unwrap();
    let _daemon = Proc {
        child: cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    wait_for_port(api);
    let yaml = Rollout::new("checkout", proxy, stable, canary)
        .steps("  - setWeight: 20\n  - pause: { duration: 3s }\n  - setWeight: 50\n")
        .yaml()
        .replace("minRequests: 20", "minRequests: 100000");
    let file = write(dir.path(), "checkout.yaml", &yaml);
    let ok = |args: &[&str]| {
        let o = cli(api, args, Some(TOKEN));
        assert_eq!(o.status.code(), Some(0), "serin {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["init", &file.display().to_string()]);
    ok(&["deploy", "checkout", "v2"]);

    // The canary does not answer: status names it, its URL and the error.
    let url = format!("http://{canary}/healthz");
    let s = wait_status(api, "checkout", "the health check's reason", |s| {
        reason(s).contains(&url)
    });
    let r = reason(&s);
    assert_eq!(s["phase"], "Initializing", "{s:#}");
    assert!(
        r.contains("canary v2") && r.contains("no answer"),
        "version and error: {r}"
    );

    // It starts: a timed pause says until when, then the time left.
    let _canary = start_demo_app(canary, "v2");
    let _load = load(&format!("http://{proxy}/"), 50, "60s");
    let s = wait_status(api, "checkout", "the pause", |s| {
        reason(s).starts_with("pausing 3s")
    });
    assert!(has_utc_clock(&reason(&s)), "until when: {}", reason(&s));
    wait_status(api, "checkout", "the time left", |s| {
        let r = reason(s);
        r.starts_with("pausing 3s: ") && r.contains(" left (until ")
    });

    // The pause is over, the stage far from minRequests: the count so far.
    let s = wait_status(api, "checkout", "the count of canary requests", |s| {
        reason(s).starts_with("pause complete; waiting for 100000 canary requests (")
    });
    let r = reason(&s);
    let so_far: u64 = r
        .split("canary requests (")
        .nth(1)
        .and_then(|x| x.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number so far: {r}"));
    assert!(so_far < 100_000, "{r}");

    // The log said it, but not on every interval (500 ms) nor tick (100 ms).
    std::thread::sleep(Duration::from_secs(4));
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let told = logged
        .lines()
        .filter(|l| l.contains("waiting: pause complete; waiting for 100000 canary requests"))
        .count();
    assert!(
        (1..=2).contains(&told),
        "told once (again only after 30 s), not every interval: {told} lines\n{logged}"
    );
    assert!(
        logged.contains("WARN") && logged.contains(&url),
        "the health check's failure is a warning with its URL:\n{logged}"
    );
    let health_lines = logged.lines().filter(|l| l.contains(&url)).count();
    assert!(
        health_lines <= 3,
        "the failing health check is told when it changes, not every second: {health_lines}\n{logged}"
    );

    // An operator sets the weight: held, by whom, when; analysis goes on.
    let said = ok(&["traffic", "checkout", "30"]);
    let first = said.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("canary weight of checkout set to 30 %; automation held")
            && first.contains("analysis continues, and a failing verdict still rolls back"),
        "serin traffic says what still runs: {said}"
    );
    let s = status(api, "checkout");
    let r = reason(&s);
    assert!(
        r.starts_with("held by an operator (serin traffic 30 at ") && has_utc_clock(&r),
        "{r}"
    );
    assert!(r.contains("a failing verdict still rolls back"), "{r}");
}

/// `serin demo-app` on a given address.
fn start_demo_app(addr: SocketAddr, version: &str) -> Proc {
    let mut cmd = serin();
    cmd.args([
        "demo-app",
        "--listen",
        &addr.to_string(),
        "--version",
        version,
    ]);
    let p = Proc::spawn(cmd, false);
    wait_for_port(addr);
    p
}

#[test]
fn a_hook_or_gate_that_says_no_is_named_with_its_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    // A pre-rollout check, then a gate, that answer 503.
    let hooks = Hooks::start();
    hooks.set_status("/pre", 503);
    hooks.set_status("/approve", 503);
    let proxy = local(free_port());
    let api = local(free_port());
    let mut cmd = serin_serve(api, &dir.path().join("state"));
    cmd.env("SERIN_TOKEN", TOKEN);
    let _daemon = Proc::spawn(cmd, false);
    wait_for_port(api);
    let gate_url = hooks.url("/approve");
    let yaml = Rollout::new("gated", proxy, stable, canary)
        .steps(&format!(
            "  - setWeight: 20\n  - pause: {{ until: webhook, url: {gate_url} }}\n  - setWeight: 100\n"
        ))
        .rest(&format!("preRollout:\n  url: {}\n", hooks.url("/pre")))
        .yaml();
    let file = write(dir.path(), "gated.yaml", &yaml);
    for args in [
        vec!["init", file.to_str().unwrap()],
        vec!["deploy", "gated", "v2"],
    ] {
        let o = cli(api, &args, Some(TOKEN));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let _load = load(&format!("http://{proxy}/"), 50, "30s");
    let s = wait_status(api, "gated", "the pre-rollout check's answer", |s| {
        reason(s).contains("pre-rollout check")
    });
    assert_eq!(
        reason(&s),
        format!(
            "waiting for the pre-rollout check {}: it answered 503 Service Unavailable",
            hooks.url("/pre")
        )
    );
    hooks.set_status("/pre", 200);
    let s = wait_status(api, "gated", "the gate's last answer", |s| {
        reason(s).contains("its last answer")
    });
    let r = reason(&s);
    assert!(
        r.starts_with(&format!(
            "waiting for gate {gate_url} to answer 2xx; its last answer ("
        )) && r.ends_with("): 503 Service Unavailable")
            && has_utc_clock(&r),
        "{r}"
    );
}

/// `serin run` into a log (not a terminal): a waiting line when what it
/// waits for changes other than in its numbers, not on every interval.
#[test]
fn serin_run_logs_what_it_waits_for_once_not_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let yaml = Rollout::new("slow", proxy, stable, canary)
        .steps("  - setWeight: 20\n  - pause: { duration: 1s }\n  - setWeight: 50\n")
        .yaml()
        .replace("minRequests: 20", "minRequests: 100000");
    let file = write(dir.path(), "slow.yaml", &yaml);
    let mut cmd = common::serin::serin_run(&file, dir.path());
    let log_path = dir.path().join("run.log");
    let log = File::create(&log_path).unwrap();
    let mut run = Proc {
        child: cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    wait_for_port(proxy);
    let _load = load(&format!("http://{proxy}/"), 50, "30s");
    // 1 s of pause, then 5 s (ten intervals) waiting for the requests.
    let waited = std::time::Instant::now();
    let waiting = "waiting: pause complete; waiting for 100000 canary requests (";
    loop {
        let logged = std::fs::read_to_string(&log_path).unwrap();
        if logged.contains(waiting) && waited.elapsed() > Duration::from_secs(6) {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no waiting line:\n{logged}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run.kill();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let lines = logged.lines().filter(|l| l.contains(waiting)).count();
    assert_eq!(lines, 1, "said once in 5 s, not every interval:\n{logged}");
}
