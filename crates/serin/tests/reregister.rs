//! `serin init` of a rollout's file again after a promotion: the promoted
//! version stays the stable (the file's `stable` names the version the
//! promotion replaced); a file that names another stable is followed.

mod common;

use std::net::SocketAddr;

use common::daemon::{cli, status, wait_status};
use common::http::get;
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin_serve, text, wait_for_port, write};

fn version_at(proxy: SocketAddr) -> String {
    let a = get(proxy, "/");
    assert_eq!(a.status, 200, "{}", a.body);
    a.headers
        .get("x-serin-version")
        .cloned()
        .unwrap_or_default()
}

fn ok(api: SocketAddr, args: &[&str]) -> String {
    let o = cli(api, args, None);
    assert_eq!(o.status.code(), Some(0), "serin {args:?}: {}", text(&o));
    text(&o)
}

/// Fails before this change: the second `serin init` answered "registered
/// again, file unchanged" and sent every request back to v1.
#[test]
fn init_of_the_same_file_after_a_promotion_keeps_the_promoted_stable() {
    let dir = tempfile::tempdir().unwrap();
    let (_v1, stable) = demo_app("v1", &[]);
    let (_v2, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());
    let mut serve = serin_serve(api, &dir.path().join("state"));
    serve.env_remove("SERIN_TOKEN");
    let _daemon = Proc::spawn(serve, false);
    wait_for_port(api);
    let yaml = Rollout::new("again", proxy, stable, canary)
        .steps("  - setWeight: 50\n  - pause: {}\n")
        .yaml();
    let file = write(dir.path(), "again.yaml", &yaml);
    let file = file.display().to_string();
    ok(api, &["init", &file]);
    wait_for_port(proxy);
    ok(api, &["deploy", "again", "v2"]);
    wait_status(api, "again", "paused at 50 %", |s| s["phase"] == "Paused");
    ok(api, &["promote", "again", "--full"]);
    wait_status(api, "again", "promoted", |s| s["phase"] == "Succeeded");
    assert_eq!(version_at(proxy), "v2");

    let said = ok(api, &["init", &file]);
    assert!(
        said.contains("the stable stays v2 (promoted), not the file's v1"),
        "{said}"
    );
    let s = status(api, "again");
    assert_eq!(s["stable"]["version"], "v2", "{s:#}");
    for i in 0..20 {
        assert_eq!(version_at(proxy), "v2", "request {i} after the second init");
    }

    // A file that names another stable is followed: the operator said so.
    let (_v3, other) = demo_app("v3", &[]);
    let moved = yaml
        .replace(&format!("http://{stable}"), &format!("http://{other}"))
        .replace("version: v1", "version: v3");
    assert_ne!(moved, yaml);
    let file = write(dir.path(), "again.yaml", &moved);
    ok(api, &["init", &file.display().to_string()]);
    let s = status(api, "again");
    assert_eq!(s["stable"]["version"], "v3", "{s:#}");
    assert_eq!(version_at(proxy), "v3");
}
