//! RFC 9112 message framing, spoken in raw bytes over a TcpStream: what the
//! proxy refuses, what it closes, and that nothing smuggled reaches an upstream.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use http::Response;
use http_body_util::BodyExt;
use serin_proxy::{ProxyOptions, RoutingTable, Weight};

/// An upstream that logs every request line it gets and echoes the body length.
async fn logging_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let up = upstream(move |req| {
        let l = l.clone();
        async move {
            let line = format!("{} {}", req.method(), req.uri());
            let host = req
                .headers()
                .get("host")
                .map(|h| h.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            l.lock().unwrap().push(format!(
                "{line} host={host} body={}",
                String::from_utf8_lossy(&body)
            ));
            Response::new(full(format!("got {} bytes", body.len())))
        }
    })
    .await;
    (up, log)
}

async fn proxy_to(up: &Upstream) -> Running {
    let t = RoutingTable::new(&up.url(), &up.url(), Weight::ZERO).unwrap();
    start_proxy(t, ProxyOptions::default()).await
}

fn status(resp: &str) -> u16 {
    resp.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"))
}

#[tokio::test]
async fn refused_framing_gets_400_and_a_closed_connection() {
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "differing Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "Content-Length list that differs",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
        ),
        (
            "Content-Length not a number",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        ),
        (
            "signed Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad : 1\r\n\r\n",
        ),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (
            "Host not an authority",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let (resp, closed) = raw(p.addr, bytes).await;
        assert_eq!(status(&resp), 400, "{what}: {resp:?}");
        assert!(closed, "{what}: connection left open");
    }
    assert!(
        log.lock().unwrap().is_empty(),
        "forwarded: {:?}",
        log.lock().unwrap()
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_closed() {
    // The classic CL.TE smuggling attempt: by Content-Length the body is
    // `0\r\n\r\n` and `GET /smuggled` is a second request; by chunked framing
    // the body is empty and the rest is the start of another message.
    // hyper frames by Transfer-Encoding alone and closes the connection after
    // the response (RFC 9112 6.1 allows this or a 400), so /smuggled is never
    // parsed and the upstream sees one request with an empty body.
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    let (resp, closed) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(
        closed,
        "connection must close after a message with both framings"
    );
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen, ["POST / host=a body="], "{seen:?}");
}

#[tokio::test]
async fn a_broken_chunked_body_is_not_forwarded_as_complete() {
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    let (resp, closed) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(closed);
    assert!(!resp.starts_with("HTTP/1.1 2"), "{resp}");
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    // The client's fault: counted against neither version.
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.errors() + snap.canary.errors(), 0);
}

#[tokio::test]
async fn identical_content_length_lines_pipelining_and_absolute_form_work() {
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    let (resp, _) = raw(
        p.addr,
        b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc\
          GET http://other.example:81/two?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n1;ext=1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 3, "{resp}");
    assert_eq!(
        log.lock().unwrap().clone(),
        [
            "POST /one host=a body=abc",
            "GET /two?x=1 host=other.example:81 body=",
            "POST /three host=a body=hi!"
        ]
    );
}

#[tokio::test]
async fn http_1_0_clients_are_answered_and_closed() {
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    let (resp, closed) = raw(p.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(closed);
    // Host filled in from the upstream address, as the proxy's own hop needs one.
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_absolute_form_target_with_userinfo_is_refused() {
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    for target in [
        "http://u:p@evil.example/",
        "http://u@evil.example:81/x",
        "http://@evil.example/",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let (resp, closed) = raw(p.addr, req.as_bytes()).await;
        assert_eq!(status(&resp), 400, "{target}: {resp}");
        assert!(resp.contains("userinfo"), "{target}: {resp}");
        assert!(closed, "{target}: connection left open");
    }
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    // Refused before routing: no version saw a request.
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.requests() + snap.canary.requests(), 0);
}

#[tokio::test]
async fn connection_cannot_remove_host() {
    let (up, log) = logging_upstream().await;
    let p = proxy_to(&up).await;
    let (resp, _) = raw(
        p.addr,
        b"POST /x HTTP/1.1\r\nHost: shop.example\r\nConnection: Host, content-length, close\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(
        log.lock().unwrap().clone(),
        ["POST /x host=shop.example body=abc"]
    );
}
