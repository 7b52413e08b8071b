//! A closed output never abandons a rollout: `serin run … | head -3` goes on
//! to the rollout's end and exits with its outcome; one-shot commands whose
//! reader went away (`serin history x | head -1`) exit quietly. Real pipes,
//! closed by the reading end.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::daemon::cli;
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{
    Proc, demo_app, load, serin, serin_run, serin_serve, text, wait_for_port, write,
};

/// Waits (bounded) for `child` to exit; its exit code.
fn wait_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serin run -o json` whose stdout and stderr readers stop after the first
/// line: the rollout is promoted all the same (exit 0), and its state says so.
#[test]
fn serin_run_goes_on_to_its_end_when_its_output_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let file = write(
        dir.path(),
        "rollout.yaml",
        &Rollout::new("piped", proxy, stable, canary)
            .latency_p95("200ms")
            .yaml(),
    );
    let mut cmd = serin_run(&file, dir.path());
    cmd.args(["-o", "json"]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(
        first.contains("piped: v1 → v2"),
        "the first line: {first:?}"
    );
    // `| head -1`: the readers go away.
    drop(err);
    drop(child.stdout.take());
    wait_for_port(proxy);
    let _load = load(&format!("http://{proxy}/"), 200, "30s");
    let code = wait_code(&mut child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "promoted, exit 0, with nobody reading");
    // The state agrees: the rollout ran to its end.
    let db = rusqlite::Connection::open(dir.path().join("state/serin.db")).unwrap();
    let phase: String = db
        .query_row("SELECT phase FROM rollouts WHERE name = 'piped'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(phase, "Succeeded");
}

/// `serin status`, `history` and `report` with their stdout closed before
/// they write: exit 0, nothing on stderr (no panic, no backtrace).
#[test]
fn one_shot_commands_exit_quietly_when_their_output_is_closed() {
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
    for args in [
        &["history", "shop"][..],
        &["status"][..],
        &["status", "shop", "-o", "json"][..],
        &["report", "shop", "--format", "html"][..],
    ] {
        let mut child = serin()
            .args(args)
            .env("SERIN_API", format!("http://{api}"))
            .env("RUST_BACKTRACE", "1")
            .env_remove("SERIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let code = wait_code(&mut child, Duration::from_secs(30));
        assert_eq!(code, Some(0), "serin {args:?}: stderr {err}");
        assert!(err.is_empty(), "serin {args:?} is quiet: {err}");
    }
}

/// `serin serve` whose stderr reader went away keeps serving: its log lines
/// are dropped, rollouts are registered and their proxies listen.
#[test]
fn serin_serve_keeps_serving_when_its_log_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let api: SocketAddr = local(free_port());
    let mut child = serin_serve(api, &dir.path().join("state"))
        .env("RUST_LOG", "debug")
        .env_remove("SERIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let _guard = Proc { child };
    wait_for_port(api);
    for name in ["one", "two"] {
        let proxy = local(free_port());
        let file = write(
            dir.path(),
            &format!("{name}.yaml"),
            &Rollout::new(name, proxy, local(free_port()), local(free_port())).yaml(),
        );
        let o = cli(api, &["init", &file.display().to_string()], None);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        wait_for_port(proxy);
    }
}

/// `serin demo` whose stdout and stderr readers went away before it wrote:
/// the tour is not cut short mid-rollout; it runs both acts to their end,
/// writes both reports and exits 0 (the bad canary rolled back, the good
/// one promoted), and its state says so.
#[test]
fn the_demo_tour_runs_to_its_end_when_its_output_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = serin()
        .args(["demo", "--state-dir", &state.display().to_string()])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let code = wait_code(&mut child, Duration::from_secs(150));
    assert_eq!(code, Some(0), "both acts ended as expected");
    for act in ["rolled-back", "promoted"] {
        let html = std::fs::read_to_string(state.join(format!("demo-{act}.html")))
            .unwrap_or_else(|e| panic!("the {act} report was written: {e}"));
        assert!(html.contains("<svg"), "{act} report has charts");
    }
    let db = rusqlite::Connection::open(state.join("serin.db")).unwrap();
    let (phase, stable): (String, String) = db
        .query_row(
            "SELECT phase, stable_version FROM rollouts WHERE name = 'checkout'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((phase.as_str(), stable.as_str()), ("Succeeded", "v1.2.1"));
}
