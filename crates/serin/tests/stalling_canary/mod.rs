//! A canary that stalls the body of every second request, for the tests of
//! a client that gives up on a stalled body (px_body_stall, nginx_e2e).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
pub fn stalling_canary() -> SocketAddr {
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

/// The plan both tests run: half the traffic to the stalling canary for 8 s,
/// then all of it for 4 s.
pub const STEPS: &str = "  - setWeight: 50\n  - pause: { duration: 8s }\n  - setWeight: 100\n  - pause: { duration: 4s }\n";

/// `serin load` through `port` for 30 s at 100 requests/s, whose clients give
/// up after 2 s (long before the proxy's 60 s upstream body timeout).
pub fn impatient_load(port: u16) -> super::common::serin::Proc {
    let mut load = super::common::serin::serin();
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
    super::common::serin::Proc::spawn(load, false)
}

/// `serin run`'s output says it rolled the canary back (exit 3), not
/// promoted it, with `reason` (the error rate) in its reason.
pub fn assert_rolled_back(output: &std::process::Output, reason: &str) {
    let out = super::common::serin::text(output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(!out.contains("promoted: v2"), "{out}");
    assert!(
        out.contains(reason),
        "the reason names the error rate: {out}"
    );
}
