//! Every run counts only its own requests (issue 15, "Runs"): a slow,
//! failing canary's requests still open when it is rolled back and the next
//! run is deployed end in the new run, but are counted in none of its
//! figures (status, report); `/metrics` shows them as carried over.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{cli, wait_status};
use common::http::get;
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin_serve, text, wait_for_port, write};
use serde_json::Value;

/// A gate the slow canary's requests wait at (bounded) until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut open = self.open.lock().unwrap();
        while !*open && Instant::now() < deadline {
            open = self
                .opened
                .wait_timeout(open, deadline - Instant::now())
                .unwrap()
                .0;
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A canary that answers `/slow` with 500 once the gate opens (counting the
/// requests that arrived), and anything else (its health check) 200.
fn slow_failing_canary(gate: Arc<Gate>, arrived: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (gate, arrived) = (gate.clone(), arrived.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16_384 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let slow = head.starts_with(b"GET /slow");
                let status = if slow {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    gate.wait(Duration::from_secs(60));
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            });
        }
    });
    addr
}

/// `GET path` through the proxy, waiting up to 60 s; the status code.
fn slow_get(proxy: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}

fn ok(api: SocketAddr, args: &[&str]) -> Output {
    let o = cli(api, args, None);
    assert_eq!(o.status.code(), Some(0), "serin {args:?}: {}", text(&o));
    o
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {}", text(o)))
}

/// Polls `cond` (bounded, 30 s).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_rolled_back_canarys_late_500s_are_not_the_next_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let gate = Arc::new(Gate::default());
    let arrived = Arc::new(AtomicUsize::new(0));
    let canary = slow_failing_canary(gate.clone(), arrived.clone());
    let proxy = local(free_port());
    let api = local(free_port());
    let _daemon = Proc::spawn(serin_serve(api, &dir.path().join("state")), false);
    wait_for_port(api);
    let file = write(
        dir.path(),
        "checkout.yaml",
        &Rollout::new("checkout", proxy, stable, canary)
            .steps("  - setWeight: 50\n  - pause: {}\n")
            .no_data_limit(100)
            .yaml(),
    );
    ok(api, &["init", &file.display().to_string()]);
    wait_for_port(proxy);

    // Run 1: half of 40 requests go to the canary, which holds them.
    ok(api, &["deploy", "checkout", "v2"]);
    wait_status(api, "checkout", "run 1 held at 50 %", |s| {
        s["phase"] == "Paused" && s["weight"] == 50.0 && s["run"] == 1
    });
    let answered = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let code = slow_get(proxy, &format!("/slow/{i}"));
                answered.lock().unwrap().push(code);
            })
        })
        .collect();
    eventually(
        "every request answered by the stable or held by the canary",
        || answered.lock().unwrap().len() + arrived.load(Ordering::SeqCst) == 40,
    );
    let held = arrived.load(Ordering::SeqCst);
    assert!(held >= 10, "the canary holds {held} of 40");

    // Run 1 is rolled back; run 2 deployed while they are still open.
    ok(api, &["rollback", "checkout"]);
    wait_status(api, "checkout", "run 1 rolled back", |s| {
        s["phase"] == "RolledBack"
    });
    let s = json_of(&ok(api, &["deploy", "checkout", "v2", "-o", "json"]));
    assert_eq!(s["run"], 2, "{s:#}");
    // Now the old canary requests end, with 500s.
    gate.open();
    for c in clients {
        c.join().unwrap();
    }
    let codes = answered.lock().unwrap().clone();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(500)).count(),
        held,
        "{codes:?}"
    );

    // Run 2's figures hold none of them: status...
    let s = wait_status(api, "checkout", "run 2 held at 50 %", |s| {
        s["phase"] == "Paused" && s["weight"] == 50.0 && s["run"] == 2
    });
    let canary_of = |s: &Value| {
        (
            s["metrics"]["canary"]["requests"].as_u64(),
            s["metrics"]["canary"]["errors"].as_u64(),
        )
    };
    assert_eq!(canary_of(&s), (Some(0), Some(0)), "{s:#}");
    // ... and the report, over analysis intervals taken after they ended.
    let report = |run: &str| json_of(&ok(api, &["report", "checkout", "--run", run]));
    let samples = report("2")["samples"].as_array().map_or(0, Vec::len);
    eventually("two more samples of run 2", || {
        report("2")["samples"].as_array().map_or(0, Vec::len) >= samples + 2
    });
    let r = report("2");
    assert_eq!(r["run"], 2);
    assert_eq!(
        (
            r["summary"]["canary"]["requests"].as_u64(),
            r["summary"]["canary"]["errors"].as_u64()
        ),
        (Some(0), Some(0)),
        "{r:#}"
    );
    let s = wait_status(api, "checkout", "run 2 still held", |s| s["run"] == 2);
    assert_eq!(
        s["phase"], "Paused",
        "not rolled back on run 1's errors: {s:#}"
    );
    assert_eq!(canary_of(&s), (Some(0), Some(0)), "{s:#}");

    // /metrics counts them apart.
    let m = get(api, "/metrics");
    assert_eq!(m.status, 200);
    let line = format!(
        "serin_requests_carried_over_total{{rollout=\"checkout\",version=\"canary\"}} {held}\n"
    );
    assert!(m.body.contains(&line), "{line} in:\n{}", m.body);
}

/// A canary that answers its health check and accepts every other request
/// without ever answering it (each connection held for 60 s at most).
fn hanging_canary() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                if buf[..n].starts_with(b"GET /healthz") {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    return;
                }
                // Accepted, read, never answered: waits for the peer to go.
                let _ = conn.read(&mut buf);
            });
        }
    });
    addr
}

#[test]
fn a_hanging_canary_is_named_apart_from_one_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let canary = hanging_canary();
    let proxy = local(free_port());
    let api = local(free_port());
    let _daemon = Proc::spawn(serin_serve(api, &dir.path().join("state")), false);
    wait_for_port(api);
    let file = write(
        dir.path(),
        "checkout.yaml",
        &Rollout::new("checkout", proxy, stable, canary)
            .steps("  - setWeight: 50\n  - pause: { duration: 1s }\n  - setWeight: 100\n")
            .no_data_limit(100)
            .yaml(),
    );
    ok(api, &["init", &file.display().to_string()]);
    ok(api, &["deploy", "checkout", "v2"]);
    wait_status(api, "checkout", "run 1 at 50 %", |s| {
        s["phase"] == "Progressing" && s["weight"] == 50.0
    });
    // 30 requests, held open: half go to the canary, which never answers.
    let open: Vec<TcpStream> = (0..30)
        .filter_map(|i| {
            let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).ok()?;
            s.write_all(format!("GET /hang/{i} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(open.len(), 30);
    let s = wait_status(api, "checkout", "the canary's silence named", |s| {
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("in flight, none answered for"))
    });
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason
            .contains("waiting for 20 canary requests (0 so far; 15 in flight, none answered for"),
        "{reason}"
    );
    // Requests in flight are no evidence: the rollout stays at 50 %.
    assert_eq!(
        (s["phase"].as_str(), s["weight"].as_f64()),
        (Some("Progressing"), Some(50.0)),
        "{s:#}"
    );
    drop(open);
}
