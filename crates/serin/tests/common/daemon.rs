//! `serin serve` under test and its API: client commands with or without a
//! token, and status polls.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::get;
use super::nginx::{Nginx, free_port, local};
use super::serin::{Proc, serin, serin_serve, wait_for_port};

/// A client command against the daemon at `api`, with `token` as
/// SERIN_TOKEN (none: unset), bounded (40 s).
pub fn cli(api: SocketAddr, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = serin();
    cmd.args(args)
        .env("SERIN_API", format!("http://{api}"))
        .env_remove("SERIN_TOKEN");
    if let Some(t) = token {
        cmd.env("SERIN_TOKEN", t);
    }
    Proc::spawn(cmd, true).wait_output(Duration::from_secs(40))
}

/// `GET /api/v1/rollouts/NAME`, which must answer 200, parsed.
pub fn status(api: SocketAddr, name: &str) -> Value {
    let a = get(api, &format!("/api/v1/rollouts/{name}"));
    assert_eq!(a.status, 200, "GET rollout {name}: {}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

/// Polls [`status`] until `cond` holds (30 s at most); `what` names it in
/// the failure.
pub fn wait_status(
    api: SocketAddr,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(api, name);
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for {what}; status: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serin serve` on a free port over `state` with `token`, allowed the
/// nginx provider's commands (`nginx -t -q`, `nginx -s reload`) and files
/// (nginx's `conf.d` and `logs`): the process and its API address.
pub fn serve_nginx(nginx: &Nginx, state: &Path, token: &str) -> (Proc, SocketAddr) {
    let api = local(free_port());
    let mut cmd = serin_serve(api, state);
    cmd.args([
        "--allow-command",
        &nginx.test_command(),
        "--allow-command",
        &nginx.reload_command(),
        "--allow-path",
        &nginx.dir.join("conf.d").display().to_string(),
        "--allow-path",
        &nginx.dir.join("logs").display().to_string(),
    ])
    .env("SERIN_TOKEN", token);
    let proc = Proc::spawn(cmd, false);
    wait_for_port(api);
    (proc, api)
}
