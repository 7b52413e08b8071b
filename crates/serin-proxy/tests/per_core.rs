//! `serve_per_core`, the server `serin proxy`, `serin run` and `serin serve`
//! use: one table and one recorder over every core, an address that is in use
//! refused, and the same shutdown as `serve` (stop accepting, drain open
//! requests up to the deadline).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::{Request, Response, StatusCode};
use serin_proxy::{ProxyOptions, Weight};
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_core_routes_by_one_table_into_one_recorder() {
    let stable = named("stable").await;
    let canary = named("canary").await;
    let p = start_per_core(table(&stable, &canary, 25.0), ProxyOptions::default()).await;
    // Eight keep-alive connections, spread over the cores.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, url) = (next.clone(), p.url("/"));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut canary = 0;
            while next.fetch_add(1, Ordering::Relaxed) < 400 {
                let a = get(&c, &url).await;
                assert_eq!(a.status, StatusCode::OK);
                canary += usize::from(a.text() == "canary");
            }
            canary
        }));
    }
    let mut canary_answers = 0;
    for t in tasks {
        canary_answers += t.await.unwrap();
    }
    // The split is exact over all cores: one sequence, one table.
    assert_eq!(canary_answers, 100);
    let snap = p.proxy.recorder().snapshot();
    assert_eq!((snap.stable.requests(), snap.canary.requests()), (300, 100));

    // A weight change reaches every core.
    p.proxy.set_weight(Weight::FULL);
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, &p.url("/")).await.text(), "canary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_core_splits_three_ways_into_one_recorder_with_a_baseline() {
    let (stable, canary, baseline) = (
        named("stable").await,
        named("canary").await,
        named("baseline").await,
    );
    let t = table(&stable, &canary, 25.0)
        .with_baseline(Some(serin_proxy::Upstream::parse(&baseline.url()).unwrap()));
    let p = start_per_core(t, ProxyOptions::default()).await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, url) = (next.clone(), p.url("/"));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut seen = [0u64; 3];
            while next.fetch_add(1, Ordering::Relaxed) < 400 {
                let a = get(&c, &url).await;
                assert_eq!(a.status, StatusCode::OK);
                match a.text().as_str() {
                    "stable" => seen[0] += 1,
                    "canary" => seen[1] += 1,
                    "baseline" => seen[2] += 1,
                    other => panic!("{other}"),
                }
            }
            seen
        }));
    }
    let mut seen = [0u64; 3];
    for t in tasks {
        for (n, k) in seen.iter_mut().zip(t.await.unwrap()) {
            *n += k;
        }
    }
    // The first 400 sequence numbers at 25 %: exactly 100 each to the
    // canary and the baseline, over every core.
    assert_eq!(seen, [200, 100, 100]);
    let snap = p.proxy.recorder().snapshot();
    let b = snap.baseline.expect("a baseline in force");
    assert_eq!(
        (snap.stable.requests(), snap.canary.requests(), b.requests()),
        (200, 100, 100)
    );
    assert_eq!(b.in_flight, 0);
}

#[tokio::test]
async fn an_address_in_use_is_refused_also_when_serin_holds_it() {
    let held = serin_proxy::bind_per_core("127.0.0.1:0".parse().unwrap()).unwrap();
    let again = serin_proxy::bind_per_core(held.local_addr()).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);

    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = serin_proxy::bind_per_core(other.local_addr().unwrap()).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_open_requests_finish() {
    let release = Arc::new(Notify::new());
    let held = release.clone();
    let slow = upstream(move |_req| {
        let held = held.clone();
        async move {
            held.notified().await;
            Response::new(full("done"))
        }
    })
    .await;
    let mut p = start_per_core(table(&slow, &slow, 0.0), ProxyOptions::default()).await;
    let url = p.url("/");
    let open = tokio::spawn(async move { get(&client(), &url).await });
    eventually("the request is open", || {
        p.proxy.recorder().snapshot().stable.in_flight == 1
    })
    .await;
    let served = p.shutdown();
    eventually("no longer accepting", || {
        std::net::TcpStream::connect(p.addr).is_err()
    })
    .await;
    assert!(!served.is_finished(), "returned before the drain");
    release.notify_one();
    let a = open.await.unwrap();
    assert_eq!((a.status, a.text().as_str()), (StatusCode::OK, "done"));
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve_per_core returns after the drain")
        .unwrap();
    assert!(TcpStream::connect(p.addr).await.is_err());
    assert_eq!(p.proxy.recorder().snapshot().stable.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_has_a_deadline() {
    let stuck = upstream(|_req| std::future::pending::<Response<Body>>()).await;
    let options = ProxyOptions {
        drain_timeout: Duration::from_millis(200),
        ..ProxyOptions::default()
    };
    let mut p = start_per_core(table(&stuck, &stuck, 0.0), options).await;
    let url = p.url("/");
    let open = tokio::spawn(async move {
        client()
            .request(Request::get(url).body(full("")).unwrap())
            .await
    });
    eventually("the request is open", || {
        p.proxy.recorder().snapshot().stable.in_flight == 1
    })
    .await;
    let served = p.shutdown();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve_per_core returns at the deadline")
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

#[tokio::test]
async fn dropped_it_stops_serving_at_once() {
    let stable = named("stable").await;
    let p = start_per_core(table(&stable, &stable, 0.0), ProxyOptions::default()).await;
    assert_eq!(get(&client(), &p.url("/")).await.status, StatusCode::OK);
    let addr = p.addr;
    drop(p);
    eventually("the listener closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}
