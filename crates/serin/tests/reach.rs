//! Operators reach every rollout (issue 15 §3): `serin run` serves the
//! daemon's API on a loopback port it writes into its state dir
//! (`DIR/api.json`, with a token of its own), `serin serve` writes its
//! address there too, and the client commands find either through the
//! state dir.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::http::{get, http};
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin, serin_serve, text, wait_for_port, write};

/// A rollout that holds at 20 % until an operator promotes it.
fn held(name: &str, port: u16, stable: SocketAddr, canary: SocketAddr) -> String {
    Rollout::new(name, local(port), stable, canary)
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .yaml()
}

/// Waits (20 s at most) for `DIR/api.json` and returns it parsed.
fn wait_api_file(state: &Path) -> Value {
    let path = state.join("api.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(t) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        assert!(
            Instant::now() < deadline,
            "no {} within 20 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The address in an `api.json`'s url.
fn addr_of(api: &Value) -> SocketAddr {
    let url = api["url"].as_str().expect("url");
    url.strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("url {url}"))
}

/// `serin run FILE --state-dir STATE`, output captured.
fn run(file: &Path, state: &Path) -> Proc {
    let mut cmd = serin();
    cmd.arg("run")
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .env_remove("SERIN_API")
        .env_remove("SERIN_TOKEN")
        .env_remove("SERIN_STATE_DIR");
    Proc::spawn(cmd, true)
}

#[test]
fn serin_run_serves_the_api_on_loopback_with_a_private_token_in_its_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let file = write(dir.path(), "r.yaml", &held("held", port, stable, canary));
    let proc = run(&file, &state);
    let api = wait_api_file(&state);
    assert_eq!(api["command"], "run", "{api}");
    assert_eq!(
        api["pid"].as_u64(),
        Some(u64::from(proc.child.id())),
        "{api}"
    );
    let token = api["token"].as_str().expect("token").to_owned();
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    let mode = std::fs::metadata(state.join("api.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "api.json mode {mode:o}");
    let addr = addr_of(&api);
    assert!(addr.ip().is_loopback(), "{addr}");

    // Reads are open, as on `serin serve`.
    let a = get(addr, "/api/v1/rollouts/held");
    assert_eq!(a.status, 200, "{}", a.body);
    // A mutation needs the token; a web page on another origin is refused
    // whatever it sends.
    let json = ("Content-Type", "application/json");
    let a = http(
        addr,
        "POST",
        "/api/v1/rollouts/held/rollback",
        &[json],
        "{}",
    );
    assert_eq!(a.status, 401, "{}", a.body);
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    let a = http(
        addr,
        "POST",
        "/api/v1/rollouts/held/rollback",
        &[json, auth, ("Origin", "http://evil.example")],
        "{}",
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // What `serin run` does not do is refused with what to do instead.
    let a = http(addr, "DELETE", "/api/v1/rollouts/held", &[auth], "");
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("serin rollback held"), "{}", a.body);
    let a = http(
        addr,
        "POST",
        "/api/v1/rollouts/held/rollback",
        &[json, auth],
        "{}",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    // The operator's rollback ends the run: exit 4, and the file goes;
    // the proxy, the service's address, closes with it, and says so.
    let out = proc.wait_output(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!state.join("api.json").exists(), "api.json left behind");
    assert!(
        text(&out).contains(&format!("127.0.0.1:{port} stops answering now")),
        "{}",
        text(&out)
    );
}

#[test]
fn serin_serve_writes_its_address_but_never_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let listen = local(free_port());
    let mut cmd = serin_serve(listen, &state);
    cmd.env("SERIN_TOKEN", "s3cret-serve-token");
    let mut proc = Proc::spawn(cmd, false);
    let api = wait_api_file(&state);
    assert_eq!(api["url"], format!("http://{listen}"), "{api}");
    assert_eq!(api["command"], "serve", "{api}");
    assert_eq!(
        api["pid"].as_u64(),
        Some(u64::from(proc.child.id())),
        "{api}"
    );
    assert!(api.get("token").is_none(), "{api}");
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("s3cret-serve-token"),
            "the token is in {}",
            path.display()
        );
    }
    wait_for_port(listen);
    // SIGTERM: a clean stop removes the file.
    let _ = std::process::Command::new("kill")
        .arg(proc.child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(proc.child.try_wait(), Ok(Some(_))) {
        assert!(Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!state.join("api.json").exists(), "api.json left behind");
    proc.kill();
}

/// A client command run in `cwd` with no `SERIN_*` in its environment
/// (bounded: 40 s).
fn cli_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = serin();
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("SERIN_API")
        .env_remove("SERIN_TOKEN")
        .env_remove("SERIN_STATE_DIR");
    Proc::spawn(cmd, true).wait_output(Duration::from_secs(40))
}

#[test]
fn a_pause_under_serin_run_is_promoted_from_another_terminal_through_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    write(dir.path(), "r.yaml", &held("held", port, stable, canary));
    // `serin run r.yaml` in a directory: the default state dir `.serin`.
    let mut cmd = serin();
    cmd.current_dir(dir.path())
        .args(["run", "r.yaml"])
        .env_remove("SERIN_API")
        .env_remove("SERIN_TOKEN")
        .env_remove("SERIN_STATE_DIR");
    let proc = Proc::spawn(cmd, true);
    wait_api_file(&dir.path().join(".serin"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli_in(dir.path(), &["status", "held", "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        if s["phase"] == "Paused" {
            break;
        }
        assert!(Instant::now() < deadline, "never paused: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Traffic, so the canary is judged: a plain promote ends the pause and
    // the rollout promotes on a passing verdict.
    let _load = common::serin::load(&format!("http://127.0.0.1:{port}/"), 50, "40s");
    // No --api, no token: both come from .serin/api.json.
    let out = cli_in(dir.path(), &["promote", "held"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = proc.wait_output(Duration::from_secs(40));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("promoted"), "{}", text(&out));
}

#[test]
fn a_state_dir_left_by_a_killed_serin_run_is_told_apart_from_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let file = write(
        dir.path(),
        "r.yaml",
        &held("held", free_port(), stable, canary),
    );
    let mut proc = run(&file, &state);
    let api = wait_api_file(&state);
    proc.kill();
    let state_arg = state.display().to_string();
    let started = Instant::now();
    let out = cli_in(dir.path(), &["promote", "held", "--state-dir", &state_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains(&format!("names pid {}, which no longer runs", api["pid"])),
        "{err}"
    );
    assert!(err.contains("waited 5 s"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(5), "did not wait");
    // Read from the store, its status says nothing runs it now, not what
    // it waited for then (`serin promote`, which nothing can answer).
    let out = cli_in(dir.path(), &["status", "held", "--state-dir", &state_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no serin runs it now"),
        "{}",
        text(&out)
    );
}

/// A serin killed but not yet reaped by its parent still has its pid (a
/// zombie) while nothing listens on its port: a serin that bound its port
/// before writing its address is not starting, so the command says so at
/// once instead of waiting 5 s for it "to start".
#[test]
fn a_killed_serin_not_yet_reaped_is_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let file = write(
        dir.path(),
        "r.yaml",
        &held("zombie", free_port(), stable, canary),
    );
    let mut proc = run(&file, &state);
    let api = wait_api_file(&state);
    // SIGKILL without wait(): the pid stays, a zombie, until Proc drops.
    proc.child.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr_of(&api), Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the killed serin's port still answers"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let state_arg = state.display().to_string();
    let out = cli_in(
        dir.path(),
        &["promote", "zombie", "--state-dir", &state_arg],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains(&format!(
            "names pid {} (`serin run`), which still runs",
            api["pid"]
        )) && err.contains("has not reaped it yet")
            && !err.contains("waited"),
        "{err}"
    );
}

#[test]
fn a_command_started_with_the_daemon_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let file = write(dir.path(), "r.yaml", &held("early", port, stable, canary));
    let state_arg = state.display().to_string();
    // The command first, the daemon after it (`serin serve & serin init`
    // has no order either): before, `init` failed at once.
    let mut init = serin();
    init.current_dir(dir.path())
        .args([
            "init",
            &file.display().to_string(),
            "--state-dir",
            &state_arg,
        ])
        .env_remove("SERIN_API")
        .env_remove("SERIN_TOKEN")
        .env_remove("SERIN_STATE_DIR");
    let init = Proc::spawn(init, true);
    let _serve = Proc::spawn(serin_serve(local(free_port()), &state), false);
    let out = init.wait_output(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // `serin init` again with a changed file: updated, and said what changed.
    let yaml = std::fs::read_to_string(&file).unwrap();
    write(
        dir.path(),
        "r.yaml",
        &yaml.replace("interval: 500ms", "interval: 1s"),
    );
    let out = cli_in(
        dir.path(),
        &[
            "init",
            &file.display().to_string(),
            "--state-dir",
            &state_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("updated (analysis.interval changed)"),
        "{}",
        text(&out)
    );
    // The built-in proxy is the service's address: cleanup says it closes.
    wait_for_port(local(port));
    let out = cli_in(dir.path(), &["cleanup", "early", "--state-dir", &state_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("127.0.0.1:{port} stops answering now")),
        "{}",
        text(&out)
    );
    common::http::wait_until_closed(local(port));

    // Nothing starting: it gives up after a few seconds and says on what.
    let empty = dir.path().join("empty");
    let empty_arg = empty.display().to_string();
    let out = cli_in(dir.path(), &["pause", "early", "--state-dir", &empty_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains(&format!(
            "no serin serves state dir {empty_arg}: waited 5 s"
        )),
        "{err}"
    );
    assert!(err.contains("api.json"), "{err}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = cli_in(dir.path(), &["pause", "early", "--api", &closed]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains(&format!("cannot reach serin at {closed}")) && err.contains("waited 5 s"),
        "{err}"
    );
}

#[test]
fn status_history_and_report_read_the_state_of_a_finished_serin_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let file = write(
        dir.path(),
        "r.yaml",
        &held("done", free_port(), stable, canary),
    );
    let state = dir.path().join("state");
    let proc = run(&file, &state);
    wait_api_file(&state);
    let out = cli_in(
        dir.path(),
        &[
            "rollback",
            "done",
            "--state-dir",
            &state.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = proc.wait_output(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!state.join("api.json").exists());
    let state_arg = state.display().to_string();
    // Nothing serves it now: read from the store, without waiting.
    let started = Instant::now();
    let out = cli_in(
        dir.path(),
        &["status", "done", "--state-dir", &state_arg, "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["name"], "done", "{s}");
    assert_eq!(s["phase"], "RolledBack", "{s}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read from its store"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(4), "it waited");
    let out = cli_in(dir.path(), &["history", "done", "--state-dir", &state_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!out.stdout.is_empty(), "{}", text(&out));
    // SERIN_STATE_DIR names it as well as --state-dir.
    let html = dir.path().join("report.html");
    let mut cmd = serin();
    cmd.current_dir(dir.path())
        .args(["report", "done", "--format", "html", "--out"])
        .arg(&html)
        .env_remove("SERIN_API")
        .env_remove("SERIN_TOKEN")
        .env("SERIN_STATE_DIR", &state);
    let out = Proc::spawn(cmd, true).wait_output(Duration::from_secs(40));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") || page.contains("<html"), "{page}");
    // A name it does not hold is told as the API tells it.
    let out = cli_in(dir.path(), &["status", "nope", "--state-dir", &state_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no rollout named nope"),
        "{}",
        text(&out)
    );
}

/// A `--state-dir` typed on the command line beats an exported SERIN_API
/// (meant for a daemon elsewhere): an outside breaker's `serin rollback d
/// --state-dir s10` rolled back the daemon's `d` and left the `serin run`
/// the flag named at 50 %. Fails before this change (the command went to
/// SERIN_API's address). A `--api` flag still wins.
#[test]
fn a_state_dir_flag_beats_an_exported_serin_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let file = write(
        dir.path(),
        "r.yaml",
        &held("flagged", free_port(), stable, canary),
    );
    let mut proc = run(&file, &state);
    wait_api_file(&state);
    // Nothing listens at the exported address.
    let elsewhere = format!("http://127.0.0.1:{}", free_port());
    let with_env = |args: &[&str]| {
        let mut cmd = serin();
        cmd.args(args)
            .env("SERIN_API", &elsewhere)
            .env_remove("SERIN_TOKEN")
            .env_remove("SERIN_STATE_DIR");
        Proc::spawn(cmd, true).wait_output(Duration::from_secs(40))
    };
    let state_arg = state.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = with_env(&["status", "flagged", "--state-dir", &state_arg, "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        if s["phase"] == "Paused" {
            break;
        }
        assert!(Instant::now() < deadline, "never paused: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = with_env(&["traffic", "flagged", "30", "--state-dir", &state_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = with_env(&["status", "flagged", "--state-dir", &state_arg, "-o", "json"]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["weight"], 30.0, "{s:#}");
    // `--api` typed wins over the state dir.
    let other = format!("http://127.0.0.1:{}", free_port());
    let out = with_env(&[
        "status",
        "flagged",
        "--state-dir",
        &state_arg,
        "--api",
        &other,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // And on the state dir once no serin serves it: read from its store,
    // not sent to SERIN_API (it waited 5 s there and failed).
    proc.kill();
    let out = with_env(&["status", "flagged", "--state-dir", &state_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("read from its store"), "{}", text(&out));
}
