//! Status of a rollout registered and never deployed (outside user L7):
//! "not deployed", as the dashboard says, not "Initializing step 1/N …
//! waiting for health checks" (nothing is checked before a deploy).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::daemon::cli;
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{
    Proc, demo_app, load, serin, serin_run, serin_serve, text, wait_for_port, write,
};

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
            .is_some_and(|r| r.starts_with("not deployed: registered")),
        "{s:#}"
    );
    assert_eq!(s["run"], 0, "{s:#}");
    assert!(s["canary"]["version"].is_null(), "{s:#}");
}

/// A finished `serin run` keeps its per-version figures (outside user M3):
/// status on its state dir showed no table and `"metrics": null`, while a
/// finished daemon run shows them. They come from its recorded intervals.
#[test]
fn a_finished_serin_run_shows_its_figures_from_its_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let file = write(
        dir.path(),
        "rollout.yaml",
        &Rollout::new("figures", local(port), stable, canary).yaml(),
    );
    let run = Proc::spawn(serin_run(&file, dir.path()), true);
    wait_for_port(local(port));
    let _load = load(&format!("http://127.0.0.1:{port}/"), 200, "30s");
    let output = run.wait_output(Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let state = dir.path().join("state").display().to_string();
    let o = serin()
        .args(["status", "figures", "--state-dir", &state, "-o", "json"])
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let s: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
    let m = &s["metrics"];
    assert!(
        m["canary"]["requests"].as_u64().is_some_and(|n| n > 0)
            && m["stable"]["requests"].as_u64().is_some_and(|n| n > 0),
        "{s:#}"
    );
    assert_eq!(m["canaryVersion"], "v2", "{s:#}");
    assert!(
        m["window"]
            .as_str()
            .is_some_and(|w| w.starts_with("this run")),
        "{s:#}"
    );
    let o = serin()
        .args(["status", "figures", "--state-dir", &state])
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(out.contains("v2"), "{out}");
    assert!(out.contains("figures this run"), "{out}");
}
