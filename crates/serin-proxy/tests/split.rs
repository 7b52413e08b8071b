//! The choice of version as a pure function: exact split, sticky monotonicity,
//! route overrides and their precedence.

use http::Request;
use proptest::prelude::*;
use serin_proxy::{
    Route, RoutingTable, StickyKey, Upstream, Version, Via, Weight, choose, route, split,
    split_with_baseline, sticky, sticky_with_baseline,
};

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

fn with_baseline(weight: u16) -> RoutingTable {
    table(weight).with_baseline(Some(Upstream::parse("http://127.0.0.1:3").unwrap()))
}

/// How many of `n` sequence numbers from `start` each version gets:
/// (stable, canary, baseline).
fn shares(t: &RoutingTable, start: u64, n: u64) -> (u64, u64, u64) {
    let p = parts(&[]);
    let mut got = (0, 0, 0);
    for s in start..start + n {
        match route(t, &p, || s) {
            Version::Stable => got.0 += 1,
            Version::Canary => got.1 += 1,
            Version::Baseline => got.2 += 1,
        }
    }
    got
}

#[test]
fn with_a_baseline_ten_thousand_requests_split_exactly_three_ways() {
    for (w, want) in [
        (0, (10_000, 0, 0)),
        (1, (9_998, 1, 1)),
        (500, (9_000, 500, 500)),
        (3333, (3_334, 3_333, 3_333)),
        (5000, (0, 5_000, 5_000)),
        (6000, (0, 6_000, 4_000)),
        (10_000, (0, 10_000, 0)),
    ] {
        // Any 10,000 consecutive sequence numbers, aligned or not.
        for start in [0, 1, 4_321, 987_654_321] {
            assert_eq!(shares(&with_baseline(w), start, 10_000), want, "weight {w}");
        }
    }
    // Without a baseline table, nothing goes to it.
    assert_eq!(shares(&table(500), 0, 10_000), (9_500, 500, 0));
}

#[test]
fn a_baseline_leaves_the_canarys_requests_as_they_were() {
    for w in [0u16, 1, 5, 100, 333, 500, 2500, 5000, 7525, 9999, 10_000] {
        let weight = Weight::from_hundredths(w).unwrap();
        for s in (0..30_000u64).chain(u64::MAX - 100..=u64::MAX) {
            let three = split_with_baseline(s, weight, weight.baseline_share());
            assert_eq!(
                three == Version::Canary,
                split(s, weight) == Version::Canary,
                "weight {w}, seq {s}"
            );
            assert_eq!(
                split_with_baseline(s, weight, Weight::ZERO),
                split(s, weight)
            );
        }
    }
}

#[test]
fn every_window_holds_within_two_of_the_baselines_share() {
    for w in [1u16, 5, 100, 333, 500, 2500, 4999, 5000, 6000, 9999] {
        let weight = Weight::from_hundredths(w).unwrap();
        let b = weight.baseline_share();
        let start = 7_654_321u64;
        let mut prefix = vec![0u64];
        for s in start..start + 30_000 {
            let c = u64::from(split_with_baseline(s, weight, b) == Version::Baseline);
            prefix.push(prefix.last().unwrap() + c);
        }
        for len in [1usize, 2, 3, 7, 10, 20, 100, 999, 10_000, 29_999] {
            for from in (0..prefix.len() - len).step_by(37) {
                let got = (prefix[from + len] - prefix[from]) as f64;
                let want = len as f64 * b.fraction();
                assert!(
                    (got - want).abs() < 2.0,
                    "weight {w}, window {len} at {from}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn routes_never_reach_the_baseline_and_say_they_decided() {
    let t = with_baseline(2000)
        .with_routes(vec![
            Route::header("x-canary", "always", Version::Canary).unwrap(),
            Route::header("x-canary", "never", Version::Stable).unwrap(),
        ])
        .with_sticky(Some(StickyKey::header("x-user").unwrap()));
    for seq in 0..200 {
        assert_eq!(
            choose(&t, &parts(&[("x-canary", "always")]), || seq),
            (Version::Canary, Via::Route)
        );
        assert_eq!(
            choose(&t, &parts(&[("x-canary", "never")]), || seq),
            (Version::Stable, Via::Route)
        );
        assert_eq!(choose(&t, &parts(&[]), || seq).1, Via::Split);
    }
    assert_eq!(
        choose(&t, &parts(&[("x-user", "user-1")]), || 0).1,
        Via::Sticky
    );
}

#[test]
fn sticky_users_on_the_baseline_sit_in_the_top_buckets() {
    // user-1's bucket is 6057: on the baseline once it has 39.43 %, i.e.
    // from a canary weight of 39.43 % to 60.57 % (then the canary's).
    let t = with_baseline(0).with_sticky(Some(StickyKey::header("x-user").unwrap()));
    let user = parts(&[("x-user", "user-1")]);
    for (w, want) in [
        (3942, Version::Stable),
        (3943, Version::Baseline),
        (5000, Version::Baseline),
        (6057, Version::Baseline),
        (6058, Version::Canary),
    ] {
        let t = t.with_weight(Weight::from_hundredths(w).unwrap());
        assert_eq!(route(&t, &user, || 0), want, "weight {w}");
    }
}

proptest! {
    #[test]
    fn with_a_baseline_sticky_users_move_only_away_from_the_stable_up_to_half(
        keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..50),
        mut weights in proptest::collection::vec(0u16..=5_000, 2..12),
    ) {
        weights.sort_unstable();
        for key in &keys {
            let mut before = Version::Stable;
            for &w in &weights {
                let weight = Weight::from_hundredths(w).unwrap();
                let v = sticky_with_baseline(key, weight, weight.baseline_share());
                prop_assert!(before == Version::Stable || v == before, "key {key:?} moved from {before} to {v} at {w}");
                prop_assert_eq!(v == Version::Canary, sticky(key, weight) == Version::Canary);
                before = v;
            }
        }
    }

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
