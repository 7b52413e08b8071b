//! The proxy over real sockets: split, routes, weight changes under load,
//! upstream failures, metrics, header rewriting, streaming, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serin_proxy::{ProxyOptions, Route, RoutingTable, StatusClass, StickyKey, Version, Weight};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn weight(pct: f64) -> Weight {
    Weight::from_percent(pct).unwrap()
}

/// A URL on which nothing listens: bound, then released.
async fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Sends `n` GETs over `workers` concurrent keep-alive clients and counts the
/// answers by the upstream's `x-version`.
async fn count_versions(url: String, n: usize, workers: usize) -> (usize, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (next, url) = (next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let (mut stable, mut canary) = (0, 0);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let a = get(&c, &url).await;
                assert_eq!(a.status, StatusCode::OK);
                match a.headers["x-version"].to_str().unwrap() {
                    "stable" => stable += 1,
                    "canary" => canary += 1,
                    other => panic!("{other}"),
                }
            }
            (stable, canary)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (s, c) = t.await.unwrap();
        total.0 += s;
        total.1 += c;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_is_exact_through_sockets() {
    let (s, c) = (named("stable").await, named("canary").await);
    for (pct, n, want) in [
        (5.0, 10_000, 500..=500),
        (33.33, 3_000, 999..=1000),
        (50.0, 1_000, 500..=500),
        (0.0, 200, 0..=0),
        (100.0, 200, 200..=200),
    ] {
        let p = start_proxy(table(&s, &c, pct), ProxyOptions::default()).await;
        let (stable, canary) = count_versions(p.url("/"), n, 8).await;
        assert_eq!(stable + canary, n);
        assert!(
            want.contains(&canary),
            "weight {pct}: {canary} of {n} on canary"
        );
        let snap = p.proxy.recorder().snapshot();
        assert_eq!(snap.canary.requests_of(StatusClass::Success), canary as u64);
        assert_eq!(snap.stable.requests_of(StatusClass::Success), stable as u64);
        assert_eq!(snap.stable.in_flight + snap.canary.in_flight, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_gets_the_canarys_share_and_routed_requests_are_told_apart() {
    let (s, c, b) = (
        named("stable").await,
        named("canary").await,
        named("baseline").await,
    );
    let t = table(&s, &c, 20.0)
        .with_baseline(Some(serin_proxy::Upstream::parse(&b.url()).unwrap()))
        .with_routes(vec![
            Route::header("x-canary", "always", Version::Canary).unwrap(),
            Route::header("x-canary", "never", Version::Stable).unwrap(),
        ]);
    let p = start_proxy(t, ProxyOptions::default()).await;
    let admin = start_admin(p.proxy.clone(), "checkout").await;
    // 1,000 requests by the weight over 8 connections, and 30 + 20 by routes.
    let n = 1_000;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, url) = (next.clone(), p.url("/"));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut seen = std::collections::HashMap::<String, u64>::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let a = get(&c, &url).await;
                assert_eq!(a.status, StatusCode::OK);
                let v = a.headers["x-version"].to_str().unwrap().to_owned();
                *seen.entry(v).or_default() += 1;
            }
            seen
        }));
    }
    let mut seen = std::collections::HashMap::<String, u64>::new();
    for t in tasks {
        for (v, k) in t.await.unwrap() {
            *seen.entry(v).or_default() += k;
        }
    }
    assert_eq!(seen.get("canary"), Some(&200), "{seen:?}");
    assert_eq!(seen.get("baseline"), Some(&200), "{seen:?}");
    assert_eq!(seen.get("stable"), Some(&600), "{seen:?}");
    let cl = client();
    for (value, times, want) in [("always", 30, "canary"), ("never", 20, "stable")] {
        for _ in 0..times {
            let req = Request::get(p.url("/"))
                .header("x-canary", value)
                .body(full(""))
                .unwrap();
            assert_eq!(send(&cl, req).await.headers["x-version"], want);
        }
    }
    let snap = p.proxy.recorder().snapshot();
    let base = snap.baseline.as_ref().expect("a table with a baseline");
    assert_eq!(
        (
            snap.stable.requests(),
            snap.canary.requests(),
            base.requests()
        ),
        (620, 230, 200)
    );
    assert_eq!(
        (snap.stable.routed, snap.canary.routed, base.routed),
        (20, 30, 0)
    );
    assert_eq!(base.in_flight, 0);

    let m = get(&cl, &format!("http://{}/metrics", admin.addr)).await;
    let parsed = parse_metrics(&m.text());
    let labels = |v| [("rollout", "checkout"), ("version", v), ("code", "2xx")];
    assert_eq!(
        metric(&parsed, "serin_requests_total", &labels("baseline")),
        200.0
    );
    assert_eq!(
        metric(&parsed, "serin_requests_total", &labels("canary")),
        230.0
    );
    assert_eq!(
        metric(
            &parsed,
            "serin_request_duration_seconds_count",
            &[("rollout", "checkout"), ("version", "baseline")]
        ),
        200.0
    );

    // Promoted without a baseline: the baseline takes nothing more, and its
    // figures stay shown (counters never vanish).
    p.proxy
        .set_table(table(&c, &c, 0.0).with_routes(p.proxy.table().routes().to_vec()));
    for _ in 0..10 {
        assert_eq!(get(&cl, &p.url("/")).await.headers["x-version"], "canary");
    }
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.baseline.map(|b| b.requests()), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_baseline_no_baseline_series_is_shown() {
    let (s, c) = (named("stable").await, named("canary").await);
    let p = start_proxy(table(&s, &c, 50.0), ProxyOptions::default()).await;
    let admin = start_admin(p.proxy.clone(), "checkout").await;
    let cl = client();
    for _ in 0..4 {
        get(&cl, &p.url("/")).await;
    }
    assert!(p.proxy.recorder().snapshot().baseline.is_none());
    let text = get(&cl, &format!("http://{}/metrics", admin.addr))
        .await
        .text();
    assert!(!text.contains("baseline"), "{text}");
    assert!(text.contains("version=\"canary\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_sticky_keys_through_sockets() {
    let (s, c) = (named("stable").await, named("canary").await);
    let t = table(&s, &c, 0.0)
        .with_routes(vec![
            Route::header("x-canary", "always", Version::Canary).unwrap(),
            Route::cookie("beta", "yes", Version::Canary).unwrap(),
        ])
        .with_sticky(Some(StickyKey::header("x-user").unwrap()));
    let p = start_proxy(t, ProxyOptions::default()).await;
    let cl = client();
    let version = |headers: &[(&str, &str)]| {
        let mut b = Request::get(p.url("/"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(full("")).unwrap();
        let cl = cl.clone();
        async move {
            send(&cl, req).await.headers["x-version"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(version(&[("x-canary", "always")]).await, "canary");
    assert_eq!(version(&[("cookie", "a=1; beta=yes")]).await, "canary");
    assert_eq!(version(&[("x-canary", "sometimes")]).await, "stable");
    assert_eq!(version(&[("x-user", "user-1")]).await, "stable");
    // user-1's bucket is 6057: on the canary from 60.58 % on, and it stays there.
    for pct in [60.58, 75.0, 100.0] {
        p.proxy.set_weight(weight(pct));
        assert_eq!(version(&[("x-user", "user-1")]).await, "canary", "at {pct}");
    }
    p.proxy.set_weight(weight(60.57));
    assert_eq!(version(&[("x-user", "user-1")]).await, "stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_flips_under_load_drop_no_request() {
    let (s, c) = (named("stable").await, named("canary").await);
    let p = start_proxy(table(&s, &c, 0.0), ProxyOptions::default()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let flipper = {
        let (proxy, stop) = (p.proxy.clone(), stop.clone());
        tokio::spawn(async move {
            let mut flips = 0u32;
            while !stop.load(Ordering::Relaxed) && flips < 2_000 {
                proxy.set_weight(if flips.is_multiple_of(2) {
                    Weight::FULL
                } else {
                    Weight::ZERO
                });
                flips += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            flips
        })
    };

    // Each worker keeps ONE connection for all its requests: if a weight
    // change closed or reset it, send_request would fail.
    let mut workers = Vec::new();
    for _ in 0..6 {
        let addr = p.addr;
        workers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let (mut stable, mut canary) = (0, 0);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            for _ in 0..3_000 {
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                let req = Request::get("/")
                    .header("host", "test")
                    .body(full(""))
                    .unwrap();
                let resp = send
                    .send_request(req)
                    .await
                    .expect("connection kept across weight changes");
                assert_eq!(resp.status(), StatusCode::OK);
                let v = resp.headers()["x-version"].to_str().unwrap().to_owned();
                resp.into_body().collect().await.unwrap();
                if v == "canary" {
                    canary += 1
                } else {
                    stable += 1
                }
            }
            (stable, canary)
        }));
    }
    let mut totals = (0, 0);
    for w in workers {
        let (s, c) = w.await.unwrap();
        totals = (totals.0 + s, totals.1 + c);
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.await.unwrap();
    assert!(flips > 10, "only {flips} flips");
    assert!(totals.0 > 0 && totals.1 > 0, "{totals:?}");
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.errors() + snap.canary.errors(), 0);
    assert_eq!(
        snap.stable.requests() + snap.canary.requests(),
        (totals.0 + totals.1) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_down_gives_502s_counted_against_the_canary() {
    let s = named("stable").await;
    let t = RoutingTable::new(&s.url(), &closed_url().await, weight(50.0)).unwrap();
    let p = start_proxy(t, ProxyOptions::default()).await;
    let cl = client();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..200 {
        let a = get(&cl, &p.url("/")).await;
        match a.status {
            StatusCode::OK => {
                assert_eq!(a.text(), "stable");
                ok += 1
            }
            StatusCode::BAD_GATEWAY => bad += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((ok, bad), (100, 100));
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.errors(), 100);
    assert_eq!(snap.canary.requests(), 100);
    assert_eq!(snap.stable.requests_of(StatusClass::Success), 100);
    assert_eq!(snap.stable.errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gives_504_counted_against_its_version() {
    let s = named("stable").await;
    let slow = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let options = ProxyOptions {
        upstream_timeout: Duration::from_millis(200),
        ..ProxyOptions::default()
    };
    let p = start_proxy(table(&s, &slow, 100.0), options).await;
    let cl = client();
    for _ in 0..3 {
        assert_eq!(
            get(&cl, &p.url("/")).await.status,
            StatusCode::GATEWAY_TIMEOUT
        );
    }
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.canary.errors(), 3);
    assert_eq!(snap.stable.requests(), 0);
    // The latency of a 504 is at least the timeout.
    assert!(
        snap.canary.latency.min() >= 190_000,
        "{}",
        snap.canary.latency.min()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_weight_endpoints_match_the_traffic() {
    let by_path = |name: &'static str| {
        upstream(move |req| async move {
            let status = match req.uri().path() {
                "/missing" => 404,
                "/broken" => 503,
                "/moved" => 301,
                _ => 200,
            };
            Response::builder()
                .status(status)
                .header("x-version", name)
                .body(full(name))
                .unwrap()
        })
    };
    let (s, c) = (by_path("stable").await, by_path("canary").await);
    let p = start_proxy(table(&s, &c, 50.0), ProxyOptions::default()).await;
    let admin = start_admin(p.proxy.clone(), "checkout").await;
    let cl = client();
    // 40 requests in a fixed order: the split alternates, so each path's
    // version is known. seq 0 -> stable, 1 -> canary, ...
    let paths = ["/", "/missing", "/broken", "/moved"];
    let mut want = std::collections::HashMap::<(&str, &str), u64>::new();
    for i in 0..40 {
        let path = paths[i % 4];
        let a = get(&cl, &p.url(path)).await;
        let version = if i % 2 == 0 { "stable" } else { "canary" };
        assert_eq!(a.headers["x-version"], version);
        let class = StatusClass::of(a.status).label();
        *want.entry((version, class)).or_default() += 1;
    }

    let m = get(&cl, &format!("http://{}/metrics", admin.addr)).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let parsed = parse_metrics(&m.text());
    for version in ["stable", "canary"] {
        let mut total = 0.0;
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let got = metric(
                &parsed,
                "serin_requests_total",
                &[
                    ("rollout", "checkout"),
                    ("version", version),
                    ("code", class),
                ],
            );
            assert_eq!(
                got,
                *want.get(&(version, class)).unwrap_or(&0) as f64,
                "{version} {class}"
            );
            total += got;
        }
        let labels = [("rollout", "checkout"), ("version", version)];
        assert_eq!(
            metric(&parsed, "serin_request_duration_seconds_count", &labels),
            total
        );
        assert_eq!(metric(&parsed, "serin_requests_in_flight", &labels), 0.0);
        let sum = metric(&parsed, "serin_request_duration_seconds_sum", &labels);
        assert!(sum > 0.0 && sum < 10.0, "{sum}");
        // Buckets are cumulative and end at the count.
        let buckets: Vec<(f64, f64)> = parsed
            .iter()
            .filter(|(n, l, _)| {
                n == "serin_request_duration_seconds_bucket"
                    && l.iter().any(|(k, v)| k == "version" && v == version)
            })
            .map(|(_, l, v)| {
                let le = &l.iter().find(|(k, _)| k == "le").unwrap().1;
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    *v,
                )
            })
            .collect();
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{buckets:?}"
        );
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, total));
    }
    assert_eq!(
        metric(&parsed, "serin_canary_weight", &[("rollout", "checkout")]),
        50.0
    );

    let base = format!("http://{}", admin.addr);
    let a = get(&cl, &format!("{base}/weight")).await;
    assert_eq!(
        (a.status, a.text().trim()),
        (StatusCode::OK, r#"{"weight":50}"#)
    );
    let put = |body: &'static str| {
        let req = Request::put(format!("{base}/weight"))
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let cl = cl.clone();
        async move { send(&cl, req).await }
    };
    let a = put(r#"{"weight":25}"#).await;
    assert_eq!(
        (a.status, a.text().trim()),
        (StatusCode::OK, r#"{"weight":25}"#)
    );
    assert_eq!(p.proxy.weight(), weight(25.0));
    let a = put(r#"{"weight":5.25}"#).await;
    assert_eq!(a.text().trim(), r#"{"weight":5.25}"#);
    for bad in [
        r#"{"weight":101}"#,
        r#"{"weight":"25"}"#,
        r#"{"wieght":25}"#,
        "25",
        "",
        r#"{"weight":1.001}"#,
    ] {
        let a = put(bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        let err: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON error body");
        let msg = err["error"].as_str().unwrap();
        assert!(msg.contains("weight"), "{bad}: {msg}");
    }
    assert_eq!(
        p.proxy.weight(),
        weight(5.25),
        "a refused PUT changes nothing"
    );
    let m = parse_metrics(&get(&cl, &format!("{base}/metrics")).await.text());
    assert_eq!(
        metric(&m, "serin_canary_weight", &[("rollout", "checkout")]),
        5.25
    );
    assert_eq!(
        get(&cl, &format!("{base}/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    let del = send(
        &cl,
        Request::delete(format!("{base}/weight"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(del.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// An upstream that answers with the request head it received, one header a
/// line, and sends hop-by-hop headers of its own.
async fn echo_head() -> Upstream {
    upstream(|req| async move {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap()));
        }
        Response::builder()
            .header("connection", "x-up-secret")
            .header("x-up-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("upgrade", "h2c")
            .header("trailer", "x-trail")
            .header("x-up-kept", "yes")
            .body(full(text))
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_go_in_both_directions_and_forwarding_fields_come() {
    let e = echo_head().await;
    let p = start_proxy(table(&e, &e, 0.0), ProxyOptions::default()).await;
    let (resp, _) = raw(
        p.addr,
        b"GET /path?q=1 HTTP/1.1\r\n\
          Host: shop.example:1234\r\n\
          Connection: x-secret, keep-alive\r\n\
          Connection: x-second, close\r\n\
          X-Secret: 1\r\n\
          X-Second: 2\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Trailer: x-t\r\n\
          X-Forwarded-For: 10.1.1.1\r\n\
          X-Forwarded-Proto: https\r\n\
          X-Kept: yes\r\n\
          \r\n",
    )
    .await;
    let resp = resp.to_ascii_lowercase();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // What the upstream saw.
    assert!(body.starts_with("get /path?q=1 http/1.1\n"), "{body}");
    for gone in [
        "connection:",
        "x-secret:",
        "x-second:",
        "keep-alive:",
        "proxy-connection:",
        "te:",
        "trailer:",
        "transfer-encoding:",
        "upgrade:",
    ] {
        assert!(
            !body.lines().any(|l| l.starts_with(gone)),
            "{gone} forwarded:\n{body}"
        );
    }
    for kept in [
        "host: shop.example:1234",
        "x-kept: yes",
        "x-forwarded-for: 10.1.1.1, 127.0.0.1",
        "x-forwarded-proto: http",
        "via: 1.1 serin",
    ] {
        assert!(body.lines().any(|l| l == kept), "missing {kept}:\n{body}");
    }
    // What the client got back.
    for gone in [
        "x-up-secret:",
        "keep-alive:",
        "proxy-connection:",
        "upgrade:",
        "trailer:",
    ] {
        assert!(
            !head.lines().any(|l| l.starts_with(gone)),
            "{gone} returned:\n{head}"
        );
    }
    assert!(head.lines().any(|l| l == "x-up-kept: yes"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_stream_both_ways() {
    // The upstream echoes the request body as it arrives, chunked.
    let echo =
        upstream(|req| async move { Response::new(req.into_body().map_err(Into::into).boxed()) })
            .await;
    let p = start_proxy(table(&echo, &echo, 0.0), ProxyOptions::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .await
    .unwrap();
    // The first chunk comes back before the client has sent the rest: neither
    // direction waits for a whole body.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("first") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "closed early");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("first chunk echoed while the request is still open");
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !rest.ends_with(b"0\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "closed early");
            rest.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("rest of the body");
    assert!(String::from_utf8_lossy(&rest).contains("second"));
    let snap = p.proxy.recorder().snapshot();
    assert_eq!(snap.stable.requests_of(StatusClass::Success), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_passes_through_with_its_length() {
    // 8 MiB each way through one proxy: the upstream counts what arrives and
    // answers with that many bytes of its own.
    let counter = upstream(|req| async move {
        let mut n = 0u64;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len() as u64;
            }
        }
        let chunks = generated(n);
        Response::builder()
            .header("x-received", n.to_string())
            .body(chunks)
            .unwrap()
    })
    .await;
    let p = start_proxy(table(&counter, &counter, 0.0), ProxyOptions::default()).await;
    let size = 8 * 1024 * 1024u64;
    let req = Request::post(p.url("/upload"))
        .body(generated(size))
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-received"], size.to_string().as_str());
    assert_eq!(a.body.len() as u64, size);
}

/// `n` bytes of `x`, generated frame by frame (64 KiB each), never held whole.
fn generated(n: u64) -> Body {
    Generated { left: n }.boxed()
}

struct Generated {
    left: u64,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(
            vec![b'x'; n as usize],
        )))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_head_counts_a_timeout_of_the_version() {
    let slow = upstream(|_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Response::new(full("late"))
    })
    .await;
    let p = start_proxy(table(&slow, &slow, 0.0), ProxyOptions::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.proxy.recorder().snapshot().stable.in_flight, 1);
    drop(s);
    // Wait (bounded) for the proxy to notice.
    let mut snap = p.proxy.recorder().snapshot();
    for _ in 0..100 {
        if snap.stable.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        snap = p.proxy.recorder().snapshot();
    }
    assert_eq!(snap.stable.in_flight, 0);
    // The client gave up while the version kept it waiting: its error.
    assert_eq!(snap.stable.timed_out, 1);
    assert_eq!(snap.stable.cancelled, 0);
    assert_eq!(snap.stable.requests(), 1);
    assert_eq!(snap.stable.errors(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_open_requests_finish() {
    let slow = upstream(|_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Response::new(full("done"))
    })
    .await;
    let mut p = start_proxy(table(&slow, &slow, 0.0), ProxyOptions::default()).await;
    let url = p.url("/");
    let open = tokio::spawn(async move { get(&client(), &url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = p.shutdown();
    let a = open.await.unwrap();
    assert_eq!((a.status, a.text().as_str()), (StatusCode::OK, "done"));
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns after the drain")
        .unwrap();
    assert!(
        TcpStream::connect(p.addr).await.is_err(),
        "still accepting after shutdown"
    );
    assert_eq!(p.proxy.recorder().snapshot().stable.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_has_a_deadline() {
    let stuck = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("never"))
    })
    .await;
    let options = ProxyOptions {
        drain_timeout: Duration::from_millis(200),
        ..ProxyOptions::default()
    };
    let mut p = start_proxy(table(&stuck, &stuck, 0.0), options).await;
    let url = p.url("/");
    let open = tokio::spawn(async move {
        client()
            .request(Request::get(url).body(full("")).unwrap())
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = p.shutdown();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns at the deadline")
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_err(), "the stuck request's connection was closed");
    // The version kept it waiting past the drain: its error, once the
    // version has had its ANSWER_GRACE to show it had answered.
    let proxy = p.proxy.clone();
    eventually("the request is recorded", || {
        proxy.recorder().snapshot().stable.in_flight == 0
    })
    .await;
    assert_eq!(p.proxy.recorder().snapshot().stable.timed_out, 1);
}
