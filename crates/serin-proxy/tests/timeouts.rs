//! Waiting, and whose fault it is: a client that gives up on a silent
//! version, a client that leaves after the answer came, an upstream whose body
//! stalls, a client whose upload is slow or stalls, a client that leaves a
//! body the upstream stalled or one that was flowing.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use serin_proxy::{ProxyOptions, SILENT_UPSTREAM, StatusClass};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A plain TCP upstream: for each connection, reads the request head and
/// hands the stream to `answer`. Aborted (its connections closed) on Drop.
async fn tcp_upstream<F, Fut>(answer: F) -> Upstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            conns.spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                answer(stream).await;
            });
        }
    });
    Upstream::from_task(addr, task)
}

/// A client that sends `GET /` and reads what comes for `patience`, then
/// gives up and closes. Returns what it read.
async fn impatient_get(addr: std::net::SocketAddr, patience: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(patience, read).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_on_a_stalled_body_counts_against_the_version() {
    // Issue 17 F4: the canary sends its head and 3 bytes at once, then
    // nothing; the client gives up long before the upstream body timeout.
    let stable = named("stable").await;
    let canary = tcp_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
            .await;
        std::future::pending::<()>().await;
    })
    .await;
    let p = start_proxy(table(&stable, &canary, 100.0), ProxyOptions::default()).await;
    let got = impatient_get(p.addr, SILENT_UPSTREAM * 2).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("abc"), "{got}");
    let proxy = p.proxy.clone();
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.timed_out, 1);
    assert_eq!(snap.canary.errors(), 1);
    assert_eq!(snap.canary.requests(), 1);
    assert_eq!(snap.canary.cancelled, 0);
    // Its latency is the time until the client left: over the silence.
    let silence = u64::try_from(SILENT_UPSTREAM.as_micros()).unwrap();
    assert!(snap.canary.latency.min() >= silence * 99 / 100);
    assert_eq!(snap.stable.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_flowing_body_counts_against_neither_version() {
    // A chunk every 100 ms (never a silence near SILENT_UPSTREAM), for
    // far longer than the client stays: it leaves mid-body, after longer
    // than the silence bound, while the body was flowing.
    let up = tcp_upstream(|mut s| async move {
        if s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..200 {
            if s.write_all(b"3\r\nabc\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let p = start_proxy(table(&up, &up, 100.0), ProxyOptions::default()).await;
    let got = impatient_get(p.addr, SILENT_UPSTREAM * 2).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.matches("abc").count() >= 2, "{got}");
    let proxy = p.proxy.clone();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_fast_body_mid_way_counts_against_neither_version() {
    // The upstream sends 8 MiB at once; the client reads a little and
    // leaves: the proxy was waiting on the client, never on the upstream.
    let up = tcp_upstream(|mut s| async move {
        let len = 8 << 20;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let _ = s.write_all(&vec![b'x'; len]).await;
    })
    .await;
    let p = start_proxy(table(&up, &up, 100.0), ProxyOptions::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    let proxy = p.proxy.clone();
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.cancelled, 1);
    assert_eq!(snap.canary.errors(), 0);
    assert_eq!(snap.canary.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_as_the_version_answers_is_not_its_timeout() {
    // The version answers the moment the client goes away (the client
    // closed its write side, which the proxy takes for gone as nginx does;
    // or it gave up while the proxy itself was slow to pass the answer on):
    // the version did answer, so it is recorded answered, not its timeout.
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let up = upstream(move |_req| {
        let gate = gate.clone();
        async move {
            let _ = gate.acquire().await;
            Response::new(full("ok"))
        }
    })
    .await;
    let p = start_proxy(table(&up, &up, 100.0), ProxyOptions::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let proxy = p.proxy.clone();
    eventually("the request is in flight", || {
        proxy.recorder().snapshot().canary.in_flight == 1
    })
    .await;
    s.shutdown().await.unwrap();
    // The proxy closes the connection once it has taken the client for
    // gone; the version answers just after.
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && got.is_empty(), "{got}");
    release.add_permits(1);
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.timed_out, 0);
    assert_eq!(snap.canary.errors(), 0);
    assert_eq!(snap.canary.requests_of(StatusClass::Success), 1);
    assert_eq!(snap.canary.cancelled, 0);
}
