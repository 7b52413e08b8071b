//! Safety promises end to end through `serin run` and its built-in proxy:
//! a canary that is broken in a way the error rate does not see is still
//! never promoted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, load, serin_run, text, write};

/// An upstream that answers every request with `404 Not Found` (a canary
/// deployed with a broken route table), one request per connection. The
/// thread ends with the test process.
fn answers_404() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found",
                );
            });
        }
    });
    addr
}

/// 4xx are not errors, so the error rate of a canary that answers 404 to
/// everything is 0 %; its 4xx rate against stable's (0 %) rolls it back.
/// Promoted (exit 0) before the 4xx check existed.
#[test]
fn a_canary_that_answers_404_to_everything_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let canary = answers_404();
    let port = free_port();
    let yaml = Rollout::new("notfound", local(port), stable, canary).yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = Proc::spawn(serin_run(&file, dir.path()), true);
    common::serin::wait_for_port(local(port));
    let _load = load(&format!("http://127.0.0.1:{port}/"), 200, "30s");
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("4xx") || out.contains("client-error"), "{out}");
}
