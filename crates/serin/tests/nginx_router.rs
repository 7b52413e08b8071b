//! The nginx traffic router against a real nginx: weights take effect through
//! reloads, and a configuration that fails `nginx -t` leaves the old one in
//! place and serving.

mod common;

use std::time::{Duration, Instant};

use common::nginx::{Nginx, free_port, local};
use common::upstream::{client, version_of, versioned};
use serin::controller::seams::{MetricSource, TrafficRouter};
use serin::providers::metrics::nginx_log::NginxLogSource;
use serin::providers::traffic::nginx::{NginxConfig, NginxRouter, install, render};
use serin_proxy::{Route, Upstream, Version, Weight};

/// Canary share over `n` requests.
async fn canary_share(url: &str, n: usize) -> f64 {
    let c = client();
    let mut canary = 0;
    for _ in 0..n {
        if version_of(&c, url).await.as_deref() == Some("canary") {
            canary += 1;
        }
    }
    canary as f64 / n as f64
}

/// Waits (bounded) until the share is within `range`: a reload replaces
/// workers gracefully, so old workers may answer for a moment.
async fn settles(url: &str, range: std::ops::RangeInclusive<f64>) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let share = canary_share(url, 400).await;
        if range.contains(&share) || Instant::now() > deadline {
            return share;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_follow_through_reloads_and_a_failing_test_changes_nothing() {
    let nginx = Nginx::start();
    let stable = versioned("stable").await;
    let canary = versioned("canary").await;
    let port = free_port();
    let config = NginxConfig {
        rollout: "checkout".into(),
        include: nginx.include("serin-checkout"),
        test: nginx.command(&["-t", "-q"]),
        reload: nginx.command(&["-s", "reload"]),
        access_log: nginx.dir.join("logs/serin-checkout.json"),
        listen: local(port),
        stable: Upstream::parse(&format!("http://{stable}")).unwrap(),
        canary: Upstream::parse(&format!("http://{canary}")).unwrap(),
        baseline: None,
        sticky: None,
        routes: vec![],
    };
    let router = NginxRouter::new(config.clone());
    let url = format!("http://127.0.0.1:{port}/");

    router
        .apply_weight(Weight::from_percent(25.0).unwrap())
        .await
        .unwrap();
    let share = settles(&url, 0.17..=0.33).await;
    assert!(
        (0.17..=0.33).contains(&share),
        "25 % weight gave {share}; {}",
        nginx.error_log()
    );

    router.apply_weight(Weight::ZERO).await.unwrap();
    assert_eq!(settles(&url, 0.0..=0.0).await, 0.0, "weight 0: all stable");

    // A configuration nginx -t refuses: its access log cannot be opened.
    let good = std::fs::read_to_string(&config.include).unwrap();
    let mut broken = config.clone();
    broken.access_log = nginx.dir.join("no/such/dir/log.json");
    let err = install(&broken, &render(&broken, Weight::FULL))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("-t"),
        "the failing command is named: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&config.include).unwrap(),
        good,
        "old file back in place"
    );
    assert_eq!(
        canary_share(&url, 200).await,
        0.0,
        "still serving the old split"
    );

    router.apply_weight(Weight::FULL).await.unwrap();
    assert_eq!(
        settles(&url, 1.0..=1.0).await,
        1.0,
        "weight 100: all canary"
    );
    router.promote().await.unwrap();
    // After promotion the stable upstream is the former canary.
    assert!(
        std::fs::read_to_string(&config.include)
            .unwrap()
            .contains(&format!(
                "upstream serin_checkout_stable {{\n    server {canary};"
            ))
    );
}

/// With a baseline, nginx (its `nginx -t` passing) splits three ways: the
/// baseline gets the canary's share, routes never reach it, and the access
/// log gives every version's requests and those a route sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_gets_the_canarys_share_through_nginx_and_its_log() {
    let nginx = Nginx::start();
    let stable = versioned("stable").await;
    let canary = versioned("canary").await;
    let baseline = versioned("baseline").await;
    let port = free_port();
    let config = NginxConfig {
        rollout: "checkout".into(),
        include: nginx.include("serin-checkout"),
        test: nginx.command(&["-t", "-q"]),
        reload: nginx.command(&["-s", "reload"]),
        access_log: nginx.dir.join("logs/serin-checkout.json"),
        listen: local(port),
        stable: Upstream::parse(&format!("http://{stable}")).unwrap(),
        canary: Upstream::parse(&format!("http://{canary}")).unwrap(),
        baseline: Some(Upstream::parse(&format!("http://{baseline}")).unwrap()),
        sticky: None,
        routes: vec![Route::header("x-canary", "always", Version::Canary).unwrap()],
    };
    let router = NginxRouter::new(config.clone());
    router.check_ready().await.unwrap();
    router
        .apply_weight(Weight::from_percent(20.0).unwrap())
        .await
        .unwrap();
    let mut log = NginxLogSource::new(config.access_log.clone()).with_baseline();
    let url = format!("http://127.0.0.1:{port}/");
    let c = client();
    let n: u32 = 1_000;
    let mut seen = std::collections::HashMap::<String, u64>::new();
    for _ in 0..n {
        let v = version_of(&c, &url).await.expect("an answer");
        *seen.entry(v).or_default() += 1;
    }
    let share = |v: &str| *seen.get(v).unwrap_or(&0) as f64 / f64::from(n);
    // 1,000 requests at 20 %: a binomial standard deviation of 1.3 points.
    for v in ["canary", "baseline"] {
        assert!(
            (0.14..=0.26).contains(&share(v)),
            "{v}: {seen:?}; {}",
            nginx.error_log()
        );
    }
    assert_eq!(seen.values().sum::<u64>(), u64::from(n), "{seen:?}");
    for _ in 0..30 {
        let req = http::Request::get(&url)
            .header("x-canary", "always")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.headers()["x-serin-version"], "canary");
    }
    // nginx writes each line when the request ends: poll (bounded) until
    // every request is in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = log.snapshot().await.unwrap();
        let total =
            s.stable.requests + s.canary.requests + s.baseline.as_ref().map_or(0, |b| b.requests);
        if total >= u64::from(n) + 30 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |v: &str| *seen.get(v).unwrap_or(&0);
    assert_eq!(s.stable.requests, count("stable"));
    assert_eq!(s.canary.requests, count("canary") + 30);
    assert_eq!(s.baseline.map(|b| b.requests), Some(count("baseline")));
    assert_eq!(s.routed, Some((0, 30)));

    // Promoted: the baseline's upstream is gone from the file.
    router.promote().await.unwrap();
    let text = std::fs::read_to_string(&config.include).unwrap();
    assert!(!text.contains("serin_checkout_baseline"), "{text}");
    // A keep-alive connection to a worker of the old generation may answer
    // once more while nginx retires it: poll (bounded) for the new one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while version_of(&c, &url).await.as_deref() != Some("canary") {
        assert!(Instant::now() < deadline, "the promoted file never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file nginx does not include (a wrong `include` path) is tested and
/// reloaded without error, but never served: the change is an error and the
/// file goes back to what it was. Before, the generated text stayed on top
/// of whatever the path held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_nginx_never_serves_is_put_back() {
    let nginx = Nginx::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let include = elsewhere.path().join("not-included.conf");
    let before = "# Managed by serin for rollout `checkout`: every change rewrites this file.\n# an earlier one\n";
    std::fs::write(&include, before).unwrap();
    let config = NginxConfig {
        rollout: "checkout".into(),
        include: include.clone(),
        test: nginx.command(&["-t", "-q"]),
        reload: nginx.command(&["-s", "reload"]),
        access_log: nginx.dir.join("logs/serin-checkout.json"),
        listen: local(free_port()),
        stable: Upstream::parse("http://127.0.0.1:1").unwrap(),
        canary: Upstream::parse("http://127.0.0.1:2").unwrap(),
        baseline: None,
        sticky: None,
        routes: vec![],
    };
    let err = install(&config, &render(&config, Weight::ZERO))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("did not serve"),
        "says nginx did not serve it: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&include).unwrap(),
        before,
        "the file is back as it was"
    );
}

/// Found by an outside test: a rollout file naming the operator's own site
/// (or another rollout's include) as its include replaced it. A file serin
/// did not write, or a symbolic link, is never replaced; a symbolic link
/// left at the temp file's name is never followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_serin_did_not_write_is_never_replaced() {
    let nginx = Nginx::start();
    let site = nginx.include("default");
    std::fs::write(&site, "# the operator's own site\n").unwrap();
    let config = |include: std::path::PathBuf| NginxConfig {
        rollout: "checkout".into(),
        include,
        test: nginx.command(&["-t", "-q"]),
        reload: nginx.command(&["-s", "reload"]),
        access_log: nginx.dir.join("logs/serin-checkout.json"),
        listen: local(free_port()),
        stable: Upstream::parse("http://127.0.0.1:1").unwrap(),
        canary: Upstream::parse("http://127.0.0.1:2").unwrap(),
        baseline: None,
        sticky: None,
        routes: vec![],
    };
    let c = config(site.clone());
    let err = install(&c, &render(&c, Weight::ZERO)).await.unwrap_err();
    assert!(err.to_string().contains("is not this rollout's"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&site).unwrap(),
        "# the operator's own site\n"
    );
    // Another rollout's file is not this one's either.
    let other = nginx.include("serin-other");
    std::fs::write(
        &other,
        "# Managed by serin for rollout `other`: every change rewrites this file.\n",
    )
    .unwrap();
    let c = config(other.clone());
    assert!(install(&c, &render(&c, Weight::ZERO)).await.is_err());
    // A symbolic link at the temp file's name points outside: not followed.
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "keep\n").unwrap();
    let include = nginx.include("serin-checkout");
    std::os::unix::fs::symlink(&victim, include.with_extension("serin-tmp")).unwrap();
    let c = config(include.clone());
    install(&c, &render(&c, Weight::ZERO)).await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert!(
        !std::fs::symlink_metadata(&include).unwrap().is_symlink(),
        "the include is a file of its own"
    );
}

/// Found by an outside test: an access log that is a link (symbolic or
/// hard) to the operator's configuration, or any file of theirs, had nginx
/// append JSON to it and broke every later `nginx -t`. Refused before any
/// write; a log of serin's own lines is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_that_is_not_serins_own_is_refused() {
    let nginx = Nginx::start();
    let operator = nginx.include("operator");
    std::fs::write(&operator, "# the operator's own\n").unwrap();
    let config = |access_log: std::path::PathBuf| NginxConfig {
        rollout: "checkout".into(),
        include: nginx.include("serin-checkout"),
        test: nginx.command(&["-t", "-q"]),
        reload: nginx.command(&["-s", "reload"]),
        access_log,
        listen: local(free_port()),
        stable: Upstream::parse("http://127.0.0.1:1").unwrap(),
        canary: Upstream::parse("http://127.0.0.1:2").unwrap(),
        baseline: None,
        sticky: None,
        routes: vec![],
    };
    let logs = nginx.dir.join("logs");
    let soft = logs.join("soft.json");
    std::os::unix::fs::symlink(&operator, &soft).unwrap();
    let hard = logs.join("hard.json");
    std::fs::hard_link(&operator, &hard).unwrap();
    let theirs = logs.join("theirs.json");
    std::fs::write(&theirs, "not a log of serin's\n").unwrap();
    for (log, why) in [
        (soft, "symbolic link"),
        (hard, "hard link"),
        (theirs, "something other"),
    ] {
        let c = config(log.clone());
        let err = install(&c, &render(&c, Weight::ZERO)).await.unwrap_err();
        assert!(err.to_string().contains(why), "{}: {err}", log.display());
    }
    assert_eq!(
        std::fs::read_to_string(&operator).unwrap(),
        "# the operator's own\n"
    );
    assert!(!nginx.include("serin-checkout").exists(), "nothing written");
    // serin's own log (empty, or with its lines) is fine.
    let own = logs.join("own.json");
    std::fs::write(&own, "{\"time\":\"2026-12-06T00:00:00+00:00\"}\n").unwrap();
    let c = config(own);
    install(&c, &render(&c, Weight::ZERO)).await.unwrap();
}
