//! Waiting, and whose fault it is: a client that gives up on a silent
//! version, a client that leaves after the answer came, an upstream whose body
//! stalls, a client whose upload is slow or stalls.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use serin_proxy::{ProxyOptions, StatusClass};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A body that sends `first` and then nothing, ever (and never ends).
struct Stalls {
    first: Option<Bytes>,
}

impl http_body::Body for Stalls {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.first.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

/// An upstream that sends its head and `first` of a 1000-byte body, then
/// stalls.
async fn stalling_body(first: &'static str) -> Upstream {
    upstream(move |_req| async move {
        Response::builder()
            .header("content-length", "1000")
            .body(
                Stalls {
                    first: Some(Bytes::from_static(first.as_bytes())),
                }
                .boxed(),
            )
            .unwrap()
    })
    .await
}

/// An upstream that answers `/hang` never and anything else at once.
async fn hangs_on_some() -> Upstream {
    upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/hang" {
            std::future::pending::<()>().await;
        }
        Response::new(full("ok"))
    })
    .await
}

/// An upstream that reads the whole request body and answers its length.
async fn counts_body() -> Upstream {
    upstream(|req: Request<hyper::body::Incoming>| async move {
        match req.into_body().collect().await {
            Ok(b) => Response::new(full(format!("{} bytes", b.to_bytes().len()))),
            Err(_) => Response::builder().status(400).body(full("")).unwrap(),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_leaves_clients_waiting_is_judged_on_it() {
    // The issue's case: a canary that never answers one request in five,
    // and clients that give up long before the proxy's 30 s upstream timeout.
    let stable = named("stable").await;
    let canary = hangs_on_some().await;
    let p = start_proxy(table(&stable, &canary, 100.0), ProxyOptions::default()).await;
    let c = client();
    let mut gave_up = 0;
    for i in 0..10 {
        let path = if i % 5 == 4 { "/hang" } else { "/" };
        let req = Request::get(p.url(path)).body(full("")).unwrap();
        match tokio::time::timeout(Duration::from_millis(300), c.request(req)).await {
            Ok(resp) => assert_eq!(resp.unwrap().status(), StatusCode::OK),
            Err(_) => gave_up += 1,
        }
    }
    assert_eq!(gave_up, 2);
    let proxy = p.proxy.clone();
    eventually("both abandoned requests recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.timed_out, 2);
    assert_eq!(snap.canary.errors(), 2);
    assert_eq!(snap.canary.requests(), 10);
    assert_eq!(snap.canary.requests_of(StatusClass::Success), 8);
    assert_eq!(snap.canary.cancelled, 0);
    // Every judged request has a latency; the abandoned ones waited >= 300 ms.
    assert_eq!(snap.canary.latency.len(), 10);
    assert!(
        snap.canary.latency.max() >= 290_000,
        "{}",
        snap.canary.latency.max()
    );

    // /metrics shows the class, and its latencies.
    let admin = start_admin(p.proxy.clone(), "r").await;
    let text = get(&client(), &format!("http://{}/metrics", admin.addr))
        .await
        .text();
    let m = parse_metrics(&text);
    let canary = [("version", "canary")];
    let timeout = [("version", "canary"), ("code", "timeout")];
    assert_eq!(metric(&m, "serin_requests_total", &timeout), 2.0);
    assert_eq!(
        metric(&m, "serin_request_duration_seconds_count", &canary),
        10.0
    );
    assert_eq!(metric(&m, "serin_requests_cancelled_total", &canary), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_waiting_counts_the_time_waited() {
    let silent = hangs_on_some().await;
    let p = start_proxy(table(&silent, &silent, 0.0), ProxyOptions::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let proxy = p.proxy.clone();
    eventually("the request is in flight", || {
        proxy.recorder().snapshot().stable.in_flight == 1
    })
    .await;
    // The proxy received the request before this point: it waits >= 300 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().stable.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.timed_out, 1);
    assert_eq!(snap.stable.errors(), 1);
    assert_eq!(snap.stable.requests(), 1);
    assert_eq!(snap.stable.cancelled, 0);
    assert!(
        snap.stable.latency.min() >= 297_000,
        "{}",
        snap.stable.latency.min()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_after_the_head_counts_against_neither_version() {
    let up = stalling_body("part").await;
    let p = start_proxy(table(&up, &up, 0.0), ProxyOptions::default()).await;
    let resp = client()
        .request(Request::get(p.url("/")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    let proxy = p.proxy.clone();
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().stable.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.cancelled, 1);
    assert_eq!(snap.stable.timed_out, 0);
    assert_eq!(snap.stable.requests(), 0);
    assert_eq!(snap.stable.errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_that_stalls_is_cut_and_counted_against_its_version() {
    let stable = named("stable").await;
    let canary = stalling_body("part").await;
    let options = ProxyOptions {
        upstream_body_timeout: Duration::from_millis(300),
        ..ProxyOptions::default()
    };
    let p = start_proxy(table(&stable, &canary, 100.0), options).await;
    let resp = client()
        .request(Request::get(p.url("/")).body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the stalled body ends within 10 s");
    assert!(body.is_err(), "a cut body must not look complete");
    let proxy = p.proxy.clone();
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.errors(), 1);
    assert_eq!(snap.canary.requests(), 1);
    assert_eq!(snap.canary.cancelled, 0);
    assert_eq!(snap.stable.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_the_upstreams_timeout() {
    let up = counts_body().await;
    let options = ProxyOptions {
        upstream_timeout: Duration::from_millis(300),
        client_body_timeout: Duration::from_secs(5),
        ..ProxyOptions::default()
    };
    let p = start_proxy(table(&up, &up, 0.0), options).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // Ten bytes over about a second: over three upstream timeouts, each wait
    // far inside the client body timeout.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"x").await.unwrap();
    }
    let (resp, _) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("10 bytes"), "{resp}");
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.requests_of(StatusClass::Success), 1);
    assert_eq!(snap.stable.errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_gets_408_counted_against_neither_version() {
    let up = counts_body().await;
    let options = ProxyOptions {
        client_body_timeout: Duration::from_millis(300),
        ..ProxyOptions::default()
    };
    let p = start_proxy(table(&up, &up, 100.0), options).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nxyz")
        .await
        .unwrap();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(closed, "the connection is closed after a 408");
    let proxy = p.proxy.clone();
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.requests(), 0);
    assert_eq!(snap.canary.errors(), 0);
    assert_eq!(snap.canary.cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_upload_counts_against_neither_version() {
    // The client breaks its own upload while the proxy waits on it: no
    // timeout of the version, and no 400 counted against it.
    let up = counts_body().await;
    let p = start_proxy(table(&up, &up, 100.0), ProxyOptions::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nxyz")
        .await
        .unwrap();
    let proxy = p.proxy.clone();
    eventually("the request is in flight", || {
        proxy.recorder().snapshot().canary.in_flight == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.cancelled, 1);
    assert_eq!(snap.canary.timed_out, 0);
    assert_eq!(snap.canary.requests(), 0);
    assert_eq!(snap.canary.errors(), 0);
}
