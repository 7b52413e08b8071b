//! A daemon restarted while its data plane cannot start (an unrelated broken
//! file makes `nginx -t` fail) does not abandon the stored rollout: its
//! status says the stored weight is not in force and why, the daemon keeps
//! trying in the background, and once nginx takes the configuration the
//! stored rollback is in force.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::daemon::{cli, serve_nginx, wait_status};
use common::nginx::{Nginx, free_port};
use common::serin::{Proc, demo_app, text, write};
use serde_json::Value;

const TOKEN: &str = "restart-test-token";

/// The rollout every test here runs.
const NAME: &str = "ngx";

/// The versions' apps and a daemon over `dir/state` running the
/// nginx-provider rollout [`NAME`] (10 %, then `pause: {}`), deployed and
/// 10 % in force: the apps, the daemon and its API address.
fn deployed(nginx: &Nginx, dir: &Path) -> ([Proc; 2], Proc, SocketAddr) {
    let (stable_app, stable) = demo_app("v1", &[]);
    let (canary_app, canary) = demo_app("v2", &[]);
    let yaml = nginx
        .rollout(NAME, free_port(), stable, canary, &nginx.test_command())
        .steps("  - setWeight: 10\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir, "rollout.yaml", &yaml).display().to_string();
    let (daemon, api) = serve_nginx(nginx, &dir.join("state"), TOKEN);
    for args in [vec!["init", file.as_str()], vec!["deploy", NAME, "v2"]] {
        let o = cli(api, &args, Some(TOKEN));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    wait_status(api, NAME, "10 % in force", |s| {
        s["weightInForce"].as_f64() == Some(10.0) && s["phase"] == "Paused"
    });
    ([stable_app, canary_app], daemon, api)
}

#[test]
fn a_rollback_nginx_refused_before_a_crash_is_retried_after_the_restart() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_apps, mut first, api_addr) = deployed(&nginx, dir.path());
    let name = NAME;
    let include = nginx.include(&format!("serin-{name}"));

    // An unrelated broken file: nginx -t fails, the rollback stays pending.
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "bogus_directive on;\n").unwrap();
    let o = cli(api_addr, &["rollback", name], Some(TOKEN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    wait_status(api_addr, name, "the pending rollback", |s| {
        s["phase"] == "RolledBack" && s["weightInForce"].as_f64() == Some(10.0)
    });

    // A crash, and a restart while nginx -t still fails.
    first.kill();
    let (_second, api_addr) = serve_nginx(&nginx, &state, TOKEN);
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
    let o = cli(api_addr, &["status", name], Some(TOKEN));
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
    let state = dir.path().join("state");
    let (_apps, mut first, _) = deployed(&nginx, dir.path());
    let name = NAME;
    let include = nginx.include(&format!("serin-{name}"));
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "bogus_directive on;\n").unwrap();
    first.kill();
    let (_second, api_addr) = serve_nginx(&nginx, &state, TOKEN);
    wait_status(api_addr, name, "the plane not started", |s| {
        !s["notInForce"].as_array().is_none_or(|a| a.is_empty())
    });
    let o = cli(api_addr, &["rollback", name], Some(TOKEN));
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
