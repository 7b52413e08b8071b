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
    let file = write(
        dir.path(),
        "r.yaml",
        &held("held", free_port(), stable, canary),
    );
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
    // The operator's rollback ends the run: exit 4, and the file goes.
    let out = proc.wait_output(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!state.join("api.json").exists(), "api.json left behind");
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
