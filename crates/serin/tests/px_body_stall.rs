//! Issue 17 F4 through the real binary: a canary that sends its response head
//! at once and then stalls the body of half its requests, under load whose
//! clients give up after 2 s (long before the proxy's 60 s upstream body
//! timeout), is rolled back on its error rate, not promoted on the healthy
//! half.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin, serin_run, text, wait_for_port, write};

/// Reads one request head from `s` into `buf` (keeping what follows it);
/// false when the connection ended first.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A canary on a free port whose every second request gets its head and
/// three bytes of a 1000-byte body, then nothing until the proxy closes the
/// connection (at most 60 s); the others get a whole answer at once.
fn stalling_canary() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seq = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let seq = seq.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = Vec::new();
                while read_head(&mut s, &mut buf) {
                    if seq.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc");
                        // Stalled: wait for the proxy to close (or 60 s).
                        let _ = s.read(&mut [0u8; 64]);
                        return;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv2")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_canary_that_stalls_half_its_bodies_is_rolled_back_not_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let canary = stalling_canary();
    let port = free_port();
    // The error rate decides (the p95 ceiling is above the clients' 2 s).
    let yaml = Rollout::new("bstall", local(port), stable, canary)
        .steps("  - setWeight: 50\n  - pause: { duration: 8s }\n  - setWeight: 100\n  - pause: { duration: 4s }\n")
        .latency_p95("5s")
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = Proc::spawn(serin_run(&file, dir.path()), true);
    wait_for_port(local(port));
    let mut load = serin();
    load.args([
        "load",
        &format!("http://127.0.0.1:{port}/"),
        "--rps",
        "100",
        "--duration",
        "30s",
        "--timeout",
        "2s",
    ]);
    let _load = Proc::spawn(load, false);
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(!out.contains("promoted: v2"), "{out}");
    assert!(
        out.contains("error rate"),
        "the reason names the error rate: {out}"
    );
}
