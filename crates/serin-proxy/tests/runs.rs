//! Runs: every request counts in the run that was in force when it was
//! routed. A slow, failing canary's last requests that end after a new run
//! began are carried over, never credited to the new run.

mod common;

use std::sync::Arc;

use common::*;
use http::{Request, Response, StatusCode};
use serin_proxy::StatusClass;
use tokio::sync::Semaphore;

/// A canary that answers `/slow` with 500 once `release` gives it a permit,
/// and anything else 200 at once.
async fn slow_failing(release: Arc<Semaphore>) -> Upstream {
    upstream(move |req: Request<hyper::body::Incoming>| {
        let release = release.clone();
        async move {
            if req.uri().path() == "/slow" {
                if let Ok(permit) = release.acquire().await {
                    permit.forget();
                }
                return Response::builder().status(500).body(full("")).unwrap();
            }
            Response::new(full("ok"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_an_earlier_run_that_end_in_a_new_one_are_carried_over() {
    let release = Arc::new(Semaphore::new(0));
    let stable = named("stable").await;
    let canary = slow_failing(release.clone()).await;
    let p = start_proxy(
        table(&stable, &canary, 100.0),
        serin_proxy::ProxyOptions::default(),
    )
    .await;
    let proxy = p.proxy.clone();
    // Run 0: three slow requests routed to the canary, still open.
    let c = client();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            let url = p.url("/slow");
            tokio::spawn(async move { send(&c, Request::get(url).body(full("")).unwrap()).await })
        })
        .collect();
    eventually("three canary requests in flight", || {
        proxy.recorder().snapshot().canary.in_flight == 3
    })
    .await;

    // Run 1 begins; its figures count from here.
    assert_eq!(p.proxy.begin_run(), 1);
    let start = p.proxy.recorder().snapshot();
    assert_eq!((proxy.recorder().run(), start.canary.requests()), (1, 0));
    // A request of run 1, answered at once.
    let fresh = get(&c, &p.url("/fresh")).await;
    assert_eq!(fresh.status, StatusCode::OK);
    // Run 0's requests end now, with 500s.
    release.add_permits(3);
    for s in slow {
        assert_eq!(s.await.unwrap().status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    eventually("every request recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;

    let now = p.proxy.recorder().snapshot();
    let c = &now.canary;
    assert_eq!(
        c.requests() - start.canary.requests(),
        1,
        "run 1's own: {c:?}"
    );
    assert_eq!(
        c.errors() - start.canary.errors(),
        0,
        "no 500 of run 0: {c:?}"
    );
    assert_eq!(c.requests_of(StatusClass::ServerError), 0);
    assert_eq!(c.latency.len(), 1, "run 0's latencies are not run 1's");
    assert_eq!((c.carried_over, c.carried_over_errors), (3, 3));

    // A request routed in run 1 that ends in run 1 is its own, a 500 too.
    let release2 = release.clone();
    let url = p.url("/slow");
    let c2 = client();
    let late =
        tokio::spawn(async move { send(&c2, Request::get(url).body(full("")).unwrap()).await });
    eventually("the request is in flight", || {
        proxy.recorder().snapshot().canary.in_flight == 1
    })
    .await;
    release2.add_permits(1);
    assert_eq!(
        late.await.unwrap().status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    eventually("recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let end = p.proxy.recorder().snapshot();
    assert_eq!(end.canary.requests() - start.canary.requests(), 2);
    assert_eq!(end.canary.errors() - start.canary.errors(), 1);
    assert_eq!(end.canary.carried_over, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_on_an_earlier_runs_request_is_carried_over() {
    let release = Arc::new(Semaphore::new(0));
    let canary = slow_failing(release.clone()).await;
    let p = start_proxy(
        table(&canary, &canary, 100.0),
        serin_proxy::ProxyOptions::default(),
    )
    .await;
    let proxy = p.proxy.clone();
    let c = client();
    let url = p.url("/slow");
    let waiting =
        tokio::spawn(async move { send(&c, Request::get(url).body(full("")).unwrap()).await });
    eventually("in flight", || {
        proxy.recorder().snapshot().canary.in_flight == 1
    })
    .await;
    let run = p.proxy.begin_run();
    let start = p.proxy.recorder().snapshot();
    assert_eq!(p.proxy.recorder().run(), run);
    // The client gives up while the version has not answered: a timeout of
    // run 0, not of run 1.
    waiting.abort();
    eventually("recorded", || {
        proxy.recorder().snapshot().canary.in_flight == 0
    })
    .await;
    let now = p.proxy.recorder().snapshot();
    assert_eq!(now.canary.timed_out, 0, "{:?}", now.canary);
    assert_eq!(now.canary.errors(), start.canary.errors());
    assert_eq!(
        (now.canary.carried_over, now.canary.carried_over_errors),
        (1, 1)
    );
}
