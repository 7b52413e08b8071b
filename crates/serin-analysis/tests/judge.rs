//! The judge's verdicts on hand-made observations: precedence, no data,
//! minRequests, each method's rules, reasons carrying the numbers.

use serin_analysis::{
    Config, CustomMetric, Direction, Evidence, Histogram, Judge, Limit, Method, Observation, Ratio,
    Totals, Verdict, check,
};

const LE: [f64; 6] = [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

/// Cumulative observation with latency from per-bucket counts (the last
/// bucket is everything above 2000 ms).
fn totals(requests: u64, errors: u64, buckets: Option<[u64; 7]>) -> Totals {
    Totals {
        requests,
        errors,
        latency: buckets.map(|b| Histogram::from_bucket_counts(LE.to_vec(), &b[..6])),
        client_errors: None,
    }
}

fn obs(stable: Totals, canary: Totals) -> Observation {
    Observation {
        stable,
        canary,
        ..Observation::default()
    }
}

fn plain(sr: u64, se: u64, cr: u64, ce: u64) -> Observation {
    obs(totals(sr, se, None), totals(cr, ce, None))
}

fn no_latency(method: Method) -> Config {
    Config {
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        method,
        ..Config::default()
    }
}

#[test]
fn none_method_is_the_classic_threshold() {
    let mut j = Judge::new(no_latency(Method::None)).unwrap();
    j.begin_stage(&Observation::default());
    // 50 canary requests: not enough yet, even with 6 % errors.
    let r = j.observe(&plain(950, 9, 50, 3), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData);
    assert!(
        r.reason.contains("50 of 100 canary requests"),
        "{}",
        r.reason
    );
    // 120 requests, 4 errors = 3.3 %: pass.
    let r = j.observe(&plain(1900, 19, 120, 4), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    // 200 requests, 12 errors = 6 %: fail, with the numbers.
    let r = j.observe(&plain(3800, 38, 200, 12), false);
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(
        r.reason,
        "canary error rate 6.0 % (12/200) in this step, limit 5.0 %: over the limit"
    );
    assert_eq!(r.checks[0].canary, Some(0.06));
    assert_eq!(r.checks[0].evidence, Evidence::None);
}

#[test]
fn none_method_compares_point_estimates_and_quantiles() {
    let cfg = Config {
        method: Method::None,
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(2.0),
        },
        latency_p95: Limit {
            max: Some(1000.0),
            max_ratio_to_stable: Some(1.5),
        },
        ..Config::default()
    };
    let mut j = Judge::new(cfg).unwrap();
    // Stable p95 inside (200, 500]; canary p95 inside (500, 1000].
    let s = totals(1000, 10, Some([300, 400, 200, 100, 0, 0, 0]));
    let c = totals(200, 3, Some([20, 40, 60, 40, 40, 0, 0]));
    let r = j.observe(&obs(s, c), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    let p95 = r
        .checks
        .iter()
        .find(|c| c.name == "latency-p95/ratio")
        .unwrap();
    assert_eq!(p95.verdict, Verdict::Fail);
    // Stable: rank 950 of 1000 in (200,500] holding 100 from 900: 200 + 300 * 0.5 = 350.
    assert!((p95.stable.unwrap() - 350.0).abs() < 1e-9);
    // Canary: rank 190 of 200 in (500,1000] holding 40 from 160: 500 + 500 * 0.75 = 875.
    assert!((p95.canary.unwrap() - 875.0).abs() < 1e-9);
    assert!(
        p95.reason.contains("canary p95 875 ms vs stable 350 ms"),
        "{}",
        p95.reason
    );
    let err = r
        .checks
        .iter()
        .find(|c| c.name == "error-rate/ratio")
        .unwrap();
    assert_eq!(err.verdict, Verdict::Pass, "1.5 % is below 2 × 1 %");
    let max = r.checks.iter().find(|c| c.name == "latency-p95").unwrap();
    assert_eq!(max.verdict, Verdict::Pass);
}

#[test]
fn no_data_is_kept_apart_from_not_enough_data() {
    let mut j = Judge::new(no_latency(Method::Sequential)).unwrap();
    j.begin_stage(&Observation::default());
    j.set_canary_weight(5.0);
    // Idle service: nobody got requests. Not enough data, not no data.
    let r = j.observe(&plain(0, 0, 0, 0), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData);
    // Stable got 1000 requests, canary none at 5 %: no data.
    let r = j.observe(&plain(1000, 0, 0, 0), false);
    assert_eq!(r.verdict, Verdict::NoData);
    assert!(r.reason.contains("canary got no requests"), "{}", r.reason);
    assert_eq!(r.verdict.as_str(), "inconclusive");
    // 40 stable requests at 5 %: about 2 canary requests expected; none is fine.
    let r = j.observe(&plain(1040, 0, 0, 0), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData);
    // Counters going backwards: no data, and the next interval is judged on its own.
    let r = j.observe(&plain(900, 0, 0, 0), false);
    assert_eq!(r.verdict, Verdict::NoData);
    assert!(
        r.reason.contains("stable requests went backwards"),
        "{}",
        r.reason
    );
    let r = j.observe(&plain(2000, 10, 150, 1), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
}

#[test]
fn missing_latency_is_never_a_pass() {
    let mut j = Judge::new(Config::default()).unwrap();
    let r = j.observe(&plain(2000, 10, 150, 1), false);
    assert_eq!(r.verdict, Verdict::NoData, "{}", r.reason);
    assert!(r.reason.contains("no latency histogram"), "{}", r.reason);
}

#[test]
fn custom_metrics_missing_are_no_data() {
    let cfg = Config {
        custom: vec![CustomMetric {
            name: "checkout".into(),
            direction: Direction::HigherIsBetter,
            max_ratio_to_stable: None,
        }],
        ..no_latency(Method::None)
    };
    let mut j = Judge::new(cfg).unwrap();
    let r = j.observe(&plain(2000, 10, 150, 1), false);
    assert_eq!(r.verdict, Verdict::NoData);
    let mut o = plain(4000, 20, 300, 2);
    o.custom = vec![(
        Ratio {
            numerator: 300,
            denominator: 4000,
        },
        Ratio {
            numerator: 10,
            denominator: 300,
        },
    )];
    let r = j.observe(&o, false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(r.reason.starts_with("checkout: canary"), "{}", r.reason);
}

#[test]
fn fixed_judges_only_at_the_end_of_the_pause() {
    let cfg = Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        ..no_latency(Method::Fixed)
    };
    let mut j = Judge::new(cfg).unwrap();
    j.begin_stage(&Observation::default());
    let r = j.observe(&plain(9500, 85, 500, 41), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData);
    assert!(r.reason.contains("end of the pause"), "{}", r.reason);
    let r = j.observe(&plain(9500, 85, 500, 41), true);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(
        r.reason.starts_with("canary error rate 8.2 % (41/500) vs stable 0.89 % (85/9 500) in this step: worse with 95 % confidence"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("score 0: 0 of 1 checks pass"),
        "{}",
        r.reason
    );
}

#[test]
fn sequential_fails_on_a_clear_regression_with_the_numbers() {
    let cfg = Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        ..no_latency(Method::Sequential)
    };
    let mut j = Judge::new(cfg).unwrap();
    j.begin_stage(&Observation::default());
    let mut last = None;
    for i in 1..=10u64 {
        last = Some(j.observe(&plain(950 * i, 9 * i, 50 * i, 4 * i), false));
    }
    let r = last.unwrap();
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(
        r.reason.starts_with("canary error rate 8.0 % (40/500) vs stable 0.95 % (90/9 500) since judging began: worse than stable with 95 % confidence (e-value"),
        "{}",
        r.reason
    );
    assert!(r.reason.contains("ratio ≥"), "{}", r.reason);
    match r.checks[0].evidence {
        Evidence::EValue { max, threshold, .. } => {
            assert!(max >= threshold && (threshold - 20.0).abs() < 1e-9)
        }
        e => panic!("expected an e-value, got {e:?}"),
    }
}

#[test]
fn sequential_holds_a_fail_until_min_requests() {
    let cfg = Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        ..no_latency(Method::Sequential)
    };
    let mut j = Judge::new(cfg).unwrap();
    j.begin_stage(&Observation::default());
    // 60 canary requests, 30 errors against 1 % stable: overwhelming but too few requests.
    let r = j.observe(&plain(6000, 60, 60, 30), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData);
    assert!(
        r.checks[0].reason.contains("held: only 60 of 100"),
        "{}",
        r.checks[0].reason
    );
    // The evidence stays: at 100 requests the step fails even though the new
    // interval itself is clean.
    let r = j.observe(&plain(10000, 100, 100, 30), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
}

#[test]
fn config_errors_surface_from_new() {
    let e = Judge::new(Config {
        confidence: 0.0,
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(e.field, "analysis.statistics.confidence");
}

#[test]
fn check_reports_backwards_counters() {
    assert!(check(&plain(10, 0, 10, 0), &plain(11, 0, 10, 0)).is_ok());
    assert!(check(&plain(10, 0, 10, 0), &plain(11, 0, 9, 0)).is_err());
}

#[test]
fn threshold_splits_alpha_over_checks() {
    let j = Judge::new(Config::default()).unwrap();
    // Three checks (error max, p95 max, client errors) at 0.95: 3 / 0.05 = 60.
    assert!((j.threshold() - 60.0).abs() < 1e-9);
    let j = Judge::new(Config {
        client_error_ratio: None,
        ..Config::default()
    })
    .unwrap();
    assert!((j.threshold() - 40.0).abs() < 1e-9);
}

fn ratio_only(method: Method) -> Config {
    Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        ..no_latency(method)
    }
}

#[test]
fn fail_takes_precedence_over_no_data() {
    let mut j = Judge::new(ratio_only(Method::Sequential)).unwrap();
    j.begin_stage(&Observation::default());
    j.set_canary_weight(5.0);
    let r = j.observe(&plain(9500, 95, 500, 50), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    // The canary now gets nothing, but the evidence already failed it.
    let r = j.observe(&plain(10500, 105, 500, 50), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
}

#[test]
fn stages_reset_absolute_limits_but_keep_ratio_evidence() {
    let cfg = Config {
        error_rate: Limit {
            max: Some(0.05),
            max_ratio_to_stable: Some(1.0),
        },
        ..no_latency(Method::Sequential)
    };
    let mut j = Judge::new(cfg).unwrap();
    j.begin_stage(&Observation::default());
    // Stage 1: canary 3 % vs stable 1 %: some evidence, no verdict yet,
    // and held: the canary looks worse than stable.
    let r = j.observe(&plain(4750, 47, 250, 7), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData, "{}", r.reason);
    assert!(
        r.reason
            .contains("vs stable 0.99 % (47/4 750) since judging began: above the limit, not yet significant (e-value"),
        "{}",
        r.reason
    );
    let e1 = match r.checks[1].evidence {
        Evidence::EValue { value, .. } => value,
        e => panic!("{e:?}"),
    };
    assert!(e1 > 1.0, "e-value {e1}");
    let at = plain(4750, 47, 250, 7);
    j.begin_stage(&at);
    // A new stage starts with no requests of its own…
    let r = j.observe(&plain(4800, 47, 260, 7), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData);
    assert_eq!(r.stage_canary_requests, 10);
    // …but the ratio evidence carried over and keeps growing.
    let r = j.observe(&plain(8550, 85, 1500, 45), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert_eq!(
        r.checks[0].verdict,
        Verdict::Pass,
        "3 % is under the 5 % max"
    );
    assert_eq!(r.checks[1].verdict, Verdict::Fail);
    // Since the rollout began: the ratio test's evidence covers both stages.
    assert!(
        r.reason
            .contains("3.0 % (45/1 500) vs stable 0.99 % (85/8 550)"),
        "{}",
        r.reason
    );
}

#[test]
fn sequential_absolute_limit_needs_evidence_not_a_point_estimate() {
    let mut j = Judge::new(no_latency(Method::Sequential)).unwrap();
    // 6 % of 200 is above 5 % but not shown to be: not a fail (none would
    // fail), and not a pass either: held, saying so.
    let r = j.observe(&plain(3800, 38, 200, 12), false);
    assert_eq!(r.verdict, Verdict::NotEnoughData, "{}", r.reason);
    assert_eq!(r.verdict.as_str(), "inconclusive");
    assert_eq!(
        r.reason,
        "canary error rate 6.0 % (12/200) in this step, limit 5.0 %: above the limit, not yet significant (e-value 1.00 < 20)"
    );
    // 15 % of 400: shown.
    let r = j.observe(&plain(7600, 76, 600, 72), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(
        r.reason.contains("above the limit with 95 % confidence"),
        "{}",
        r.reason
    );
}

fn latency_config(method: Method, max: Option<f64>, ratio: Option<f64>) -> Config {
    Config {
        error_rate: Limit::NONE,
        latency_p95: Limit::NONE,
        latency_p50: Limit {
            max,
            max_ratio_to_stable: ratio,
        },
        client_error_ratio: None,
        method,
        ..Config::default()
    }
}

/// Stable: half at <= 100 ms, half in (100, 200]. Canary "slow": a quarter
/// at <= 100, the rest in (100, 200] and (200, 500].
fn latency_obs(i: u64, slow: bool) -> Observation {
    let s = [0, 50 * i, 50 * i, 0, 0, 0, 0];
    let c = if slow {
        [0, 5 * i, 10 * i, 5 * i, 0, 0, 0]
    } else {
        [0, 10 * i, 10 * i, 0, 0, 0, 0]
    };
    obs(totals(100 * i, 0, Some(s)), totals(20 * i, 0, Some(c)))
}

#[test]
fn sequential_latency_ratio_detects_a_slower_canary() {
    let mut j = Judge::new(latency_config(Method::Sequential, None, Some(1.0))).unwrap();
    let mut last = None;
    for i in 1..=12 {
        last = Some(j.observe(&latency_obs(i, true), false));
    }
    let r = last.unwrap();
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(
        r.reason
            .contains("slower than stable above 100 ms with 95 % confidence"),
        "{}",
        r.reason
    );
    let mut same = Judge::new(latency_config(Method::Sequential, None, Some(1.0))).unwrap();
    for i in 1..=12 {
        let r = same.observe(&latency_obs(i, false), false);
        assert_ne!(r.verdict, Verdict::Fail, "{}", r.reason);
    }
}

/// A canary twice as slow as stable whose latencies sit inside the bucket
/// the ratio test compares at (stable 96 % in (50, 100] ms and 4 % above,
/// canary 97.5 % in (100, 200] and 2.5 % above; limit 1.5 × stable: the test
/// compares the canary's share above 200 ms with the stable's above 100 ms,
/// and the canary looks the better of the two). Its e-value falls, yet its p95 (195 ms)
/// is beyond 1.5 × the stable's bound (150 ms): held, never a pass (an
/// outside user saw such a canary promoted at the end of its pause).
#[test]
fn a_slower_canary_the_buckets_hide_from_the_ratio_test_is_held_not_passed() {
    let config = Config {
        error_rate: Limit::NONE,
        latency_p95: Limit {
            max: None,
            max_ratio_to_stable: Some(1.5),
        },
        client_error_ratio: None,
        method: Method::Sequential,
        ..Config::default()
    };
    let mut j = Judge::new(config.clone()).unwrap();
    for i in 1..=40 {
        let o = obs(
            totals(100 * i, 0, Some([0, 96 * i, 4 * i, 0, 0, 0, 0])),
            totals(40 * i, 0, Some([0, 0, 39 * i, i, 0, 0, 0])),
        );
        let r = j.observe(&o, i == 40);
        assert_ne!(r.verdict, Verdict::Pass, "interval {i}: {}", r.reason);
    }
    let r = j.observe(
        &obs(
            totals(4100, 0, Some([0, 3936, 164, 0, 0, 0, 0])),
            totals(1640, 0, Some([0, 0, 1599, 41, 0, 0, 0])),
        ),
        true,
    );
    assert!(
        r.reason.contains("above the limit, not yet significant"),
        "{}",
        r.reason
    );
    // A canary inside the limit in the same buckets still passes.
    let mut ok = Judge::new(config).unwrap();
    let mut last = None;
    for i in 1..=40 {
        let o = obs(
            totals(100 * i, 0, Some([0, 96 * i, 4 * i, 0, 0, 0, 0])),
            totals(40 * i, 0, Some([0, 39 * i, i, 0, 0, 0, 0])),
        );
        last = Some(ok.observe(&o, i == 40));
    }
    assert_eq!(last.unwrap().verdict, Verdict::Pass);
}

/// A canary that answers 404 to everything once it has all the traffic:
/// the 4xx comparison with stable, which gets no requests, cannot gain
/// evidence, and held it would hold for ever while every client gets 404s
/// (an outside breaker saw it wait with no end). Its rate is then tested
/// on its own against stable's past rate × the limit (at least the floor):
/// a fail. A healthy canary with a stray error at 100 % is not.
#[test]
fn a_comparison_the_reference_gives_no_requests_for_is_tested_alone() {
    let config = Config {
        error_rate: Limit::NONE,
        latency_p95: Limit::NONE,
        client_error_ratio: Some(2.0),
        method: Method::Sequential,
        ..Config::default()
    };
    let with_4xx = |requests, errors, client_errors| Totals {
        requests,
        errors,
        client_errors: Some(client_errors),
        latency: None,
    };
    let mut j = Judge::new(config.clone()).unwrap();
    // At 10 %: both answer 200.
    let (mut s, mut c, mut c4) = (0, 0, 0);
    for _ in 0..10 {
        s += 90;
        c += 10;
        let r = j.observe(&obs(with_4xx(s, 0, 0), with_4xx(c, 0, c4)), false);
        assert_ne!(r.verdict, Verdict::Fail, "{}", r.reason);
    }
    // At 100 %: stable gets nothing, the canary answers 404.
    c += 100;
    c4 += 100;
    let r = j.observe(&obs(with_4xx(s, 0, 0), with_4xx(c, 0, c4)), false);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(
        r.reason.contains("while stable gets no requests"),
        "{}",
        r.reason
    );

    // A plan that starts at 100 %: stable never gets a request. 404s to
    // everything fail; a few 4xx (1 %, within 2 × the 1 % floor) do not.
    for (c4, fails) in [(100, true), (1, false)] {
        let mut alone = Judge::new(config.clone()).unwrap();
        let mut last = None;
        for i in 1..=5 {
            let r = alone.observe(&obs(with_4xx(0, 0, 0), with_4xx(100 * i, 0, c4 * i)), false);
            last = Some(r);
        }
        let r = last.unwrap();
        assert_eq!(r.verdict == Verdict::Fail, fails, "{c4} %: {}", r.reason);
        if !fails {
            assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
        }
    }

    // 5xx: 3 in 2 218 on stable before; at 100 % the canary has 4 in 996
    // (above 2 × stable's 0.14 % by its point estimate, well within noise).
    let mut ok = Judge::new(Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(2.0),
        },
        client_error_ratio: None,
        ..config
    })
    .unwrap();
    let r = ok.observe(&obs(with_4xx(2218, 3, 0), with_4xx(400, 1, 0)), false);
    assert_ne!(r.verdict, Verdict::Fail, "{}", r.reason);
    for (i, (canary, errors)) in [(600, 2), (800, 3), (996, 4)].into_iter().enumerate() {
        let r = ok.observe(
            &obs(with_4xx(2218, 3, 0), with_4xx(canary, errors, 0)),
            false,
        );
        assert_ne!(r.verdict, Verdict::Fail, "interval {i}: {}", r.reason);
        assert_ne!(r.verdict, Verdict::NoData, "interval {i}: {}", r.reason);
    }
}

#[test]
fn fixed_latency_ratio_uses_mann_whitney() {
    let mut j = Judge::new(latency_config(Method::Fixed, None, Some(1.0))).unwrap();
    let r = j.observe(&latency_obs(12, true), true);
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert!(r.reason.contains("Mann–Whitney U p ="), "{}", r.reason);
    match r.checks[0].evidence {
        Evidence::PValue { value, alpha } => assert!(value < alpha && (alpha - 0.05).abs() < 1e-12),
        e => panic!("{e:?}"),
    }
    let mut ok = Judge::new(latency_config(Method::Fixed, None, Some(1.0))).unwrap();
    let r = ok.observe(&latency_obs(12, false), true);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
}

#[test]
fn latency_max_in_every_method() {
    // Canary median is in (100, 200]: 150 ms by interpolation.
    for method in [Method::None, Method::Fixed, Method::Sequential] {
        let mut j = Judge::new(latency_config(method, Some(100.0), None)).unwrap();
        let mut r = None;
        for i in 1..=12 {
            r = Some(j.observe(&latency_obs(i, true), true));
        }
        let r = r.unwrap();
        assert_eq!(r.verdict, Verdict::Fail, "{method:?}: {}", r.reason);
        let mut j = Judge::new(latency_config(method, Some(500.0), None)).unwrap();
        let r = j.observe(&latency_obs(12, true), true);
        assert_eq!(r.verdict, Verdict::Pass, "{method:?}: {}", r.reason);
    }
}

fn custom_config(method: Method, direction: Direction) -> Config {
    Config {
        custom: vec![CustomMetric {
            name: "checkout".into(),
            direction,
            max_ratio_to_stable: None,
        }],
        ..ratio_only(method)
    }
}

fn custom_obs(i: u64, stable_rate: u64, canary_rate: u64) -> Observation {
    let mut o = plain(1000 * i, 0, 200 * i, 0);
    o.custom = vec![(
        Ratio {
            numerator: stable_rate * i,
            denominator: 1000 * i,
        },
        Ratio {
            numerator: canary_rate * i / 5,
            denominator: 200 * i,
        },
    )];
    o
}

#[test]
fn custom_ratios_follow_their_direction() {
    for method in [Method::Sequential, Method::Fixed] {
        // Conversions 10 % on stable, 5 % on the canary: worse when higher is better.
        let mut j = Judge::new(custom_config(method, Direction::HigherIsBetter)).unwrap();
        let mut r = None;
        for i in 1..=10 {
            r = Some(j.observe(&custom_obs(i, 100, 50), true));
        }
        let r = r.unwrap();
        assert_eq!(r.verdict, Verdict::Fail, "{method:?}: {}", r.reason);
        assert!(
            r.reason.starts_with("checkout: canary 5.0 %"),
            "{}",
            r.reason
        );
        // The same numbers are an improvement when lower is better.
        let mut j = Judge::new(custom_config(method, Direction::LowerIsBetter)).unwrap();
        for i in 1..=10 {
            let r = j.observe(&custom_obs(i, 100, 50), true);
            assert_ne!(r.verdict, Verdict::Fail, "{method:?}: {}", r.reason);
        }
    }
}

#[test]
fn an_interval_without_a_histogram_is_no_data_and_not_counted_as_slow() {
    let mut j = Judge::new(latency_config(Method::None, Some(500.0), None)).unwrap();
    let r = j.observe(&latency_obs(6, false), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    // The source loses the histograms for one interval.
    let mut gap = latency_obs(12, false);
    gap.stable.latency = None;
    gap.canary.latency = None;
    let r = j.observe(&gap, false);
    assert_eq!(r.verdict, Verdict::NoData, "{}", r.reason);
    assert!(r.reason.contains("no latency histogram"), "{}", r.reason);
    // Back: the gap's requests are not taken as slower than every bound.
    let r = j.observe(&latency_obs(18, false), false);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    assert!(
        r.checks[0].canary.unwrap() < 200.0,
        "{:?}",
        r.checks[0].canary
    );
}

#[test]
fn the_numbers_a_judge_starts_from_are_its_base_not_its_data() {
    // A source that counted before this rollout (an earlier run's bad
    // canary through the same proxy; weeks of stable traffic in
    // Prometheus): 300 canary errors in 1 000 requests before the start.
    let mut j = Judge::new(no_latency(Method::Sequential)).unwrap();
    j.begin_stage(&plain(50_000, 50, 1_000, 300));
    // This rollout's canary: 2 000 requests, 2 errors, like stable.
    let mut last = None;
    for i in 1..=10u64 {
        last = Some(j.observe(
            &plain(50_000 + 2_000 * i, 50 + 2 * i, 1_000 + 200 * i, 300 + i / 5),
            false,
        ));
    }
    let r = last.unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    assert!(r.reason.contains("(2/2 000)"), "{}", r.reason);
    assert!(
        !r.reason.contains("300"),
        "an earlier run's errors: {}",
        r.reason
    );
}
