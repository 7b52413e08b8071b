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
