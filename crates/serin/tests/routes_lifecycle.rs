//! Header routes to the canary live only while a run does: not after
//! `serin init` (before any deploy), in force while the run is paused, gone
//! after a rollback (outside breaker: after a rollback, requests matching a
//! route still reached the failing canary, nothing judging them, while
//! serin said "all traffic on stable"). The built-in proxy under `serin
//! serve`, end to end.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::{cli, wait_status};
use common::http::{get, http};
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin_serve, text, wait_for_port, write};

/// The version that answered a request carrying `x-canary: always`.
fn routed(proxy: SocketAddr) -> String {
    let a = http(proxy, "GET", "/", &[("x-canary", "always")], "");
    assert_eq!(a.status, 200, "{}", a.body);
    a.headers
        .get("x-serin-version")
        .cloned()
        .unwrap_or_default()
}

#[test]
fn header_routes_to_the_canary_live_only_while_a_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());
    let _serve = Proc::spawn(serin_serve(api, &dir.path().join("state")), false);
    wait_for_port(api);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(api, "/healthz").status != 200 {
        assert!(Instant::now() < deadline, "daemon not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let yaml = Rollout::new("ab", proxy, stable, canary)
        .traffic(
            "  routes:\n    - match: { header: { name: x-canary, value: always } }\n      version: canary\n",
        )
        .steps("  - setWeight: 10\n  - pause: {}\n")
        .yaml();
    let file = write(dir.path(), "ab.yaml", &yaml);
    let ok = |args: &[&str]| {
        let o = cli(api, args, None);
        assert_eq!(o.status.code(), Some(0), "serin {args:?}: {}", text(&o));
    };
    ok(&["init", &file.display().to_string()]);
    wait_for_port(proxy);
    // Registered, no run: the route sends nothing to the canary.
    assert_eq!(routed(proxy), "v1");
    ok(&["deploy", "ab", "v2"]);
    wait_status(api, "ab", "paused at 10 %", |s| {
        s["phase"] == "Paused" && s["weightInForce"].as_f64() == Some(10.0)
    });
    // While the run is paused, the route is in force.
    assert_eq!(routed(proxy), "v2");
    ok(&["rollback", "ab"]);
    wait_status(api, "ab", "rolled back in force", |s| {
        s["phase"] == "RolledBack" && s["weightInForce"].as_f64() == Some(0.0)
    });
    // Rolled back: nothing reaches the canary, the route's requests either.
    for _ in 0..20 {
        assert_eq!(routed(proxy), "v1");
    }
}
