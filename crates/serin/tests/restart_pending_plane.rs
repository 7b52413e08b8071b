//! A daemon restarted while its data plane cannot start (an unrelated broken
//! file makes `nginx -t` fail) does not abandon the stored rollout: its
//! status says the stored weight is not in force and why, the daemon keeps
//! trying in the background, and once nginx takes the configuration the
//! stored rollback is in force.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::nginx::{Nginx, free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin, text, wait_for_port, write};
use serde_json::Value;

const TOKEN: &str = "restart-test-token";

/// `GET path` on `addr`: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    common::prometheus::get(addr, path).unwrap_or_else(|| panic!("GET {addr}{path}: no answer"))
}

/// A client command against the daemon at `api`, with the token, bounded.
fn cli(api: &str, args: &[&str]) -> Output {
    let mut child = serin()
        .args(args)
        .env("SERIN_API", api)
        .env("SERIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serin {args:?} did not exit within 40 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Polls `GET /api/v1/rollouts/NAME` until `cond` holds (30 s at most).
fn wait_status(addr: SocketAddr, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get(addr, &format!("/api/v1/rollouts/{name}"));
        assert_eq!(code, 200, "{body}");
        let s: Value = serde_json::from_str(&body).unwrap();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "waited 30 s for {what}: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serin serve` on a free port over `state`, allowed nginx's commands and
/// files: the process and its API address.
fn daemon(nginx: &Nginx, state: &Path) -> (Proc, SocketAddr) {
    let api_addr = local(free_port());
    let mut serve = serin();
    serve
        .args([
            "serve",
            "--listen",
            &api_addr.to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--allow-command",
            &nginx.command(&["-t", "-q"]).join(" "),
            "--allow-command",
            &nginx.command(&["-s", "reload"]).join(" "),
            "--allow-path",
            &nginx.dir.join("conf.d").display().to_string(),
            "--allow-path",
            &nginx.dir.join("logs").display().to_string(),
        ])
        .env("SERIN_TOKEN", TOKEN);
    let proc = Proc::spawn(serve, false);
    wait_for_port(api_addr);
    (proc, api_addr)
}

/// The nginx-provider rollout `name` at 10 %, then `pause: {}`.
fn nginx_rollout(nginx: &Nginx, name: &str, stable: SocketAddr, canary: SocketAddr) -> String {
    let include = nginx.include(&format!("serin-{name}"));
    Rollout::new(name, local(free_port()), stable, canary)
        .traffic(&format!(
            "  provider: nginx
  nginx:
    include: {include}
    test: {test}
    reload: {reload}
    accessLog: {log}
",
            include = include.display(),
            test = nginx.command(&["-t", "-q"]).join(" "),
            reload = nginx.command(&["-s", "reload"]).join(" "),
            log = nginx.dir.join(format!("logs/serin-{name}.json")).display(),
        ))
        .steps("  - setWeight: 10\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml()
}

#[test]
fn a_rollback_nginx_refused_before_a_crash_is_retried_after_the_restart() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let name = "ngx";
    let include = nginx.include(&format!("serin-{name}"));
    let yaml = nginx_rollout(&nginx, name, stable, canary);
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let state = dir.path().join("state");
    let (mut first, api_addr) = daemon(&nginx, &state);
    let api = format!("http://{api_addr}");
    let file = file.display().to_string();
    for args in [vec!["init", file.as_str()], vec!["deploy", name, "v2"]] {
        let o = cli(&api, &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    wait_status(api_addr, name, "10 % in force", |s| {
        s["weightInForce"].as_f64() == Some(10.0) && s["phase"] == "Paused"
    });

    // An unrelated broken file: nginx -t fails, the rollback stays pending.
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "bogus_directive on;\n").unwrap();
    let o = cli(&api, &["rollback", name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    wait_status(api_addr, name, "the pending rollback", |s| {
        s["phase"] == "RolledBack" && s["weightInForce"].as_f64() == Some(10.0)
    });

    // A crash, and a restart while nginx -t still fails.
    first.kill();
    let (_second, api_addr) = daemon(&nginx, &state);
    let api = format!("http://{api_addr}");
    let s = wait_status(api_addr, name, "the restarted daemon's status", |s| {
        s["phase"] == "RolledBack"
    });
    assert_eq!(s["weight"].as_f64(), Some(0.0), "decided: {s:#}");
    assert_eq!(s["weightInForce"], Value::Null, "not known to be 0: {s:#}");
    let first_line = s["notInForce"][0].as_str().unwrap_or("");
    assert!(
        first_line.starts_with("rollback not applied yet: nginx -t")
            && first_line.contains("bogus_directive"),
        "says the rollback is not in force, with nginx -t's complaint: {s:#}"
    );
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("rollback not applied yet: "),
        "{s:#}"
    );
    assert!(
        std::fs::read_to_string(&include)
            .unwrap_or_default()
            .contains("10.00% canary"),
        "nginx still has the canary's 10 %"
    );
    let o = cli(&api, &["status", name]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains("rollback not applied yet: ") && out.contains("in force unknown"),
        "serin status never claims weight 0 in force: {out}"
    );

    // Fixed: the daemon's retry starts the plane with the stored weight.
    std::fs::remove_file(&broken).unwrap();
    let s = wait_status(api_addr, name, "the rollback in force", |s| {
        s["weightInForce"].as_f64() == Some(0.0)
    });
    assert_eq!(s["notInForce"], serde_json::json!([]), "{s:#}");
    assert!(
        !s["reason"].as_str().unwrap_or("").contains("not applied"),
        "{s:#}"
    );
    let conf = std::fs::read_to_string(&include).unwrap_or_default();
    assert!(
        !conf.contains("% canary") && conf.contains("* stable;"),
        "all traffic on stable in nginx: {conf}"
    );
}

/// An operator's rollback is never refused: a rollout whose data plane does
/// not start after a restart (nginx -t failing) is rolled back when asked
/// (it was 503 "not started yet"), and nginx gets weight 0 once it can.
#[test]
fn a_rollback_asked_while_the_plane_does_not_start_is_taken_and_applied_later() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let name = "ngx";
    let include = nginx.include(&format!("serin-{name}"));
    let file = write(
        dir.path(),
        "rollout.yaml",
        &nginx_rollout(&nginx, name, stable, canary),
    );
    let state = dir.path().join("state");
    let (mut first, api_addr) = daemon(&nginx, &state);
    let api = format!("http://{api_addr}");
    let file = file.display().to_string();
    for args in [vec!["init", file.as_str()], vec!["deploy", name, "v2"]] {
        let o = cli(&api, &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    wait_status(api_addr, name, "10 % in force", |s| {
        s["weightInForce"].as_f64() == Some(10.0) && s["phase"] == "Paused"
    });
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "bogus_directive on;\n").unwrap();
    first.kill();
    let (_second, api_addr) = daemon(&nginx, &state);
    let api = format!("http://{api_addr}");
    wait_status(api_addr, name, "the plane not started", |s| {
        !s["notInForce"].as_array().is_none_or(|a| a.is_empty())
    });
    let o = cli(&api, &["rollback", name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    wait_status(api_addr, name, "rolled back, not in force yet", |s| {
        s["phase"] == "RolledBack" && s["weight"].as_f64() == Some(0.0)
    });
    std::fs::remove_file(&broken).unwrap();
    wait_status(api_addr, name, "the rollback in force", |s| {
        s["weightInForce"].as_f64() == Some(0.0) && s["phase"] == "RolledBack"
    });
    let conf = std::fs::read_to_string(&include).unwrap_or_default();
    assert!(
        !conf.contains("% canary"),
        "all traffic on stable in nginx: {conf}"
    );
}
