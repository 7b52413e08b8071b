//! Status of a rollout registered and never deployed (outside user L7):
//! "not deployed", as the dashboard says, not "Initializing step 1/N …
//! waiting for health checks" (nothing is checked before a deploy).

mod common;

use std::net::SocketAddr;

use common::daemon::cli;
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, serin_serve, text, wait_for_port, write};

#[test]
fn a_registered_rollout_never_deployed_is_not_deployed_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let api: SocketAddr = local(free_port());
    let mut cmd = serin_serve(api, &dir.path().join("state"));
    cmd.env_remove("SERIN_TOKEN");
    let _daemon = Proc::spawn(cmd, false);
    wait_for_port(api);
    let file = write(
        dir.path(),
        "shop.yaml",
        &Rollout::new(
            "shop",
            local(free_port()),
            local(free_port()),
            local(free_port()),
        )
        .yaml(),
    );
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = cli(api, &["status", "shop"], None);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(first, "shop  not deployed", "{out}");
    assert!(!out.contains("step 1/"), "{out}");
    assert!(!out.contains("waiting for health checks"), "{out}");
    assert!(out.contains("serin deploy shop VERSION"), "{out}");
    let o = cli(api, &["status", "shop", "-o", "json"], None);
    let s: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("not deployed: registered, no run yet")),
        "{s:#}"
    );
    assert_eq!(s["run"], 0, "{s:#}");
    assert!(s["canary"]["version"].is_null(), "{s:#}");
}
