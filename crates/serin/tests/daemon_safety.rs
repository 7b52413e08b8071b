//! What must never steer `serin serve`, and what must never stop it: the real
//! daemon binary on 127.0.0.1, sent the requests a browser sends (and a real
//! headless Chromium), rollout files naming commands, a second owner of its
//! state directory, and a state database it cannot fully read.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::chromium::chromium;
use common::daemon::cli;
use common::http::{Answer, get, http, wait_until_closed};
use common::nginx::{Nginx, free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, serin, serin_serve, text, wait_for_port, write};
use serde_json::Value;

// ---------------------------------------------------------------- HTTP

/// The rollouts the daemon has, by name (phase and reason).
fn rollouts(api: SocketAddr) -> BTreeMap<String, Value> {
    let a = get(api, "/api/v1/rollouts");
    assert_eq!(a.status, 200, "GET /api/v1/rollouts: {}", a.body);
    let list: Vec<Value> = serde_json::from_str(&a.body).unwrap();
    list.into_iter()
        .map(|r| (r["name"].as_str().unwrap_or("").to_string(), r))
        .collect()
}

// ---------------------------------------------------------------- daemon

/// `serin serve` on `api` with state in `state` and extra flags; waits until
/// it answers `/healthz`.
fn serve(api: SocketAddr, state: &Path, flags: &[&str]) -> Proc {
    let mut cmd = serin_serve(api, state);
    cmd.args(flags).env_remove("SERIN_TOKEN");
    let p = Proc::spawn(cmd, false);
    wait_for_port(api);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(api, "/healthz").status != 200 {
        assert!(Instant::now() < deadline, "daemon not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// `serin serve …` run to its exit (bounded), for the ones that must not start.
fn serve_output(api: SocketAddr, state: &Path) -> Output {
    serve_output_with(api, state, &[])
}

/// A builtin-proxy rollout file; its upstreams need not run.
fn builtin_file(name: &str, listen: SocketAddr) -> String {
    Rollout::new(name, listen, local(free_port()), local(free_port()))
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .yaml()
}

// ------------------------------------------------------- 1. browsers

/// The requests a page on another origin makes: a `text/plain` POST (a
/// "simple" request, sent without asking), one with no type at all, a form
/// post, a command with a cross-site `Sec-Fetch-Site`, and a page reached
/// through DNS rebinding. None registers or changes anything.
#[test]
fn requests_a_web_page_can_send_do_not_steer_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    let _d = serve(api, &dir.path().join("state"), &[]);
    let proxy = local(free_port());
    let yaml = builtin_file("evil", proxy);
    let other = format!("http://127.0.0.1:{}", free_port());
    let tries: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "text/plain from another origin",
            vec![
                ("Origin", other.as_str()),
                ("Sec-Fetch-Site", "same-site"),
                ("Sec-Fetch-Mode", "no-cors"),
                ("Content-Type", "text/plain;charset=UTF-8"),
            ],
        ),
        (
            "a Blob without a type from another origin",
            vec![("Origin", other.as_str()), ("Sec-Fetch-Site", "same-site")],
        ),
        (
            "a form post",
            vec![
                ("Origin", "null"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
        ),
        (
            "text/plain without Origin (an old browser)",
            vec![("Content-Type", "text/plain")],
        ),
        (
            "YAML with a cross-site Sec-Fetch-Site",
            vec![
                ("Sec-Fetch-Site", "cross-site"),
                ("Content-Type", "application/yaml"),
            ],
        ),
        (
            "a page of evil.example after DNS rebinding",
            vec![
                ("Host", "evil.example:9900"),
                ("Origin", "http://evil.example:9900"),
                ("Sec-Fetch-Site", "same-origin"),
                ("Content-Type", "application/yaml"),
            ],
        ),
    ];
    for (what, headers) in &tries {
        let a = http(api, "POST", "/api/v1/rollouts", headers, &yaml);
        assert_eq!(a.status, 403, "{what}: {}", a.body);
        let e: Value = serde_json::from_str(&a.body)
            .unwrap_or_else(|_| panic!("{what}: a JSON error: {}", a.body));
        let msg = e["error"].as_str().unwrap_or("");
        assert!(msg.contains("refused"), "{what}: says it refused: {msg}");
    }
    assert!(rollouts(api).is_empty(), "nothing registered");
    assert!(
        TcpStream::connect_timeout(&proxy, Duration::from_millis(300)).is_err(),
        "no proxy started on {proxy}"
    );

    // Reads through a rebound name are refused too: the page could read
    // every rollout and the metrics.
    for path in [
        "/",
        "/api/v1/rollouts",
        "/metrics",
        "/api/v1/rollouts/evil/report",
    ] {
        let a = http(api, "GET", path, &[("Host", "evil.example:9900")], "");
        assert_eq!(a.status, 403, "GET {path} as evil.example: {}", a.body);
        assert!(
            a.body.contains("--allow-host"),
            "says how to allow a name: {}",
            a.body
        );
    }
    // By address or a loopback name it answers.
    for host in [api.to_string(), format!("localhost:{}", api.port())] {
        let a = http(
            api,
            "GET",
            "/api/v1/rollouts",
            &[("Host", host.as_str())],
            "",
        );
        assert_eq!(a.status, 200, "Host {host}: {}", a.body);
    }

    // A command from another origin, against a registered rollout, is refused
    // too; the command line (no Origin, YAML) registers it.
    let file = write(dir.path(), "evil.yaml", &yaml);
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a = http(
        api,
        "POST",
        "/api/v1/rollouts/evil/deploy",
        &[("Origin", other.as_str()), ("Content-Type", "text/plain")],
        "{\"version\":\"v2\"}",
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let a = http(
        api,
        "DELETE",
        "/api/v1/rollouts/evil",
        &[("Origin", other.as_str())],
        "",
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let r = rollouts(api);
    assert_eq!(
        r["evil"]["canary"]["version"],
        Value::Null,
        "not deployed: {:#}",
        r["evil"]
    );
}

/// The dashboard's own buttons send what Chromium sends for a same-origin
/// `fetch` with JSON: they still work.
#[test]
fn the_dashboards_own_requests_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    let _d = serve(api, &dir.path().join("state"), &[]);
    let proxy = local(free_port());
    let file = write(dir.path(), "shop.yaml", &builtin_file("shop", proxy));
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Deploy from the dashboard's origin by the name localhost.
    // What Chromium sends with a same-origin `fetch` of JSON from the
    // dashboard at `host`.
    let from_dashboard = |host: &str, path: &str, body: &str| {
        let origin = format!("http://{host}");
        let headers = [
            ("Host", host),
            ("Origin", origin.as_str()),
            ("Referer", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
            ("Sec-Fetch-Mode", "cors"),
            ("Content-Type", "application/json"),
        ];
        http(api, "POST", path, &headers, body)
    };
    let host = format!("localhost:{}", api.port());
    let a = from_dashboard(
        &host,
        "/api/v1/rollouts/shop/deploy",
        "{\"version\":\"v2\"}",
    );
    assert_eq!(a.status, 200, "deploy as localhost: {}", a.body);
    // The rollback button, by address.
    let a = from_dashboard(&api.to_string(), "/api/v1/rollouts/shop/rollback", "{}");
    assert_eq!(a.status, 200, "the dashboard's rollback: {}", a.body);
    let s: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(s["phase"], "RolledBack", "{s:#}");
}

/// A canary given with `deploy` gets the rollout file's checks: a label that
/// does not read as what it is, or an upstream on stable's own server, is
/// refused (400) and changes nothing (outside breaker: both were accepted).
#[test]
fn deploy_refuses_what_the_rollout_file_would() {
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    let _d = serve(api, &dir.path().join("state"), &[]);
    let (proxy, stable) = (local(free_port()), local(free_port()));
    let yaml = Rollout::new("shop", proxy, stable, local(free_port()))
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .yaml();
    let file = write(dir.path(), "shop.yaml", &yaml);
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json = [("Content-Type", "application/json")];
    for (body, says) in [
        (
            format!(
                "{{\"version\":\"v2\",\"upstream\":\"http://localhost:{}\"}}",
                stable.port()
            ),
            "other than stable's",
        ),
        (
            "{\"version\":\"v2 \\u202eevil\"}".to_string(),
            "visible ASCII",
        ),
        ("{\"version\":\" \"}".to_string(), "empty"),
    ] {
        let a = http(api, "POST", "/api/v1/rollouts/shop/deploy", &json, &body);
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(a.body.contains(says), "{body}: {}", a.body);
    }
    // A body over the limit: 413, with a JSON error like every refusal.
    let big = format!(
        "{{\"version\":\"v2\",\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let a = http(api, "POST", "/api/v1/rollouts/shop/deploy", &json, &big);
    assert_eq!(a.status, 413, "{}", a.body);
    let e: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.body));
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("larger than"),
        "{e}"
    );
    let s: Value =
        serde_json::from_str(&http(api, "GET", "/api/v1/rollouts/shop", &[], "").body).unwrap();
    assert_eq!(
        s["canary"]["version"],
        Value::Null,
        "nothing changed: {s:#}"
    );
}

/// A tiny web server for the attacker's page: `/` is `page`, and every
/// request for `/done` sets the flag.
fn page_server(page: String) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = if first.starts_with("GET /done") {
                flag.store(true, Ordering::SeqCst);
                "ok".to_string()
            } else {
                page.clone()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, done)
}

/// The DOM of `url` after 5 s of virtual time, in a throw-away profile.
fn chromium_dom(profile: &Path, extra: &[&str], url: &str) -> String {
    let flags = [
        &[
            "--disable-features=HttpsUpgrades",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ][..],
        extra,
    ]
    .concat();
    String::from_utf8_lossy(&chromium(profile, &flags, url).stdout).into_owned()
}

/// A real browser: a page on another port posts a rollout file to the
/// daemon (text/plain, and a typeless Blob, both sent without a preflight);
/// nothing is registered. Then a page whose name resolves to 127.0.0.1 (DNS
/// rebinding) loads the daemon's API: refused.
#[test]
fn headless_chromium_on_another_port_cannot_steer_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    let _d = serve(api, &dir.path().join("state"), &[]);
    let proxy = local(free_port());
    let yaml = serde_json::to_string(&builtin_file("pwned", proxy)).unwrap();
    let page = format!(
        r#"<!doctype html><html><body><p id="out">waiting</p><script>
const url = "http://{api}/api/v1/rollouts";
const yaml = {yaml};
Promise.allSettled([
  fetch(url, {{method: "POST", mode: "no-cors", headers: {{"content-type": "text/plain"}}, body: yaml}}),
  fetch(url, {{method: "POST", mode: "no-cors", body: new Blob([yaml])}}),
]).then((rs) => fetch("/done").then(() => {{
  document.getElementById("out").textContent = "sent: " + rs.map((r) => r.status).join(",");
}}));
</script></body></html>"#
    );
    let (page_addr, done) = page_server(page);
    let dom = chromium_dom(
        &dir.path().join("profile"),
        &[],
        &format!("http://{page_addr}/"),
    );
    assert!(
        done.load(Ordering::SeqCst) && dom.contains("sent: fulfilled,fulfilled"),
        "the page's script sent both requests: {dom}"
    );
    assert!(
        rollouts(api).is_empty(),
        "nothing registered: {:?}",
        rollouts(api)
    );
    assert!(
        TcpStream::connect_timeout(&proxy, Duration::from_millis(300)).is_err(),
        "no proxy started on {proxy}"
    );

    // DNS rebinding: the browser believes rebind.test is 127.0.0.1.
    let rule = "--host-resolver-rules=MAP rebind.test 127.0.0.1";
    let port = api.port();
    let dom = chromium_dom(
        &dir.path().join("profile2"),
        &[rule],
        &format!("http://rebind.test:{port}/api/v1/rollouts"),
    );
    assert!(dom.contains("is not this daemon"), "refused by Host: {dom}");
    let dom = chromium_dom(
        &dir.path().join("profile3"),
        &[rule],
        &format!("http://rebind.test:{port}/"),
    );
    assert!(
        dom.contains("is not this daemon") && !dom.contains("data-act"),
        "no dashboard through a rebound name: {dom}"
    );
}

// ------------------------------------------------------- 2. commands

/// nginx's own test and reload (of the real `nginx`) as two scripts that
/// first leave a mark (`marks/tested`, `marks/reloaded`), so a test sees
/// whether they ran; serin counts a change applied only once nginx serves
/// it, so the commands must be real.
fn nginx_commands(nginx: &Nginx, marks: &Path) -> (String, String) {
    use std::os::unix::fs::PermissionsExt as _;
    let script = |mark: &str, extra: &[&str]| {
        let path = marks.join(format!("{mark}.sh"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\ntouch {}\nexec {}\n",
                marks.join(mark).display(),
                nginx.command(extra).join(" ")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    };
    (
        script("tested", &["-t"]),
        script("reloaded", &["-s", "reload"]),
    )
}

/// An nginx-provider rollout file whose include goes where `nginx` reads
/// it (its `conf.d/`), its access log beside it, with these commands (none:
/// the defaults `nginx -t`, `nginx -s reload`).
fn nginx_file(name: &str, nginx: &Nginx, test: Option<&str>, reload: Option<&str>) -> String {
    let mut lines = format!(
        "  provider: nginx\n  nginx:\n    include: {}\n    accessLog: {}\n",
        nginx.include(&format!("serin-{name}")).display(),
        nginx.dir.join(format!("conf.d/{name}.json")).display(),
    );
    if let Some(t) = test {
        lines.push_str(&format!("    test: {t}\n"));
    }
    if let Some(r) = reload {
        lines.push_str(&format!("    reload: {r}\n"));
    }
    Rollout::new(
        name,
        local(free_port()),
        local(free_port()),
        local(free_port()),
    )
    .traffic(&lines)
    .yaml()
}

/// A file sent over the API, even with the token, does not make the daemon
/// run its commands unless the operator allowed each one exactly.
#[test]
fn a_rollout_file_over_the_api_runs_only_commands_the_operator_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let tested = marks.join("tested");
    let reloaded = marks.join("reloaded");
    let nginx = Nginx::start();
    let (test, reload) = nginx_commands(&nginx, &marks);
    let api = local(free_port());
    let state = dir.path().join("state");
    let token = "t0ken";
    let allow = nginx.dir.join("conf.d").display().to_string();
    let mut d = serve(api, &state, &["--token", token, "--allow-path", &allow]);

    let yaml = nginx_file("web", &nginx, Some(&test), Some(&reload));
    let a = http(
        api,
        "POST",
        "/api/v1/rollouts",
        &[
            ("Authorization", "Bearer t0ken"),
            ("Content-Type", "application/yaml"),
        ],
        &yaml,
    );
    assert_eq!(a.status, 403, "{}", a.body);
    for want in [
        "traffic.nginx.test",
        "traffic.nginx.reload",
        &format!("--allow-command '{test}'"),
        &format!("--allow-command '{reload}'"),
    ] {
        assert!(a.body.contains(want), "names {want}: {}", a.body);
    }
    assert!(!tested.exists() && !reloaded.exists(), "no command ran");
    assert!(rollouts(api).is_empty(), "nothing registered");

    // The defaults (`nginx -t`, `nginx -s reload`) are commands too; the
    // client says why, exit 1.
    let file = write(
        dir.path(),
        "default.yaml",
        &nginx_file("deflt", &nginx, None, None),
    );
    let o = cli(api, &["init", &file.display().to_string()], Some(token));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("403")
            && err.contains("--allow-command 'nginx -t' --allow-command 'nginx -s reload'"),
        "{err}"
    );

    // Allowed: one of them only is not enough.
    d.kill();
    wait_until_closed(api);
    let mut d = serve(
        api,
        &state,
        &[
            "--token",
            token,
            "--allow-path",
            &allow,
            "--allow-command",
            &test,
        ],
    );
    let file = write(dir.path(), "web.yaml", &yaml);
    let o = cli(api, &["init", &file.display().to_string()], Some(token));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("traffic.nginx.reload") && !err.contains("traffic.nginx.test"),
        "{err}"
    );
    assert!(!tested.exists() && !reloaded.exists(), "no command ran");

    // Both allowed, word for word: the file registers and they run.
    d.kill();
    wait_until_closed(api);
    let _d = serve(
        api,
        &state,
        &[
            "--token",
            token,
            "--allow-path",
            &allow,
            "--allow-command",
            &test,
            "--allow-command",
            &reload,
        ],
    );
    let o = cli(api, &["init", &file.display().to_string()], Some(token));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        tested.exists() && reloaded.exists(),
        "the allowed commands ran"
    );
}

/// Files already in the store are checked when the daemon starts: one whose
/// commands are no longer allowed is not started and says why; the others run.
#[test]
fn stored_rollouts_whose_commands_are_not_allowed_are_not_started_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let reloaded = marks.join("reloaded");
    let nginx = Nginx::start();
    let (test, reload) = nginx_commands(&nginx, &marks);
    let api = local(free_port());
    let state = dir.path().join("state");
    let allow = nginx.dir.join("conf.d").display().to_string();
    let mut d = serve(
        api,
        &state,
        &[
            "--allow-path",
            &allow,
            "--allow-command",
            &test,
            "--allow-command",
            &reload,
        ],
    );
    let web = write(
        dir.path(),
        "web.yaml",
        &nginx_file("web", &nginx, Some(&test), Some(&reload)),
    );
    let proxy = local(free_port());
    let shop = write(dir.path(), "shop.yaml", &builtin_file("shop", proxy));
    for f in [&web, &shop] {
        let o = cli(api, &["init", &f.display().to_string()], None);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert!(reloaded.exists());
    d.kill();
    wait_until_closed(api);
    wait_until_closed(proxy);
    std::fs::remove_file(&reloaded).unwrap();

    let _d = serve(api, &state, &["--allow-path", &allow]);
    wait_for_port(proxy);
    let r = rollouts(api);
    let reason = r["web"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("not running") && reason.contains(&format!("--allow-command '{reload}'")),
        "{:#}",
        r["web"]
    );
    assert!(
        !r["shop"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not running"),
        "{:#}",
        r["shop"]
    );
    assert!(!reloaded.exists(), "the stored file's reload did not run");
    let o = cli(api, &["deploy", "web", "v2"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!reloaded.exists(), "nor on deploy");
}

// ------------------------------------------------------- 2b. files

/// An nginx-provider rollout file with this include file, access log and
/// commands (`(test, reload)`).
fn nginx_paths_file(
    name: &str,
    include: &str,
    access_log: &str,
    (test, reload): &(String, String),
) -> String {
    Rollout::new(
        name,
        local(free_port()),
        local(free_port()),
        local(free_port()),
    )
    .traffic(&format!(
        "  provider: nginx\n  nginx:\n    include: {include}\n    accessLog: {access_log}\n    test: {test}\n    reload: {reload}\n"
    ))
    .yaml()
}

/// `serin serve` with the given flags, run to its exit (bounded).
fn serve_output_with(api: SocketAddr, state: &Path, flags: &[&str]) -> Output {
    let mut cmd = serin_serve(api, state);
    cmd.args(flags).env_remove("SERIN_TOKEN");
    Proc::spawn(cmd, true).wait_output(Duration::from_secs(20))
}

/// POSTs a rollout file as YAML.
fn post_file(api: SocketAddr, yaml: &str) -> Answer {
    http(
        api,
        "POST",
        "/api/v1/rollouts",
        &[("Content-Type", "application/yaml")],
        yaml,
    )
}

/// A file sent over the API never makes the daemon write its include file
/// or read its access log outside the directories given to --allow-path:
/// not by naming another directory, not through `..`, not through a
/// symbolic link to a directory or to a file, not by a relative path. Inside
/// one, the file registers and the include is written.
#[test]
fn a_rollout_file_over_the_api_touches_only_files_the_operator_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let nginx = Nginx::start();
    let marks = root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let commands = nginx_commands(&nginx, &marks);
    // nginx reads `conf.d/*.conf`, and through `sub.conf` `conf.d/sub/*.conf`.
    let allowed = nginx.dir.join("conf.d").canonicalize().unwrap();
    std::fs::write(
        allowed.join("sub.conf"),
        format!("include {}/sub/*.conf;\n", allowed.display()),
    )
    .unwrap();
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let precious = outside.join("profile");
    std::fs::write(&precious, "keep\n").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(&precious, allowed.join("filelink")).unwrap();
    let state = root.join("state");
    let api = local(free_port());
    let allow = allowed.display().to_string();

    // An --allow-path that is not a directory stops serve with exit 2.
    let missing = root.join("missing").display().to_string();
    let o = serve_output_with(
        api,
        &state,
        &["--allow-path", &missing, "--allow-command", "true"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("--allow-path {missing}")),
        "{}",
        text(&o)
    );

    let _d = serve(
        api,
        &state,
        &[
            "--allow-path",
            &allow,
            "--allow-command",
            &commands.0,
            "--allow-command",
            &commands.1,
        ],
    );
    let log = allowed.join("web.json").display().to_string();
    let inside = allowed.join("serin-web.conf").display().to_string();
    let profile = precious.display().to_string();
    let dotdot = format!("{}/../outside/profile", allowed.display());
    let via_dir = allowed.join("dirlink/new.conf").display().to_string();
    let via_file = allowed.join("filelink").display().to_string();
    let outside_log = outside.join("web.json").display().to_string();
    let flag = format!("--allow-path '{}'", outside.display());
    for (include, access_log, wants) in [
        (
            profile.as_str(),
            log.as_str(),
            vec!["traffic.nginx.include", flag.as_str()],
        ),
        (
            dotdot.as_str(),
            log.as_str(),
            vec!["traffic.nginx.include", "`..`"],
        ),
        (
            via_dir.as_str(),
            log.as_str(),
            vec!["traffic.nginx.include", flag.as_str()],
        ),
        (
            via_file.as_str(),
            log.as_str(),
            vec!["traffic.nginx.include", flag.as_str()],
        ),
        (
            inside.as_str(),
            outside_log.as_str(),
            vec!["traffic.nginx.accessLog", flag.as_str()],
        ),
        (
            "serin-web.conf",
            log.as_str(),
            vec!["traffic.nginx.include", "absolute"],
        ),
    ] {
        let a = post_file(
            api,
            &nginx_paths_file("web", include, access_log, &commands),
        );
        assert_eq!(
            a.status, 403,
            "include {include}, log {access_log}: {}",
            a.body
        );
        for want in wants {
            assert!(
                a.body.contains(want),
                "include {include}: names {want}: {}",
                a.body
            );
        }
        assert!(!a.body.contains("--allow-command"), "{}", a.body);
    }
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "keep\n",
        "the file outside was not touched"
    );
    let written: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, vec![std::ffi::OsString::from("profile")]);
    assert!(
        !Path::new(&inside).exists(),
        "nothing written for a refused file"
    );
    assert!(rollouts(api).is_empty(), "nothing registered");

    // Inside the allowed directory (a subdirectory too): registered, written.
    let deeper = allowed.join("sub/serin-web.conf").display().to_string();
    let a = post_file(api, &nginx_paths_file("web", &deeper, &log, &commands));
    assert!(a.status == 200 || a.status == 201, "{}", a.body);
    assert!(Path::new(&deeper).exists(), "the include was written");
}

/// Stored files are checked at start: one whose include lies outside the
/// allowed directories now is not started (its include is not rewritten,
/// not even on deploy) and says which flag to add; the others run.
#[test]
fn stored_rollouts_whose_files_are_not_allowed_are_not_started_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let nginx = Nginx::start();
    let marks = root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let commands = nginx_commands(&nginx, &marks);
    let conf = nginx.dir.join("conf.d").canonicalize().unwrap();
    let include = conf.join("serin-web.conf");
    let log = conf.join("web.json");
    let state = root.join("state");
    let api = local(free_port());
    let allow = conf.display().to_string();
    let allow_commands = [
        "--allow-command",
        commands.0.as_str(),
        "--allow-command",
        commands.1.as_str(),
    ];
    let mut d = serve(
        api,
        &state,
        &[&["--allow-path", allow.as_str()][..], &allow_commands[..]].concat(),
    );
    let web = write(
        &root,
        "web.yaml",
        &nginx_paths_file(
            "web",
            &include.display().to_string(),
            &log.display().to_string(),
            &commands,
        ),
    );
    let proxy = local(free_port());
    let shop = write(&root, "shop.yaml", &builtin_file("shop", proxy));
    for f in [&web, &shop] {
        let o = cli(api, &["init", &f.display().to_string()], None);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert!(include.exists());
    d.kill();
    wait_until_closed(api);
    wait_until_closed(proxy);
    std::fs::remove_file(&include).unwrap();

    let _d = serve(api, &state, &allow_commands);
    wait_for_port(proxy);
    let r = rollouts(api);
    let reason = r["web"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("not running")
            && reason.contains("traffic.nginx.include")
            && reason.contains(&format!("--allow-path '{allow}'")),
        "{:#}",
        r["web"]
    );
    assert!(
        !r["shop"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not running"),
        "{:#}",
        r["shop"]
    );
    assert!(
        !include.exists(),
        "the stored file's include was not written"
    );
    let o = cli(api, &["deploy", "web", "v2"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!include.exists(), "nor on deploy");
}

/// An empty, blank or spaced token, by flag or by SERIN_TOKEN, is refused
/// with exit 2 naming the flag (never taken for "no token"), before any
/// state is created.
#[test]
fn a_blank_token_is_refused_not_taken_for_none() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = local(free_port());
    for blank in ["", "   ", "\t", "two words"] {
        for by_env in [false, true] {
            let mut cmd = serin_serve(api, &state);
            if by_env {
                cmd.env("SERIN_TOKEN", blank);
            } else {
                cmd.env_remove("SERIN_TOKEN").args(["--token", blank]);
            }
            let o = Proc::spawn(cmd, true).wait_output(Duration::from_secs(20));
            assert_eq!(
                o.status.code(),
                Some(2),
                "{blank:?} (env {by_env}): {}",
                text(&o)
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("--token") && err.contains("SERIN_TOKEN") && err.contains("expected"),
                "{blank:?} (env {by_env}): {err}"
            );
            assert!(!state.exists(), "no state created");
        }
    }
}

// ------------------------------------------------------- 3. one owner

/// The pid `serin serve` wrote, and the stderr of a second owner.
fn assert_in_use(o: &Output, state: &Path, pid: u32) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "state dir {} is in use by pid {pid}",
            state.display()
        )),
        "{err}"
    );
}

/// A second `serin serve` and a `serin run` on a state dir a running daemon
/// owns exit 1 and say whose it is; after `kill -9` of the owner, the dir is
/// free at once.
#[test]
fn a_state_dir_has_one_owner_and_kill_9_leaves_nothing_stale() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = local(free_port());
    let mut first = serve(api, &state, &[]);
    let pid = first.child.id();
    let proxy = local(free_port());
    let file = write(dir.path(), "shop.yaml", &builtin_file("shop", proxy));
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let second = local(free_port());
    let o = serve_output(second, &state);
    assert_in_use(&o, &state, pid);
    assert!(
        TcpStream::connect_timeout(&second, Duration::from_millis(300)).is_err(),
        "the second daemon never listened"
    );
    let run = write(
        dir.path(),
        "run.yaml",
        &builtin_file("other", local(free_port())),
    );
    let mut cmd = serin();
    cmd.args([
        "run",
        &run.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
    ]);
    let o = Proc::spawn(cmd, true).wait_output(Duration::from_secs(20));
    assert_in_use(&o, &state, pid);
    // The owner goes on as before.
    assert!(rollouts(api).contains_key("shop"));
    assert!(!rollouts(api).contains_key("other"));

    first.kill();
    wait_until_closed(api);
    let again = serve(second, &state, &[]);
    assert!(
        rollouts(second).contains_key("shop"),
        "the state is the same"
    );
    drop(again);
}

// ------------------------------------------------------- 5. bad rows

/// A row the daemon cannot read (an unknown phase) is reported as
/// unreadable; the daemon and the other rollouts' proxies run.
#[test]
fn an_unreadable_row_is_reported_and_the_other_rollouts_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = local(free_port());
    let mut d = serve(api, &state, &[]);
    let (pa, pb) = (local(free_port()), local(free_port()));
    for (name, proxy) in [("alpha", pa), ("beta", pb)] {
        let f = write(
            dir.path(),
            &format!("{name}.yaml"),
            &builtin_file(name, proxy),
        );
        let o = cli(api, &["init", &f.display().to_string()], None);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    d.kill();
    wait_until_closed(api);
    let db = rusqlite::Connection::open(state.join("serin.db")).unwrap();
    let n = db
        .execute(
            "UPDATE rollouts SET phase = 'Exploding' WHERE name = 'alpha'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);

    let _d = serve(api, &state, &[]);
    wait_for_port(pb);
    let r = rollouts(api);
    assert_eq!(r["alpha"]["phase"], "Unreadable", "{:#}", r["alpha"]);
    let reason = r["alpha"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("phase") && reason.contains("Exploding"),
        "{reason}"
    );
    assert_eq!(r["beta"]["phase"], "Initializing", "{:#}", r["beta"]);
    let a = get(api, "/api/v1/rollouts/alpha");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("Unreadable"), "{}", a.body);
    assert!(
        TcpStream::connect_timeout(&pa, Duration::from_millis(300)).is_err(),
        "alpha's proxy is not started from a row it cannot read"
    );
    let a = get(api, "/metrics");
    assert_eq!(a.status, 200);
    assert!(
        a.body
            .contains("serin_rollout_phase{rollout=\"beta\",phase=\"Initializing\"} 1"),
        "the others' metrics stay: {}",
        a.body
    );
    // The broken one can be forgotten.
    let o = cli(api, &["cleanup", "alpha"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!rollouts(api).contains_key("alpha"));
}

/// A 0-byte file where the database should be is not a fresh start: serve
/// and run refuse it, name it, and leave it as it was.
#[test]
fn a_zero_byte_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db: PathBuf = state.join("serin.db");
    std::fs::write(&db, b"").unwrap();
    let api = local(free_port());
    let o = serve_output(api, &state);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&db.display().to_string()) && err.contains("0 bytes"),
        "{err}"
    );
    let run = write(
        dir.path(),
        "run.yaml",
        &builtin_file("other", local(free_port())),
    );
    let mut cmd = serin();
    cmd.args([
        "run",
        &run.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
    ]);
    let o = Proc::spawn(cmd, true).wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 bytes"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
}

/// Errors carry their kind: a state database another process holds locked,
/// or a listen address already taken, is "unavailable" (HTTP 503, the CLI
/// exits 1), not the file's fault (was 500 for the lock, 400 for the port).
#[test]
fn a_locked_store_or_a_taken_port_is_unavailable_not_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = local(free_port());
    let _d = serve(api, &state, &[]);

    // The listen port is taken by another program.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = write(
        dir.path(),
        "taken.yaml",
        &builtin_file("taken", taken.local_addr().unwrap()),
    );
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("503"),
        "{}",
        text(&o)
    );

    // The database is held by an exclusive transaction.
    let db = rusqlite::Connection::open(state.join("serin.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE; SELECT 1;").unwrap();
    let file = write(
        dir.path(),
        "shop.yaml",
        &builtin_file("shop", local(free_port())),
    );
    let o = cli(api, &["init", &file.display().to_string()], None);
    db.execute_batch("ROLLBACK").unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("503") && err.contains("locked"),
        "{}",
        text(&o)
    );
}
