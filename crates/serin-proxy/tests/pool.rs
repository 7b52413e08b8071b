//! The proxy's keep-alive connections to its upstreams, seen from a raw-socket
//! upstream that counts the connections it accepts and sees closed: reuse,
//! connections the upstream closes, idle expiry, and a changed upstream.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::StatusCode;
use serin_proxy::{ProxyOptions, RoutingTable, Weight};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A keep-alive HTTP/1.1 upstream on raw sockets that answers every request
/// `200 name`; with `close_after`, it closes each connection that long after
/// its last answer (as a server's keep-alive timeout does), without saying so;
/// with `answers`, it hangs up on the request after that many on a
/// connection, unanswered (a keep-alive timeout firing as a request arrives).
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counting {
    async fn start(name: &'static str, close_after: Option<Duration>) -> Counting {
        Counting::start_with(name, close_after, usize::MAX).await
    }

    async fn start_with(
        name: &'static str,
        close_after: Option<Duration>,
        answers: usize,
    ) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut answered = 0;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let read = match close_after {
                            Some(t) if buf.is_empty() => {
                                match tokio::time::timeout(t, s.read(&mut chunk)).await {
                                    Ok(r) => r,
                                    Err(_) => break, // idle too long: hang up
                                }
                            }
                            _ => s.read(&mut chunk).await,
                        };
                        match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if answered == answers {
                            break;
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if answered == answers {
                                buf.clear();
                                break;
                            }
                            answered += 1;
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nx-version: {name}\r\ncontent-length: {}\r\n\r\n{name}",
                                name.len()
                            );
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Counting {
            addr,
            accepted,
            closed,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn table(stable: &Counting, canary: &Counting, pct: f64) -> RoutingTable {
    RoutingTable::new(
        &stable.url(),
        &canary.url(),
        Weight::from_percent(pct).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let stable = Counting::start("stable", None).await;
    let canary = Counting::start("canary", None).await;
    let proxy = start_proxy(table(&stable, &canary, 0.0), ProxyOptions::default()).await;
    let c = client();
    for _ in 0..200 {
        let a = get(&c, &proxy.url("/")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.text(), "stable");
    }
    assert_eq!(stable.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(canary.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(stable.closed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn connections_the_upstream_closed_while_idle_are_not_used() {
    // The upstream hangs up 50 ms after each answer; a request every 150 ms
    // finds the pooled connection closed and must get a new one, not a 502.
    let stable = Counting::start("stable", Some(Duration::from_millis(50))).await;
    let canary = Counting::start("canary", None).await;
    let proxy = start_proxy(table(&stable, &canary, 0.0), ProxyOptions::default()).await;
    let c = client();
    for i in 1..=10 {
        let a = get(&c, &proxy.url("/")).await;
        assert_eq!(a.status, StatusCode::OK, "request {i}: {}", a.text());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(stable.accepted.load(Ordering::SeqCst), 10);
    assert_eq!(proxy.proxy.recorder().snapshot().stable.errors(), 0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let stable = Counting::start("stable", None).await;
    let canary = Counting::start("canary", None).await;
    let options = ProxyOptions {
        pool_idle_timeout: Duration::from_millis(300),
        ..ProxyOptions::default()
    };
    let proxy = start_proxy(table(&stable, &canary, 50.0), options).await;
    let c = client();
    for _ in 0..4 {
        assert_eq!(get(&c, &proxy.url("/")).await.status, StatusCode::OK);
    }
    assert_eq!(stable.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(canary.accepted.load(Ordering::SeqCst), 1);
    eventually("both idle upstream connections closed by the proxy", || {
        stable.closed.load(Ordering::SeqCst) == 1 && canary.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    // And the next request opens a fresh one.
    assert_eq!(get(&c, &proxy.url("/")).await.status, StatusCode::OK);
    assert_eq!(
        stable.accepted.load(Ordering::SeqCst) + canary.accepted.load(Ordering::SeqCst),
        3
    );
}

#[tokio::test]
async fn a_new_canary_upstream_gets_the_requests_and_the_old_connections_go() {
    let stable = Counting::start("stable", None).await;
    let old = Counting::start("old-canary", None).await;
    let new = Counting::start("new-canary", None).await;
    let proxy = start_proxy(table(&stable, &old, 100.0), ProxyOptions::default()).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/")).await.text(), "old-canary");
    }
    proxy.proxy.set_table(table(&stable, &new, 100.0));
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/")).await.text(), "new-canary");
    }
    assert_eq!(new.accepted.load(Ordering::SeqCst), 1);
    // The old canary's idle connection is not kept for nothing.
    eventually("the old canary's connection closed", || {
        old.closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_get_the_upstream_hangs_up_on_is_sent_again_on_a_new_connection() {
    // Each upstream connection answers one request and hangs up on the next
    // one unanswered, as a keep-alive timeout firing as it arrives would.
    let stable = Counting::start_with("stable", None, 1).await;
    let canary = Counting::start("canary", None).await;
    let proxy = start_proxy(table(&stable, &canary, 0.0), ProxyOptions::default()).await;
    let c = client();
    assert_eq!(get(&c, &proxy.url("/")).await.status, StatusCode::OK);
    // Idle long enough that the proxy keeps a copy to send again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a = get(&c, &proxy.url("/")).await;
    assert_eq!((a.status, a.text().as_str()), (StatusCode::OK, "stable"));
    assert_eq!(stable.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.proxy.recorder().snapshot().stable.errors(), 0);

    // A POST with a body is not sent twice: the client gets the 502.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let post = http::Request::post(proxy.url("/"))
        .body(full("order #1"))
        .unwrap();
    let a = send(&c, post).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(stable.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_get_the_upstream_hangs_up_on_at_once_is_sent_again_too() {
    // As above, with no idle time at all: the upstream may close a
    // keep-alive connection at any age.
    let stable = Counting::start_with("stable", None, 1).await;
    let canary = Counting::start("canary", None).await;
    let proxy = start_proxy(table(&stable, &canary, 0.0), ProxyOptions::default()).await;
    let c = client();
    for n in 1..=5 {
        let a = get(&c, &proxy.url("/")).await;
        assert_eq!((a.status, a.text().as_str()), (StatusCode::OK, "stable"));
        // The first on a new connection; each later one written on the
        // previous connection, hung up on, and sent again on a new one.
        assert_eq!(stable.accepted.load(Ordering::SeqCst), n);
    }
    let snap = proxy.proxy.recorder().snapshot();
    assert_eq!(snap.stable.errors(), 0);
    assert_eq!(snap.stable.requests(), 5);
}

/// Reads one request head from `s` (requests here have no body).
async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_request_sent_again_goes_to_the_upstream_it_was_routed_to_after_a_table_swap() {
    // The old stable answers a first request, then hangs up on the second
    // (a GET, so the proxy sends it again on a new connection), but only once
    // the test has swapped in a table whose stable is another upstream.
    const OLD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nold";
    let old = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_url = format!("http://{}", old.local_addr().unwrap());
    let (asked, mut second_request) = tokio::sync::mpsc::channel::<()>(1);
    let (swapped, table_swapped) = tokio::sync::oneshot::channel::<()>();
    let old_task = tokio::spawn(async move {
        let (mut s, _) = old.accept().await.unwrap();
        assert!(read_head(&mut s).await);
        s.write_all(OLD).await.unwrap();
        assert!(read_head(&mut s).await);
        asked.send(()).await.unwrap();
        table_swapped.await.unwrap();
        drop(s);
        // Later connections: every request answered.
        loop {
            let (mut s, _) = old.accept().await.unwrap();
            tokio::spawn(async move {
                while read_head(&mut s).await {
                    if s.write_all(OLD).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let new = Counting::start("new", None).await;
    let at = |stable: &str| RoutingTable::new(stable, &new.url(), Weight::ZERO).unwrap();
    let proxy = start_proxy(at(&old_url), ProxyOptions::default()).await;
    let c = client();
    assert_eq!(get(&c, &proxy.url("/")).await.text(), "old");

    let url = proxy.url("/");
    let second = tokio::spawn(async move { get(&client(), &url).await });
    second_request.recv().await.unwrap();
    proxy.proxy.set_table(at(&new.url()));
    swapped.send(()).unwrap();
    let a = second.await.unwrap();
    // Routed by the old table, so sent (and sent again) to the old stable,
    // never to the upstream of a table it was not routed by.
    assert_eq!((a.status, a.text().as_str()), (StatusCode::OK, "old"));
    assert_eq!(new.accepted.load(Ordering::SeqCst), 0);
    // Requests after the swap go to the new stable.
    assert_eq!(get(&c, &proxy.url("/")).await.text(), "new");
    old_task.abort();
}
