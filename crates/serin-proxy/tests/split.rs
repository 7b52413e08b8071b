//! The choice of version as a pure function: exact split, sticky monotonicity,
//! route overrides and their precedence.

use http::Request;
use proptest::prelude::*;
use serin_proxy::{Route, RoutingTable, StickyKey, Version, Weight, route, split, sticky};

fn table(weight: u16) -> RoutingTable {
    RoutingTable::new(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        Weight::from_hundredths(weight).unwrap(),
    )
    .unwrap()
}

fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::get("/");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn ten_thousand_requests_at_five_percent_give_exactly_five_hundred() {
    let t = table(500);
    let p = parts(&[]);
    let canary = (0..10_000)
        .filter(|&s| route(&t, &p, || s) == Version::Canary)
        .count();
    assert_eq!(canary, 500);
}

#[test]
fn every_window_is_within_one_of_its_share() {
    for w in [0u16, 1, 5, 100, 333, 500, 2500, 5000, 7525, 9999, 10_000] {
        let weight = Weight::from_hundredths(w).unwrap();
        // Prefix sums of canary picks over 30,000 sequence numbers, starting
        // at an arbitrary offset so the window is not aligned to the period.
        let start = 1_234_567u64;
        let mut prefix = vec![0u64];
        for s in start..start + 30_000 {
            let c = u64::from(split(s, weight) == Version::Canary);
            prefix.push(prefix.last().unwrap() + c);
        }
        for len in [1usize, 2, 3, 7, 10, 20, 100, 999, 10_000, 29_999] {
            for from in (0..prefix.len() - len).step_by(37) {
                let got = (prefix[from + len] - prefix[from]) as f64;
                let want = len as f64 * f64::from(w) / 10_000.0;
                assert!(
                    (got - want).abs() < 1.0,
                    "weight {w}, window {len} at {from}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn sticky_key_decides_when_present_and_split_otherwise() {
    let t = table(5000).with_sticky(Some(StickyKey::header("x-user").unwrap()));
    let user = parts(&[("x-user", "user-1")]);
    // xxh3("user-1") % 10000 = 6057: stable at 50 %, whatever the sequence number.
    for seq in 0..100 {
        assert_eq!(route(&t, &user, || seq), Version::Stable);
    }
    let t = t.with_weight(Weight::from_hundredths(6058).unwrap());
    assert_eq!(route(&t, &user, || 0), Version::Canary);
    let anonymous = parts(&[]);
    let canary = (0..1000)
        .filter(|&s| route(&t, &anonymous, || s) == Version::Canary)
        .count();
    assert!((605..=606).contains(&canary), "{canary}");

    let by_cookie = table(10_000).with_sticky(Some(StickyKey::cookie("session").unwrap()));
    assert_eq!(
        route(
            &by_cookie,
            &parts(&[("cookie", "a=b; session=user-1")]),
            || 0
        ),
        Version::Canary
    );
    assert_eq!(
        route(
            &by_cookie.with_weight(Weight::ZERO),
            &parts(&[("cookie", "session=user-1")]),
            || 0
        ),
        Version::Stable
    );
}

#[test]
fn routes_are_checked_first_and_the_first_match_wins() {
    let routes = vec![
        Route::header("x-canary", "always", Version::Canary).unwrap(),
        Route::cookie("beta", "no", Version::Stable).unwrap(),
        Route::cookie("beta", "yes", Version::Canary).unwrap(),
        Route::header("x-canary", "never", Version::Stable).unwrap(),
    ];
    let at0 = table(0)
        .with_routes(routes.clone())
        .with_sticky(Some(StickyKey::header("x-user").unwrap()));
    let at100 = table(10_000).with_routes(routes);
    for seq in 0..50 {
        assert_eq!(
            route(&at0, &parts(&[("x-canary", "always")]), || seq),
            Version::Canary
        );
        assert_eq!(
            route(
                &at0,
                &parts(&[("x-canary", "always"), ("x-user", "user-1")]),
                || seq
            ),
            Version::Canary
        );
        assert_eq!(
            route(&at0, &parts(&[("cookie", "x=1; beta=yes")]), || seq),
            Version::Canary
        );
        assert_eq!(
            route(&at100, &parts(&[("x-canary", "never")]), || seq),
            Version::Stable
        );
        assert_eq!(
            route(&at100, &parts(&[("cookie", "beta=no")]), || seq),
            Version::Stable
        );
        // Values compare exactly; a near miss falls through to the weight.
        assert_eq!(
            route(&at0, &parts(&[("x-canary", "Always")]), || seq),
            Version::Stable
        );
        assert_eq!(
            route(&at0, &parts(&[("cookie", "beta=yess")]), || seq),
            Version::Stable
        );
    }
    // Both header and cookie match: the earlier route (header) wins.
    let both = parts(&[("x-canary", "never"), ("cookie", "beta=yes")]);
    assert_eq!(route(&at100, &both, || 0), Version::Canary);
}

proptest! {
    #[test]
    fn sticky_is_monotone_in_the_weight(
        keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..50),
        mut weights in proptest::collection::vec(0u16..=10_000, 2..12),
    ) {
        weights.sort_unstable();
        for key in &keys {
            let mut was_canary = false;
            for &w in &weights {
                let v = sticky(key, Weight::from_hundredths(w).unwrap());
                prop_assert!(!(was_canary && v == Version::Stable), "key {key:?} left the canary at {w}");
                was_canary = v == Version::Canary;
            }
            prop_assert_eq!(sticky(key, Weight::ZERO), Version::Stable);
            prop_assert_eq!(sticky(key, Weight::FULL), Version::Canary);
        }
    }

    #[test]
    fn sticky_shares_track_the_weight(w in 0u16..=10_000) {
        let weight = Weight::from_hundredths(w).unwrap();
        let n = 20_000;
        let canary = (0..n).filter(|i| sticky(format!("user-{i}").as_bytes(), weight) == Version::Canary).count();
        let share = canary as f64 / n as f64;
        // 20,000 users: the binomial standard deviation is at most 0.0036.
        prop_assert!((share - weight.fraction()).abs() < 0.02, "{share} vs {}", weight.fraction());
    }
}
