//! The judge's safety rules: a canary that looks beyond a limit is never
//! passed; implausible counters are missing data, never traffic; a canary
//! that answers 4xx far more often than stable fails.

use serin_analysis::{
    Config, CustomMetric, Direction, Histogram, Judge, Limit, Method, Observation, Ratio, Totals,
    Verdict, bounds,
};

const HELD: &str = "above the limit, not yet significant";

fn side(requests: u64, errors: u64) -> Totals {
    Totals {
        requests,
        errors,
        ..Totals::default()
    }
}

fn plain(sr: u64, se: u64, cr: u64, ce: u64) -> Observation {
    Observation {
        stable: side(sr, se),
        canary: side(cr, ce),
        ..Observation::default()
    }
}

fn errors_only(max: Option<f64>, ratio: Option<f64>, method: Method) -> Config {
    Config {
        error_rate: Limit {
            max,
            max_ratio_to_stable: ratio,
        },
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        method,
        ..Config::default()
    }
}

/// The numbers: 25 errors in 300 canary requests against a 5 %
/// limit was `pass` (e-value 4.79, below the threshold).
#[test]
fn above_an_absolute_limit_but_not_yet_significant_is_inconclusive_never_pass() {
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::Sequential)).unwrap();
    j.begin_stage(&Observation::default());
    let r = j.observe(&plain(3000, 30, 300, 25), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData, "{}", r.reason);
    assert_eq!(r.verdict.as_str(), "inconclusive");
    assert_eq!(
        r.reason,
        format!(
            "canary error rate 8.3 % (25/300) in this step, limit 5.0 %: {HELD} (e-value 3.28 < 20)"
        )
    );
    // More of the same: now shown, failed.
    let r = j.observe(&plain(9000, 90, 900, 75), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    // Back within the limit in a new step: a pass, saying the numbers.
    j.begin_stage(&plain(9000, 90, 900, 75));
    let r = j.observe(&plain(12000, 120, 1200, 78), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
}

#[test]
fn every_method_and_ratio_check_holds_a_canary_that_looks_worse() {
    // Error ratio 1.0: canary 3 % vs stable 1 %, little data.
    // (`fixed` holds on its absolute limits; on a ratio limit its test is
    // significant before the step's e-value leans, see docs/judge.md.)
    let mut j = Judge::new(errors_only(None, Some(1.0), Method::Sequential)).unwrap();
    let r = j.observe(&plain(4750, 47, 250, 7), true);
    assert_eq!(r.verdict, Verdict::NotEnoughData, "{}", r.reason);
    assert!(r.reason.contains(HELD), "{}", r.reason);
    // The same canary at stable's rate passes.
    let mut j = Judge::new(errors_only(None, Some(1.0), Method::Sequential)).unwrap();
    let r = j.observe(&plain(4750, 47, 250, 2), true);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    // `fixed` absolute limit: 6 % of 200 against 5 % at the end of the pause.
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::Fixed)).unwrap();
    let r = j.observe(&plain(3800, 38, 200, 12), true);
    assert_eq!(r.verdict, Verdict::NotEnoughData, "{}", r.reason);
    assert!(r.reason.contains(HELD), "{}", r.reason);
    // `none` fails it outright, as before.
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::None)).unwrap();
    let r = j.observe(&plain(3800, 38, 200, 12), true);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
}

#[test]
fn a_latency_quantile_above_its_max_is_held() {
    let le = vec![100.0, 200.0, 500.0, 1000.0, 2000.0];
    // 150 canary requests: 6 % above 1000 ms, p95 about 1 167 ms.
    let canary = Histogram {
        le_ms: le.clone(),
        counts: vec![60, 110, 130, 141, 150],
    };
    let stable = Histogram {
        le_ms: le,
        counts: vec![900, 1000, 1000, 1000, 1000],
    };
    for method in [Method::Sequential, Method::Fixed] {
        let config = Config {
            error_rate: Limit::NONE,
            client_error_ratio: None,
            method,
            ..Config::default()
        };
        let mut j = Judge::new(config).unwrap();
        let o = Observation {
            stable: Totals {
                latency: Some(stable.clone()),
                ..side(1000, 0)
            },
            canary: Totals {
                latency: Some(canary.clone()),
                ..side(150, 0)
            },
            ..Observation::default()
        };
        let r = j.observe(&o, true);
        assert_eq!(
            r.verdict,
            Verdict::NotEnoughData,
            "{method:?}: {}",
            r.reason
        );
        assert!(
            r.reason.starts_with("canary p95 1 167 ms in this step, limit 1 000 ms: above the limit, not yet significant"),
            "{method:?}: {}",
            r.reason
        );
    }
}

#[test]
fn a_custom_metric_that_looks_worse_is_held() {
    let config = Config {
        custom: vec![CustomMetric {
            name: "checkout".into(),
            direction: Direction::HigherIsBetter,
            max_ratio_to_stable: None,
        }],
        ..errors_only(None, None, Method::Sequential)
    };
    let mut j = Judge::new(config).unwrap();
    let mut o = plain(1000, 0, 200, 0);
    let r = |numerator, denominator| Ratio {
        numerator,
        denominator,
    };
    // 10 % on stable, 6 % on the canary (12 of 200).
    o.custom = vec![(r(100, 1000), r(12, 200))];
    let v = j.observe(&o, true);
    assert_eq!(v.verdict, Verdict::NotEnoughData, "{}", v.reason);
    assert!(
        v.reason.starts_with("checkout: canary 6.0 %"),
        "{}",
        v.reason
    );
    assert!(v.reason.contains(HELD), "{}", v.reason);
}

#[test]
fn identical_versions_are_rarely_held_at_a_ratio_of_one() {
    // The point estimate of the canary is "worse" half the time; the hold
    // also needs the evidence to lean that way, which it rarely does.
    let mut held = 0;
    let runs = 200u64;
    for seed in 0..runs {
        let mut j = Judge::new(errors_only(None, Some(1.0), Method::Sequential)).unwrap();
        // A deterministic scatter of canary errors around stable's 1 %.
        let canary_errors = 10 + (seed * 7919 % 9) - 4; // 6..=14 of 1 000
        let r = j.observe(&plain(9000, 90, 1000, canary_errors), false);
        if r.verdict != Verdict::Pass {
            held += 1;
        }
    }
    // 1 000 canary requests with 14 errors against 1 % is 1.4 × stable and
    // still not beyond what the evidence favours.
    assert!(held <= runs / 5, "{held} of {runs} held");
}

#[test]
fn no_canary_request_is_never_a_pass_and_min_requests_must_be_at_least_one() {
    let e = Judge::new(Config {
        min_requests: 0,
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(e.field, "analysis.minRequests");
    let mut j = Judge::new(Config {
        min_requests: 1,
        ..errors_only(Some(0.05), None, Method::None)
    })
    .unwrap();
    // Quiet: neither version got anything.
    let r = j.observe(&plain(0, 0, 0, 0), true);
    assert_ne!(r.verdict, Verdict::Pass, "{}", r.reason);
}

// ---------------------------------------------------------------------------
// Implausible counters.

fn at(t: f64, sr: u64, se: u64, cr: u64, ce: u64) -> Observation {
    Observation {
        at: Some(t),
        ..plain(sr, se, cr, ce)
    }
}

/// A canary with 30 % errors, every 2 s: 700 stable and 300 canary
/// requests per interval.
fn bad_canary(i: u64) -> Observation {
    at(2.0 * i as f64, 700 * i, 7 * i, 300 * i, 90 * i)
}

#[test]
fn a_counter_jumping_by_10_to_the_12_is_no_data_and_judging_goes_on_from_a_sound_base() {
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::None)).unwrap();
    j.begin_stage(&bad_canary(0));
    // Today: one interval with 10^12 more canary requests dilutes 30 %
    // errors to nothing, and the step passes.
    let mut spike = bad_canary(1);
    spike.canary.requests += 1_000_000_000_000;
    let r = j.observe(&spike, false);
    assert_eq!(r.verdict, Verdict::NoData, "{}", r.reason);
    assert!(r.skipped);
    assert!(
        r.reason
            .starts_with("no data: canary requests rose by 1000000000300 in 2 s"),
        "{}",
        r.reason
    );
    assert_eq!(r.stage_canary_requests, 0, "the spike is not counted");
    // The counter is back: judged from the sound base before the spike.
    let r = j.observe(&bad_canary(2), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(r.reason.contains("30.0 % (180/600)"), "{}", r.reason);
    assert!(!r.from_refused, "judged from the sound base");
}

#[test]
fn a_counter_that_moved_for_good_is_judged_again_from_where_it_moved() {
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::None)).unwrap();
    j.begin_stage(&bad_canary(0));
    let shifted = |i: u64| {
        let mut o = bad_canary(i);
        o.canary.requests += 1_000_000_000_000;
        o
    };
    assert_eq!(j.observe(&shifted(1), false).verdict, Verdict::NoData);
    // From the refused observation on, the counters rise plausibly: judging
    // goes on from it, with only the sound interval's numbers.
    let r = j.observe(&shifted(2), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(r.reason.contains("30.0 % (90/300)"), "{}", r.reason);
    assert!(
        r.from_refused,
        "says so, for callers that keep their own interval numbers"
    );
}

#[test]
fn a_step_that_begins_on_a_spike_begins_from_the_sound_base() {
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::None)).unwrap();
    assert!(j.begin_stage(&bad_canary(0)), "a sound start is the base");
    let mut spike = bad_canary(1);
    spike.canary.requests += 1_000_000_000_000;
    assert!(!j.begin_stage(&spike), "a spike is not made the base");
    let r = j.observe(&bad_canary(2), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(r.reason.contains("30.0 % (180/600)"), "{}", r.reason);
}

#[test]
fn saturated_and_inconsistent_counters_are_no_data() {
    let mut j = Judge::new(errors_only(Some(0.05), None, Method::None)).unwrap();
    j.begin_stage(&bad_canary(0));
    let mut saturated = bad_canary(1);
    saturated.canary.requests = u64::MAX;
    let r = j.observe(&saturated, false);
    assert_eq!(r.verdict, Verdict::NoData, "{}", r.reason);
    assert!(
        r.reason
            .contains("canary requests is 18446744073709551615, above 2^53"),
        "{}",
        r.reason
    );
    // Prometheus' 1e30 is refused before it becomes a count at all.
    assert!(bounds::count("canary requests", 1e30).is_err());
    let r = j.observe(&bad_canary(2), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(r.reason.contains("(180/600)"), "{}", r.reason);
}

// ---------------------------------------------------------------------------
// Client errors (4xx).

fn with_4xx(sr: u64, s4: u64, cr: u64, c4: u64) -> Observation {
    let mut o = plain(sr, 0, cr, 0);
    o.stable.client_errors = Some(s4);
    o.canary.client_errors = Some(c4);
    o
}

fn client_config(method: Method) -> Config {
    Config {
        client_error_ratio: Some(5.0),
        ..errors_only(Some(0.05), None, method)
    }
}

#[test]
fn a_canary_that_answers_404_to_everything_fails_in_every_method() {
    for method in [Method::Sequential, Method::Fixed, Method::None] {
        let mut j = Judge::new(client_config(method)).unwrap();
        j.set_canary_weight(5.0);
        let mut r = None;
        for i in 1..=5 {
            // Stable: no 4xx at all. Canary: every request a 404.
            r = Some(j.observe(&with_4xx(950 * i, 0, 50 * i, 50 * i), false));
        }
        let r = r.unwrap();
        assert_eq!(r.verdict, Verdict::Fail, "{method:?}: {}", r.reason);
        assert!(
            r.reason.starts_with("canary client errors (4xx) 100.0 % (250/250) vs stable 0 % (0/4 750) since judging began: above 5 × stable with 95 % confidence"),
            "{method:?}: {}",
            r.reason
        );
    }
}

#[test]
fn a_few_more_4xx_than_stable_on_little_traffic_do_not_fail() {
    // 0.3 % vs 0.1 %, and a single stray 404 against none.
    for (s4, c4) in [(5, 1), (0, 1)] {
        let mut j = Judge::new(client_config(Method::Sequential)).unwrap();
        let r = j.observe(&with_4xx(5000, s4, 333, c4), false);
        assert_ne!(r.verdict, Verdict::Fail, "{}", r.reason);
    }
    // A canary at 3 × stable on plenty of traffic is within the default 5 ×.
    let mut j = Judge::new(client_config(Method::Sequential)).unwrap();
    let mut r = None;
    for i in 1..=20 {
        r = Some(j.observe(&with_4xx(10_000 * i, 100 * i, 1000 * i, 30 * i), false));
    }
    let r = r.unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
}

#[test]
fn without_4xx_counts_the_check_is_skipped_and_it_can_be_turned_off() {
    let mut j = Judge::new(client_config(Method::Sequential)).unwrap();
    let r = j.observe(&plain(5000, 0, 500, 0), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    assert!(
        r.reason
            .contains("client errors (4xx): not checked, the metric source counts none"),
        "{}",
        r.reason
    );
    let mut off = Judge::new(Config {
        client_error_ratio: None,
        ..client_config(Method::Sequential)
    })
    .unwrap();
    let r = off.observe(&with_4xx(5000, 0, 500, 500), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    assert!(Config::default().client_error_ratio == Some(5.0));
}
