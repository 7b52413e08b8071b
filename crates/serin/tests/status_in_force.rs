//! Status never claims what is not in force. With the real nginx provider
//! behind `serin serve`, an unrelated broken file under nginx's
//! configuration makes `nginx -t` fail: a rollback is decided (and stored)
//! but nginx keeps the canary's 9 %. The API, `serin status`, `serin
//! rollback` and /metrics say so until nginx takes it; `serin run` does not
//! print a store failure only to its log.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{cli, serve_nginx, wait_status};
use common::http::get;
use common::nginx::{Nginx, free_port, local};
use common::rollout::Rollout;
use common::serin::{demo_app, serin_run, text, wait_for_port, write};

const TOKEN: &str = "status-test-token";

/// The value of `metric{rollout="NAME"}` on /metrics, if present.
fn metric(addr: SocketAddr, metric: &str, name: &str) -> Option<f64> {
    let body = get(addr, "/metrics").body;
    let prefix = format!("{metric}{{rollout=\"{name}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_rollback_nginx_refuses_is_shown_pending_with_the_weight_in_force() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let name = "pending";
    let file = write(
        dir.path(),
        "rollout.yaml",
        &nginx
            .rollout(name, port, stable, canary, &nginx.test_command())
            .steps("  - setWeight: 9\n  - pause: {}\n")
            .no_data_limit(1000)
            .yaml(),
    );
    let (_daemon, api_addr) = serve_nginx(&nginx, &dir.path().join("state"), TOKEN);

    let file = file.display().to_string();
    for args in [vec!["init", file.as_str()], vec!["deploy", name, "v2"]] {
        let o = cli(api_addr, &args, Some(TOKEN));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    let s = wait_status(api_addr, name, "9 % in force", |s| {
        s["weightInForce"].as_f64() == Some(9.0) && s["phase"] == "Paused"
    });
    assert_eq!(s["notInForce"], serde_json::json!([]), "{s:#}");
    assert_eq!(metric(api_addr, "serin_weight_in_force", name), Some(9.0));
    assert_eq!(metric(api_addr, "serin_router_error", name), Some(0.0));

    // A file serin does not own breaks `nginx -t`: nginx keeps what it has.
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "this is not an nginx directive;\n").unwrap();
    let o = cli(api_addr, &["rollback", name], Some(TOKEN));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("NOT in force yet") && out.contains("rollback not applied yet: "),
        "serin rollback does not claim a rollback nginx refused: {out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.ends_with("rolled back: all traffic on stable")),
        "{out}"
    );

    let s = wait_status(api_addr, name, "the refusal in the status", |s| {
        s["phase"] == "RolledBack" && s["notInForce"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(s["weight"].as_f64(), Some(0.0), "decided: {s:#}");
    assert_eq!(s["weightInForce"].as_f64(), Some(9.0), "in force: {s:#}");
    let first = s["notInForce"][0].as_str().unwrap_or("");
    assert!(
        first.starts_with("rollback not applied yet: ") && first.contains("zz-unrelated"),
        "names nginx -t's complaint: {s:#}"
    );
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("rollback not applied yet: "),
        "{s:#}"
    );
    let o = cli(api_addr, &["status", name], Some(TOKEN));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains("canary weight 9 % in force (0 % decided)")
            && out.contains("rollback not applied yet: "),
        "serin status: {out}"
    );
    assert_eq!(metric(api_addr, "serin_weight_in_force", name), Some(9.0));
    assert_eq!(metric(api_addr, "serin_router_error", name), Some(1.0));
    assert_eq!(metric(api_addr, "serin_store_error", name), Some(0.0));
    assert_eq!(metric(api_addr, "serin_state_unsaved", name), Some(0.0));

    // Fixed: the retry brings the rollback in, and status says so.
    std::fs::remove_file(&broken).unwrap();
    let s = wait_status(api_addr, name, "the rollback in force", |s| {
        s["weightInForce"].as_f64() == Some(0.0)
    });
    assert_eq!(s["notInForce"], serde_json::json!([]), "{s:#}");
    assert!(
        !s["reason"].as_str().unwrap_or("").contains("not applied"),
        "{s:#}"
    );
    assert_eq!(metric(api_addr, "serin_router_error", name), Some(0.0));
    assert_eq!(metric(api_addr, "serin_weight_in_force", name), Some(0.0));
}

/// `serin run` with its output read while it runs.
struct LiveRun {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl LiveRun {
    fn spawn(file: &Path, dir: &Path) -> LiveRun {
        LiveRun::spawn_with(file, dir, &[])
    }

    fn spawn_with(file: &Path, dir: &Path, args: &[&str]) -> LiveRun {
        let mut child = serin_run(file, dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            }));
        }
        LiveRun {
            child,
            out,
            readers,
        }
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits (bounded) until the output contains `needle`.
    fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "serin run never printed `{needle}` within {limit:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the exit: (code, everything printed).
    fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return (status.code(), self.text());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serin run did not end within {limit:?}:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serin run` with the nginx provider, stopped by the operator (SIGINT)
/// while `nginx -t` fails: it says the rollback is not applied yet, with
/// nginx's complaint, until nginx takes it, and only then that it is done.
#[test]
fn serin_run_does_not_claim_a_rollback_nginx_refuses() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let name = "runpending";
    let file = write(
        dir.path(),
        "rollout.yaml",
        &nginx
            .rollout(name, port, stable, canary, &nginx.test_command())
            .steps("  - setWeight: 9\n  - pause: {}\n")
            .no_data_limit(1000)
            .yaml(),
    );
    let run = LiveRun::spawn(&file, dir.path());
    // 9 % in force (nginx reloaded with it), not only written: a break of
    // nginx's configuration before its reload would refuse the 9 % itself,
    // leaving 0 % in force and no rollback to refuse (it raced once).
    let state = dir.path().join("state").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = common::serin::serin()
            .args(["status", name, "--state-dir", &state, "-o", "json"])
            .output()
            .unwrap();
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if s["weightInForce"].as_f64() == Some(9.0) {
            break;
        }
        assert!(Instant::now() < deadline, "9 % never in force: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "this is not an nginx directive;\n").unwrap();
    let pid = run.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    run.wait_for("rollback not applied yet: ", Duration::from_secs(20));
    let said = run.text();
    assert!(
        said.contains("zz-unrelated"),
        "names nginx -t's complaint: {said}"
    );
    assert!(
        !said.contains(&format!("{name}: rolled back")),
        "no rollback claimed while nginx refuses it: {said}"
    );
    std::fs::remove_file(&broken).unwrap();
    let (code, out) = run.wait(Duration::from_secs(30));
    assert_eq!(code, Some(4), "{out}");
    let pending = out.find("rollback not applied yet: ").unwrap_or(usize::MAX);
    let in_force = out
        .find("now in force: canary 0 %")
        .unwrap_or_else(|| panic!("says when the rollback is in force: {out}"));
    let done = out
        .rfind(&format!("{name}: rolled back: "))
        .unwrap_or_else(|| panic!("and then that it is done: {out}"));
    assert!(pending < in_force && in_force < done, "{out}");
}

/// `serin run` tells a state database it cannot write on its own output
/// (not only in the log), and when it can again.
#[test]
fn serin_run_shows_a_state_database_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let yaml = Rollout::new("locked", local(port), stable, canary)
        .steps("  - setWeight: 30\n  - pause: { duration: 2s }\n  - setWeight: 60\n  - pause: { duration: 1s }\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = LiveRun::spawn(&file, dir.path());
    wait_for_port(local(port));
    let db = rusqlite::Connection::open(dir.path().join("state/serin.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_phase(&db).as_deref() != Some("Progressing") {
        assert!(Instant::now() < deadline, "the rollout started");
        std::thread::sleep(Duration::from_millis(50));
    }
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The end of the pause must be written: it cannot be.
    run.wait_for("state not written yet", Duration::from_secs(30));
    db.execute_batch("COMMIT").unwrap();
    run.wait_for("state database writable again", Duration::from_secs(30));
    let out = run.text();
    assert!(
        out.find("state not written yet") < out.find("state database writable again"),
        "{out}"
    );
}

fn stored_phase(db: &rusqlite::Connection) -> Option<String> {
    db.query_row(
        "SELECT phase FROM rollouts WHERE name = 'locked'",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// Sends `signal` (`-INT`, `-TERM`) to `pid`.
fn kill(signal: &str, pid: u32) {
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Ctrl-C while another process holds the state database in a write
/// transaction: the rollback is put in force at once and `serin run` exits
/// 4 promptly (it waited for the database, as long as it was held), saying
/// the database could not be written and where the rollback is recorded.
/// Once the lock goes, the first read (`serin history`) writes it: history
/// and report then agree with status.
#[test]
fn an_interrupt_while_the_database_is_locked_exits_at_once_with_the_rollback_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let yaml = Rollout::new("locked", local(port), stable, canary)
        .steps("  - setWeight: 50\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = LiveRun::spawn(&file, dir.path());
    wait_for_port(local(port));
    let db = rusqlite::Connection::open(dir.path().join("state/serin.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_phase(&db).as_deref() != Some("Paused") {
        assert!(Instant::now() < deadline, "the rollout reached its pause");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Space set aside at the run's start for a rollback the database
    // cannot take: the record is written over it (a full disk keeps it).
    let reserve = dir.path().join("state/locked.rollback-reserve");
    let reserved = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(&reserve).expect("space set aside for a rollback record"),
    );
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let interrupted = Instant::now();
    kill("-INT", run.child.id());
    let (code, out) = run.wait(Duration::from_secs(20));
    let took = interrupted.elapsed();
    assert_eq!(code, Some(4), "{out}");
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{out}");
    let pending = dir.path().join("state/locked.rollback-pending");
    assert!(
        out.contains("the state database could not be written")
            && out.contains(&format!("recorded in {}", pending.display()))
            && out.contains("written on the next start"),
        "{out}"
    );
    assert!(
        !out.contains("NOT in force"),
        "the rollback is in force: {out}"
    );
    assert!(
        !out.contains("writable again"),
        "the database was never written: {out}"
    );
    let record = std::fs::metadata(&pending).expect("the rollback is recorded");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&record),
        reserved,
        "written over the space set aside"
    );
    let recorded = std::fs::read_to_string(&pending).unwrap();
    assert!(
        recorded.contains("interrupted (SIGINT)") && recorded.contains(r#""kind":"interrupted""#),
        "{recorded:?}"
    );
    assert_eq!(stored_phase(&db).as_deref(), Some("Paused"), "{out}");
    // Read while the database is still locked: rolled back (from its
    // record), not the stored "Paused"; nothing can be written yet.
    let state = dir.path().join("state");
    let o = common::serin::serin()
        .args(["status", "locked", "-o", "json", "--state-dir"])
        .arg(&state)
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(status["phase"], "RolledBack", "{status:#}");
    assert!(
        status["reason"].as_str().is_some_and(
            |r| r.contains("interrupted (SIGINT)") && r.contains("locked.rollback-pending")
        ),
        "{status:#}"
    );
    // The rollback in force, said once (outside breaker F10: the weight
    // before it, and "rolled back: rolled back: …").
    assert_eq!(status["weight"], 0.0, "{status:#}");
    assert!(
        !status["reason"]
            .as_str()
            .unwrap_or("")
            .contains("rolled back: rolled back"),
        "{status:#}"
    );
    assert!(!status["outcome"]["kind"].is_null(), "{status:#}");
    assert!(pending.exists(), "not written while locked");
    db.execute_batch("COMMIT").unwrap();
    // The lock gone, the next read writes the rollback with its cause (as
    // the next start would): history and report agree with status
    // (they showed the run in progress until serin started again).
    let o = common::serin::serin()
        .args(["history", "locked", "-o", "json", "--state-dir"])
        .arg(&state)
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("is written to the state database now"),
        "{said}"
    );
    let history: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stored_phase(&db).as_deref(), Some("RolledBack"));
    assert!(!pending.exists(), "removed once the database has it");
    let run = &history["runs"][0];
    assert!(run["ended"].is_string(), "{history:#}");
    assert_eq!(run["outcome"]["kind"], "recovered", "{history:#}");
    assert_eq!(run["outcome"]["of"]["kind"], "interrupted", "{history:#}");
    assert!(
        run["reason"]
            .as_str()
            .is_some_and(|r| r.contains("interrupted (SIGINT)")),
        "{history:#}"
    );
    let o = common::serin::serin()
        .args(["report", "locked", "--state-dir"])
        .arg(&state)
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(report["phase"], "RolledBack", "{report:#}");
    assert!(report["ended"].is_string(), "{report:#}");
    assert_eq!(report["outcome"]["of"]["kind"], "interrupted", "{report:#}");
}

/// A second Ctrl-C exits at once, whatever the first one's rollback waits
/// for (here nginx refusing it).
#[test]
fn a_second_interrupt_exits_at_once() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let name = "twice";
    let file = write(
        dir.path(),
        "rollout.yaml",
        &nginx
            .rollout(name, port, stable, canary, &nginx.test_command())
            .steps("  - setWeight: 9\n  - pause: {}\n")
            .no_data_limit(1000)
            .yaml(),
    );
    // With -o json: the one document comes out even then.
    let run = LiveRun::spawn_with(&file, dir.path(), &["-o", "json"]);
    let state = dir.path().join("state").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = common::serin::serin()
            .args(["status", name, "--state-dir", &state, "-o", "json"])
            .output()
            .unwrap();
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if s["weightInForce"].as_f64() == Some(9.0) {
            break;
        }
        assert!(Instant::now() < deadline, "9 % never in force: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let broken = nginx.dir.join("conf.d/zz-unrelated.conf");
    std::fs::write(&broken, "this is not an nginx directive;\n").unwrap();
    kill("-INT", run.child.id());
    run.wait_for("rollback not applied yet: ", Duration::from_secs(20));
    let again = Instant::now();
    kill("-INT", run.child.id());
    let (code, out) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(4), "{out}");
    assert!(again.elapsed() < Duration::from_secs(5), "{out}");
    assert!(
        out.contains("second interrupt (SIGINT): exiting now"),
        "{out}"
    );
    assert!(
        out.contains("\"outcome\": null") && out.contains("\"exit\": 4"),
        "no JSON document: {out}"
    );
    assert!(
        !dir.path().join("state/api.json").exists(),
        "its api.json is removed"
    );
    std::fs::remove_file(&broken).unwrap();
}

/// While the state database cannot be written, status says so instead of
/// counting down a pause whose end cannot be written.
#[test]
fn status_says_the_store_is_failing_instead_of_a_countdown() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let yaml = Rollout::new("locked", local(port), stable, canary)
        .steps("  - setWeight: 30\n  - pause: { duration: 10m }\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let _run = LiveRun::spawn(&file, dir.path());
    wait_for_port(local(port));
    let state = dir.path().join("state").display().to_string();
    let status = || -> serde_json::Value {
        let o = common::serin::serin()
            .args(["status", "locked", "--state-dir", &state, "-o", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status();
        if s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("left (until "))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never counting down: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let db = rusqlite::Connection::open(dir.path().join("state/serin.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status();
        if s["notInForce"].as_array().is_some_and(|a| !a.is_empty()) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the store failure never shown: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    db.execute_batch("COMMIT").unwrap();
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the state database cannot be written")
            && reason.contains("nothing moves forward"),
        "{s:#}"
    );
    assert!(!reason.contains("left (until "), "no countdown: {s:#}");
}

/// `serin promote NAME --full` on nginx: the promotion is handed to nginx
/// on a task of its own, so the decision's answer comes a moment before
/// nginx has it. The answer waits for it (briefly) and never says "NOT in
/// force" for a change merely on its way (it did, alarming the operator).
#[test]
fn promote_full_on_nginx_answers_without_the_not_in_force_alarm() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let name = "applying";
    let file = write(
        dir.path(),
        "rollout.yaml",
        &nginx
            .rollout(name, port, stable, canary, &nginx.test_command())
            .steps("  - setWeight: 20\n  - pause: {}\n  - setWeight: 60\n  - pause: {}\n")
            .no_data_limit(1000)
            .yaml(),
    );
    let (_daemon, api_addr) = serve_nginx(&nginx, &dir.path().join("state"), TOKEN);
    let file = file.display().to_string();
    for args in [vec!["init", file.as_str()], vec!["deploy", name, "v2"]] {
        let o = cli(api_addr, &args, Some(TOKEN));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    wait_status(api_addr, name, "20 % in force", |s| {
        s["weightInForce"].as_f64() == Some(20.0) && s["phase"] == "Paused"
    });
    let o = cli(api_addr, &["promote", name, "--full"], Some(TOKEN));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!out.contains("NOT in force"), "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first == "applying: promoted fully"
            || first.starts_with("applying: promoted fully (being applied: "),
        "{out}"
    );
    let s = wait_status(api_addr, name, "promoted", |s| s["phase"] == "Succeeded");
    assert_eq!(s["notInForce"], serde_json::json!([]), "{s:#}");
}

/// A rollback while another process holds the state database (outside
/// breaker F3): status shows what was decided and is in force (RolledBack,
/// its outcome and reason, weight 0) with "state not written yet", not the
/// stored `Paused` it left; it did show the stored phase, outcome null.
#[test]
fn a_rollback_under_a_locked_database_is_shown_rolled_back_not_yet_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let yaml = Rollout::new("locked", local(port), stable, canary)
        .steps("  - setWeight: 50\n  - pause: {}\n")
        .no_data_limit(1000)
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let _run = LiveRun::spawn(&file, dir.path());
    wait_for_port(local(port));
    let db = rusqlite::Connection::open(dir.path().join("state/serin.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_phase(&db).as_deref() != Some("Paused") {
        assert!(Instant::now() < deadline, "the rollout reached its pause");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = dir.path().join("state").display().to_string();
    let status = || -> serde_json::Value {
        let o = common::serin::serin()
            .args(["status", "locked", "--state-dir", &state, "-o", "json"])
            .env_remove("SERIN_API")
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    };
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let o = common::serin::serin()
        .args(["rollback", "locked", "--state-dir", &state])
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let answer = text(&o);
    let s = status();
    let text_status = common::serin::serin()
        .args(["status", "locked", "--state-dir", &state])
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    assert_eq!(stored_phase(&db).as_deref(), Some("Paused"), "still locked");
    db.execute_batch("COMMIT").unwrap();
    assert!(answer.contains("RolledBack"), "{answer}");
    assert_eq!(s["phase"], "RolledBack", "{s:#}");
    assert_eq!(s["weight"].as_f64(), Some(0.0), "{s:#}");
    assert_eq!(s["weightInForce"].as_f64(), Some(0.0), "{s:#}");
    assert!(!s["outcome"].is_null(), "{s:#}");
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("state not written yet") && reason.contains("rolled back"),
        "{s:#}"
    );
    assert!(!reason.contains("nothing moves forward"), "{s:#}");
    let text_status = text(&text_status);
    assert!(
        text_status.contains("RolledBack") && text_status.contains("state not written yet"),
        "{text_status}"
    );
}
